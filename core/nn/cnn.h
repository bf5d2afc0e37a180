/* cnn.h -- convolutional modules: Conv2d, BatchNorm2d, MaxPool2d, AvgPool2d,
 * GlobalAvgPool, Dropout. Weights are initialised as PyTorch does. */
#ifndef ML_NN_CNN_H
#define ML_NN_CNN_H

#include "module.h"

ml_module *ml_nn_conv2d(int64_t cin, int64_t cout, int k, int stride, int pad, int groups, bool bias);
/* Parameters weight (1) and bias (0); buffers running_mean (0) and running_var (1). */
ml_module *ml_nn_batchnorm2d(int64_t channels, double eps, double momentum);
ml_module *ml_nn_maxpool2d(int k, int stride, int pad); /* stride <= 0: stride = k */
ml_module *ml_nn_avgpool2d(int k, int stride, int pad);
ml_module *ml_nn_global_avg_pool(void);                 /* [N, C, H, W] -> [N, C] */
ml_module *ml_nn_dropout(double p);
/* Sets the momentum of every BatchNorm2d in a tree (1 = running statistics
 * become the next batch's statistics). */
void ml_nn_set_bn_momentum(ml_module *m, double momentum);
/* Child ic (a Conv2d) of parent, then child ib (a BatchNorm2d), then ReLU when
 * relu. In eval mode, with nobody watching the children (ctx->on_module), the
 * three run as one op, ml_conv2d_affine, with the BatchNorm folded into a
 * per-channel scale and shift (one pass over the activation instead of three).
 * Any other pair of children simply runs one after the other. */
ml_tensor *ml_nn_conv_bn_forward(ml_module *parent, int ic, int ib, ml_tensor *x, ml_ctx *ctx, bool relu);
/* The same with a residual (NULL: none) added before the ReLU: act(BN(conv(x))
 * + residual), one op in eval mode (ml_conv2d_affine_residual) and in
 * training (the convolution, then ml_batch_norm_act) when nobody watches. */
ml_tensor *ml_nn_conv_bn_act_forward(ml_module *parent, int ic, int ib, ml_tensor *x, ml_ctx *ctx, ml_tensor *residual,
                                     bool relu);
/* Child ib of parent (a BatchNorm2d) on x, then + residual (NULL: none),
 * then ReLU when relu: one op, ml_batch_norm_act, in training and in eval
 * mode, unless folding is off or somebody watches the children
 * (ctx->on_module); any other child runs as itself followed by ml_add and
 * ml_relu. */
ml_tensor *ml_nn_bn_act_forward(ml_module *parent, int ib, ml_tensor *x, ml_ctx *ctx, ml_tensor *residual, bool relu);
/* Folding on (default) or off; the environment variable MOELAB_FUSE=0 sets
 * the initial choice to off. */
void ml_nn_set_fuse(bool on);
bool ml_nn_fuse(void);
/* The residual block of ResNet (children conv1, bn1, conv2, bn2, [shortcut]):
 * out = ReLU(BN(conv3x3(ReLU(BN(conv3x3(x))))) + shortcut(x)), shortcut =
 * identity or conv1x1 + BN when the stride or the width changes. */
ml_module *ml_nn_basic_block(int64_t cin, int64_t cout, int stride);

extern const ml_module_kind ml_cnn_kinds[]; /* for the registry */

#endif
