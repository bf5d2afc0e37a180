/* index.h -- indexing ops: index_select, gather, scatter_add, one_hot, topk.
 * Index tensors are int64 and 0-based here (the Lua bindings convert). */
#ifndef ML_OPS_INDEX_H
#define ML_OPS_INDEX_H

#include "../tensor.h"

/* Slices of x along dim picked by a 1-d index (repeats allowed; gradients accumulate). */
ml_tensor *ml_index_select(ml_tensor *x, int dim, const ml_tensor *index);
/* out[i][j] = x[index[i][j]][j] (dim 0) etc., PyTorch semantics: index has x's
 * number of dimensions, and no larger size than x outside dim. */
ml_tensor *ml_gather(ml_tensor *x, int dim, const ml_tensor *index);
/* x + src scattered along dim: out = x.clone(); out[index[i][j]][j] += src[i][j] (dim 0). */
ml_tensor *ml_scatter_add(ml_tensor *x, int dim, const ml_tensor *index, ml_tensor *src);
/* [N] labels -> [N, K] float one-hot. */
ml_tensor *ml_one_hot(const ml_tensor *labels, int64_t K);
/* The k largest (or smallest) values along dim and their indices. sorted:
 * values in order (else in index order); random_ties: exact ties are broken
 * uniformly at random (engine RNG), otherwise by lowest index. The gradient of
 * the values flows to the selected positions. */
int ml_topk(ml_tensor *x, int64_t k, int dim, bool largest, bool sorted, bool random_ties, ml_tensor **values,
            ml_tensor **indices);

#endif
