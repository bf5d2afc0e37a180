/* conv.h -- 2-d convolution (NCHW) and pooling, with gradients.
 *
 * conv2d: x [N, C, H, W], w [O, C/groups, kh, kw], b [O] or NULL ->
 * [N, O, Ho, Wo], Ho = (H + 2 pad_h - dil_h (kh - 1) - 1) / stride_h + 1.
 * On a CPU with AVX-512 the forward pass and both gradients run on direct
 * convolution kernels of our own (ops/conv_avx512_*.c: register-tiled, no
 * im2col; see docs/PERFORMANCE.md). Elsewhere, and for what those kernels
 * do not take (the weight gradient of groups with fewer than 8 output
 * channels), it is im2col +
 * sgemm per sample (OpenMP over samples, OpenBLAS at one thread inside), 1x1
 * stride-1 convolutions as a plain GEMM; that path is also the reference the
 * tests compare the direct one with. The weight may be a view (a block of
 * output channels, for channel-MoE layers). Only the requested gradients are
 * computed: an attack pays for the input gradient only. */
#ifndef ML_OPS_CONV_H
#define ML_OPS_CONV_H

#include "../tensor.h"

typedef struct {
    int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups; /* 0 means the default (1, 1, 0, 0, 1, 1, 1) */
} ml_conv_opts;

ml_tensor *ml_conv2d(ml_tensor *x, ml_tensor *w, ml_tensor *b, const ml_conv_opts *o);

/* conv2d followed, per output channel o, by an affine map and optionally a
 * ReLU: y = act(conv2d(x, w, NULL, o) * scale[o] + shift[o]); scale and
 * shift are [O]. This is a convolution with an eval-mode BatchNorm folded in
 * (scale = gamma / sqrt(running_var + eps), shift = beta - running_mean
 * scale): on the direct kernels the map and the ReLU run in the tile's store,
 * so the activation is written once instead of three times. Differentiable
 * w.r.t. x, w, scale and shift (the last two cost a second convolution only
 * when the scale needs its gradient). */
ml_tensor *ml_conv2d_affine(ml_tensor *x, ml_tensor *w, ml_tensor *scale, ml_tensor *shift, bool relu,
                            const ml_conv_opts *o);
/* The same with a residual r (the output's shape, NULL: none) added before
 * the activation: y = act(conv2d(x, w) * scale[o] + shift[o] + r), in the
 * tile's store (the end of a ResNet block, eval mode: ReLU(BN(conv(a)) +
 * shortcut) in one pass). Differentiable w.r.t. r too. */
ml_tensor *ml_conv2d_affine_residual(ml_tensor *x, ml_tensor *w, ml_tensor *scale, ml_tensor *shift,
                                     ml_tensor *residual, bool relu, const ml_conv_opts *o);

/* Implementation choice, for tests and benchmarks. ML_CONV_AUTO takes
 * Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions where it pays (on a CPU
 * with the direct AVX-512 kernels: only where it was measured faster, conv.c)
 * and the direct kernels for the rest wherever the CPU and the shape allow;
 * ML_CONV_WINOGRAD Winograd wherever it applies (3x3, stride 1, 8 channels or
 * more) and the direct kernels elsewhere; ML_CONV_DIRECT the direct kernels
 * without Winograd; ML_CONV_IM2COL im2col + sgemm everywhere. The environment
 * variable MOELAB_CONV=winograd | direct | im2col sets the initial choice;
 * MOELAB_CONV=noavx512 makes the engine behave as on a CPU without AVX-512
 * (for testing the fallback). A backward pass uses the choice in force when it
 * runs. */
typedef enum { ML_CONV_AUTO = 0, ML_CONV_IM2COL = 1, ML_CONV_DIRECT = 2, ML_CONV_WINOGRAD = 3 } ml_conv_impl;
void ml_conv_set_impl(ml_conv_impl impl);
ml_conv_impl ml_conv_get_impl(void);
bool ml_conv_direct_available(void); /* compiled in and supported by this CPU */
/* Number of conv2d computations so far on each path: [0] direct forward,
 * [1] direct input gradient, [2] direct weight gradient, [3..5] the same on
 * im2col + sgemm. */
void ml_conv_path_counts(int64_t counts[6]);

#endif
