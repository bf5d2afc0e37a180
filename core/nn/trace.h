/* trace.h -- routing traces: what every MoE layer decided in one forward.
 *
 * A trace (ml_trace) lists one entry per MoE layer (ml_trace_layer) in forward
 * order. Every MoE layer (TokenMoE, SmoothMoE, MoEConv2d with its own or a
 * global router) records through the one constructor, ml_trace_add, so every
 * consumer (metrics, attacks, the Lua side) reads the same fields:
 *
 *   name     the layer's full path ("blocks.1.mlp"; "" for a bare layer)
 *   kind     token (TokenMoE), smooth (SmoothMoE), channel (MoEConv2d with its
 *            own router), global (MoEConv2d routed by the model's global router)
 *   T, E, K  routed items (tokens, or samples for channel MoE), experts, choices per item
 *   experts  int64 [T, K] selected expert ids, 0-based, by decreasing probability
 *   gates    float [T, K] combine weight of each choice (also of dropped ones)
 *   probs    float [T, E] router probabilities (clean: before router noise)
 *   logits   float [T, E] router logits (clean)
 *   kept     int64 [T, K] 1 when the choice got a capacity slot, else 0 (dropped)
 *   load     float [E] kept choices per expert
 *   aux      auxiliary loss values (ML_AUX_*; NAN when not computed)
 *
 * SmoothMoE computes every expert; its experts/gates are the top-1 choice (K = 1).
 * logits, probs and gates are detached, unless the forward context asked for
 * them with their autograd history (ctx.trace_grad): then an attack objective
 * can differentiate through them (KL between clean and adversarial router
 * distributions, top-K margins).
 *
 * Reading a trace by layer (C):
 *
 *     ml_ctx ctx = {.trace = true};
 *     ml_tensor *y = ml_module_forward(model, x, &ctx);
 *     ml_trace *tr = ml_ctx_take_trace(&ctx);        // now the caller's
 *     ml_ctx_clear(&ctx);
 *     for (int i = 0; i < tr->n; i++) {
 *         const ml_trace_layer *l = &tr->layers[i];  // or ml_trace_find(tr, "blocks.1.mlp")
 *         const int64_t *ex = ml_i64(l->experts), *kept = ml_i64(l->kept);
 *         for (int64_t t = 0; t < l->T; t++)        // top-1 expert of item t, if kept
 *             if (kept[t * l->K]) count[ex[t * l->K]]++;
 *     }
 *     ml_trace_free(tr);
 *
 * Forced routing: a trace given back to a forward (ctx.routing, module.h)
 * makes every sparse MoE layer use its selection (see moe/forced.h). */
#ifndef ML_NN_TRACE_H
#define ML_NN_TRACE_H

#include <stdbool.h>

#include "../tensor.h"

typedef enum { ML_TRACE_TOKEN, ML_TRACE_SMOOTH, ML_TRACE_CHANNEL, ML_TRACE_GLOBAL, ML_TRACE_KINDS } ml_trace_kind;
const char *ml_trace_kind_name(ml_trace_kind kind); /* "token", "smooth", "channel", "global" */
/* The kind named s; -1 + error naming fn when there is none. */
int ml_trace_kind_parse(const char *fn, const char *s, ml_trace_kind *out);

/* The auxiliary loss values a layer reports (unweighted). */
enum { ML_AUX_IMPORTANCE, ML_AUX_LOAD, ML_AUX_SWITCH, ML_AUX_Z, ML_AUX_COUNT };
extern const char *const ml_aux_names[ML_AUX_COUNT]; /* "importance", "load", "switch", "z" */

typedef struct {
    char *name;
    ml_trace_kind kind;
    int64_t T;
    int E, K;
    ml_tensor *experts, *gates, *probs, *logits, *kept, *load; /* probs/logits may be NULL (hand-made traces) */
    double aux[ML_AUX_COUNT];
} ml_trace_layer;

typedef struct ml_trace {
    int n, cap;
    ml_trace_layer *layers; /* in forward order */
} ml_trace;

/* What a layer reports: every tensor is borrowed (the trace keeps its own
 * references or detached aliases). */
typedef struct {
    const char *name;
    ml_trace_kind kind;
    int E;              /* number of experts; 0: probs' or logits' second size */
    ml_tensor *experts; /* int64 [T, K], 0-based (required) */
    ml_tensor *gates;   /* float [T, K], or NULL: probs at the selected experts (1 without probs) */
    ml_tensor *probs;   /* float [T, E] or NULL */
    ml_tensor *logits;  /* float [T, E] or NULL */
    ml_tensor *kept;    /* int64 [T, K] of 0/1, or NULL: every choice kept */
    const double *aux;  /* ML_AUX_COUNT values, or NULL: none computed */
} ml_trace_entry;

ml_trace *ml_trace_new(void);
void ml_trace_free(ml_trace *t);
/* Appends a layer: the one constructor. Checks shapes, dtypes, expert ids in
 * [0, E) and distinct within a row, kept in {0, 1}; computes the load. With
 * keep_grad, logits/probs/gates keep their autograd history. */
int ml_trace_add(ml_trace *t, const ml_trace_entry *e, bool keep_grad);
/* A copy sharing the tensors; with keep_grad, logits/probs/gates keep the
 * autograd history they have (a Lua objective differentiates through them). */
ml_trace *ml_trace_copy(const ml_trace *t, bool keep_grad);

/* ------------------------------------------------------------ reading */
/* The layer with that name, or NULL. */
const ml_trace_layer *ml_trace_find(const ml_trace *t, const char *name);
int ml_trace_index(const ml_trace *t, const char *name); /* position or -1 */
/* Dropped choices of a layer (T * K - kept). */
int64_t ml_trace_dropped(const ml_trace_layer *l);
/* 0 when a and b come from the same model and batch size (same layer names,
 * kinds, T, E and K, in the same order); else -1 + an error naming fn and the
 * first difference. */
int ml_trace_check_compatible(const char *fn, const ml_trace *a, const ml_trace *b);
/* Items per sample of a layer routing `batch` samples: T / batch, or -1 +
 * an error naming fn when T is not a multiple of batch (or batch < 1). */
int64_t ml_trace_items_per_sample(const char *fn, const ml_trace_layer *l, int64_t batch);
/* The IoU of the kept selections of one item: experts ea/eb [K] (0-based),
 * kept flags ka/kb [K] (0/1); 1 when both keep nothing. An item's routing
 * changed when this is below 1 (the metrics and the attacks' reports agree). */
double ml_trace_selection_iou(const int64_t *ea, const int64_t *ka, const int64_t *eb, const int64_t *kb, int K);
/* True when a and b are compatible and select the same experts with the same kept flags. */
bool ml_trace_same_routing(const ml_trace *a, const ml_trace *b);

#endif
