/* conv_avx2_winograd.c -- 3x3 stride-1 convolutions by Winograd's minimal
 * filtering F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional
 * Neural Networks", 2016): a 4x4 block of outputs from a 6x6 block of inputs
 * with 36 multiplications per input and output channel instead of 144,
 *
 *     Y = A^T [ (G g G^T) .* (B^T d B) ] A,
 *
 * g the 3x3 kernel, d the 6x6 input tile, Y the 4x4 output tile. Per tile
 * position e (36 of them) the sum over input channels is a matrix product
 * M_e[o][t] = sum_c U_e[o][c] V_e[c][t] over the tiles t: that is where the
 * time goes; the transforms are a few adds per value.
 *
 * AVX2 + FMA (this file is built with -mavx2 -mfma, conv.c calls in after the
 * run-time check): it runs on every x86-64 CPU of the last decade, and on
 * AVX-512 CPUs such as Zen 4, which execute a zmm FMA as two ymm halves, at
 * the same rate of floating-point operations.
 *
 * Layout: tiles in the lanes. A ymm holds one value of 8 tiles (of any
 * samples), so the transforms are plain vector adds, and the products are
 * register tiles of RC output channels x VW vectors of 8 tiles (weights
 * broadcast). Each tile's six input rows are loaded (masked at the image's
 * border) and brought into the lanes by 8 x 8 transposes; outputs go back to
 * NCHW through lane shuffles, with the epilogue (bias or scale and shift,
 * residual, ReLU) in the store.
 *
 * Work is split into blocks of TB tiles: a block's transformed input (36 x
 * Cin x TB floats) stays in L2 while every group of output channels is
 * multiplied and transformed back, so the 36 products per tile never go to
 * memory. Every output is computed by one thread: the same bits however the
 * blocks are handed out. The input gradient of a 3x3 stride-1 convolution is
 * one too (padding 2 - p, the kernel flipped, its channels swapped), so it
 * runs here as well.
 *
 * Accuracy: the transforms scale values by up to about ten and back, so the
 * result carries a few more float32 roundings than the direct sum; the error
 * relative to the output's scale is measured per layer shape in
 * docs/PERFORMANCE.md and bounded in tests/c/test_conv_winograd.c. */
#include "conv_internal.h"

#if defined(__AVX2__) && defined(__FMA__)

#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../memory.h"
#include "../parallel.h"

#define AI static inline __attribute__((always_inline))
#define WE 36 /* tile positions: 6 x 6 */
#define VL 8  /* tiles per vector */

/* ---------------------------------------------------------------- the transforms */
/* r = B^T d for one line of 6 (F(4, 3) with the points 0, +-1, +-2) */
AI void bt6(const __m256 d[6], __m256 r[6]) {
    const __m256 four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(5.0f), two = _mm256_set1_ps(2.0f);
    __m256 a = _mm256_fnmadd_ps(four, d[2], d[4]), b = _mm256_fnmadd_ps(four, d[1], d[3]);
    __m256 c = _mm256_sub_ps(d[4], d[2]), e = _mm256_mul_ps(two, _mm256_sub_ps(d[3], d[1]));
    r[0] = _mm256_fmadd_ps(four, d[0], _mm256_fnmadd_ps(five, d[2], d[4]));
    r[1] = _mm256_add_ps(a, b);
    r[2] = _mm256_sub_ps(a, b);
    r[3] = _mm256_add_ps(c, e);
    r[4] = _mm256_sub_ps(c, e);
    r[5] = _mm256_fmadd_ps(four, d[1], _mm256_fnmadd_ps(five, d[3], d[5]));
}

/* y = A^T m for one line of 6 */
AI void at6(const __m256 m[6], __m256 y[4]) {
    __m256 a = _mm256_add_ps(m[1], m[2]), b = _mm256_sub_ps(m[1], m[2]);
    __m256 c = _mm256_add_ps(m[3], m[4]), d = _mm256_sub_ps(m[3], m[4]);
    y[0] = _mm256_add_ps(_mm256_add_ps(m[0], a), c);
    y[1] = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), d, b);
    y[2] = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), c, a);
    y[3] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0f), d, b), m[5]);
}

/* r = G v for one line of 3 (G: 6 x 3, the rows 1/4 (1, 0, 0),
 * -1/6 (1, 1, 1), -1/6 (1, -1, 1), 1/24 (1, 2, 4), 1/24 (1, -2, 4), (0, 0, 1)),
 * written out: the zeros and the shared sums are not computed. */
static inline void g3(double a, double b, double c, double r[6]) {
    /* products by the reciprocals (double, then rounded to float once):
     * a division each would cost more than the rest of the transform */
    const double sixth = 1.0 / 6, q24 = 1.0 / 24;
    double ac = a + c, p = a + 4 * c, q = 2 * b;
    r[0] = 0.25 * a;
    r[1] = -(ac + b) * sixth;
    r[2] = -(ac - b) * sixth;
    r[3] = (p + q) * q24;
    r[4] = (p - q) * q24;
    r[5] = c;
}

