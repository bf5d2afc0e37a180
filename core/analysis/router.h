/* router.h -- the one accessor through which the analysis reads router
 * weights (the certified routing radius needs them; every other metric reads
 * traces only).
 *
 * The logits a trace layer recorded are an affine map of a router input z:
 *   token, smooth  z = the layer's input token, logits = W z      (child "router", weight [E, D])
 *   channel        z = GAP of the layer's input, logits = W z      (child "router", weight [E, C_in])
 *   global         z = the model's global router feature (its last Linear's
 *                  input), logits = W_l z + b_l, W_l the E rows of that Linear
 *                  for this layer (the global layers in forward order). */
#ifndef ML_ANALYSIS_ROUTER_H
#define ML_ANALYSIS_ROUTER_H

#include "../nn/module.h"

typedef struct {
    ml_module *layer;  /* the MoE layer (borrowed) */
    ml_tensor *weight; /* float [E, D] (new reference) */
    ml_tensor *bias;   /* float [E] (new reference) or NULL */
} ml_router_weights;

/* The module at a dotted path ("blocks.1.mlp"; "" is m itself), or NULL + an
 * error naming fn. */
ml_module *ml_module_at(const char *fn, ml_module *m, const char *path);
/* The router of layer i of trace (a forward of model). */
int ml_router_weights_get(const char *fn, ml_module *model, const ml_trace *trace, int i, ml_router_weights *out);
void ml_router_weights_free(ml_router_weights *w);

#endif
