/* conv_avx512_grad.c -- the direct convolution's gradients (conv_avx512.h).
 *
 * Input gradient. gx = "transposed convolution" of gy: for input row phase
 * py (iy = py + sy a) and column phase px only the taps with
 * (py + ph - ki dh) % sy == 0 contribute, and each reads gy at row
 * a + (py + ph - ki dh) / sy. So each phase is a stride-1 correlation of a
 * zero-padded gy with a tap subset of the (channel-transposed) weights: the
 * forward tiles and planner again, writing to a per-phase buffer that is
 * interleaved into gx (or straight into gx when the stride is 1).
 *
 * Weight gradient. gw[o][c,t] = sum over samples and pixels of
 * gy[o][p] x[c, t](p). Accumulators are R input channels sharing a tap x RB
 * blocks of 16 output channels; per output pixel RB vectors of the
 * transposed gy (gyT[p][o]) are loaded and R input values broadcast, over
 * the tap's valid output region only. Samples are processed in blocks of nS
 * (stacked in the prepared buffer) so that a pass has enough pixels even at
 * 4x4; fixed slices of blocks sum into partials of their own, added in slice
 * order (the same bits whatever thread takes which slice). */
#include "conv_avx512.h"
#include "conv_env.h"

#if defined(__AVX512F__)

#include <inttypes.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../memory.h"
#include "../tensor.h"
#include "../parallel.h"

/* ---------------------------------------------------------------- input gradient */
/* dst[2 b] = s0[b] (b < n0), dst[2 b + 1] = s1[b] (b < n1), for a row of W
 * floats; a NULL phase (no taps) gives zeros. */
static void interleave2(float *dst, int64_t W, const float *s0, int64_t n0, const float *s1, int64_t n1) {
    const __m512i lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    const __m512i hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    for (int64_t b0 = 0; 2 * b0 < W; b0 += 16) {
        __m512 e = s0 ? _mm512_maskz_loadu_ps(lanes(imax(0, n0 - b0)), s0 + b0) : _mm512_setzero_ps();
        __m512 o = s1 ? _mm512_maskz_loadu_ps(lanes(imax(0, n1 - b0)), s1 + b0) : _mm512_setzero_ps();
        int64_t left = W - 2 * b0;
        _mm512_mask_storeu_ps(dst + 2 * b0, lanes(left), _mm512_permutex2var_ps(e, lo, o));
        if (left > 16) _mm512_mask_storeu_ps(dst + 2 * b0 + 16, lanes(left - 16), _mm512_permutex2var_ps(e, hi, o));
    }
}

typedef struct {
    int T;                  /* taps of this phase (0: no contribution) */
    int64_t Ha, Wa;         /* rows and columns of gx in this phase */
    fwd_plan p;
    int64_t woff;           /* offset of its weights in the relayout buffer (per group) */
    int64_t toff0;          /* first tap in the shared tables */
} phase_plan;

/* Along one axis (stride s, n inputs, no outputs, k taps, padding p,
 * dilation d): the zeros gy needs before (*lo) and after (*hi) its no values
 * so that every phase's taps read inside it. */
static void phase_pads(int s, int64_t n, int64_t no, int64_t k, int p, int d, int64_t *lo, int64_t *hi) {
    *lo = *hi = 0;
    for (int ph = 0; ph < s; ph++) {
        int64_t na = ph < n ? cdiv(n - ph, s) : 0;
        for (int64_t ki = 0; ki < k; ki++) {
            int64_t v = ph + p - ki * d;
            if (((v % s) + s) % s || na == 0) continue;
            int64_t ev = div_floor(v, s);
            *lo = imax(*lo, -ev);
            *hi = imax(*hi, na - 1 + ev - (no - 1));
        }
    }
}

