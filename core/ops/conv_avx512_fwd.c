/* conv_avx512_fwd.c -- the direct convolution's forward pass: the register
 * tiles, the cost model that picks one per call and plane (the planner), the
 * weight relayout, and the forward itself (conv_avx512.h, docs/PERFORMANCE.md).
 *
 * Register tiles, three families:
 *  - fwd_band: 16 output channels in the lanes of a zmm; RT rows x PW pixels
 *    (RP = RT PW <= 16) x RB blocks of 16 channels, RP RB <= 28
 *    accumulators. Per input channel and tap: RB weight vectors loaded, each
 *    of the RP inputs broadcast (a memory operand of the FMA), RP RB FMAs.
 *    Stored by a 16 x 16 transpose into NCHW rows with masked stores.
 *    Tiles with RT > 1 cover whole output rows (PW = Wo): 4x4, 8x8 images.
 *  - pix_band: 16 pixels of a row in the lanes, RC channels x RR rows x VW
 *    vectors; weights broadcast, stores straight to NCHW. For few output
 *    channels and 1x1 convolutions.
 *  - edge_band: fwd_band for 3x3 with the 9 taps unrolled, leaving out the
 *    products that read padding (flags per tile).
 * Weights are re-laid out once per call (ml_cx_relayout) so that a tile reads
 * them sequentially; an optional epilogue (scale, shift, residual, ReLU per
 * output channel) runs in the store. The forward splits the work over
 * (sample, band of output rows); buffers come once per call and thread. */
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

/* ---------------------------------------------------------------- forward tile kernel */

/* The epilogue of one output channel's vector, to be stored at dst (lanes m):
 * affine map, residual, then ReLU. */
static inline __m512 epilogue(const fwd_args *a, int64_t ch, __m512 v, const float *dst, __mmask16 m) {
    if (a->scale) v = _mm512_fmadd_ps(v, _mm512_set1_ps(a->scale[ch]), _mm512_set1_ps(a->shift[ch]));
    if (a->res)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, (const float *)((uintptr_t)dst + (uintptr_t)(a->rdelta * 4))));
    if (a->relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
    return v;
}


/* A channel-lane tile (RT rows x PW pixels x RB blocks of 16 channels, at
 * pixel x0 of the band) stored into NCHW rows: each block through a 16 x 16
 * transpose, masked to the valid pixels and channels, epilogue applied. */
AI void store_channel_tile(const int RT, const int PW, const int RB, __m512 acc[16][4], const fwd_args *a, int64_t x0) {
    const int RP = RT * PW;
    int64_t nvalid = RT == 1 ? imin(PW, a->npix - x0) : (int64_t)a->rows * PW;
    __mmask16 m = lanes(nvalid);
    float *o = a->out + x0;
#pragma GCC unroll 4
    for (int b = 0; b < RB; b++) {
        int nc = a->nch - 16 * b;
        if (nc <= 0) break;
        if (nc > 16) nc = 16;
        __m512 v[16];
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) v[i] = i < RP ? acc[i][b] : _mm512_setzero_ps();
        transpose16(v);
        float *ob = o + (int64_t)16 * b * a->ostride;
        if (a->epi)
            for (int ch = 0; ch < nc; ch++) v[ch] = epilogue(a, 16 * b + ch, v[ch], ob + ch * a->ostride, m);
        for (int ch = 0; ch < nc; ch++) _mm512_mask_storeu_ps(ob + ch * a->ostride, m, v[ch]);
    }
}

AI void fwd_band(const int RT, const int PW, const int RB, const fwd_args *a) {
    const int RP = RT * PW;
    int64_t roff[4] = {0, a->Wq, 2 * a->Wq, 3 * a->Wq};
    for (int64_t x0 = 0; x0 < a->npix; x0 += PW) {
        __m512 acc[16][4];
#pragma GCC unroll 16
        for (int i = 0; i < RP; i++)
#pragma GCC unroll 4
            for (int b = 0; b < RB; b++) acc[i][b] = a->bias ? _mm512_load_ps(a->bias + 16 * b) : _mm512_setzero_ps();
        const float *xc = a->in + x0;
        const float *wp = a->w;
        for (int64_t c = 0; c < a->Cin; c++, xc += a->cplane) {
            /* one base pointer per row, the tap offset as the shared index:
             * every broadcast is then [row + 4 off + 4 q], no address arithmetic */
            const float *xr[4];
#pragma GCC unroll 4
            for (int r = 0; r < RT; r++) xr[r] = xc + roff[r];
            for (int t = 0; t < a->T; t++, wp += 16 * RB) {
                const int64_t off = a->toff[t];
                __m512 wv[4];
#pragma GCC unroll 4
                for (int b = 0; b < RB; b++) wv[b] = _mm512_load_ps(wp + 16 * b);
#pragma GCC unroll 4
                for (int r = 0; r < RT; r++)
#pragma GCC unroll 16
                    for (int q = 0; q < PW; q++) {
                        __m512 xv = _mm512_set1_ps(xr[r][off + q]);
#pragma GCC unroll 4
                        for (int b = 0; b < RB; b++) acc[r * PW + q][b] = _mm512_fmadd_ps(xv, wv[b], acc[r * PW + q][b]);
                    }
            }
        }
        store_channel_tile(RT, PW, RB, acc, a, x0);
    }
}

