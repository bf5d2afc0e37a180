/* norm.h -- batch normalisation, layer normalisation, dropout. */
#ifndef ML_OPS_NORM_H
#define ML_OPS_NORM_H

#include "../tensor.h"

/* x [N, C, ...]. weight, bias [C] (NULL = 1 and 0). Training: normalise with
 * the batch mean and biased variance and update running_mean / running_var in
 * place (momentum m: running = (1 - m) running + m batch, the variance taken
 * unbiased, as PyTorch); eval: normalise with the running statistics. */
ml_tensor *ml_batch_norm(ml_tensor *x, ml_tensor *weight, ml_tensor *bias, ml_tensor *running_mean,
                         ml_tensor *running_var, bool training, double momentum, double eps);
/* act(batch_norm(x) + residual) in one op: residual (NULL: none) has x's
 * shape and is added before the activation, act is ReLU when relu (else the
 * identity). The block ends of a ResNet (y = ReLU(BN(conv(a)) + shortcut))
 * and BN + ReLU pairs in one pass over the activation, forward and backward;
 * differentiable w.r.t. x, weight, bias and residual. */
ml_tensor *ml_batch_norm_act(ml_tensor *x, ml_tensor *weight, ml_tensor *bias, ml_tensor *running_mean,
                             ml_tensor *running_var, bool training, double momentum, double eps, ml_tensor *residual,
                             bool relu);
/* Normalises over the last `dims` dimensions; weight and bias (NULL allowed)
 * have that many elements. */
ml_tensor *ml_layer_norm(ml_tensor *x, int dims, ml_tensor *weight, ml_tensor *bias, double eps);
/* Inverted dropout: zeroes each element with probability p (engine RNG) and
 * scales the rest by 1 / (1 - p); the identity when !training or p == 0. */
ml_tensor *ml_dropout(ml_tensor *x, double p, bool training);

#endif