int ml_conv_avx512_input_grad(const ml_conv_geom *g, const float *gy, const float *w, float *gx) {
    if (g->N == 0) return 0;
    const int sy = g->sh, sx = g->sw, nph = sy * sx;
    const int64_t H = g->H, W = g->W, Ho = g->Ho, Wo = g->Wo;
    /* per row phase: valid ki and their gy row offsets e; the same for columns */
    int64_t PT = 0, PB = 0, PL = 0, PR = 0;
    tap_plan *tp = malloc(sizeof *tp);
    phase_plan *ph = malloc(sizeof(phase_plan) * (size_t)nph);
    if (!tp || !ph) {
        free(tp);
        free(ph);
        return ml_failc("conv2d: out of memory");
    }
    phase_pads(sy, H, Ho, g->kh, g->ph, g->dh, &PT, &PB);
    phase_pads(sx, W, Wo, g->kw, g->pw, g->dw, &PL, &PR);
    ml_cx_prep_init(&tp->q, 1, 1, (int)PT, (int)PL, PT + Ho + PB, PL + Wo + PR, 1);
    const prep_geom *q = &tp->q;
    /* gx channels (Cg per group) are the outputs, gy channels (Og) the inputs */
    int64_t Hamax = cdiv(H, sy), Wamax = cdiv(W, sx), wtot = 0;
    int ntap = 0;
    for (int py = 0; py < sy; py++)
        for (int px = 0; px < sx; px++) {
            phase_plan *pp = &ph[py * sx + px];
            pp->Ha = py < H ? cdiv(H - py, sy) : 0;
            pp->Wa = px < W ? cdiv(W - px, sx) : 0;
            pp->toff0 = ntap;
            pp->T = 0;
            /* taps in the order of their offsets in gy (the kernel flipped),
             * so that a 3x3 stride-1 gradient can use the edge tiles */
            for (int64_t ki = g->kh - 1; ki >= 0; ki--) {
                int64_t v = py + g->ph - ki * g->dh;
                if (((v % sy) + sy) % sy) continue;
                for (int64_t kj = g->kw - 1; kj >= 0; kj--) {
                    int64_t u = px + g->pw - kj * g->dw;
                    if (((u % sx) + sx) % sx) continue;
                    tp->toff[ntap] = (int32_t)((div_floor(v, sy) + PT) * q->Wq + div_floor(u, sx) + PL);
                    tp->tidx[ntap] = (int32_t)(ki * g->kw + kj);
                    ntap++;
                    pp->T++;
                }
            }
            if (pp->Ha == 0 || pp->Wa == 0) pp->T = 0;
            pp->woff = wtot;
            if (pp->T) {
                /* stride 1, 3x3: slot k reads gy row a + e with e = ph - (2 - k) dh */
                edge_geom eg = {.on = nph == 1 && g->kh == 3 && g->kw == 3 && pp->T == 9};
                for (int k = 0; k < 3 && eg.on; k++) {
                    int64_t ey = g->ph - (2 - k) * g->dh, ex = g->pw - (2 - k) * g->dw;
                    eg.vy[k][0] = imax(0, -ey);
                    eg.vy[k][1] = imin(pp->Ha, Ho - ey);
                    eg.vx[k][0] = imax(0, -ex);
                    eg.vx[k][1] = imin(pp->Wa, Wo - ex);
                }
                ml_cx_fwd_choose(pp->Ha, pp->Wa, q->Wq, g->Cg, g->Og * pp->T, &eg, &pp->p);
                wtot += ml_cx_relayout_size(&pp->p, g->Cg, g->Og, pp->T);
            }
        }
    int64_t KT = g->kh * g->kw;
    float *wr = ml_alloc(sizeof(float) * (size_t)(wtot * g->groups + 1));
    if (!wr) {
        free(tp);
        free(ph);
        return -1;
    }
    for (int gi = 0; gi < g->groups; gi++)
        for (int i = 0; i < nph; i++)
            if (ph[i].T)
                /* new output channel c (input channel of w), new input channel o: w[o][c][tap] */
                ml_cx_relayout(&ph[i].p, w + gi * g->Og * g->Cg * KT, KT, g->Cg * KT, tp->tidx + ph[i].toff0, ph[i].T, g->Cg,
                         g->Og, wr + gi * wtot + ph[i].woff);
    bool direct = nph == 1;
    int threads0 = omp_get_max_threads();
    int64_t chunks = ml_cx_row_chunks(g->N, Hamax, threads0), items = g->N * chunks;
    int threads = ml_cx_pick_threads(items);
    if (threads > 256) threads = 256;
    int64_t counts[2] = {g->O * q->cplane, direct ? 0 : nph * g->Cg * Hamax * Wamax};
    scratch s;
    float *bufs[512];
    int64_t extra[2] = {SLACK + 4 * q->Wq, 0};
    if (ml_cx_scratch_get(&s, threads, counts, extra, 2, bufs)) {
        ml_free(wr, sizeof(float) * (size_t)(wtot * g->groups + 1));
        free(tp);
        free(ph);
        return -1;
    }
    int64_t rows_per = cdiv(Hamax, chunks), tplane = Hamax * Wamax;
    int64_t run = ml_cx_sample_run(items, chunks, threads), yn = g->O * Ho * Wo;
    #pragma omp parallel num_threads(threads)
    {
        float *gb = bufs[2 * omp_get_thread_num()], *tmp = bufs[2 * omp_get_thread_num() + 1];
        int64_t have = -1;
        #pragma omp for schedule(dynamic, run)
        for (int64_t it = 0; it < items; it++) {
            if (ml_interrupt_pending()) continue;
            int64_t n = it / chunks, ch = it % chunks;
            int64_t a0 = ch * rows_per, a1 = imin(Hamax, a0 + rows_per);
            if (a0 >= a1) continue;
            if (have != n) {
                ml_cx_prep(q, gy + n * yn, 0, 1, g->O, Ho, Wo, gb);
                have = n;
                if (chunks == 1 && (it + 1) % run && n + 1 < g->N) ml_cx_prefetch_l2(gy + (n + 1) * yn, yn);
            }
            for (int gi = 0; gi < g->groups; gi++) {
                const float *gin = gb + gi * g->Og * q->cplane;
                float *gxs = gx + (n * g->C + gi * g->Cg) * H * W;
                const float *wg = wr + gi * wtot;
                if (direct) {
                    phase_plan *pp = &ph[0];
                    if (pp->T)
                        ml_cx_fwd_rows(&pp->p, gin, q->cplane, q->Wq, tp->toff + pp->toff0, pp->T, g->Og, wg + pp->woff,
                                 NULL, gxs, H * W, W, W, g->Cg, a0, a1, NULL);
                    else
                        for (int64_t c = 0; c < g->Cg; c++) memset(gxs + c * H * W + a0 * W, 0, sizeof(float) * (size_t)((a1 - a0) * W));
                    continue;
                }
                for (int i = 0; i < nph; i++) {
                    phase_plan *pp = &ph[i];
                    int64_t b1 = imin(a1, pp->Ha);
                    if (!pp->T || a0 >= b1) continue;
                    ml_cx_fwd_rows(&pp->p, gin, q->cplane, q->Wq, tp->toff + pp->toff0, pp->T, g->Og, wg + pp->woff, NULL,
                             tmp + i * g->Cg * tplane, tplane, pp->Wa, pp->Wa, g->Cg, a0, b1, NULL);
                }
                /* interleave the phases into gx rows py + sy a */
                for (int64_t c = 0; c < g->Cg; c++)
                    for (int py = 0; py < sy; py++)
                        for (int64_t a = a0; a < a1; a++) {
                            int64_t iy = py + sy * a;
                            if (iy >= H) break;
                            float *dst = gxs + c * H * W + iy * W;
                            if (sx == 2) {
                                const phase_plan *p0 = &ph[py * 2], *p1 = &ph[py * 2 + 1];
                                const float *s0 = p0->T ? tmp + ((int64_t)(py * 2) * g->Cg + c) * tplane + a * p0->Wa : NULL;
                                const float *s1 = p1->T ? tmp + ((int64_t)(py * 2 + 1) * g->Cg + c) * tplane + a * p1->Wa : NULL;
                                interleave2(dst, W, s0, p0->Wa, s1, p1->Wa);
                                continue;
                            }
                            for (int px = 0; px < sx; px++) {
                                phase_plan *pp = &ph[py * sx + px];
                                const float *src = tmp + ((int64_t)(py * sx + px) * g->Cg + c) * tplane + a * pp->Wa;
                                if (!pp->T)
                                    for (int64_t bb = 0; bb < pp->Wa; bb++) dst[px + sx * bb] = 0.0f;
                                else if (sx == 1)
                                    memcpy(dst, src, sizeof(float) * (size_t)pp->Wa);
                                else
                                    for (int64_t bb = 0; bb < pp->Wa; bb++) dst[px + sx * bb] = src[bb];
                            }
                        }
            }
        }
    }
    ml_free(s.base, s.bytes);
    ml_free(wr, sizeof(float) * (size_t)(wtot * g->groups + 1));
    free(tp);
    free(ph);
    return ml_interrupted() ? -1 : 0;
}