/* U = G g G^T in double, rounded once: g[9] row-major (ki, kj), u[36] (e = 6 i + j) */
static void g_transform(const double g[9], float u[WE]) {
    double t[3][6], r[6]; /* t[k][i] = (G g)[i][k] */
    for (int k = 0; k < 3; k++) g3(g[k], g[3 + k], g[6 + k], t[k]);
    for (int i = 0; i < 6; i++) {
        g3(t[0][i], t[1][i], t[2][i], r);
        for (int j = 0; j < 6; j++) u[i * 6 + j] = (float)r[j];
    }
}

/* 8 x 8 transpose: r[i] lane j <- r[j] lane i */
AI void transpose8(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        u[4 * i + 0] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm256_shuffle_ps(t[4 * i], t[4 * i + 2], 0xee);
        u[4 * i + 2] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm256_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

/* lanes 0..n-1 of 8 set (n clamped to 0..8) */
static inline __m256i lanes8(int64_t n) {
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* ---------------------------------------------------------------- a plan */
/* One stride-1 3x3 correlation in [N][Cin][H][W] -> out [N][Cout][Ho][Wo]
 * with padding py at the top and px at the left (Ho = H + 2 py - 2). */
typedef struct {
    int64_t N, Cin, Cout, H, W, Ho, Wo;
    int py, px;
    int64_t tx, ty, tps, T; /* tiles per row, per column, per sample, in all */
    int64_t TB;             /* tiles per block: a multiple of 8 */
    int VW, RC;             /* product tile: RC output channels x VW vectors of 8 tiles */
    int64_t ngroups;        /* groups of RC output channels */
} wplan;

/* ---------------------------------------------------------------- the products */
/* m[r][8 k + l] = sum_c u[c][r] v[c][8 k + l] for r < RC, k < VW: v is
 * [Cin][TB] at the first vector, u [Cin][RC], m [RC][TB]. */
AI void wgemm(const int VW, const int RC, const float *v, int64_t TB, const float *u, int64_t Cin, float *m) {
    __m256 acc[12][4];
#pragma GCC unroll 12
    for (int r = 0; r < RC; r++)
#pragma GCC unroll 4
        for (int k = 0; k < VW; k++) acc[r][k] = _mm256_setzero_ps();
    for (int64_t c = 0; c < Cin; c++, v += TB, u += RC) {
        __m256 x[4];
#pragma GCC unroll 4
        for (int k = 0; k < VW; k++) x[k] = _mm256_load_ps(v + VL * k);
#pragma GCC unroll 12
        for (int r = 0; r < RC; r++) {
            __m256 w = _mm256_broadcast_ss(u + r);
#pragma GCC unroll 4
            for (int k = 0; k < VW; k++) acc[r][k] = _mm256_fmadd_ps(w, x[k], acc[r][k]);
        }
    }
#pragma GCC unroll 12
    for (int r = 0; r < RC; r++)
#pragma GCC unroll 4
        for (int k = 0; k < VW; k++) _mm256_store_ps(m + r * TB + VL * k, acc[r][k]);
}

typedef void (*wgemm_fn)(const float *, int64_t, const float *, int64_t, float *);
#define WGEMM_VARIANTS(X)                                                                                        \
    X(4, 1) X(4, 2) X(4, 3) X(2, 1) X(2, 2) X(2, 3) X(2, 4) X(2, 5) X(2, 6) X(1, 1) X(1, 2) X(1, 3) X(1, 4)     \
    X(1, 5) X(1, 6) X(1, 7) X(1, 8) X(1, 9) X(1, 10) X(1, 11) X(1, 12)
#define DEF_WGEMM(VW, RC)                                                                                          \
    static void wgemm_##VW##_##RC(const float *v, int64_t TB, const float *u, int64_t Cin, float *m) {              \
        wgemm(VW, RC, v, TB, u, Cin, m);                                                                           \
    }
WGEMM_VARIANTS(DEF_WGEMM)
static const struct {
    int VW, RC;
    wgemm_fn fn;
} wgemm_variants[] = {
#define ROW_WGEMM(VW, RC) {VW, RC, wgemm_##VW##_##RC},
    WGEMM_VARIANTS(ROW_WGEMM)};

static wgemm_fn wgemm_find(int VW, int RC) {
    for (size_t i = 0; i < sizeof wgemm_variants / sizeof wgemm_variants[0]; i++)
        if (wgemm_variants[i].VW == VW && wgemm_variants[i].RC == RC) return wgemm_variants[i].fn;
    return NULL;
}

/* the widest register tile for VW vectors: RC VW accumulators + VW + 1 <= 16 registers */
static int rc_max(int VW) { return VW == 4 ? 3 : VW == 2 ? 6 : 12; }

/* ---------------------------------------------------------------- tiles of a vector */
/* Where the 8 tiles of one vector are: each one's input offset (relative to
 * channel 0 of sample 0; negative or past a row where the tile reads
 * padding), which of its six input rows are inside the image, the columns it
 * may load (lanes 0..5 inside the image), its output offset and how many
 * output rows and columns it has. */
typedef struct {
    int64_t in[VL], off[VL];
    __m256i cm[VL];
    uint8_t rows_in[VL]; /* bit i: input row i inside */
    bool full[VL];       /* all six rows and eight columns inside: plain loads */
    int8_t rows[VL], cols[VL];
    int n;          /* tiles in this vector (the last one may have fewer) */
    bool rowgroups; /* lanes 4L..4L+3: four whole tiles side by side in one tile row */
    bool pairs;     /* lanes 4L..4L+3: one 8x8 output plane (two tile rows of two tiles) */
    bool plane;     /* every tile is a whole 4x4 output plane */
} tilevec;

static void tilevec_init(const wplan *w, int64_t t0, tilevec *v) {
    v->n = (int)imin(VL, w->T - t0);
    v->rowgroups = v->n == VL && w->tx % 4 == 0 && w->Wo % 4 == 0;
    v->pairs = v->n == VL && w->Wo == 8 && w->Ho % 8 == 0;
    v->plane = w->Ho == 4 && w->Wo == 4;
    for (int l = 0; l < VL; l++) {
        v->in[l] = v->off[l] = 0;
        v->cm[l] = _mm256_setzero_si256();
        v->rows_in[l] = 0;
        v->full[l] = false;
        v->rows[l] = v->cols[l] = 0;
        if (l >= v->n) continue;
        int64_t t = t0 + l, n = t / w->tps, r = t % w->tps, ty = r / w->tx, tx = r % w->tx;
        int64_t iy = 4 * ty - w->py, ix = 4 * tx - w->px;
        v->in[l] = n * w->Cin * w->H * w->W + iy * w->W + ix;
        for (int i = 0; i < 6; i++)
            if (iy + i >= 0 && iy + i < w->H) v->rows_in[l] |= (uint8_t)(1u << i);
        /* lanes j with 0 <= ix + j < W and j < 6 */
        __m256i j = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), col = _mm256_add_epi32(j, _mm256_set1_epi32((int)ix));
        __m256i ok = _mm256_and_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32(6), j),
                                      _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_setzero_si256(), col),
                                                          _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w->W), col)));
        v->cm[l] = ok;
        v->full[l] = v->rows_in[l] == 0x3f && ix >= 0 && ix + 8 <= w->W;
        v->off[l] = n * w->Cout * w->Ho * w->Wo + 4 * ty * w->Wo + 4 * tx;
        v->rows[l] = (int8_t)imin(4, w->Ho - 4 * ty);
        v->cols[l] = (int8_t)imin(4, w->Wo - 4 * tx);
    }
}

