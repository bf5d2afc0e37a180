/* forced.h -- what the forward context asks of one MoE layer's routing.
 *
 * A forward may carry a forced routing (ctx->routing: a trace of the same
 * model and batch size) and per-layer overrides (force every item to an
 * expert, or silence an expert) -- module.h. Every MoE layer asks here for its
 * plan before it selects experts, so the checks and messages are the same for
 * all of them: a trace of another model (no layer of that name, another kind,
 * another E or K) or of another batch size is an error naming the layer. */
#ifndef ML_NN_MOE_FORCED_H
#define ML_NN_MOE_FORCED_H

#include "../module.h"
#include "route.h"

typedef struct {
    const ml_trace_layer *forced; /* take the selection and kept flags from here (borrowed) */
    bool force_first;             /* every item's first choice is first_expert */
    int first_expert;
    bool *silenced; /* [E] experts the routing must avoid, or NULL (owned) */
} ml_layer_plan;

/* The plan of the layer running at ctx->path (ctx may be NULL: no plan).
 * type names the layer in messages; T items, E experts, K choices. */
int ml_layer_plan_get(ml_ctx *ctx, const char *type, ml_trace_kind kind, int64_t T, int E, int K, ml_layer_plan *out);
void ml_layer_plan_free(ml_layer_plan *p);
/* Whether the plan changes anything. */
bool ml_layer_plan_active(const ml_layer_plan *p);
/* Copies the plan into routing options (the selection of ml_route). */
void ml_layer_plan_apply(const ml_layer_plan *p, ml_route_opts *o);

#endif