/* ---------------------------------------------------------------- weight gradient kernel */
typedef struct {
    const float *base[12]; /* R columns: prepared input + column offset */
    const float *gyT;      /* [pixels][Opad], at the first channel of the block group */
    int64_t Opad;
    int nS;
    int64_t Ho, Wo, Hq, Wq;
    int64_t ylo, yhi, xlo, xhi; /* the output pixels where the columns' tap reads data */
    float *part;           /* column r at part + r pstride (first channel of the block group) */
    int64_t pstride;
} wg_args;

typedef void (*wg_fn)(const wg_args *);

AI void wg_kernel(const int R, const int RB, const wg_args *a) {
    const float *bs[12];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++) bs[r] = a->base[r];
    __m512 acc[12][4];
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int b = 0; b < RB; b++) acc[r][b] = _mm512_setzero_ps();
    const int64_t Opad = a->Opad;
    for (int j = 0; j < a->nS; j++)
        for (int64_t oy = a->ylo; oy < a->yhi; oy++) {
            int64_t pix = ((int64_t)j * a->Hq + oy) * a->Wq + a->xlo;
            const float *gp = a->gyT + (((int64_t)j * a->Ho + oy) * a->Wo + a->xlo) * Opad;
            for (int64_t ox = a->xlo; ox < a->xhi; ox++, pix++, gp += Opad) {
                __m512 gv[4];
#pragma GCC unroll 4
                for (int b = 0; b < RB; b++) gv[b] = _mm512_load_ps(gp + 16 * b);
#pragma GCC unroll 12
                for (int r = 0; r < R; r++) {
                    __m512 xv = _mm512_set1_ps(bs[r][pix]);
#pragma GCC unroll 4
                    for (int b = 0; b < RB; b++) acc[r][b] = _mm512_fmadd_ps(xv, gv[b], acc[r][b]);
                }
            }
        }