#define FWD_VARIANTS(X) \
    X(1,1,1) X(1,2,1) X(1,3,1) X(1,4,1) X(1,5,1) X(1,6,1) X(1,7,1) X(1,8,1) \
    X(1,9,1) X(1,10,1) X(1,11,1) X(1,12,1) X(1,13,1) X(1,14,1) X(1,15,1) X(1,16,1) \
    X(1,1,2) X(1,2,2) X(1,3,2) X(1,4,2) X(1,5,2) X(1,6,2) X(1,7,2) X(1,8,2) \
    X(1,9,2) X(1,10,2) X(1,11,2) X(1,12,2) X(1,13,2) X(1,14,2) X(1,1,3) X(1,2,3) \
    X(1,3,3) X(1,4,3) X(1,5,3) X(1,6,3) X(1,7,3) X(1,8,3) X(1,9,3) X(1,1,4) \
    X(1,2,4) X(1,3,4) X(1,4,4) X(1,5,4) X(1,6,4) X(1,7,4) X(2,2,1) X(2,2,2) \
    X(2,2,3) X(2,2,4) X(2,3,1) X(2,3,2) X(2,3,3) X(2,3,4) X(2,4,1) X(2,4,2) \
    X(2,4,3) X(2,5,1) X(2,5,2) X(2,6,1) X(2,6,2) X(2,7,1) X(2,7,2) X(2,8,1) \
    X(3,2,1) X(3,2,2) X(3,2,3) X(3,2,4) X(3,3,1) X(3,3,2) X(3,3,3) X(3,4,1) \
    X(3,4,2) X(3,5,1) X(4,2,1) X(4,2,2) X(4,2,3) X(4,3,1) X(4,3,2) X(4,4,1)

#define DEF_FWD(RT, PW, RB) \
    static void fwd_##RT##_##PW##_##RB(const fwd_args *a) { fwd_band(RT, PW, RB, a); }
FWD_VARIANTS(DEF_FWD)

/* ---------------------------------------------------------------- pixel-lane tile kernel */
/* The other register tile: 16 consecutive output pixels of a row in the lanes,
 * RC output channels x RR rows x VW vectors per row. Per input channel and
 * tap: RC weights broadcast, RR VW vectors of input loaded (masked at the
 * row's end), RC RR VW FMAs; stores go straight to NCHW rows. It suits few
 * output channels (the 3 of an image's gradient, 8-channel MoE experts) and
 * 1x1 convolutions (no transposes; contiguous rows are run as one long row).
 * Weights: [groups of RC channels][Cin][T][rc]. */
AI void pix_band(const int RR, const int VW, const int RC, const fwd_args *a) {
    for (int64_t x0 = 0; x0 < a->npix; x0 += 16 * VW) {
        __m512 acc[8][2][4];
        __mmask16 m[4];
#pragma GCC unroll 4
        for (int v = 0; v < VW; v++) m[v] = lanes(a->npix - x0 - 16 * v > 0 ? a->npix - x0 - 16 * v : 0);
#pragma GCC unroll 8
        for (int k = 0; k < RC; k++)
#pragma GCC unroll 2
            for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
                for (int v = 0; v < VW; v++) acc[k][r][v] = a->bias ? _mm512_set1_ps(a->bias[k]) : _mm512_setzero_ps();
        const float *xc = a->in + x0;
        const float *wp = a->w;
        for (int64_t c = 0; c < a->Cin; c++, xc += a->cplane) {
            const float *xr[2] = {xc, xc + a->Wq};
            for (int t = 0; t < a->T; t++, wp += RC) {
                const int64_t off = a->toff[t];
                __m512 wk[8];
#pragma GCC unroll 8
                for (int k = 0; k < RC; k++) wk[k] = _mm512_set1_ps(wp[k]);
#pragma GCC unroll 2
                for (int r = 0; r < RR; r++)
#pragma GCC unroll 4
                    for (int v = 0; v < VW; v++) {
                        __m512 xv = _mm512_maskz_loadu_ps(m[v], xr[r] + off + 16 * v);
#pragma GCC unroll 8
                        for (int k = 0; k < RC; k++) acc[k][r][v] = _mm512_fmadd_ps(wk[k], xv, acc[k][r][v]);
                    }
            }
        }
        /* fully unrolled, so that the accumulators stay in registers */
#pragma GCC unroll 8
        for (int k = 0; k < RC; k++) {
            if (k >= a->nch) break;
#pragma GCC unroll 2
            for (int r = 0; r < RR; r++) {
                if (r >= a->rows) break;
                float *o = a->out + k * a->ostride + r * a->orow + x0;
#pragma GCC unroll 4
                for (int v = 0; v < VW; v++)
                    _mm512_mask_storeu_ps(o + 16 * v, m[v], a->epi ? epilogue(a, k, acc[k][r][v], o + 16 * v, m[v]) : acc[k][r][v]);
            }
        }
    }
}