/* Address arithmetic that may point outside the tensor (only for masked or
 * skipped lanes, never read): done on integers to keep the C semantics clean. */
static inline const float *at(const float *p, int64_t off) {
    return (const float *)((uintptr_t)p + (uintptr_t)(off * (int64_t)sizeof(float)));
}

/* ---------------------------------------------------------------- input transform */
/* V[e][c][8 k + l] = (B^T d B)[e] of tile l of vector k, channel c, for every
 * channel; V holds 36 planes of Cin x TB floats. d B first: a row of the
 * tile is loaded per tile and transposed into the lanes, and B is applied
 * along it while it is in registers; then B^T down the columns. */
static void input_transform(const wplan *w, const float *x, const tilevec *tv, int nvec, float *V) {
    const int64_t plane = w->Cin * w->TB, HW = w->H * w->W;
    for (int64_t c = 0; c < w->Cin; c++) {
        const float *xc = x + c * HW;
        for (int k = 0; k < nvec; k++) {
            const tilevec *v = &tv[k];
            __m256 R[6][6]; /* (d B)[i][j] */
            for (int i = 0; i < 6; i++) {
                __m256 r[8];
                for (int l = 0; l < VL; l++) {
                    const float *p = at(xc, v->in[l] + i * w->W);
                    if (v->full[l])
                        r[l] = _mm256_loadu_ps(p);
                    else if (v->rows_in[l] >> i & 1)
                        r[l] = _mm256_maskload_ps(p, v->cm[l]);
                    else
                        r[l] = _mm256_setzero_ps();
                }
                transpose8(r); /* r[j]: column j of row i, lanes = tiles */
                bt6(r, R[i]);
            }
            float *dst = V + c * w->TB + VL * k;
            for (int j = 0; j < 6; j++) {
                __m256 d[6], o[6];
                for (int i = 0; i < 6; i++) d[i] = R[i][j];
                bt6(d, o);
                for (int i = 0; i < 6; i++) _mm256_store_ps(dst + (i * 6 + j) * plane, o[i]);
            }
        }
    }
}

/* ---------------------------------------------------------------- output transform and store */
typedef struct {
    const float *scale, *shift, *bias, *res; /* per output channel; res laid out as out */
    bool relu;
} wepi;

