/* conv_avx512_prep.c -- the direct convolution's prepared inputs: each sample
 * (or block of samples) copied once into a zero-bordered buffer split into
 * stride phases, so that every tap reads consecutive floats; the row masks
 * that copy does it with; per-thread scratch; how the work is split; which
 * geometries the kernels take. conv_avx512.h has the layout.
 *
 * Output pixel (oy, ox) with tap (ki, kj) reads padded (oy sy + ki dh,
 * ox sx + kj dw): phase ((ki dh) % sy, (kj dw) % sx) at row oy + ki dh / sy,
 * column ox + kj dw / sx. So a tap is one offset `toff[t]` from the pixel's
 * base oy Wq + ox, and consecutive output pixels read consecutive floats:
 * stride, padding and dilation only change the offsets. */
#include "conv_avx512.h"

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


void ml_cx_prep_init(prep_geom *q, int sy, int sx, int pt, int pl, int64_t Hp, int64_t Wp, int nS) {
    q->sy = sy, q->sx = sx, q->pt = pt, q->pl = pl, q->nS = nS;
    q->Hq = cdiv(Hp, sy);
    q->Wq = cdiv(Wp, sx);
    q->phplane = (int64_t)nS * q->Hq * q->Wq;
    q->cplane = (int64_t)sy * sx * q->phplane;
    q->used = ~(uint64_t)0;
}

/* Address arithmetic that may point outside the row (only for masked lanes,
 * which are never accessed): done on integers to keep the C semantics clean. */
static const float *at(const float *p, int64_t off) {
    return (const float *)((uintptr_t)p + (uintptr_t)(off * (int64_t)sizeof(float)));
}

/* lanes lo <= l < hi of 16 (any integers) */
static __mmask16 lane_range(int64_t lo, int64_t hi) {
    lo = imax(lo, 0);
    hi = imin(hi, 16);
    return hi > lo ? (__mmask16)(lanes(hi) & ~lanes(lo)) : (__mmask16)0;
}

/* Column masks of a padded row, the same for every data row: chunk k of 16
 * output columns loads source lanes m[k] (stride 1), or ma[k] and mb[k] for
 * the two source vectors of a stride-2 split; st[k] are the lanes stored. */
#define MAX_CHUNKS 64
typedef struct {
    int n;
    __mmask16 m[MAX_CHUNKS], mb[MAX_CHUNKS], st[MAX_CHUNKS];
} row_masks;

static void row_masks_init(row_masks *rm, int sx, int64_t Wq, int64_t off, int64_t W) {
    rm->n = (int)cdiv(Wq, 16);
    for (int k = 0; k < rm->n; k++) {
        int64_t u0 = 16 * (int64_t)k;
        rm->st[k] = lanes(Wq - u0);
        if (sx == 1) {
            rm->m[k] = lane_range(-(u0 + off), W - (u0 + off));
            rm->mb[k] = 0;
        } else {
            int64_t x0 = 2 * u0 + off; /* source column of P[2 u0] */
            rm->m[k] = lane_range(-x0, W - x0);
            rm->mb[k] = lane_range(-x0 - 16, W - x0 - 16);
        }
    }
}

/* One padded row, stride 1: d[u] = src[u + off] where 0 <= u + off < W (in),
 * 0 elsewhere. Reads only valid source elements (masked loads). */
static inline void prep_row1(float *d, const row_masks *rm, const float *src, int64_t off, bool in) {
    for (int k = 0; k < rm->n; k++) {
        __m512 v = in && rm->m[k] ? _mm512_maskz_loadu_ps(rm->m[k], at(src, 16 * k + off)) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(d + 16 * k, rm->st[k], v);
    }
}

/* One padded row split into its two column phases: with P[X] = src[X + off]
 * (0 outside 0 <= X + off < W or when !in), d0[u] = P[2u], d1[u] = P[2u + 1];
 * d0 or d1 may be NULL (phase not read by any tap). */
static inline void prep_row2(float *d0, float *d1, const row_masks *rm, const float *src, int64_t off, bool in) {
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int k = 0; k < rm->n; k++) {
        int64_t x0 = 32 * (int64_t)k + off;
        __m512 a = in && rm->m[k] ? _mm512_maskz_loadu_ps(rm->m[k], at(src, x0)) : _mm512_setzero_ps();
        __m512 b = in && rm->mb[k] ? _mm512_maskz_loadu_ps(rm->mb[k], at(src, x0 + 16)) : _mm512_setzero_ps();
        if (d0) _mm512_mask_storeu_ps(d0 + 16 * k, rm->st[k], _mm512_permutex2var_ps(a, ev, b));
        if (d1) _mm512_mask_storeu_ps(d1 + 16 * k, rm->st[k], _mm512_permutex2var_ps(a, od, b));
    }
}

