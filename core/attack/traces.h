/* traces.h -- the one place the attacks touch routing traces and the other
 * per-forward state of the MoE layers (auxiliary losses, forced routing, the
 * router-attack switches of the forward context).
 *
 * A forward's routing lives in its context (ml_ctx: the trace ctx->traces,
 * core/nn/trace.h; the flags ctx->trace / ctx->want_aux; the summed ctx->aux).
 * The attacks, the objectives and the bindings see it only as an
 * ml_attack_routing and through these functions, so a new trace type changes
 * this file and traces.c and nothing else in core/attack.
 *
 * Rows: an attack works on the caller's batch of B examples or on a subset
 * (restarts, AutoAttack's robust examples), named by `index` (int64 [b], rows
 * of the caller's batch; NULL = all rows in order). A layer routing T items
 * for B examples routes T / B items per example, example-major (the tokens of
 * a sample are consecutive; a channel MoE routes one item per sample). */
#ifndef ML_ATTACK_TRACES_H
#define ML_ATTACK_TRACES_H

#include <stdbool.h>

#include "../nn/module.h"

/* The routing of one forward, as the attacks see it. */
typedef struct ml_attack_routing {
    ml_ctx ctx;
} ml_attack_routing;

/* What a forward collects and how it routes. */
typedef struct {
    bool trace;          /* collect the routing trace */
    bool trace_grad;     /* ... whose router logits / probs / gates keep their autograd history */
    bool aux;            /* auxiliary losses, also in eval mode */
    bool selection_ste;  /* straight-through gradient of the hard selection (nn/moe/ste.h) */
    bool router_noise;   /* the training router noise, also in eval mode */
    const ml_trace *routing; /* forced routing (borrowed; a trace of this batch), or NULL */
    const ml_route_override *force; /* forced or silenced experts (borrowed), n_force of them */
    int n_force;
} ml_attack_forward;

/* Prepares a forward. Clears what a previous forward left. */
void ml_attack_routing_reset(ml_attack_routing *r, const ml_attack_forward *f);
/* The forward context to hand to ml_module_forward. */
ml_ctx *ml_attack_routing_ctx(ml_attack_routing *r);
/* The summed, weighted auxiliary loss of the forward (0-d, differentiable;
 * borrowed), or NULL when the model has none. */
ml_tensor *ml_attack_routing_aux(const ml_attack_routing *r);
/* Number of MoE layers that reported a trace. */
int ml_attack_routing_layers(const ml_attack_routing *r);
/* The trace of the forward (borrowed; NULL when none was collected). */
const ml_trace *ml_attack_routing_trace(const ml_attack_routing *r);
void ml_attack_routing_free(ml_attack_routing *r);

/* ------------------------------------------------------------ rows of a trace */
/* The item rows (int64 [b * n]) of the examples `index` (NULL = 0 .. b-1) in
 * a layer of n items per example. */
ml_tensor *ml_attack_item_rows(const ml_tensor *index, int64_t b, int64_t n);
/* The trace of the examples `index` (NULL: all B) of a trace of B examples:
 * a new trace (its tensors the selected rows), e.g. the clean routing of a
 * subset to force on it. */
ml_trace *ml_attack_trace_rows(const char *fn, const ml_trace *t, int64_t B, const ml_tensor *index);

/* ------------------------------------------------------------ routing change */
/* Compares the routing of a forward of the caller's B examples (`cur`) with
 * the clean routing. An item changed when the set of experts it was selected
 * AND kept by differs. rate[l] = changed items / items of layer l (rate may
 * be NULL; layers in the traces' order), changed[i] = 1 when some item of
 * example i changed in some layer. Returns the number of changed examples (0
 * when changed is NULL), or -1 + an error naming fn when the traces do not
 * match (other layers or item counts). */
int64_t ml_attack_routing_change(const char *fn, const ml_trace *clean, int64_t B, const ml_trace *cur,
                                 double *rate, float *changed);

#endif