/* Residual and ReLU of 8 outputs at dst (or n < 8 of them), then the store. */
static inline void store8(float *dst, __m256 v, int n, const wepi *e, int64_t rdelta) {
    if (n >= 8) {
        if (e->res) v = _mm256_add_ps(v, _mm256_loadu_ps(dst + rdelta));
        if (e->relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
        _mm256_storeu_ps(dst, v);
        return;
    }
    __m256i m = lanes8(n);
    if (e->res) v = _mm256_add_ps(v, _mm256_maskload_ps(dst + rdelta, m));
    if (e->relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
    _mm256_maskstore_ps(dst, m, v);
}

/* Two rows of 4 outputs (row 0: lanes 0-3, row 1: lanes 4-7) at dst and
 * dst + ld, n columns and rows of each. */
static inline void store_rows2(float *dst, int64_t ld, __m256 v, int rows, int cols, const wepi *e, int64_t rdelta) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128i m = _mm_cmpgt_epi32(_mm_set1_epi32(cols), _mm_setr_epi32(0, 1, 2, 3));
    for (int i = 0; i < rows && i < 2; i++) {
        __m128 r = i ? hi : lo;
        float *d = dst + i * ld;
        if (e->res) r = _mm_add_ps(r, _mm_maskload_ps(d + rdelta, m));
        if (e->relu) r = _mm_max_ps(r, _mm_setzero_ps());
        _mm_maskstore_ps(d, m, r);
    }
}

/* The tiles of vector v, output channel o: Y[i][j] (lanes = tiles), the affine
 * map already applied; stored into out (channel 0 of sample 0). */
static void store_tiles(const wplan *w, const tilevec *v, __m256 Y[4][4], float *out, int64_t o, const wepi *e) {
    const int64_t rdelta = e->res ? (int64_t)(e->res - out) : 0;
    float *oc = out + o * w->Ho * w->Wo;
    if (v->rowgroups || v->pairs) {
        /* lanes 4L..4L+3 brought together, row i of each: 16 outputs of one
         * row (four tiles side by side) or two rows of 8 (an 8x8 plane) */
        for (int i = 0; i < 4; i++) {
            __m256 t0 = _mm256_unpacklo_ps(Y[i][0], Y[i][1]), t1 = _mm256_unpackhi_ps(Y[i][0], Y[i][1]);
            __m256 t2 = _mm256_unpacklo_ps(Y[i][2], Y[i][3]), t3 = _mm256_unpackhi_ps(Y[i][2], Y[i][3]);
            /* u_m: 128-bit half h holds tile 4h + m's four columns */
            __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xee);
            __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xee);
            for (int h = 0; h < 2; h++) {
                int l = 4 * h;
                int sel = h ? 0x31 : 0x20;
                __m256 a = _mm256_permute2f128_ps(u0, u1, sel), b = _mm256_permute2f128_ps(u2, u3, sel);
                if (v->pairs) {
                    /* tiles 4h, 4h + 1: row i of the plane; 4h + 2, 4h + 3: row 4 + i */
                    store8(oc + v->off[l] + i * w->Wo, a, 8, e, rdelta);
                    store8(oc + v->off[l + 2] + i * w->Wo, b, 8, e, rdelta);
                } else if (i < v->rows[l]) {
                    store8(oc + v->off[l] + i * w->Wo, a, 8, e, rdelta);
                    store8(oc + v->off[l] + i * w->Wo + 8, b, 8, e, rdelta);
                }
            }
        }
        return;
    }
    /* tile l's rows 0-1 in A[l], rows 2-3 in B[l] */
    __m256 A[8], B[8];
    for (int q = 0; q < 8; q++) {
        A[q] = Y[q / 4][q % 4];
        B[q] = Y[2 + q / 4][q % 4];
    }
    transpose8(A);
    transpose8(B);
    for (int l = 0; l < v->n; l++) {
        float *dst = oc + v->off[l];
        if (v->plane) {
            store8(dst, A[l], 8, e, rdelta);
            store8(dst + 8, B[l], 8, e, rdelta);
            continue;
        }
        store_rows2(dst, w->Wo, A[l], v->rows[l], v->cols[l], e, rdelta);
        if (v->rows[l] > 2) store_rows2(dst + 2 * w->Wo, w->Wo, B[l], v->rows[l] - 2, v->cols[l], e, rdelta);
    }
}

/* Output channels o0 .. o0 + rc: M [36][rc][TB] -> out. A^T along each row
 * of the 6x6, then down the columns. */
static void output_transform(const wplan *w, const float *M, int rc, int64_t o0, const tilevec *tv, int nvec, float *out,
                             const wepi *e) {
    const int64_t plane = (int64_t)rc * w->TB;
    bool affine = e->scale || e->bias;
    for (int r = 0; r < rc; r++) {
        int64_t o = o0 + r;
        __m256 s = _mm256_set1_ps(e->scale ? e->scale[o] : 1.0f);
        __m256 b = _mm256_set1_ps(e->scale ? e->shift[o] : e->bias ? e->bias[o] : 0.0f);
        for (int k = 0; k < nvec; k++) {
            const float *src = M + r * w->TB + VL * k;
            __m256 T1[6][4]; /* (M A)[i][j] */
            for (int i = 0; i < 6; i++) {
                __m256 m[6];
                for (int j = 0; j < 6; j++) m[j] = _mm256_load_ps(src + (i * 6 + j) * plane);
                at6(m, T1[i]);
            }
            __m256 Y[4][4];
            for (int j = 0; j < 4; j++) {
                __m256 m[6], y[4];
                for (int i = 0; i < 6; i++) m[i] = T1[i][j];
                at6(m, y);
                for (int i = 0; i < 4; i++) Y[i][j] = affine ? _mm256_fmadd_ps(y[i], s, b) : y[i];
            }
            store_tiles(w, &tv[k], Y, out, o, e);
        }
    }
}

