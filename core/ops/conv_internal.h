/* conv_internal.h -- what conv.c shares with the direct (AVX-512) kernels in
 * conv_avx512_*.c (conv_avx512.h says which file does what). Not a public
 * header.
 *
 * All pointers are contiguous NCHW float32 arrays:
 *   x  [N, C, H, W]        w  [O, Cg, kh, kw]       b [O] or NULL
 *   y  [N, O, Ho, Wo]      gx like x, gw like w (written, not accumulated). */
#ifndef ML_OPS_CONV_INTERNAL_H
#define ML_OPS_CONV_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }
static inline int64_t imin(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t imax(int64_t a, int64_t b) { return a > b ? a : b; }
/* floor and ceiling division for possibly negative a, b > 0 */
static inline int64_t div_floor(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }
static inline int64_t div_ceil(int64_t a, int64_t b) { return -div_floor(-a, b); }

typedef struct {
    int64_t N, C, H, W, O, kh, kw, Ho, Wo;
    int sh, sw, ph, pw, dh, dw, groups;
    int64_t Cg, Og, K, P; /* per-group channels in/out, rows of col, output pixels */
    bool direct;          /* 1x1, stride 1, no padding: col = x */
} ml_conv_geom;

/* Whether the CPU runs these kernels is conv.c's ml_conv_direct_available(). */
/* True when the direct kernels handle this geometry: any stride, padding,
 * dilation and groups, as long as the buffers stay within 32-bit offsets and,
 * for the weight gradient, a group has at least 8 output channels. `which`:
 * 0 forward, 1 input gradient, 2 weight gradient. */
bool ml_conv_avx512_handles(const ml_conv_geom *g, int which);
/* Return 0, or -1 with the error set (out of memory, interrupted). */
int ml_conv_avx512_forward(const ml_conv_geom *g, const float *x, const float *w, const float *b, float *y);
/* The same, followed per output channel o by y = act(y scale[o] + shift[o]
 * + res) (act: ReLU when relu; scale NULL: no affine map; res NULL: no
 * residual, else laid out as y) in the tile's store. */
int ml_conv_avx512_forward_affine(const ml_conv_geom *g, const float *x, const float *w, const float *b,
                                  const float *scale, const float *shift, const float *res, bool relu, float *y);
int ml_conv_avx512_input_grad(const ml_conv_geom *g, const float *gy, const float *w, float *gx);
int ml_conv_avx512_weight_grad(const ml_conv_geom *g, const float *x, const float *gy, float *gw);

/* Winograd F(4x4, 3x3) on AVX2 + FMA (conv_avx2_winograd.c) for 3x3 stride-1
 * convolutions without dilation or groups, padding at most 2: `which` as
 * above. The forward takes the same epilogue as ml_conv_avx512_forward_affine
 * (b and scale are not both given). Whether the CPU runs it is conv.c's
 * ml_conv_winograd_available(). */
bool ml_conv_winograd_available(void);
bool ml_conv_winograd_handles(const ml_conv_geom *g, int which);
int ml_conv_winograd_forward(const ml_conv_geom *g, const float *x, const float *w, const float *b, const float *scale,
                             const float *shift, const float *res, bool relu, float *y);
int ml_conv_winograd_input_grad(const ml_conv_geom *g, const float *gy, const float *w, float *gx);
int ml_conv_winograd_weight_grad(const ml_conv_geom *g, const float *x, const float *gy, float *gw);
/* Calls per pass (forward, input gradient, weight gradient) that took Winograd. */
void ml_conv_winograd_counts(int64_t counts[3]);

/* Test hooks: force the forward / input-gradient tiles to one family where
 * it applies (0 channels in lanes, 1 pixels in lanes, 2 channel-lane 3x3 tiles
 * that skip the padding; -1 chooses by cost), and count the plans made per
 * family. */
void ml_conv_avx512_force_kind(int kind);
void ml_conv_avx512_kind_counts(int64_t counts[3]);

#endif
