/* flops.h -- compute per input, measured: the FLOPs the ops of one forward
 * actually counted (GEMMs and convolutions, 2 x multiply-adds: ml_flops_add),
 * so a sparse MoE counts only the experts it ran, and the parameter counts
 * (total, and active per input as the layers declare them). */
#ifndef ML_ANALYSIS_FLOPS_H
#define ML_ANALYSIS_FLOPS_H

#include "../nn/module.h"

typedef struct {
    int64_t batch;
    int64_t flops;          /* counted over the batch */
    double flops_per_input;
    int64_t params, active_params;
} ml_flops_count;

/* One forward of x without autograd, in the model's current mode. */
int ml_flops_measure(ml_module *model, ml_tensor *x, ml_flops_count *out);

#endif
