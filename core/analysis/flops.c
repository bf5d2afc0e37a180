/* flops.c -- FLOPs counted by one forward, and parameter counts (flops.h). */
#include "flops.h"

#include <string.h>

#include "../autograd.h"
#include "../ops/linalg.h"

int ml_flops_measure(ml_module *model, ml_tensor *x, ml_flops_count *out) {
    memset(out, 0, sizeof *out);
    if (x->ndim < 1 || x->shape[0] < 1) return ml_failc("flops: the input needs a batch dimension, got %s", ML_SHAPE_STR(x));
    bool grad = ml_grad_set(false);
    int64_t before = ml_flops();
    ml_tensor *y = ml_module_forward(model, x, NULL);
    int64_t after = ml_flops();
    ml_grad_set(grad);
    if (!y) return -1;
    ml_release(y);
    out->batch = x->shape[0];
    out->flops = after - before;
    out->flops_per_input = (double)out->flops / (double)out->batch;
    out->params = ml_module_num_params(model);
    out->active_params = ml_module_active_params(model);
    return 0;
}