/* ---------------------------------------------------------------- the correlation */
/* Block and register tile: a block's transformed input (36 x Cin x TB floats)
 * within about 128 KB of L2; the widest register tile. */
static void plan_init(wplan *w, int64_t N, int64_t Cin, int64_t Cout, int64_t H, int64_t W, int py, int px) {
    *w = (wplan){.N = N, .Cin = Cin, .Cout = Cout, .H = H, .W = W, .py = py, .px = px};
    w->Ho = H + 2 * py - 2;
    w->Wo = W + 2 * px - 2;
    w->tx = cdiv(w->Wo, 4);
    w->ty = cdiv(w->Ho, 4);
    w->tps = w->tx * w->ty;
    w->T = N * w->tps;
    int64_t tb = (131072 / (WE * 4 * Cin)) / VL * VL;
    w->TB = imax(16, imin(64, imin(tb, cdiv(w->T, VL) * VL)));
    w->VW = w->TB >= 32 ? 4 : 2;
    w->RC = (int)imin(rc_max(w->VW), Cout);
    w->ngroups = cdiv(Cout, w->RC);
}

/* U [36][Cout][Cin], laid out per group of RC output channels as [36][groups
 * of [Cin][rc]]: out channel o, in channel c read as src[o so + c sc + tap],
 * tap = 3 ki + kj, or 8 - tap when flipped (the input gradient). */
static void weights_transform(const wplan *w, const float *src, int64_t so, int64_t sc, bool flip, float *U) {
    const int64_t Cout = w->Cout, Cin = w->Cin;
    #pragma omp parallel for schedule(static) if (Cout * Cin >= 1024)
    for (int64_t o = 0; o < Cout; o++) {
        int64_t og = o / w->RC, r = o % w->RC, rc = imin(w->RC, Cout - og * w->RC);
        for (int64_t c = 0; c < Cin; c++) {
            double g[9];
            float u[WE];
            for (int t = 0; t < 9; t++) g[t] = src[o * so + c * sc + (flip ? 8 - t : t)];
            g_transform(g, u);
            for (int e = 0; e < WE; e++) U[e * Cout * Cin + og * w->RC * Cin + c * rc + r] = u[e];
        }
    }
}

static int run(const wplan *w, const float *x, const float *U, float *y, const wepi *e) {
    const int64_t blocks = cdiv(w->T, w->TB);
    const int nvec_max = (int)(w->TB / VL);
    int threads = omp_get_max_threads();
    if (threads > blocks) threads = (int)blocks;
    if (threads < 1) threads = 1;
    size_t vsz = sizeof(float) * (size_t)(WE * w->Cin * w->TB), msz = sizeof(float) * (size_t)(WE * w->RC * w->TB);
    size_t tsz = sizeof(tilevec) * (size_t)nvec_max, per = (vsz + msz + tsz + 63) / 64 * 64;
    char *buf = ml_alloc(per * (size_t)threads);
    if (!buf) return -1;
    wgemm_fn full = wgemm_find(w->VW, w->RC);
    #pragma omp parallel num_threads(threads)
    {
        char *mine = buf + per * (size_t)omp_get_thread_num();
        float *V = (float *)mine, *M = (float *)(mine + vsz);
        tilevec *tv = (tilevec *)(mine + vsz + msz);
        #pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < blocks; b++) {
            if (ml_interrupt_pending()) continue;
            int64_t t0 = b * w->TB;
            int nvec = (int)cdiv(imin(w->TB, w->T - t0), VL);
            for (int k = 0; k < nvec; k++) tilevec_init(w, t0 + VL * k, &tv[k]);
            input_transform(w, x, tv, nvec, V);
            for (int64_t og = 0; og < w->ngroups; og++) {
                int rc = (int)imin(w->RC, w->Cout - og * w->RC);
                for (int ep = 0; ep < WE; ep++) {
                    const float *Ve = V + ep * w->Cin * w->TB, *Ue = U + ep * w->Cout * w->Cin + og * w->RC * w->Cin;
                    float *Me = M + ep * rc * w->TB;
                    /* the last vectors in narrower groups: rc <= RC <= rc_max(vw) for vw <= VW */
                    for (int k = 0; k < nvec;) {
                        int vw = nvec - k >= w->VW ? w->VW : nvec - k >= 2 ? 2 : 1;
                        wgemm_fn fn = vw == w->VW && rc == w->RC ? full : wgemm_find(vw, rc);
                        fn(Ve + VL * k, w->TB, Ue, w->Cin, Me + VL * k);
                        k += vw;
                    }
                }
                output_transform(w, M, rc, og * w->RC, tv, nvec, y, e);
            }
        }
    }
    ml_free(buf, per * (size_t)threads);
    return ml_interrupted() ? -1 : 0;
}