#pragma GCC unroll 12
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int b = 0; b < RB; b++) {
            float *d = a->part + r * a->pstride + 16 * b;
            _mm512_store_ps(d, _mm512_add_ps(_mm512_load_ps(d), acc[r][b]));
        }
}

#define WG_VARIANTS(X) \
    X(1,1) X(2,1) X(3,1) X(4,1) X(5,1) X(6,1) X(7,1) X(8,1) \
    X(9,1) X(10,1) X(11,1) X(12,1) X(1,2) X(2,2) X(3,2) X(4,2) \
    X(5,2) X(6,2) X(7,2) X(8,2) X(9,2) X(10,2) X(11,2) X(12,2) \
    X(1,3) X(2,3) X(3,3) X(4,3) X(5,3) X(6,3) X(7,3) X(8,3) \
    X(1,4) X(2,4) X(3,4) X(4,4) X(5,4) X(6,4)

#define DEF_WG(R, RB) \
    static void wg_##R##_##RB(const wg_args *a) { wg_kernel(R, RB, a); }
WG_VARIANTS(DEF_WG)

typedef struct {
    int R, RB;
    wg_fn fn;
} wg_variant;
#define ROW_WG(R, RB) {R, RB, wg_##R##_##RB},
static const wg_variant wg_variants[] = {WG_VARIANTS(ROW_WG)};
#define N_WG ((int)(sizeof wg_variants / sizeof wg_variants[0]))

