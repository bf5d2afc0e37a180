/* softmax.h -- softmax and log-softmax along one dimension, numerically
 * stable (the row maximum is subtracted), with backward from the saved output. */
#ifndef ML_OPS_SOFTMAX_H
#define ML_OPS_SOFTMAX_H

#include "../tensor.h"

ml_tensor *ml_softmax(ml_tensor *x, int dim);
ml_tensor *ml_log_softmax(ml_tensor *x, int dim);

/* Kernels on one contiguous row of R values, for fused ops (attention):
 * y = softmax(x) (or log_softmax), and the backward from the output y and
 * its gradient g into o. No autograd, no threads. */
void ml_softmax_row(const float *x, float *y, int64_t R, bool log_out);
void ml_softmax_row_backward(const float *g, const float *y, float *o, int64_t R, bool log_out);

#endif