static int correlate(const wplan *w, const float *x, const float *src, int64_t so, int64_t sc, bool flip, float *y,
                     const wepi *e) {
    if (w->N == 0) return 0;
    size_t usz = sizeof(float) * (size_t)(WE * w->Cout * w->Cin);
    float *U = ml_alloc(usz);
    if (!U) return -1;
    weights_transform(w, src, so, sc, flip, U);
    int rc = run(w, x, U, y, e);
    ml_free(U, usz);
    return rc;
}

bool ml_conv_winograd_handles(const ml_conv_geom *g, int which) {
    if (g->kh != 3 || g->kw != 3 || g->sh != 1 || g->sw != 1 || g->dh != 1 || g->dw != 1 || g->groups != 1) return false;
    if (g->ph > 2 || g->pw > 2) return false;
    /* the products run over the input channels (the weight gradient's over
     * the tiles, with output channels broadcast): too few and the transforms
     * dominate */
    return (which == 0 ? g->C : g->O) >= 8 && (which != 2 || g->C >= 8);
}

int ml_conv_winograd_forward(const ml_conv_geom *g, const float *x, const float *w, const float *b, const float *scale,
                             const float *shift, const float *res, bool relu, float *y) {
    wplan p;
    plan_init(&p, g->N, g->C, g->O, g->H, g->W, g->ph, g->pw);
    wepi e = {scale, shift, b, res, relu};
    return correlate(&p, x, w, g->C * 9, 9, false, y, &e);
}

int ml_conv_winograd_input_grad(const ml_conv_geom *g, const float *gy, const float *w, float *gx) {
    /* gx = gy correlated with the flipped kernel, channels swapped, padding 2 - p */
    wplan p;
    plan_init(&p, g->N, g->O, g->C, g->Ho, g->Wo, 2 - g->ph, 2 - g->pw);
    wepi e = {0};
    return correlate(&p, gy, w, 9, g->C * 9, true, gx, &e);
}

/* ---------------------------------------------------------------- weight gradient */
/* With Z = A gy A^T (the output gradient's 4x4 tile taken to 6x6) and V =
 * B^T x B as in the forward, the gradient of the kernel is
 *     gw[o][c] = G^T ( sum over tiles of Z[o] .* V[c] ) G,
 * per tile position e a matrix product W_e[o][c] = sum_t Z_e[o][t] V_e[c][t]
 * summing over the tiles. That sum runs with 8 input channels in the lanes:
 * V is turned to [e][t][c] (8 x 8 transposes), Z_e[o][t] is broadcast, and a
 * block's sums go into its slice's W (36 x O x C) with plain vector adds.
 * Fixed slices of blocks (parallel.h) each sum into their own W; the W are
 * added in slice order and taken to 3x3 once at the end: the same bits
 * whatever thread takes which slice. */

/* z = A g for one line of 4 (A: 6 x 4, the transpose of A^T) */
AI void a6(const __m256 g[4], __m256 z[6]) {
    __m256 a = _mm256_add_ps(g[0], g[2]), b = _mm256_add_ps(g[1], g[3]);
    __m256 c = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), g[2], g[0]);
    __m256 d = _mm256_fmadd_ps(_mm256_set1_ps(8.0f), g[3], _mm256_mul_ps(_mm256_set1_ps(2.0f), g[1]));
    z[0] = g[0];
    z[1] = _mm256_add_ps(a, b);
    z[2] = _mm256_sub_ps(a, b);
    z[3] = _mm256_add_ps(c, d);
    z[4] = _mm256_sub_ps(c, d);
    z[5] = g[3];
}

/* Z[e][o][8 k + l] = (A gy A^T)[e] of tile l of vector k, output channel o;
 * outputs outside the image (a partial tile) count as zeros. */
static void grad_transform(const wplan *w, const float *gy, const tilevec *tv, int nvec, float *Z) {
    const int64_t plane = w->Cout * w->TB, HoWo = w->Ho * w->Wo;
    for (int64_t o = 0; o < w->Cout; o++) {
        const float *go = gy + o * HoWo;
        for (int k = 0; k < nvec; k++) {
            const tilevec *v = &tv[k];
            __m256 T[4][6]; /* (g A^T)[i][j] */
            for (int i = 0; i < 4; i++) {
                __m256 r[8];
                for (int l = 0; l < VL; l++)
                    r[l] = i < v->rows[l] ? _mm256_maskload_ps(go + v->off[l] + i * w->Wo, lanes8(v->cols[l]))
                                          : _mm256_setzero_ps();
                transpose8(r); /* r[j]: column j of row i, lanes = tiles */
                a6(r, T[i]);
            }
            float *dst = Z + o * w->TB + VL * k;
            for (int j = 0; j < 6; j++) {
                __m256 g[4], z[6];
                for (int i = 0; i < 4; i++) g[i] = T[i][j];
                a6(g, z);
                for (int i = 0; i < 6; i++) _mm256_store_ps(dst + (i * 6 + j) * plane, z[i]);
            }
        }
    }
}