static wg_fn wg_find(int R, int RB) {
    for (int i = 0; i < N_WG; i++)
        if (wg_variants[i].R == R && wg_variants[i].RB == RB) return wg_variants[i].fn;
    return NULL;
}

typedef struct {
    int R, RB;
} wg_plan;

/* K: columns per pass group (input channels sharing a tap); pixels: per pass */
static void wg_choose(int nb, int64_t K, int64_t pixels, wg_plan *p) {
    double best = 1e300;
    p->R = 1, p->RB = 1;
    for (int i = 0; i < N_WG; i++) {
        const wg_variant *v = &wg_variants[i];
        if (v->RB > nb || v->R > K) continue;
        double cost = 0;
        for (int g0 = 0; g0 < nb; g0 += v->RB) {
            int rb = (int)imin(v->RB, nb - g0);
            if (!wg_find(v->R, rb)) {
                cost = 1e300;
                break;
            }
            int64_t full = K / v->R, rem = K % v->R;
            cost += (double)full * ((double)pixels * step_cost(v->R * rb, v->R, rb) + 30 + 3.0 * v->R * rb);
            if (rem) cost += (double)pixels * step_cost((int)rem * rb, (int)rem, rb) + 30 + 3.0 * rem * rb;
        }
        if (cost < best) {
            best = cost;
            p->R = v->R, p->RB = v->RB;
        }
    }
    const char *e = ml_conv_env(ML_ENV_CONV_WG);
    int r, rb;
    if (e && sscanf(e, "%dx%d", &r, &rb) == 2 && wg_find(r, rb) && rb <= nb && r <= K) {
        bool ok = true;
        for (int g0 = 0; g0 < nb; g0 += rb) ok &= wg_find(r, (int)imin(rb, nb - g0)) != NULL;
        if (ok) p->R = r, p->RB = rb;
    }
}

/* gyT[(j P + p) Opad + o] = gy[j][o][p] for o < Og, 0 for Og <= o < Opad */
static void transpose_gy(const float *gy, int64_t sstride, int ns, int64_t Og, int64_t P, int64_t Opad, float *gyT) {
    for (int j = 0; j < ns; j++) {
        const float *src = gy + j * sstride;
        float *dst = gyT + (int64_t)j * P * Opad;
        for (int64_t o0 = 0; o0 < Opad; o0 += 16) {
            int64_t no = imin(16, Og - o0);
            for (int64_t p0 = 0; p0 < P; p0 += 16) {
                int64_t np = imin(16, P - p0);
                __mmask16 m = lanes(np);
                __m512 v[16];
                for (int i = 0; i < 16; i++)
                    v[i] = i < no ? _mm512_maskz_loadu_ps(m, src + (o0 + i) * P + p0) : _mm512_setzero_ps();
                transpose16(v);
                for (int64_t i = 0; i < np; i++) _mm512_store_ps(dst + (p0 + i) * Opad + o0, v[i]);
            }
        }
    }
}

