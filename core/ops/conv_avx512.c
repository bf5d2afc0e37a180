/* conv_avx512.c -- direct 2-d convolution with AVX-512: forward, input
 * gradient and weight gradient, without im2col. docs/PERFORMANCE.md has the
 * design and the figures.
 *
 * Built with AVX-512 code generation for this file only (CMakeLists.txt);
 * conv.c calls in here only after checking the CPU (ml_conv_direct_available)
 * and the geometry (ml_conv_avx512_handles).
 *
 * Prepared input. Each sample's input (or a block of nS samples) is copied
 * once into a zero-bordered buffer, split into sy x sx phases for a strided
 * convolution so that every tap reads consecutive floats:
 *     xq [C][sy*sx phases][nS][Hq][Wq],  padded pixel (Y, X) of sample j is
 *     phase (Y % sy, X % sx), row Y / sy, column X / sx.
 * Output pixel (oy, ox) with tap (ki, kj) reads padded (oy sy + ki dh,
 * ox sx + kj dw): phase ((ki dh) % sy, (kj dw) % sx) at row oy + ki dh / sy,
 * column ox + kj dw / sx. So a tap is one offset `toff[t]` from the pixel's
 * base oy Wq + ox, and consecutive output pixels read consecutive floats:
 * stride, padding and dilation only change the offsets.
 *
 * Register tiles, three families (the cost model, step_cost, picks one per
 * call and plane):
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
 * Weights are re-laid out once per call (relayout) so that a tile reads them
 * sequentially; an optional epilogue (scale, shift, ReLU per output channel)
 * runs in the store.
 *
 * Input gradient. gx = "transposed convolution" of gy: for input row phase
 * py (iy = py + sy a) and column phase px only the taps with
 * (py + ph - ki dh) % sy == 0 contribute, and each reads gy at row
 * a + (py + ph - ki dh) / sy. So each phase is a stride-1 correlation of a
 * zero-padded gy with a tap subset of the (channel-transposed) weights: the
 * forward tiles again, writing to a per-phase buffer that is interleaved
 * into gx (or straight into gx when the stride is 1).
 *
 * Weight gradient. gw[o][c,t] = sum over samples and pixels of
 * gy[o][p] x[c, t](p). Accumulators are R input channels sharing a tap x RB
 * blocks of 16 output channels; per output pixel RB vectors of the
 * transposed gy (gyT[p][o]) are loaded and R input values broadcast, over
 * the tap's valid output region only. Samples are processed in blocks of nS
 * (stacked in the prepared buffer) so that a pass has enough pixels even at
 * 4x4; every thread sums into its own partial, reduced at the end.
 *
 * Work is split over (sample, band of output rows) with OpenMP; buffers are
 * allocated once per call, per thread (ml_alloc); nothing is allocated per
 * tile. */
#include "conv_internal.h"

#if defined(__AVX512F__)

#include <immintrin.h>
#include <inttypes.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../tensor.h"
#include "../memory.h"

#define AI static inline __attribute__((always_inline))
#define SLACK 64 /* floats after a prepared buffer: partial tiles read up to 15 past a row */
#define MAX_TAPS 4096

static int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
/* floor and ceiling division for possibly negative a, b > 0 */
static int64_t fdiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static int64_t cdiv_any(int64_t a, int64_t b) { return -fdiv(-a, b); }

/* ---------------------------------------------------------------- 16 x 16 transpose */
AI void transpose16(__m512 r[16]) {
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        u[4 * i + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    /* u[4q + j] holds element 4L + j of rows 4q..4q+3 in 128-bit lane L */
    for (int j = 0; j < 4; j++) {
        __m512 a = _mm512_shuffle_f32x4(u[j], u[j + 4], 0x88);      /* e j, j+8: rows 0-3 | 4-7 */
        __m512 b = _mm512_shuffle_f32x4(u[j], u[j + 4], 0xdd);      /* e j+4, j+12 */
        __m512 c = _mm512_shuffle_f32x4(u[j + 8], u[j + 12], 0x88); /* rows 8-11 | 12-15 */
        __m512 d = _mm512_shuffle_f32x4(u[j + 8], u[j + 12], 0xdd);
        r[j] = _mm512_shuffle_f32x4(a, c, 0x88);
        r[j + 8] = _mm512_shuffle_f32x4(a, c, 0xdd);
        r[j + 4] = _mm512_shuffle_f32x4(b, d, 0x88);
        r[j + 12] = _mm512_shuffle_f32x4(b, d, 0xdd);
    }
}

static __mmask16 lanes(int64_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u); }