/* Vc[e][t][c] (channels padded to Cp, a multiple of 8) from V[e][c][t]. */
static void channels_inner(const wplan *w, const float *V, int nvec, int64_t Cp, float *Vc) {
    for (int e = 0; e < WE; e++)
        for (int64_t c0 = 0; c0 < Cp; c0 += 8)
            for (int k = 0; k < nvec; k++) {
                __m256 r[8];
                for (int q = 0; q < 8; q++)
                    r[q] = c0 + q < w->Cin ? _mm256_load_ps(V + (e * w->Cin + c0 + q) * w->TB + VL * k) : _mm256_setzero_ps();
                transpose8(r); /* r[l]: tile 8k + l, channels c0.. */
                for (int l = 0; l < 8; l++) _mm256_store_ps(Vc + (e * w->TB + VL * k + l) * Cp + c0, r[l]);
            }
}

/* W[r][8 b ..] += sum_t z[r][t] v[t][8 b ..] for r < RO, b < RB, t < nt: z
 * rows TB apart, v rows and W rows Cp apart. */
AI void wg_gemm(const int RO, const int RB, const float *z, int64_t TB, const float *v, int64_t Cp, int64_t nt, float *W) {
    __m256 acc[6][2];
    for (int r = 0; r < RO; r++)
        for (int b = 0; b < RB; b++) acc[r][b] = _mm256_setzero_ps();
    for (int64_t t = 0; t < nt; t++, v += Cp) {
        __m256 x[2];
        for (int b = 0; b < RB; b++) x[b] = _mm256_load_ps(v + 8 * b);
        for (int r = 0; r < RO; r++) {
            __m256 zb = _mm256_broadcast_ss(z + r * TB + t);
            for (int b = 0; b < RB; b++) acc[r][b] = _mm256_fmadd_ps(zb, x[b], acc[r][b]);
        }
    }
    for (int r = 0; r < RO; r++)
        for (int b = 0; b < RB; b++) {
            float *d = W + r * Cp + 8 * b;
            _mm256_store_ps(d, _mm256_add_ps(_mm256_load_ps(d), acc[r][b]));
        }
}

typedef void (*wg_gemm_fn)(const float *, int64_t, const float *, int64_t, int64_t, float *);
#define WG_VARIANTS(X) X(1, 1) X(2, 1) X(3, 1) X(4, 1) X(5, 1) X(6, 1) X(1, 2) X(2, 2) X(3, 2) X(4, 2) X(5, 2) X(6, 2)
#define DEF_WG(RO, RB)                                                                                        \
    static void wg_gemm_##RO##_##RB(const float *z, int64_t TB, const float *v, int64_t Cp, int64_t nt, float *W) { \
        wg_gemm(RO, RB, z, TB, v, Cp, nt, W);                                                                 \
    }
WG_VARIANTS(DEF_WG)
static const wg_gemm_fn wg_gemms[7][3] = {
    {NULL, NULL, NULL},
    {NULL, wg_gemm_1_1, wg_gemm_1_2}, {NULL, wg_gemm_2_1, wg_gemm_2_2}, {NULL, wg_gemm_3_1, wg_gemm_3_2},
    {NULL, wg_gemm_4_1, wg_gemm_4_2}, {NULL, wg_gemm_5_1, wg_gemm_5_2}, {NULL, wg_gemm_6_1, wg_gemm_6_2}};

/* r = G^T m for one line of 6 (the transpose of g3), written out */
static inline void gt6(const double m[6], double r[3]) {
    const double sixth = 1.0 / 6, q12 = 1.0 / 12, q24 = 1.0 / 24;
    double s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    r[0] = 0.25 * m[0] - s12 * sixth + s34 * q24;
    r[1] = -d12 * sixth + d34 * q12;
    r[2] = (s34 - s12) * sixth + m[5];
}

/* gw [o][c][3][3] = G^T W[o][c] G, W [36][O][Cp]; output channels in parallel */
static void g_transpose_back(const wplan *w, const float *W, int64_t Cp, float *gw) {
    const int64_t per = w->Cout * Cp;
    #pragma omp parallel for schedule(static) if (w->Cout * w->Cin >= 1024)
    for (int64_t o = 0; o < w->Cout; o++)
        for (int64_t c = 0; c < w->Cin; c++) {
            double m[6], t[3][6], r[3]; /* t[ki][j] = (G^T W)[ki][j] */
            for (int j = 0; j < 6; j++) {
                for (int i = 0; i < 6; i++) m[i] = W[(i * 6 + j) * per + o * Cp + c];
                gt6(m, r);
                for (int ki = 0; ki < 3; ki++) t[ki][j] = r[ki];
            }
            float *d = gw + (o * w->Cin + c) * 9;
            for (int ki = 0; ki < 3; ki++) {
                gt6(t[ki], r);
                for (int kj = 0; kj < 3; kj++) d[ki * 3 + kj] = (float)r[kj];
            }
        }
}

/* Each slice of blocks sums into its own W (36 x O x Cp, the Winograd
 * domain); the slices' W are added in slice order and taken back to 3x3 once
 * (the back transform is linear: once instead of once per slice). */