int ml_conv_avx512_weight_grad(const ml_conv_geom *g, const float *x, const float *gy, float *gw) {
    if (g->N == 0) {
        /* a sum over no samples */
        memset(gw, 0, sizeof(float) * (size_t)(g->O * g->K));
        return 0;
    }
    const int64_t P = g->P;
    int threads0 = omp_get_max_threads();
    /* samples per block: enough pixels per pass, and enough blocks for the threads */
    int64_t nS = imax(1, imin(cdiv(256, P), g->N / (2 * threads0)));
    if (nS > 64) nS = 64;
    tap_plan *tp = malloc(sizeof *tp);
    if (!tp) return ml_failc("conv2d: out of memory");
    ml_cx_forward_taps(g, (int)nS, tp);
    const prep_geom *q = &tp->q;
    int T = tp->T, nb = (int)cdiv(g->Og, 16);
    int64_t K = g->Cg * T, Opad = (int64_t)nb * 16;
    wg_plan p;
    wg_choose(nb, g->Cg, nS * P, &p);
    int64_t blocks = cdiv(g->N, nS);
    /* Slices of consecutive blocks, each summing into its own partial, added
     * up in slice order (parallel.h): the same sums whatever thread takes
     * which slice. Two slices per thread, so that a thread slowed down by the
     * machine's load does not hold the other up for long, while the partials
     * (a weight gradient each) stay few. */
    int64_t run = cdiv(blocks, 2 * (int64_t)ml_cx_pick_threads(blocks)), slices = cdiv(blocks, run);
    int threads = ml_cx_pick_threads(slices);
    if (threads > 256) threads = 256;
    int64_t psz = cdiv((int64_t)g->groups * K * Opad, 16) * 16;
    int64_t counts[2] = {g->C * q->cplane, nS * P * Opad};
    scratch s;
    float *bufs[512];
    int64_t *coff = malloc(sizeof(int64_t) * (size_t)K);
    int64_t extra[2] = {0, 0};
    float *parts = NULL;
    size_t pbytes = sizeof(float) * (size_t)(psz * slices);
    if (!coff || ml_cx_scratch_get(&s, threads, counts, extra, 2, bufs)) {
        free(coff);
        free(tp);
        return coff ? -1 : ml_failc("conv2d: out of memory");
    }
    parts = ml_alloc(pbytes);
    for (int64_t c = 0; c < g->Cg && coff; c++)
        for (int t = 0; t < T; t++) coff[c * T + t] = c * q->cplane + tp->toff[t];
    /* the output pixels where tap t reads data rather than padding */
    int64_t (*vr)[4] = malloc(sizeof *vr * (size_t)T);
    if (!vr || !parts) {
        free(vr);
        free(coff);
        free(tp);
        ml_free(parts, pbytes);
        ml_free(s.base, s.bytes);
        return parts ? ml_failc("conv2d: out of memory") : -1;
    }
    for (int64_t ki = 0; ki < g->kh; ki++)
        for (int64_t kj = 0; kj < g->kw; kj++) {
            int64_t t = ki * g->kw + kj;
            vr[t][0] = imax(0, div_ceil(g->ph - ki * g->dh, g->sh));
            vr[t][1] = imin(g->Ho, div_ceil(g->ph + g->H - ki * g->dh, g->sh));
            vr[t][2] = imax(0, div_ceil(g->pw - kj * g->dw, g->sw));
            vr[t][3] = imin(g->Wo, div_ceil(g->pw + g->W - kj * g->dw, g->sw));
        }
    wg_fn full = wg_find(p.R, p.RB);
    #pragma omp parallel num_threads(threads)
    {
        int tid = omp_get_thread_num();
        float *xb = bufs[2 * tid], *gyT = bufs[2 * tid + 1];
        wg_args a = {.Opad = Opad, .Ho = g->Ho, .Wo = g->Wo, .Hq = q->Hq, .Wq = q->Wq};
        #pragma omp for schedule(dynamic, 1)
        for (int64_t sl = 0; sl < slices; sl++) {
            float *part = parts + sl * psz;
            memset(part, 0, sizeof(float) * (size_t)psz);
            int64_t b1 = imin(blocks, (sl + 1) * run);
            for (int64_t blk = sl * run; blk < b1; blk++) {
                if (ml_interrupt_pending()) break;
                int64_t n0 = blk * nS;
                int ns = (int)imin(nS, g->N - n0);
                ml_cx_prep(q, x + n0 * g->C * g->H * g->W, g->C * g->H * g->W, ns, g->C, g->H, g->W, xb);
                if (blk + 1 < b1) {
                    /* the next block's input and output gradient */
                    int64_t n1 = n0 + nS, ns1 = imin(nS, g->N - n1);
                    ml_cx_prefetch_l2(x + n1 * g->C * g->H * g->W, ns1 * g->C * g->H * g->W);
                    ml_cx_prefetch_l2(gy + n1 * g->O * P, ns1 * g->O * P);
                }
                a.nS = ns;
                for (int gi = 0; gi < g->groups; gi++) {
                    transpose_gy(gy + (n0 * g->O + gi * g->Og) * P, g->O * P, ns, g->Og, P, Opad, gyT);
                    const float *xg = xb + gi * g->Cg * q->cplane;
                    float *pg = part + gi * K * Opad;
                    /* passes of R input channels that share a tap: the same valid
                     * output region, so the products with padding are left out */
                    a.pstride = T * Opad;
                    for (int g0 = 0; g0 < nb; g0 += p.RB) {
                        int rb = (int)imin(p.RB, nb - g0);
                        a.gyT = gyT + g0 * 16;
                        for (int t = 0; t < T; t++) {
                            a.ylo = vr[t][0], a.yhi = vr[t][1], a.xlo = vr[t][2], a.xhi = vr[t][3];
                            if (a.ylo >= a.yhi || a.xlo >= a.xhi) continue;
                            for (int64_t c0 = 0; c0 < g->Cg; c0 += p.R) {
                                int R = (int)imin(p.R, g->Cg - c0);
                                wg_fn fn = (R == p.R && rb == p.RB) ? full : wg_find(R, rb);
                                for (int r = 0; r < R; r++) a.base[r] = xg + coff[(c0 + r) * T + t];
                                a.part = pg + (c0 * T + t) * Opad + g0 * 16;
                                fn(&a);
                            }
                        }
                    }
                }
            }
        }
    }
    /* the slices' partials added in slice order into the first, in parallel
     * over stretches of it; then transposed into gw [O][Cg][kh][kw] = [groups][Og][K] */
    int64_t stretch = 4096, nstretch = cdiv(psz, stretch);
    #pragma omp parallel for schedule(static) num_threads(threads) if (slices > 1 && psz * slices >= 65536)
    for (int64_t i = 0; i < nstretch; i++) {
        float *d = parts + i * stretch;
        int64_t len = imin(stretch, psz - i * stretch);
        for (int64_t sl = 1; sl < slices; sl++) {
            const float *src = parts + sl * psz + i * stretch;
            for (int64_t e = 0; e < len; e++) d[e] += src[e];
        }
    }
    #pragma omp parallel for collapse(2) schedule(static) num_threads(threads) if (g->O * K >= 16384)
    for (int gi = 0; gi < g->groups; gi++)
        for (int64_t o = 0; o < g->Og; o++) {
            float *d = gw + (gi * g->Og + o) * K;
            const float *src = parts + gi * K * Opad + o;
            for (int64_t k = 0; k < K; k++) d[k] = src[k * Opad];
        }
    ml_free(parts, pbytes);
    ml_free(s.base, s.bytes);
    free(vr);
    free(coff);
    free(tp);
    return ml_interrupted() ? -1 : 0;
}


#else /* no AVX-512 code generation: the im2col path is used */

int ml_conv_avx512_input_grad(const ml_conv_geom *g, const float *gy, const float *w, float *gx) {
    (void)g, (void)gy, (void)w, (void)gx;
    return -1;
}
int ml_conv_avx512_weight_grad(const ml_conv_geom *g, const float *x, const float *gy, float *gw) {
    (void)g, (void)x, (void)gy, (void)gw;
    return -1;
}

#endif
