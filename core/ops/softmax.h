/* softmax.h -- softmax and log-softmax along one dimension, numerically
 * stable (the row maximum is subtracted), with backward from the saved output. */
#ifndef ML_OPS_SOFTMAX_H
#define ML_OPS_SOFTMAX_H

#include "../tensor.h"

ml_tensor *ml_softmax(ml_tensor *x, int dim);
ml_tensor *ml_log_softmax(ml_tensor *x, int dim);

#endif