#define PIX_VARIANTS(X) \
    X(1,1,1) X(1,1,2) X(1,1,3) X(1,1,4) X(1,1,5) X(1,1,6) X(1,1,7) X(1,1,8) \
    X(1,2,1) X(1,2,2) X(1,2,3) X(1,2,4) X(1,2,5) X(1,2,6) X(1,2,7) X(1,2,8) \
    X(2,1,1) X(2,1,2) X(2,1,3) X(2,1,4) X(2,1,5) X(2,1,6) X(2,1,7) X(2,1,8) \
    X(2,2,1) X(2,2,2) X(2,2,3) X(2,2,4) X(2,2,5) X(2,2,6) \
    X(1,4,1) X(1,4,2) X(1,4,3) X(1,4,4) X(1,4,5) X(1,4,6)

#define DEF_PIX(RR, VW, RC) \
    static void pix_##RR##_##VW##_##RC(const fwd_args *a) { pix_band(RR, VW, RC, a); }
PIX_VARIANTS(DEF_PIX)

/* ---------------------------------------------------------------- 3x3 tiles that skip the padding */
/* A 3x3 convolution with padding multiplies zeros at the image border: a
 * third of the taps of a border pixel, 31% of all products at 4x4, 16% at
 * 8x8. These tiles unroll the 9 taps (slot t = ki 3 + kj, in the order of
 * their input offsets) and leave out, at compile time, the products flagged
 * as reading padding: FL bit 1 pixel 0 of each row with the left tap column,
 * bit 2 pixel PW - 1 with the right one, bit 4 row 0 of the tile with the top
 * tap row, bit 8 row RT - 1 with the bottom one. One tile per call (at
 * a->x0); with RT == 1 whole tap rows are skipped at run time (a->kilo,
 * a->kihi). Flags are set by fwd_rows only where every left-out product does
 * read padding, so the results are those of the plain tile. */
AI void edge_band(const int RT, const int PW, const int RB, const int FL, const fwd_args *a) {
    const int RP = RT * PW;
    int64_t roff[4] = {0, a->Wq, 2 * a->Wq, 3 * a->Wq};
    const int kilo = RT == 1 ? a->kilo : 0, kihi = RT == 1 ? a->kihi : 3;
    __m512 acc[16][4];
#pragma GCC unroll 16
    for (int i = 0; i < RP; i++)
#pragma GCC unroll 4
        for (int b = 0; b < RB; b++) acc[i][b] = a->bias ? _mm512_load_ps(a->bias + 16 * b) : _mm512_setzero_ps();
    const float *xc = a->in + a->x0;
    const float *wp = a->w;
    for (int64_t c = 0; c < a->Cin; c++, xc += a->cplane, wp += 9 * 16 * RB) {
        const float *xr[4];
#pragma GCC unroll 4
        for (int r = 0; r < RT; r++) xr[r] = xc + roff[r];
#pragma GCC unroll 3
        for (int ki = 0; ki < 3; ki++) {
            if (RT == 1 && (ki < kilo || ki >= kihi)) continue;
#pragma GCC unroll 3
            for (int kj = 0; kj < 3; kj++) {
                const int t = ki * 3 + kj;
                const int64_t off = a->toff[t];
                __m512 wv[4];
#pragma GCC unroll 4
                for (int b = 0; b < RB; b++) wv[b] = _mm512_load_ps(wp + 16 * (t * RB + b));
#pragma GCC unroll 4
                for (int r = 0; r < RT; r++) {
                    if ((FL & 4) && RT > 1 && r == 0 && ki == 0) continue;
                    if ((FL & 8) && RT > 1 && r == RT - 1 && ki == 2) continue;
#pragma GCC unroll 16
                    for (int q = 0; q < PW; q++) {
                        if ((FL & 1) && q == 0 && kj == 0) continue;
                        if ((FL & 2) && q == PW - 1 && kj == 2) continue;
                        __m512 xv = _mm512_set1_ps(xr[r][off + q]);
#pragma GCC unroll 4
                        for (int b = 0; b < RB; b++) acc[r * PW + q][b] = _mm512_fmadd_ps(xv, wv[b], acc[r * PW + q][b]);
                    }
                }
            }
        }
    }
    store_channel_tile(RT, PW, RB, acc, a, a->x0);
}