void ml_cx_prep(const prep_geom *q, const float *x, int64_t sstride, int ns, int64_t C, int64_t H, int64_t W,
                 float *dst) {
    const int sy = q->sy, sx = q->sx;
    const int64_t Hq = q->Hq, Wq = q->Wq;
    row_masks rm;
    bool vec = (sx == 1 || sx == 2) && cdiv(Wq, 16) <= MAX_CHUNKS;
    if (vec) row_masks_init(&rm, sx, Wq, -q->pl, W);
    for (int64_t c = 0; c < C; c++)
        for (int j = 0; j < q->nS; j++) {
            float *dc = dst + c * q->cplane + (int64_t)j * Hq * Wq;
            const float *xs = x + j * sstride + c * H * W;
            /* padded row Y = v sy + ry of phase row (ry, v) reads input row Y - pt */
            int ry = 0;
            int64_t v = 0;
            for (int64_t Y = 0; Y < Hq * sy; Y++, ry = ry + 1 == sy ? (v++, 0) : ry + 1) {
                int64_t iy = Y - q->pt;
                bool in = j < ns && iy >= 0 && iy < H;
                const float *src = in ? xs + iy * W : xs;
                float *drow = dc + ry * sx * q->phplane + v * Wq; /* phase (ry, 0) */
                if (vec && sx == 1) {
                    if (q->used >> (ry * sx) & 1) prep_row1(drow, &rm, src, -q->pl, in);
                } else if (vec) {
                    bool u0 = q->used >> (ry * sx) & 1, u1 = q->used >> (ry * sx + 1) & 1;
                    if (u0 || u1) prep_row2(u0 ? drow : NULL, u1 ? drow + q->phplane : NULL, &rm, src, -q->pl, in);
                } else {
                    for (int rx = 0; rx < sx; rx++) {
                        if (!(q->used >> (ry * sx + rx) & 1)) continue;
                        float *d = drow + rx * q->phplane;
                        for (int64_t u = 0; u < Wq; u++) {
                            int64_t ix = u * sx + rx - q->pl;
                            d[u] = in && ix >= 0 && ix < W ? src[ix] : 0.0f;
                        }
                    }
                }
            }
        }
}


int ml_cx_scratch_get(scratch *s, int threads, const int64_t *counts, const int64_t *extra, int nbufs,
                       float **ptrs /* [threads][nbufs] */) {
    size_t per = 0;
    for (int i = 0; i < nbufs; i++) per += (size_t)((counts[i] + extra[i] + 15) / 16 * 16);
    s->bytes = sizeof(float) * per * (size_t)threads;
    s->base = ml_alloc(s->bytes);
    if (!s->base) return -1;
    for (int t = 0; t < threads; t++) {
        float *p = s->base + per * (size_t)t;
        for (int i = 0; i < nbufs; i++) {
            ptrs[t * nbufs + i] = p;
            size_t n = (size_t)((counts[i] + extra[i] + 15) / 16 * 16);
            /* all of it: phases no tap reads are never written by prep, and
             * partial tiles may read a few floats into them */
            memset(p, 0, sizeof(float) * n);
            p += n;
        }
    }
    return 0;
}

int ml_cx_pick_threads(int64_t items) {
    int t = omp_get_max_threads();
    if (t > items) t = (int)(items > 0 ? items : 1);
    return t < 1 ? 1 : t;
}

/* (the copy into the padded buffer otherwise waits on memory: ~10% of an inference) */
int64_t ml_cx_sample_run(int64_t items, int64_t chunks, int threads) {
    return chunks == 1 ? imax(1, items / (4 * (int64_t)threads)) : 1;
}

void ml_cx_prefetch_l2(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) _mm_prefetch((const char *)(p + i), _MM_HINT_T1);
}

int64_t ml_cx_row_chunks(int64_t N, int64_t rows, int threads) {
    if (threads <= 1 || N >= 4 * threads) return 1;
    return imax(1, imin(rows, cdiv(4 * threads, N)));
}

/* ---------------------------------------------------------------- handles */
bool ml_conv_avx512_handles(const ml_conv_geom *g, int which) {
    /* the weight gradient keeps 16 output channels in the lanes: a group
     * must fill at least half of them (forward and input gradient have the
     * pixel-lane tile for few channels) */
    if (which == 2 && g->Og < 8) return false;
    if (g->kh * g->kw > MAX_TAPS || (int64_t)g->sh * g->sw > MAX_PHASES) return false;
    /* 32-bit tap offsets and sane per-thread buffers */
    int64_t Hp = g->H + 2 * (int64_t)g->ph + 2 * g->dh * g->kh, Wp = g->W + 2 * (int64_t)g->pw + 2 * g->dw * g->kw;
    if ((Hp + 2) * (Wp + 2) * 4 > ((int64_t)1 << 30)) return false;
    if (g->C * (Hp + 2) * (Wp + 2) > ((int64_t)1 << 28) || g->O * (Hp + 2) * (Wp + 2) > ((int64_t)1 << 28)) return false;
    return true;
}

/* ---------------------------------------------------------------- taps of the forward */
void ml_cx_forward_taps(const ml_conv_geom *g, int nS, tap_plan *tp) {
    int64_t Hp = (g->Ho - 1) * g->sh + (g->kh - 1) * g->dh + 1, Wp = (g->Wo - 1) * g->sw + (g->kw - 1) * g->dw + 1;
    ml_cx_prep_init(&tp->q, g->sh, g->sw, g->ph, g->pw, Hp, Wp, nS);
    tp->T = (int)(g->kh * g->kw);
    tp->q.used = 0;
    for (int64_t ki = 0; ki < g->kh; ki++)
        for (int64_t kj = 0; kj < g->kw; kj++) {
            int64_t yy = ki * g->dh, xx = kj * g->dw, t = ki * g->kw + kj;
            tp->q.used |= (uint64_t)1 << ((yy % g->sh) * g->sw + xx % g->sw);
            tp->toff[t] = (int32_t)(((yy % g->sh) * g->sw + xx % g->sw) * tp->q.phplane + (yy / g->sh) * tp->q.Wq + xx / g->sw);
            tp->tidx[t] = (int32_t)t;
        }
}

#else /* no AVX-512 code generation: the im2col path is used */

bool ml_conv_avx512_handles(const ml_conv_geom *g, int which) {
    (void)g;
    (void)which;
    return false;
}

#endif
