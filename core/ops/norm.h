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
/* Normalises over the last `dims` dimensions; weight and bias (NULL allowed)
 * have that many elements. */
ml_tensor *ml_layer_norm(ml_tensor *x, int dims, ml_tensor *weight, ml_tensor *bias, double eps);
/* Inverted dropout: zeroes each element with probability p (engine RNG) and
 * scales the rest by 1 / (1 - p); the identity when !training or p == 0. */
ml_tensor *ml_dropout(ml_tensor *x, double p, bool training);

#endif