/* ---------------------------------------------------------------- forward tile kernel */
typedef struct {
    const float *in;     /* prepared input, first channel, pixel (row 0 of the band, 0) */
    int64_t cplane;      /* floats between input channels */
    int64_t Wq;          /* floats between input rows */
    const int32_t *toff; /* T tap offsets */
    int T;
    int64_t Cin;
    const float *w;      /* [Cin][T][RB][16] */
    const float *bias;   /* [RB * 16] or NULL */
    float *out;          /* first output channel, pixel (row 0 of the band, 0) */
    int64_t ostride;     /* floats between output channels */
    int64_t orow;        /* floats between output rows (pixel lanes; channel lanes need orow == npix) */
    int64_t npix;        /* output pixels per row; == PW when RT > 1 (rows are contiguous) */
    int rows;            /* valid rows of the band, <= RT */
    int nch;             /* valid output channels, <= RB * 16 */
    int64_t x0;          /* edge kernels: the tile's first pixel */
    int kilo, kihi;      /* edge kernels with RT == 1: the tap rows to compute */
    const float *scale, *shift; /* epilogue (optional): out = act(out scale[o] + shift[o] [+ res]) per output channel */
    bool relu, epi;             /* epi: some epilogue at all */
    bool res;                   /* a residual is added before the activation, at out + rdelta */
    int64_t rdelta;
} fwd_args;

/* The epilogue of one output channel's vector, to be stored at dst (lanes m):
 * affine map, residual, then ReLU. */
static inline __m512 epilogue(const fwd_args *a, int64_t ch, __m512 v, const float *dst, __mmask16 m) {
    if (a->scale) v = _mm512_fmadd_ps(v, _mm512_set1_ps(a->scale[ch]), _mm512_set1_ps(a->shift[ch]));
    if (a->res)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, (const float *)((uintptr_t)dst + (uintptr_t)(a->rdelta * 4))));
    if (a->relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
    return v;
}

typedef void (*fwd_fn)(const fwd_args *);

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
    int64_t nvalid = RT == 1 ? imin(PW, a->npix - a->x0) : (int64_t)a->rows * PW;
    __mmask16 m = lanes(nvalid);
    float *o = a->out + a->x0;
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

typedef struct {
    int RT, PW, RB;
    fwd_fn fn[16]; /* by flags */
} edge_variant;
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

/* For a 3x3 plan: output positions where each tap row / column reads data
 * (not padding): tap row ki is valid for output rows vy[ki][0] <= r < vy[ki][1]. */
typedef struct {
    bool on;
    int64_t vy[3][2], vx[3][2];
} edge_geom;

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

/* Estimated cycles of one step (one input channel and tap) of a tile with
 * `fma` FMAs, `bc` broadcasts and `vec` vector loads: FMAs at one zmm per
 * cycle, loads at about 3 per cycle (a zmm load counts twice), and at least
 * the FMA latency (every accumulator is updated once per step). */
static double step_cost(int fma, int bc, int vec) {
    double ld = (bc + 2.0 * vec) / 3.0, c = fma > ld ? fma : ld;
    return c > 4.0 ? c : 4.0;
}

/* Plan of one "stride-1 correlation" over the prepared input: output rows x
 * npix pixels, Cout channels, K steps (input channels x taps) per tile. */
typedef struct {
    int kind, a, b, c;  /* the variant of the full groups; kind 2: edge tiles (RT, PW, RB) */
    int64_t width;      /* output channels per group: RB 16 or RC */
    fwd_fn full, last;  /* for the full groups and the last, narrower one */
    const edge_variant *efull, *elast; /* kind 2 */
    edge_geom eg;       /* kind 2: where the taps read padding */
    bool flat;          /* input and output rows are contiguous: run rows as one long row */
} fwd_plan;

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

