/* conv_avx512.h -- what the files of the direct AVX-512 convolution share.
 * Not a public header: conv_internal.h is the interface to conv.c.
 *
 *   conv_avx512_prep.c   prepared inputs (zero border, stride phases), row
 *                        masks, per-thread scratch, splitting the work
 *   conv_avx512_fwd.c    the forward register tiles, the cost model that
 *                        picks one (the planner), weight relayout, the forward
 *   conv_avx512_grad.c   the input gradient (phases of the forward tiles) and
 *                        the weight gradient (its own tile)
 *
 * All three are built with AVX-512 code generation (CMakeLists.txt); conv.c
 * calls in only after checking the CPU. docs/PERFORMANCE.md has the design.
 * Internal functions shared between the files are named ml_cx_*. */
#ifndef ML_OPS_CONV_AVX512_H
#define ML_OPS_CONV_AVX512_H

#include "conv_internal.h"

#if defined(__AVX512F__)

#include <immintrin.h>
#include <stddef.h>

#define AI static inline __attribute__((always_inline))
#define SLACK 64 /* floats after a prepared buffer: partial tiles read up to 15 past a row */
#define MAX_TAPS 4096
#define MAX_PHASES 64


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

static inline __mmask16 lanes(int64_t n) { return n >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u); }


/* Estimated cycles of one step (one input channel and tap) of a tile with
 * `fma` FMAs, `bc` broadcasts and `vec` vector loads: FMAs at one zmm per
 * cycle, loads at about 3 per cycle (a zmm load counts twice), and at least
 * the FMA latency (every accumulator is updated once per step). */
static inline double step_cost(int fma, int bc, int vec) {
    double ld = (bc + 2.0 * vec) / 3.0, c = fma > ld ? fma : ld;
    return c > 4.0 ? c : 4.0;
}

/* ---------------------------------------------------------------- forward tiles (conv_avx512_fwd.c) */
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

typedef void (*fwd_fn)(const fwd_args *);

typedef struct {
    int RT, PW, RB;
    fwd_fn fn[16]; /* by flags */
} edge_variant;

/* For a 3x3 plan: output positions where each tap row / column reads data
 * (not padding): tap row ki is valid for output rows vy[ki][0] <= r < vy[ki][1]. */
typedef struct {
    bool on;
    int64_t vy[3][2], vx[3][2];
} edge_geom;

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

/* The epilogue of a forward pass (fwd_args: scale, shift, relu, res). */
typedef struct {
    const float *scale, *shift; /* [Cout] each, or NULL */
    bool relu;
    const float *res; /* residual laid out as out (NULL: none) */
} fwd_epi;

/* Plans one "stride-1 correlation" over the prepared input: rows x npix output
 * pixels (rows Wq floats apart in the input), Cout channels, K steps (input
 * channels x taps) per tile. eg (optional): a 3x3 correlation whose taps are
 * in offset order, with where each tap row and column reads data. */
void ml_cx_fwd_choose(int64_t rows, int64_t npix, int64_t Wq, int64_t Cout, int64_t K, const edge_geom *eg,
                      fwd_plan *p);
/* Weights for a plan: out channel o, in channel c, tap t read as
 * src[o so + c sc + tidx[t]]; dst holds ml_cx_relayout_size floats. */
void ml_cx_relayout(const fwd_plan *p, const float *src, int64_t so, int64_t sc, const int32_t *tidx, int T,
                    int64_t Cout, int64_t Cin, float *dst);
int64_t ml_cx_relayout_size(const fwd_plan *p, int64_t Cout, int64_t Cin, int T);
/* Runs a plan over output rows [r0, r1): in/out point at row 0 of channel 0;
 * wr is the relayout, bias (optional) has the output channels padded to 16. */
void ml_cx_fwd_rows(const fwd_plan *p, const float *in, int64_t cplane, int64_t Wq, const int32_t *toff, int T,
                    int64_t Cin, const float *wr, const float *bias, float *out, int64_t ostride, int64_t orow,
                    int64_t npix, int64_t Cout, int64_t r0, int64_t r1, const fwd_epi *epi);

/* ---------------------------------------------------------------- prepared inputs (conv_avx512_prep.c) */
/* xq [C][sy*sx phases][nS][Hq][Wq]: padded pixel (Y, X) of sample j is phase
 * (Y % sy, X % sx), row Y / sy, column X / sx. */
typedef struct {
    int sy, sx;         /* phases */
    int pt, pl;         /* zero rows / columns before the data */
    int64_t Hq, Wq;     /* rows and columns of a phase plane */
    int nS;             /* samples stacked per phase */
    int64_t phplane;    /* nS Hq Wq */
    int64_t cplane;     /* sy sx phplane */
    uint64_t used;      /* phases some tap reads (bit ry sx + rx); the others are left unwritten */
} prep_geom;

void ml_cx_prep_init(prep_geom *q, int sy, int sx, int pt, int pl, int64_t Hp, int64_t Wp, int nS);
/* ns samples x[j] = x + j * sstride, each [C][H][W] -> dst [C][phases][nS][Hq][Wq].
 * Every float of the used phases is written. */
void ml_cx_prep(const prep_geom *q, const float *x, int64_t sstride, int ns, int64_t C, int64_t H, int64_t W,
                float *dst);

/* Per-thread scratch: nbufs zeroed buffers of counts[i] floats each, followed
 * by extra[i] floats (partial tiles and bands read past the last pixel into
 * them; their lanes are never stored). */
typedef struct {
    float *base;
    size_t bytes;
} scratch;
/* ptrs [threads][nbufs]; 0, or -1 with the error set */
int ml_cx_scratch_get(scratch *s, int threads, const int64_t *counts, const int64_t *extra, int nbufs, float **ptrs);

/* Threads for `items` work items (at most omp_get_max_threads()). */
int ml_cx_pick_threads(int64_t items);
/* Work items are handed out in runs of consecutive samples, so that a thread
 * knows the sample it prepares next and prefetches it into L2 while it works
 * on the current one. */
int64_t ml_cx_sample_run(int64_t items, int64_t chunks, int threads);
void ml_cx_prefetch_l2(const float *p, int64_t n);
/* Row chunks per sample so that there are at least about 4 work items per thread. */
int64_t ml_cx_row_chunks(int64_t N, int64_t rows, int threads);

/* The taps of a forward convolution in the prepared layout (nS samples stacked). */
typedef struct {
    prep_geom q;
    int T;
    int32_t toff[MAX_TAPS];
    int32_t tidx[MAX_TAPS];
} tap_plan;
void ml_cx_forward_taps(const ml_conv_geom *g, int nS, tap_plan *tp);

#endif /* __AVX512F__ */
#endif
