/* conv.h -- 2-d convolution (NCHW) and pooling, with gradients.
 *
 * conv2d: x [N, C, H, W], w [O, C/groups, kh, kw], b [O] or NULL ->
 * [N, O, Ho, Wo], Ho = (H + 2 pad_h - dil_h (kh - 1) - 1) / stride_h + 1.
 * Computed as im2col + sgemm per sample (OpenMP over samples, OpenBLAS at one
 * thread inside), 1x1 stride-1 convolutions as a plain GEMM. The weight may be
 * a view (a block of output channels, for channel-MoE layers). Only the
 * requested gradients are computed: an attack pays for the input gradient only. */
#ifndef ML_OPS_CONV_H
#define ML_OPS_CONV_H

#include "../tensor.h"

typedef struct {
    int stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups; /* 0 means the default (1, 1, 0, 0, 1, 1, 1) */
} ml_conv_opts;

ml_tensor *ml_conv2d(ml_tensor *x, ml_tensor *w, ml_tensor *b, const ml_conv_opts *o);

#endif