static int weight_grad(const wplan *w, const float *x, const float *gy, float *gw) {
    const int64_t blocks = cdiv(w->T, w->TB), Cp = cdiv(w->Cin, 8) * 8;
    const int nvec_max = (int)(w->TB / VL);
    int64_t slices = ml_slices(blocks, 2), run = cdiv(blocks, slices);
    slices = cdiv(blocks, run);
    int threads = omp_get_max_threads();
    if (threads > slices) threads = (int)slices;
    const int64_t wn = WE * w->Cout * Cp;
    size_t vsz = sizeof(float) * (size_t)(WE * w->Cin * w->TB), vcsz = sizeof(float) * (size_t)(WE * w->TB * Cp);
    size_t zsz = sizeof(float) * (size_t)(WE * w->Cout * w->TB);
    size_t tsz = sizeof(tilevec) * (size_t)nvec_max, per = (vsz + vcsz + zsz + tsz + 63) / 64 * 64;
    size_t psz = sizeof(float) * (size_t)(wn * slices);
    char *buf = ml_alloc(per * (size_t)threads);
    float *parts = buf ? ml_alloc(psz) : NULL;
    if (!parts) {
        ml_free(buf, per * (size_t)threads);
        return -1;
    }
    #pragma omp parallel num_threads(threads)
    {
        char *mine = buf + per * (size_t)omp_get_thread_num();
        float *V = (float *)mine, *Vc = (float *)(mine + vsz), *Z = (float *)(mine + vsz + vcsz);
        tilevec *tv = (tilevec *)(mine + vsz + vcsz + zsz);
        #pragma omp for schedule(dynamic, 1)
        for (int64_t sl = 0; sl < slices; sl++) {
            float *W = parts + sl * wn;
            memset(W, 0, sizeof(float) * (size_t)wn);
            for (int64_t b = sl * run; b < imin(blocks, (sl + 1) * run); b++) {
                if (ml_interrupt_pending()) break;
                int64_t t0 = b * w->TB, nt = imin(w->TB, w->T - t0);
                int nvec = (int)cdiv(nt, VL);
                for (int k = 0; k < nvec; k++) tilevec_init(w, t0 + VL * k, &tv[k]);
                input_transform(w, x, tv, nvec, V);
                channels_inner(w, V, nvec, Cp, Vc);
                grad_transform(w, gy, tv, nvec, Z);
                for (int e = 0; e < WE; e++)
                    for (int64_t o0 = 0; o0 < w->Cout; o0 += 6) {
                        int ro = (int)imin(6, w->Cout - o0);
                        for (int64_t c0 = 0; c0 < Cp; c0 += 16) {
                            int rb = (int)imin(2, (Cp - c0) / 8);
                            wg_gemms[ro][rb](Z + (e * w->Cout + o0) * w->TB, w->TB, Vc + e * w->TB * Cp + c0, Cp, nt,
                                             W + (e * w->Cout + o0) * Cp + c0);
                        }
                    }
            }
        }
        /* the slices' sums added in slice order, in pieces of 4096 values */
        #pragma omp for schedule(static)
        for (int64_t i0 = 0; i0 < wn; i0 += 4096)
            for (int64_t sl = 1; sl < slices; sl++) {
                const float *src = parts + sl * wn;
                for (int64_t i = i0; i < imin(wn, i0 + 4096); i++) parts[i] += src[i];
            }
    }
    g_transpose_back(w, parts, Cp, gw);
    ml_free(parts, psz);
    ml_free(buf, per * (size_t)threads);
    return ml_interrupted() ? -1 : 0;
}

int ml_conv_winograd_weight_grad(const ml_conv_geom *g, const float *x, const float *gy, float *gw) {
    if (g->N == 0) {
        memset(gw, 0, sizeof(float) * (size_t)(g->O * g->C * 9));
        return 0;
    }
    wplan p;
    plan_init(&p, g->N, g->C, g->O, g->H, g->W, g->ph, g->pw);
    /* blocks of at least 32 tiles: a block's sums are added into W once */
    p.TB = imax(p.TB, imin(32, cdiv(p.T, VL) * VL));
    return weight_grad(&p, x, gy, gw);
}

#else /* no AVX2 code generation */

bool ml_conv_winograd_handles(const ml_conv_geom *g, int which) {
    (void)g, (void)which;
    return false;
}
int ml_conv_winograd_forward(const ml_conv_geom *g, const float *x, const float *w, const float *b, const float *scale,
                             const float *shift, const float *res, bool relu, float *y) {
    (void)g, (void)x, (void)w, (void)b, (void)scale, (void)shift, (void)res, (void)relu, (void)y;
    return -1;
}
int ml_conv_winograd_input_grad(const ml_conv_geom *g, const float *gy, const float *w, float *gx) {
    (void)g, (void)gy, (void)w, (void)gx;
    return -1;
}
int ml_conv_winograd_weight_grad(const ml_conv_geom *g, const float *x, const float *gy, float *gw) {
    (void)g, (void)x, (void)gy, (void)gw;
    return -1;
}

#endif