static bool env_tile_edge_off(void);
static const char *env_tile(void) {
    static const char *v;
    static int done;
    if (!done) {
        v = getenv("MOELAB_CONV_TILE"); /* "c:RTxPWxRB" or "p:RRxVWxRC", for tuning */
        done = 1;
    }
    return v;
}

/* MOELAB_CONV_TILE=...:noedge keeps the forced tile's padded products (tuning) */
static bool env_tile_edge_off(void) {
    const char *e = env_tile();
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

/* eg (optional): a 3x3 convolution whose taps are in offset order, with the
 * output positions where each tap row and column reads data. */
static void fwd_choose(int64_t rows, int64_t npix, int64_t Wq, int64_t Cout, int64_t K, const edge_geom *eg,
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
    const char *e = env_tile();
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
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("MOELAB_CONV_VERBOSE") != NULL;
    if (verbose)
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

/* Weights for one plan: out channel o, in channel c, tap t read as
 * src[o * so + c * sc + tidx[t]]; written as [groups][Cin][T][gw], a group of
 * `width` output channels (the last one narrower), each group's width padded
 * with zeros to a multiple of 16 for the channel-lane tiles. */
static void relayout(const fwd_plan *p, const float *src, int64_t so, int64_t sc, const int32_t *tidx, int T,
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

/* Floats of the relayout, rounded up so that the next one stays 64-byte aligned. */
static int64_t relayout_size(const fwd_plan *p, int64_t Cout, int64_t Cin, int T) {
    return cdiv((p->kind != 1 ? cdiv(Cout, 16) * 16 : Cout) * Cin * T, 16) * 16;
}

/* Runs a plan over output rows [r0, r1): in/out point at row 0 of channel 0;
 * wr is the relayout, bias (optional) has the output channels padded to 16. */
typedef struct {
    const float *scale, *shift; /* [Cout] each, or NULL */
    bool relu;
    const float *res; /* residual laid out as out (NULL: none) */
} fwd_epi;

static void fwd_rows(const fwd_plan *p, const float *in, int64_t cplane, int64_t Wq, const int32_t *toff, int T,
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

/* ---------------------------------------------------------------- preparing inputs */
typedef struct {
    int sy, sx;         /* phases */
    int pt, pl;         /* zero rows / columns before the data */
    int64_t Hq, Wq;     /* rows and columns of a phase plane */
    int nS;             /* samples stacked per phase */
    int64_t phplane;    /* nS Hq Wq */
    int64_t cplane;     /* sy sx phplane */
    uint64_t used;      /* phases some tap reads (bit ry sx + rx); the others are left unwritten */
} prep_geom;

static void prep_init(prep_geom *q, int sy, int sx, int pt, int pl, int64_t Hp, int64_t Wp, int nS) {
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

/* ns samples x[j] = x + j * sstride, each [C][H][W] -> dst [C][phases][nS][Hq][Wq].
 * Every float of the used phases is written. */
static void prep(const prep_geom *q, const float *x, int64_t sstride, int ns, int64_t C, int64_t H, int64_t W,
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

/* Per-thread scratch: nbufs zeroed buffers of counts[i] floats each, followed
 * by extra[i] floats (partial tiles and bands read past the last pixel into
 * them; their lanes are never stored). */
typedef struct {
    float *base;
    size_t bytes;
} scratch;

static int scratch_get(scratch *s, int threads, const int64_t *counts, const int64_t *extra, int nbufs,
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

static int pick_threads(int64_t items) {
    int t = omp_get_max_threads();
    if (t > items) t = (int)(items > 0 ? items : 1);
    return t < 1 ? 1 : t;
}

/* Row chunks so that there are at least about 4 work items per thread. */
/* Work items are handed out in runs of consecutive samples, so that a thread
 * knows the sample it prepares next and prefetches it into L2 while it works
 * on the current one (the copy into the padded buffer otherwise waits on
 * memory: ~10% of an inference). */
static int64_t sample_run(int64_t items, int64_t chunks, int threads) {
    return chunks == 1 ? imax(1, items / (4 * (int64_t)threads)) : 1;
}

static void prefetch_l2(const float *p, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) _mm_prefetch((const char *)(p + i), _MM_HINT_T1);
}

static int64_t row_chunks(int64_t N, int64_t rows, int threads) {
    if (threads <= 1 || N >= 4 * threads) return 1;
    return imax(1, imin(rows, cdiv(4 * threads, N)));
}

/* ---------------------------------------------------------------- handles */
#define MAX_PHASES 64

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

/* ---------------------------------------------------------------- forward */
typedef struct {
    prep_geom q;
    int T;
    int32_t toff[MAX_TAPS];
    int32_t tidx[MAX_TAPS];
} tap_plan;

/* Taps of the forward convolution in the prepared layout. */
static void forward_taps(const ml_conv_geom *g, int nS, tap_plan *tp) {
    int64_t Hp = (g->Ho - 1) * g->sh + (g->kh - 1) * g->dh + 1, Wp = (g->Wo - 1) * g->sw + (g->kw - 1) * g->dw + 1;
    prep_init(&tp->q, g->sh, g->sw, g->ph, g->pw, Hp, Wp, nS);
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

int ml_conv_avx512_forward(const ml_conv_geom *g, const float *x, const float *w, const float *b, float *y) {
    return ml_conv_avx512_forward_affine(g, x, w, b, NULL, NULL, NULL, false, y);
}

int ml_conv_avx512_forward_affine(const ml_conv_geom *g, const float *x, const float *w, const float *b,
                                  const float *scale, const float *shift, const float *res, bool relu, float *y) {
    if (g->N == 0) return 0; /* an empty batch: nothing to compute (and no work to split) */
    tap_plan *tp = malloc(sizeof *tp);
    if (!tp) return ml_failc("conv2d: out of memory");
    forward_taps(g, 1, tp);
    const prep_geom *q = &tp->q;
    int T = tp->T;
    fwd_plan p;
    edge_geom eg = {.on = g->kh == 3 && g->kw == 3};
    for (int k = 0; k < 3 && eg.on; k++) {
        /* tap row k reads padded row r sh + k dh: data for pt <= . < pt + H */
        eg.vy[k][0] = imax(0, cdiv_any(g->ph - k * g->dh, g->sh));
        eg.vy[k][1] = imin(g->Ho, cdiv_any(g->ph + g->H - k * g->dh, g->sh));
        eg.vx[k][0] = imax(0, cdiv_any(g->pw - k * g->dw, g->sw));
        eg.vx[k][1] = imin(g->Wo, cdiv_any(g->pw + g->W - k * g->dw, g->sw));
    }
    fwd_choose(g->Ho, g->Wo, q->Wq, g->Og, g->Cg * T, &eg, &p);
    int64_t wper = relayout_size(&p, g->Og, g->Cg, T), bper = cdiv(g->Og, 16) * 16;
    int64_t wsz = g->groups * wper, bsz = b ? g->groups * bper : 0;
    float *wr = ml_alloc(sizeof(float) * (size_t)(wsz + bsz));
    if (!wr) {
        free(tp);
        return -1;
    }
    float *br = b ? wr + wsz : NULL;
    for (int gi = 0; gi < g->groups; gi++) {
        relayout(&p, w + gi * g->Og * g->Cg * T, g->Cg * T, T, tp->tidx, T, g->Og, g->Cg, wr + gi * wper);
        if (b)
            for (int64_t o = 0; o < bper; o++) br[gi * bper + o] = o < g->Og ? b[gi * g->Og + o] : 0.0f;
    }
    int threads0 = omp_get_max_threads();
    int64_t chunks = row_chunks(g->N, g->Ho, threads0), items = g->N * chunks;
    int threads = pick_threads(items);
    int64_t xcount = g->C * q->cplane;
    scratch s;
    float *bufs[256];
    if (threads > 256) threads = 256;
    int64_t xextra = SLACK + 4 * q->Wq;
    if (scratch_get(&s, threads, &xcount, &xextra, 1, bufs)) {
        ml_free(wr, sizeof(float) * (size_t)(wsz + bsz));
        free(tp);
        return -1;
    }
    int64_t rows_per = cdiv(g->Ho, chunks), run = sample_run(items, chunks, threads), xn = g->C * g->H * g->W;
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
                prep(q, x + n * xn, 0, 1, g->C, g->H, g->W, xb);
                have = n;
                if (chunks == 1 && (it + 1) % run && n + 1 < g->N) prefetch_l2(x + (n + 1) * xn, xn);
            }
            for (int gi = 0; gi < g->groups; gi++) {
                fwd_epi epi = {scale ? scale + gi * g->Og : NULL, scale ? shift + gi * g->Og : NULL, relu,
                               res ? res + (n * g->O + gi * g->Og) * g->P : NULL};
                fwd_rows(&p, xb + gi * g->Cg * q->cplane, q->cplane, q->Wq, tp->toff, T, g->Cg, wr + gi * wper,
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
    for (int py = 0; py < sy; py++) {
        int64_t Ha = py < H ? cdiv(H - py, sy) : 0;
        for (int64_t ki = 0; ki < g->kh; ki++) {
            int64_t v = py + g->ph - ki * g->dh;
            if (((v % sy) + sy) % sy || Ha == 0) continue;
            int64_t ev = fdiv(v, sy);
            PT = imax(PT, -ev);
            PB = imax(PB, Ha - 1 + ev - (Ho - 1));
        }
    }
    for (int px = 0; px < sx; px++) {
        int64_t Wa = px < W ? cdiv(W - px, sx) : 0;
        for (int64_t kj = 0; kj < g->kw; kj++) {
            int64_t v = px + g->pw - kj * g->dw;
            if (((v % sx) + sx) % sx || Wa == 0) continue;
            int64_t fv = fdiv(v, sx);
            PL = imax(PL, -fv);
            PR = imax(PR, Wa - 1 + fv - (Wo - 1));
        }
    }
    prep_init(&tp->q, 1, 1, (int)PT, (int)PL, PT + Ho + PB, PL + Wo + PR, 1);
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
                    tp->toff[ntap] = (int32_t)((fdiv(v, sy) + PT) * q->Wq + fdiv(u, sx) + PL);
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
                fwd_choose(pp->Ha, pp->Wa, q->Wq, g->Cg, g->Og * pp->T, &eg, &pp->p);
                wtot += relayout_size(&pp->p, g->Cg, g->Og, pp->T);
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
                relayout(&ph[i].p, w + gi * g->Og * g->Cg * KT, KT, g->Cg * KT, tp->tidx + ph[i].toff0, ph[i].T, g->Cg,
                         g->Og, wr + gi * wtot + ph[i].woff);
    bool direct = nph == 1;
    int threads0 = omp_get_max_threads();
    int64_t chunks = row_chunks(g->N, Hamax, threads0), items = g->N * chunks;
    int threads = pick_threads(items);
    if (threads > 256) threads = 256;
    int64_t counts[2] = {g->O * q->cplane, direct ? 0 : nph * g->Cg * Hamax * Wamax};
    scratch s;
    float *bufs[512];
    int64_t extra[2] = {SLACK + 4 * q->Wq, 0};
    if (scratch_get(&s, threads, counts, extra, 2, bufs)) {
        ml_free(wr, sizeof(float) * (size_t)(wtot * g->groups + 1));
        free(tp);
        free(ph);
        return -1;
    }
    int64_t rows_per = cdiv(Hamax, chunks), tplane = Hamax * Wamax;
    int64_t run = sample_run(items, chunks, threads), yn = g->O * Ho * Wo;
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
                prep(q, gy + n * yn, 0, 1, g->O, Ho, Wo, gb);
                have = n;
                if (chunks == 1 && (it + 1) % run && n + 1 < g->N) prefetch_l2(gy + (n + 1) * yn, yn);
            }
            for (int gi = 0; gi < g->groups; gi++) {
                const float *gin = gb + gi * g->Og * q->cplane;
                float *gxs = gx + (n * g->C + gi * g->Cg) * H * W;
                const float *wg = wr + gi * wtot;
                if (direct) {
                    phase_plan *pp = &ph[0];
                    if (pp->T)
                        fwd_rows(&pp->p, gin, q->cplane, q->Wq, tp->toff + pp->toff0, pp->T, g->Og, wg + pp->woff,
                                 NULL, gxs, H * W, W, W, g->Cg, a0, a1, NULL);
                    else
                        for (int64_t c = 0; c < g->Cg; c++) memset(gxs + c * H * W + a0 * W, 0, sizeof(float) * (size_t)((a1 - a0) * W));
                    continue;
                }
                for (int i = 0; i < nph; i++) {
                    phase_plan *pp = &ph[i];
                    int64_t b1 = imin(a1, pp->Ha);
                    if (!pp->T || a0 >= b1) continue;
                    fwd_rows(&pp->p, gin, q->cplane, q->Wq, tp->toff + pp->toff0, pp->T, g->Og, wg + pp->woff, NULL,
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
    static const char *e;
    static int done;
    if (!done) e = getenv("MOELAB_CONV_WG"), done = 1; /* "RxRB", for tuning */
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
    forward_taps(g, (int)nS, tp);
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
    int64_t run = cdiv(blocks, 2 * (int64_t)pick_threads(blocks)), slices = cdiv(blocks, run);
    int threads = pick_threads(slices);
    if (threads > 256) threads = 256;
    int64_t psz = cdiv((int64_t)g->groups * K * Opad, 16) * 16;
    int64_t counts[2] = {g->C * q->cplane, nS * P * Opad};
    scratch s;
    float *bufs[512];
    int64_t *coff = malloc(sizeof(int64_t) * (size_t)K);
    int64_t extra[2] = {0, 0};
    float *parts = NULL;
    size_t pbytes = sizeof(float) * (size_t)(psz * slices);
    if (!coff || scratch_get(&s, threads, counts, extra, 2, bufs)) {
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
            vr[t][0] = imax(0, cdiv_any(g->ph - ki * g->dh, g->sh));
            vr[t][1] = imin(g->Ho, cdiv_any(g->ph + g->H - ki * g->dh, g->sh));
            vr[t][2] = imax(0, cdiv_any(g->pw - kj * g->dw, g->sw));
            vr[t][3] = imin(g->Wo, cdiv_any(g->pw + g->W - kj * g->dw, g->sw));
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
                prep(q, x + n0 * g->C * g->H * g->W, g->C * g->H * g->W, ns, g->C, g->H, g->W, xb);
                if (blk + 1 < b1) {
                    /* the next block's input and output gradient */
                    int64_t n1 = n0 + nS, ns1 = imin(nS, g->N - n1);
                    prefetch_l2(x + n1 * g->C * g->H * g->W, ns1 * g->C * g->H * g->W);
                    prefetch_l2(gy + n1 * g->O * P, ns1 * g->O * P);
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

void ml_conv_avx512_force_kind(int kind) { (void)kind; }
void ml_conv_avx512_kind_counts(int64_t counts[3]) { counts[0] = counts[1] = counts[2] = 0; }

bool ml_conv_avx512_handles(const ml_conv_geom *g, int which) {
    (void)g;
    (void)which;
    return false;
}
int ml_conv_avx512_forward(const ml_conv_geom *g, const float *x, const float *w, const float *b, float *y) {
    (void)g, (void)x, (void)w, (void)b, (void)y;
    return -1;
}
int ml_conv_avx512_forward_affine(const ml_conv_geom *g, const float *x, const float *w, const float *b,
                                  const float *scale, const float *shift, const float *res, bool relu, float *y) {
    (void)g, (void)x, (void)w, (void)b, (void)scale, (void)shift, (void)res, (void)relu, (void)y;
    return -1;
}
int ml_conv_avx512_input_grad(const ml_conv_geom *g, const float *gy, const float *w, float *gx) {
    (void)g, (void)gy, (void)w, (void)gx;
    return -1;
}
int ml_conv_avx512_weight_grad(const ml_conv_geom *g, const float *x, const float *gy, float *gw) {
    (void)g, (void)x, (void)gy, (void)gw;
    return -1;
}

#endif