/* multi-row tiles (whole rows, PW == npix) with all 16 flag sets; row tiles with L and R */
#define EDGE_MULTI(X) X(4, 4, 1) X(2, 4, 1) X(2, 4, 2) X(2, 8, 1)
#define EDGE_ROW(X) \
    X(1, 16, 1) X(1, 8, 1) X(1, 8, 2) X(1, 8, 3) X(1, 4, 1) X(1, 4, 2) X(1, 4, 3) X(1, 4, 4) X(1, 12, 1) X(1, 12, 2)
#define DEF_EDGE1(RT, PW, RB, FL) \
    static void edge_##RT##_##PW##_##RB##_##FL(const fwd_args *a) { edge_band(RT, PW, RB, FL, a); }
#define DEF_EDGE4(RT, PW, RB) \
    DEF_EDGE1(RT, PW, RB, 0) DEF_EDGE1(RT, PW, RB, 1) DEF_EDGE1(RT, PW, RB, 2) DEF_EDGE1(RT, PW, RB, 3)
#define DEF_EDGE16(RT, PW, RB) \
    DEF_EDGE4(RT, PW, RB) DEF_EDGE1(RT, PW, RB, 4) DEF_EDGE1(RT, PW, RB, 5) DEF_EDGE1(RT, PW, RB, 6) \
    DEF_EDGE1(RT, PW, RB, 7) DEF_EDGE1(RT, PW, RB, 8) DEF_EDGE1(RT, PW, RB, 9) DEF_EDGE1(RT, PW, RB, 10) \
    DEF_EDGE1(RT, PW, RB, 11) DEF_EDGE1(RT, PW, RB, 12) DEF_EDGE1(RT, PW, RB, 13) DEF_EDGE1(RT, PW, RB, 14) \
    DEF_EDGE1(RT, PW, RB, 15)
EDGE_MULTI(DEF_EDGE16)
EDGE_ROW(DEF_EDGE4)

#define E4(RT, PW, RB) \
    edge_##RT##_##PW##_##RB##_0, edge_##RT##_##PW##_##RB##_1, edge_##RT##_##PW##_##RB##_2, edge_##RT##_##PW##_##RB##_3
