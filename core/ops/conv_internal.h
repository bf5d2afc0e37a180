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

/* Test hooks: force the forward / input-gradient tiles to one family where
 * it applies (0 channels in lanes, 1 pixels in lanes, 2 channel-lane 3x3 tiles
 * that skip the padding; -1 chooses by cost), and count the plans made per
 * family. */
void ml_conv_avx512_force_kind(int kind);
void ml_conv_avx512_kind_counts(int64_t counts[3]);

#endif
