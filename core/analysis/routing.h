/* routing.h -- how the routing changes between two forwards of one model on
 * the same batch (clean and adversarial, or clean and noisy), read from their
 * traces (nn/trace.h).
 *
 * For every MoE layer and every routed item (a token, or a sample for the
 * channel MoE) the set A of experts the clean forward selected AND kept (not
 * dropped for capacity) is compared with the set B of the other forward:
 *
 *     IoU = |A n B| / |A u B|,   IoU = 1 when A and B are both empty
 *
 * (an item dropped by every choice in both forwards went through the
 * residual both times: its routing did not change). The layer's rate of
 * routing changes is 1 - mean IoU (Puigcerver et al. 2022). The continuous
 * version compares the router distributions, for smooth and soft routing:
 *
 *     TV = 1/2 sum_e |p_clean[e] - p_other[e]|   in [0, 1]
 *
 * An item belongs to sample t / (T / batch): the MoE layers route the tokens
 * of a batch [B, n, D] in sample order. */
#ifndef ML_ANALYSIS_ROUTING_H
#define ML_ANALYSIS_ROUTING_H

#include <stdbool.h>

#include "../nn/trace.h"

typedef struct {
    const char *layer;  /* the layer's name (borrowed from the clean trace) */
    ml_trace_kind kind;
    int64_t T;          /* routed items */
    int64_t per_sample; /* items per sample (T / batch) */
    ml_tensor *iou;     /* float [T] */
    ml_tensor *tv;      /* float [T], or NULL when a trace has no router probabilities */
    double mean_iou, rate, mean_tv; /* rate = 1 - mean_iou; mean_tv NAN without probabilities */
    int64_t changed;    /* items whose set changed (IoU < 1) */
    int64_t samples_changed;
} ml_route_change_layer;

typedef struct {
    int n;
    int64_t batch;
    ml_route_change_layer *layers; /* in forward order */
    unsigned char *sample_changed; /* [batch]: some item of the sample changed in some layer */
} ml_route_change;

/* Compares two traces of the same model and batch size (else an error naming
 * the first difference); batch = samples in the forward (every layer's item
 * count must be a multiple of it). fn names the caller in messages. */
int ml_route_change_compute(const char *fn, const ml_trace *clean, const ml_trace *other, int64_t batch,
                            ml_route_change *out);
void ml_route_change_free(ml_route_change *r);

#endif
