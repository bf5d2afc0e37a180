/* traces.h -- the one place the attacks touch routing traces and the other
 * per-forward state of the MoE layers (auxiliary losses).
 *
 * A forward's routing lives in its context (ml_ctx: the trace ctx->traces,
 * core/nn/trace.h; the flags ctx->trace / ctx->want_aux; the summed ctx->aux).
 * The attacks, the objectives and the bindings see it only as an
 * ml_attack_routing and through these functions, so a new trace type changes
 * this file and traces.c and nothing else in core/attack. */
#ifndef ML_ATTACK_TRACES_H
#define ML_ATTACK_TRACES_H

#include <stdbool.h>

#include "../nn/module.h"

/* The routing of one forward, as the attacks see it. */
typedef struct ml_attack_routing {
    ml_ctx ctx;
} ml_attack_routing;

/* Prepares a forward: collect traces (trace) and auxiliary losses even in
 * eval mode (aux). Clears what a previous forward left. */
void ml_attack_routing_reset(ml_attack_routing *r, bool trace, bool aux);
/* The forward context to hand to ml_module_forward. */
ml_ctx *ml_attack_routing_ctx(ml_attack_routing *r);
/* The summed, weighted auxiliary loss of the forward (0-d, differentiable;
 * borrowed), or NULL when the model has none. */
ml_tensor *ml_attack_routing_aux(const ml_attack_routing *r);
/* Number of MoE layers that reported a trace. */
int ml_attack_routing_layers(const ml_attack_routing *r);
/* The trace of the forward (borrowed; NULL when none was collected). */
const ml_trace *ml_attack_routing_trace(const ml_attack_routing *r);
/* Moves the traces of src into dst (dst's are freed), e.g. to keep the clean
 * routing while the attack runs new forwards through src. */
void ml_attack_routing_move(ml_attack_routing *dst, ml_attack_routing *src);
void ml_attack_routing_free(ml_attack_routing *r);

#endif