#define ROW_EDGE16(RT, PW, RB) \
    {RT, PW, RB, {E4(RT, PW, RB), edge_##RT##_##PW##_##RB##_4, edge_##RT##_##PW##_##RB##_5, \
                  edge_##RT##_##PW##_##RB##_6, edge_##RT##_##PW##_##RB##_7, edge_##RT##_##PW##_##RB##_8, \
                  edge_##RT##_##PW##_##RB##_9, edge_##RT##_##PW##_##RB##_10, edge_##RT##_##PW##_##RB##_11, \
                  edge_##RT##_##PW##_##RB##_12, edge_##RT##_##PW##_##RB##_13, edge_##RT##_##PW##_##RB##_14, \
                  edge_##RT##_##PW##_##RB##_15}},
#define ROW_EDGE4(RT, PW, RB) {RT, PW, RB, {E4(RT, PW, RB), E4(RT, PW, RB), E4(RT, PW, RB), E4(RT, PW, RB)}},
static const edge_variant edge_variants[] = {EDGE_MULTI(ROW_EDGE16) EDGE_ROW(ROW_EDGE4)};
#define N_EDGE ((int)(sizeof edge_variants / sizeof edge_variants[0]))

static const edge_variant *edge_find(int RT, int PW, int RB) {
    for (int i = 0; i < N_EDGE; i++)
        if (edge_variants[i].RT == RT && edge_variants[i].PW == PW && edge_variants[i].RB == RB) return &edge_variants[i];
    return NULL;
}


static bool ev_y(const edge_geom *e, int ki, int64_t r) { return r >= e->vy[ki][0] && r < e->vy[ki][1]; }
static bool ev_x(const edge_geom *e, int kj, int64_t x) { return x >= e->vx[kj][0] && x < e->vx[kj][1]; }

/* ---------------------------------------------------------------- choosing a tile */
typedef struct {
    int kind; /* 0 channels in lanes (RT, PW, RB), 1 pixels in lanes (RR, VW, RC) */
    int a, b, c;
    fwd_fn fn;
} fwd_variant;
#define ROW_FWD(RT, PW, RB) {0, RT, PW, RB, fwd_##RT##_##PW##_##RB},
#define ROW_PIX(RR, VW, RC) {1, RR, VW, RC, pix_##RR##_##VW##_##RC},
static const fwd_variant fwd_variants[] = {FWD_VARIANTS(ROW_FWD) PIX_VARIANTS(ROW_PIX)};
#define N_FWD ((int)(sizeof fwd_variants / sizeof fwd_variants[0]))

static fwd_fn fwd_find(int kind, int a, int b, int c) {
    for (int i = 0; i < N_FWD; i++)
        if (fwd_variants[i].kind == kind && fwd_variants[i].a == a && fwd_variants[i].b == b && fwd_variants[i].c == c)
            return fwd_variants[i].fn;
    return NULL;
}



/* Flags of an edge tile at band row r (RT rows, rows valid) and pixel x0. */
static int edge_flags(const edge_geom *e, int RT, int PW, int rows, int64_t r, int64_t x0, int64_t npix) {
    int fl = 0;
    if (!ev_x(e, 0, x0)) fl |= 1;
    if (x0 + PW - 1 >= npix || !ev_x(e, 2, x0 + PW - 1)) fl |= 2;
    if (RT > 1) {
        if (!ev_y(e, 0, r)) fl |= 4;
        if (rows < RT || !ev_y(e, 2, r + RT - 1)) fl |= 8;
    }
    return fl;
}

/* Tap rows (RT == 1 tiles) to compute for output row r: those reading data. */
static void edge_rows(const edge_geom *e, int64_t r, int *lo, int *hi) {
    *lo = 0, *hi = 3;
    while (*lo < 3 && !ev_y(e, *lo, r)) (*lo)++;
    while (*hi > *lo && !ev_y(e, *hi - 1, r)) (*hi)--;
}

/* Fraction of the products an edge tiling computes (the rest read padding). */
static double edge_fraction(const edge_geom *e, int RT, int PW, int64_t rows, int64_t npix) {
    double done = 0, all = 0;
    for (int64_t r = 0; r < rows; r += RT) {
        int nr = (int)imin(RT, rows - r);
        for (int64_t x0 = 0; x0 < npix; x0 += PW) {
            int fl = edge_flags(e, RT, PW, nr, r, x0, npix);
            for (int i = 0; i < RT; i++) {
                int lo = 0, hi = 3;
                if (RT == 1) edge_rows(e, r, &lo, &hi);
                if ((fl & 4) && i == 0) lo = lo > 1 ? lo : 1;
                if ((fl & 8) && i == RT - 1) hi = hi < 2 ? hi : 2;
                int act = hi > lo ? hi - lo : 0;
                done += act * (3.0 * PW - !!(fl & 1) - !!(fl & 2));
                all += 9.0 * PW;
            }
        }
    }
    return all > 0 ? done / all : 1;
}

/* MOELAB_CONV_TILE=...:noedge keeps the forced tile's padded products (tuning) */
static bool env_tile_edge_off(void) {
    const char *e = ml_conv_env(ML_ENV_CONV_TILE);
    return e && strstr(e, "noedge");
}

/* Cost of a variant for the whole plane, or a negative number when it does not apply. */
static double variant_cost(const fwd_variant *v, int64_t rows, int64_t npix, int64_t Cout, int64_t K) {
    if (v->kind == 0) {
        int RT = v->a, PW = v->b, RB = v->c, RP = RT * PW;
        int nb = (int)cdiv(Cout, 16), rem = nb % RB;
        if (RT > 1 && PW != npix) return -1;
        if (RB > nb || (RT == 1 && PW > npix && PW > 1)) return -1;
        if (rem && !fwd_find(0, RT, PW, rem)) return -1;
        double per = (double)(nb / RB) * ((double)K * step_cost(RP * RB, RP, RB) + 40 + 90.0 * RB);
        if (rem) per += (double)K * step_cost(RP * rem, RP, rem) + 40 + 90.0 * rem;
        /* weights are streamed from L2 once per tile */
        per += (double)K * 0.25 * nb;
        return (double)cdiv(rows, RT) * (double)cdiv(npix, PW) * per;
    }
    int RR = v->a, VW = v->b, RC = v->c;
    int64_t groups = cdiv(Cout, RC), rc = Cout - (groups - 1) * RC;
    if (RC > Cout || (RR > 1 && rows < RR) || (VW > 1 && 16 * (VW - 1) >= npix)) return -1;
    if (rc != RC && !fwd_find(1, RR, VW, (int)rc)) return -1;
    double per = (double)(groups - 1) * ((double)K * step_cost(RC * RR * VW, RC, RR * VW) + 20 + 2.0 * RC * RR * VW);
    per += (double)K * step_cost((int)rc * RR * VW, (int)rc, RR * VW) + 20 + 2.0 * (double)rc * RR * VW;
    return (double)cdiv(rows, RR) * (double)cdiv(npix, 16 * VW) * per;
}

/* Test hook (conv_internal.h): force a tile family where it applies. */
static _Atomic int forced_kind = -1;
static _Atomic int64_t kind_counts[3];
void ml_conv_avx512_force_kind(int kind) { atomic_store(&forced_kind, kind); }
void ml_conv_avx512_kind_counts(int64_t counts[3]) {
    for (int i = 0; i < 3; i++) counts[i] = atomic_load(&kind_counts[i]);
}

void ml_cx_fwd_choose(int64_t rows, int64_t npix, int64_t Wq, int64_t Cout, int64_t K, const edge_geom *eg,
                       fwd_plan *p) {
    p->flat = Wq == npix && rows > 1;
    if (p->flat) npix *= rows, rows = 1;
    p->eg.on = false;
    double best = -1;
    const fwd_variant *pick = &fwd_variants[0];
    bool edge = false;
    int force = atomic_load(&forced_kind);
    if (force == 2 && !(eg && eg->on && !p->flat)) force = -1; /* no edge tiles for this plan */
    for (int i = 0; i < N_FWD; i++) {
        const fwd_variant *v = &fwd_variants[i];
        double cost = variant_cost(v, rows, npix, Cout, K);
        if (force >= 0 && v->kind != (force == 2 ? 0 : force)) continue;
        if (cost >= 0 && force != 2 && (best < 0 || cost < best)) best = cost, pick = v, edge = false;
        /* the same tile leaving out the products with padding */
        if (cost >= 0 && (force < 0 || force == 2) && eg && eg->on && !p->flat && v->kind == 0 &&
            edge_find(v->a, v->b, v->c)) {
            int rem = (int)(cdiv(Cout, 16) % v->c);
            if (rem && !edge_find(v->a, v->b, rem)) continue;
            /* the products left out, against the unrolled taps' own cost
             * (their offsets do not all fit in registers): measured about 14%
             * on the W1/W2 shapes, so these tiles pay where more than ~12%
             * of the products read padding (8x8 and smaller) */
            double f = edge_fraction(eg, v->a, v->b, rows, npix);
            cost *= (0.03 + 0.97 * f) * 1.14;
            if (best < 0 || cost < best) best = cost, pick = v, edge = true;
        }
    }
    const char *e = ml_conv_env(ML_ENV_CONV_TILE);
    int ea, eb, ec;
    char kc;
    if (e && sscanf(e, "%c:%dx%dx%d", &kc, &ea, &eb, &ec) == 4)
        for (int i = 0; i < N_FWD; i++) {
            const fwd_variant *v = &fwd_variants[i];
            if (v->kind == (kc == 'p') && v->a == ea && v->b == eb && v->c == ec && variant_cost(v, rows, npix, Cout, K) >= 0) {
                pick = v;
                int rem = (int)(cdiv(Cout, 16) % v->c);
                edge = eg && eg->on && !p->flat && v->kind == 0 && edge_find(v->a, v->b, v->c) &&
                       (!rem || edge_find(v->a, v->b, rem)) && !env_tile_edge_off();
            }
        }
    p->kind = pick->kind, p->a = pick->a, p->b = pick->b, p->c = pick->c;
    p->full = pick->fn;
    if (edge) {
        p->kind = 2;
        p->eg = *eg;
        p->efull = edge_find(p->a, p->b, p->c);
        int rem = (int)(cdiv(Cout, 16) % p->c);
        p->elast = rem ? edge_find(p->a, p->b, rem) : p->efull;
    }
    atomic_fetch_add(&kind_counts[p->kind], 1);
    if (ml_conv_env(ML_ENV_CONV_VERBOSE))
        fprintf(stderr, "conv plan: %" PRId64 " rows x %" PRId64 " px, %" PRId64 " channels, K %" PRId64 ": %s %dx%dx%d%s\n",
                rows, npix, Cout, K, p->kind == 1 ? "pixel-lane" : p->kind == 2 ? "edge" : "channel-lane", p->a, p->b,
                p->c, p->flat ? " (flat)" : "");
    if (p->kind == 0 || p->kind == 2) {
        p->width = 16 * p->c;
        int rem = (int)(cdiv(Cout, 16) % p->c);
        p->last = rem ? fwd_find(0, p->a, p->b, rem) : p->full;
    } else {
        p->width = p->c;
        int rem = (int)(Cout % p->c);
        p->last = rem ? fwd_find(1, p->a, p->b, rem) : p->full;
    }
}

/* Weights for one plan, written as [groups][Cin][T][gw]: a group of `width`
 * output channels (the last one narrower), each group's width padded with
 * zeros to a multiple of 16 for the channel-lane tiles. */
void ml_cx_relayout(const fwd_plan *p, const float *src, int64_t so, int64_t sc, const int32_t *tidx, int T,
                     int64_t Cout, int64_t Cin, float *dst) {
    int64_t ngroups = cdiv(Cout, p->width);
    /* in parallel over (group, input channel) when it is big enough to matter */
    #pragma omp parallel for collapse(2) schedule(static) if (Cout * Cin * T >= 32768)
    for (int64_t gi = 0; gi < ngroups; gi++)
        for (int64_t c = 0; c < Cin; c++) {
            int64_t g0 = gi * p->width, gw = imin(p->width, Cout - g0);
            if (p->kind != 1) gw = cdiv(gw, 16) * 16;
            float *d = dst + g0 * Cin * T + c * T * gw;
            for (int t = 0; t < T; t++)
                for (int64_t l = 0; l < gw; l++) {
                    int64_t o = g0 + l;
                    *d++ = o < Cout ? src[o * so + c * sc + tidx[t]] : 0.0f;
                }
        }
}

/* rounded up so that the next one stays 64-byte aligned */
int64_t ml_cx_relayout_size(const fwd_plan *p, int64_t Cout, int64_t Cin, int T) {
    return cdiv((p->kind != 1 ? cdiv(Cout, 16) * 16 : Cout) * Cin * T, 16) * 16;
}


void ml_cx_fwd_rows(const fwd_plan *p, const float *in, int64_t cplane, int64_t Wq, const int32_t *toff, int T,
                     int64_t Cin, const float *wr, const float *bias, float *out, int64_t ostride, int64_t orow,
                     int64_t npix, int64_t Cout, int64_t r0, int64_t r1, const fwd_epi *epi) {
    fwd_args a = {.cplane = cplane, .Wq = Wq, .toff = toff, .T = T, .Cin = Cin, .ostride = ostride, .orow = orow,
                  .npix = npix, .relu = epi && epi->relu};
    a.res = epi && epi->res;
    a.rdelta = a.res ? (int64_t)((intptr_t)epi->res - (intptr_t)out) / (int64_t)sizeof(float) : 0;
    a.epi = a.relu || a.res || (epi && epi->scale);
    int step = p->a; /* rows per band: RT or RR */
    if (p->flat) {
        /* rows contiguous in input (Wq == npix) and output (orow == npix) */
        a.npix = npix * (r1 - r0);
        a.orow = a.npix;
        in += r0 * Wq;
        out += r0 * orow;
        r1 -= r0;
        r0 = 0;
        step = 1;
    }
    for (int64_t g0 = 0; g0 < Cout; g0 += p->width) {
        int64_t gw = imin(p->width, Cout - g0);
        fwd_fn fn = gw == p->width ? p->full : p->last;
        a.w = wr + g0 * Cin * T;
        a.bias = bias ? bias + g0 : NULL;
        a.nch = (int)gw;
        a.scale = epi && epi->scale ? epi->scale + g0 : NULL;
        a.shift = a.scale ? epi->shift + g0 : NULL;
        if (p->kind == 2) {
            const edge_variant *ev = gw == p->width ? p->efull : p->elast;
            const int RT = p->a, PW = p->b;
            for (int64_t r = r0; r < r1; r += RT) {
                a.rows = (int)imin(RT, r1 - r);
                a.in = in + r * Wq;
                a.out = out + g0 * ostride + r * a.orow;
                edge_rows(&p->eg, r, &a.kilo, &a.kihi);
                for (a.x0 = 0; a.x0 < npix; a.x0 += PW) ev->fn[edge_flags(&p->eg, RT, PW, a.rows, r, a.x0, npix)](&a);
            }
            continue;
        }
        for (int64_t r = p->flat ? 0 : r0; r < r1; r += step) {
            a.rows = (int)imin(step, r1 - r);
            a.in = in + r * Wq;
            a.out = out + g0 * ostride + r * a.orow;
            fn(&a);
            if (p->flat) break;
        }
    }
}

/* ---------------------------------------------------------------- forward */


int ml_conv_avx512_forward(const ml_conv_geom *g, const float *x, const float *w, const float *b, float *y) {
    return ml_conv_avx512_forward_affine(g, x, w, b, NULL, NULL, NULL, false, y);
}

int ml_conv_avx512_forward_affine(const ml_conv_geom *g, const float *x, const float *w, const float *b,
                                  const float *scale, const float *shift, const float *res, bool relu, float *y) {
    if (g->N == 0) return 0; /* an empty batch: nothing to compute (and no work to split) */
    tap_plan *tp = malloc(sizeof *tp);
    if (!tp) return ml_failc("conv2d: out of memory");
    ml_cx_forward_taps(g, 1, tp);
    const prep_geom *q = &tp->q;
    int T = tp->T;
    fwd_plan p;
    edge_geom eg = {.on = g->kh == 3 && g->kw == 3};
    for (int k = 0; k < 3 && eg.on; k++) {
        /* tap row k reads padded row r sh + k dh: data for pt <= . < pt + H */
        eg.vy[k][0] = imax(0, div_ceil(g->ph - k * g->dh, g->sh));
        eg.vy[k][1] = imin(g->Ho, div_ceil(g->ph + g->H - k * g->dh, g->sh));
        eg.vx[k][0] = imax(0, div_ceil(g->pw - k * g->dw, g->sw));
        eg.vx[k][1] = imin(g->Wo, div_ceil(g->pw + g->W - k * g->dw, g->sw));
    }
    ml_cx_fwd_choose(g->Ho, g->Wo, q->Wq, g->Og, g->Cg * T, &eg, &p);
    int64_t wper = ml_cx_relayout_size(&p, g->Og, g->Cg, T), bper = cdiv(g->Og, 16) * 16;
    int64_t wsz = g->groups * wper, bsz = b ? g->groups * bper : 0;
    float *wr = ml_alloc(sizeof(float) * (size_t)(wsz + bsz));
    if (!wr) {
        free(tp);
        return -1;
    }
    float *br = b ? wr + wsz : NULL;
    for (int gi = 0; gi < g->groups; gi++) {
        ml_cx_relayout(&p, w + gi * g->Og * g->Cg * T, g->Cg * T, T, tp->tidx, T, g->Og, g->Cg, wr + gi * wper);
        if (b)
            for (int64_t o = 0; o < bper; o++) br[gi * bper + o] = o < g->Og ? b[gi * g->Og + o] : 0.0f;
    }
    int threads0 = omp_get_max_threads();
    int64_t chunks = ml_cx_row_chunks(g->N, g->Ho, threads0), items = g->N * chunks;
    int threads = ml_cx_pick_threads(items);
    int64_t xcount = g->C * q->cplane;
    scratch s;
    float *bufs[256];
    if (threads > 256) threads = 256;
    int64_t xextra = SLACK + 4 * q->Wq;
    if (ml_cx_scratch_get(&s, threads, &xcount, &xextra, 1, bufs)) {
        ml_free(wr, sizeof(float) * (size_t)(wsz + bsz));
        free(tp);
        return -1;
    }
    int64_t rows_per = cdiv(g->Ho, chunks), run = ml_cx_sample_run(items, chunks, threads), xn = g->C * g->H * g->W;
    #pragma omp parallel num_threads(threads)
    {
        float *xb = bufs[omp_get_thread_num()];
        int64_t have = -1;
        #pragma omp for schedule(dynamic, run)
        for (int64_t it = 0; it < items; it++) {
            if (ml_interrupt_pending()) continue;
            int64_t n = it / chunks, ch = it % chunks;
            int64_t r0 = ch * rows_per, r1 = imin(g->Ho, r0 + rows_per);
            if (r0 >= r1) continue;
            if (have != n) {
                ml_cx_prep(q, x + n * xn, 0, 1, g->C, g->H, g->W, xb);
                have = n;
                if (chunks == 1 && (it + 1) % run && n + 1 < g->N) ml_cx_prefetch_l2(x + (n + 1) * xn, xn);
            }
            for (int gi = 0; gi < g->groups; gi++) {
                fwd_epi epi = {scale ? scale + gi * g->Og : NULL, scale ? shift + gi * g->Og : NULL, relu,
                               res ? res + (n * g->O + gi * g->Og) * g->P : NULL};
                ml_cx_fwd_rows(&p, xb + gi * g->Cg * q->cplane, q->cplane, q->Wq, tp->toff, T, g->Cg, wr + gi * wper,
                         br ? br + gi * bper : NULL, y + (n * g->O + gi * g->Og) * g->P, g->P, g->Wo, g->Wo, g->Og, r0, r1,
                         &epi);
            }
        }
    }
    ml_free(s.base, s.bytes);
    ml_free(wr, sizeof(float) * (size_t)(wsz + bsz));
    free(tp);
    return ml_interrupted() ? -1 : 0;
}


#else /* no AVX-512 code generation: the im2col path is used */

void ml_conv_avx512_force_kind(int kind) { (void)kind; }
void ml_conv_avx512_kind_counts(int64_t counts[3]) { counts[0] = counts[1] = counts[2] = 0; }
int ml_conv_avx512_forward(const ml_conv_geom *g, const float *x, const float *w, const float *b, float *y) {
    (void)g, (void)x, (void)w, (void)b, (void)y;
    return -1;
}
int ml_conv_avx512_forward_affine(const ml_conv_geom *g, const float *x, const float *w, const float *b,
                                  const float *scale, const float *shift, const float *res, bool relu, float *y) {
    (void)g, (void)x, (void)w, (void)b, (void)scale, (void)shift, (void)res, (void)relu, (void)y;
    return -1;
}

#endif
