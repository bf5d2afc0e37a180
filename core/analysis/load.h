/* load.h -- how a MoE layer spreads its inputs over its experts, read from a
 * trace (nn/trace.h): the load (kept choices per expert), the share of items
 * each expert received (an item counts once for every expert among its kept
 * choices), a collapse flag when one expert receives at least `threshold`
 * (0.95 by default in Lua) of the items, and the expert x class matrix (kept
 * choices per expert and per label of the item's sample). */
#ifndef ML_ANALYSIS_LOAD_H
#define ML_ANALYSIS_LOAD_H

#include <stdbool.h>

#include "../nn/trace.h"

typedef struct {
    int E;
    int64_t items;
    ml_tensor *load;  /* float [E]: kept choices per expert */
    ml_tensor *share; /* float [E]: fraction of the items routed to the expert */
    int top;          /* the expert with the largest share (0-based; lowest on ties) */
    double top_share;
    bool collapsed;   /* E > 1 and top_share >= threshold */
} ml_expert_load;

int ml_expert_load_compute(const ml_trace_layer *l, double threshold, ml_expert_load *out);
void ml_expert_load_free(ml_expert_load *x);

/* Kept choices per expert and class: float [E, classes]. y: int64 [batch]
 * 0-based labels of the samples whose items the layer routed. */
ml_tensor *ml_expert_class_matrix(const char *fn, const ml_trace_layer *l, const ml_tensor *y, int64_t classes);

#endif
