/* pool.h -- max, average and global average pooling over [N, C, H, W], with gradients. */
#ifndef ML_OPS_POOL_H
#define ML_OPS_POOL_H

#include "../tensor.h"

/* Pooling over [N, C, H, W]. avg_pool2d counts padded zeros in the divisor
 * (PyTorch's count_include_pad = true). */
ml_tensor *ml_max_pool2d(ml_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw);
ml_tensor *ml_avg_pool2d(ml_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw);
/* [N, C, H, W] -> [N, C]: the mean over H and W. */
ml_tensor *ml_global_avg_pool2d(ml_tensor *x);

#endif
