/* shape.h -- views and shape changes, with their gradients.
 *
 * reshape, permute, transpose, narrow, select, squeeze, unsqueeze and expand
 * return views that share storage with their input (reshape copies only when
 * the input's strides do not allow a view). cat and stack copy. */
#ifndef ML_OPS_SHAPE_H
#define ML_OPS_SHAPE_H

#include "../tensor.h"

/* One entry of shape may be -1 (inferred). */
ml_tensor *ml_reshape(ml_tensor *t, int ndim, const int64_t *shape);
ml_tensor *ml_flatten(ml_tensor *t, int start_dim, int end_dim);
ml_tensor *ml_permute(ml_tensor *t, const int *perm); /* perm has t->ndim entries */
ml_tensor *ml_transpose(ml_tensor *t, int d0, int d1);
ml_tensor *ml_narrow(ml_tensor *t, int dim, int64_t start, int64_t length);
ml_tensor *ml_select(ml_tensor *t, int dim, int64_t index); /* drops dim */
ml_tensor *ml_unsqueeze(ml_tensor *t, int dim);
ml_tensor *ml_squeeze(ml_tensor *t, int dim); /* dim = ML_ALL_DIMS drops every size-1 dim */
ml_tensor *ml_expand(ml_tensor *t, int ndim, const int64_t *shape); /* -1 keeps a size */
ml_tensor *ml_cat(int n, ml_tensor *const *ts, int dim);
ml_tensor *ml_stack(int n, ml_tensor *const *ts, int dim);

#define ML_ALL_DIMS (-1000)

#endif
