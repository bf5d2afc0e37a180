/* reduce.h -- reductions along one dimension or over all elements.
 *
 * `dim` is 0-based (negative counts from the end); ML_ALL_DIMS (shape.h)
 * reduces over every element and returns a 0-d tensor. With keepdim the
 * reduced dimension stays with size 1. Index outputs are int64, 0-based. */
#ifndef ML_OPS_REDUCE_H
#define ML_OPS_REDUCE_H

#include "../tensor.h"
#include "shape.h"

ml_tensor *ml_sum(ml_tensor *t, int dim, bool keepdim);
ml_tensor *ml_mean(ml_tensor *t, int dim, bool keepdim);
/* Variance; unbiased divides by n - 1 (PyTorch's default). */
ml_tensor *ml_var(ml_tensor *t, int dim, bool unbiased, bool keepdim);
ml_tensor *ml_std(ml_tensor *t, int dim, bool unbiased, bool keepdim);
/* Values and (optionally) indices of the max/min; first index on ties. The
 * gradient flows to the selected element. Either output pointer may be NULL. */
int ml_max(ml_tensor *t, int dim, bool keepdim, ml_tensor **values, ml_tensor **indices);
int ml_min(ml_tensor *t, int dim, bool keepdim, ml_tensor **values, ml_tensor **indices);
ml_tensor *ml_argmax(ml_tensor *t, int dim, bool keepdim);
ml_tensor *ml_argmin(ml_tensor *t, int dim, bool keepdim);
/* p-norm: p = 1, 2, INFINITY, or any p > 0. */
ml_tensor *ml_norm(ml_tensor *t, double p, int dim, bool keepdim);
ml_tensor *ml_logsumexp(ml_tensor *t, int dim, bool keepdim);

#endif
