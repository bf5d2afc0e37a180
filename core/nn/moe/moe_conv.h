/* moe_conv.h -- channel-MoE convolution (MoE-CNN) and the score-masked
 * convolution of the Sparse-CNN baseline.
 *
 * MoEConv2d: weight W [C_out, C_in, k, k], N experts; expert e owns a fixed
 * block of round(ratio * C_out) output channels (a partition when
 * N * ratio = 1; evenly spaced overlapping blocks when larger). For each
 * sample, a router picks one expert (top-1, lowest index on ties) with gate g;
 * the output keeps that expert's channels, scaled by g, and zeros elsewhere:
 *   y[b] = g[b] * conv(x[b], W)[block e(b)].
 * Routers: per layer (softmax(R . GAP(x)), R [N, C_in], group "router", the
 * router learns through g) or global (the model's router decides for every
 * MoE layer; the layer reads its column of an ml_global_route, below). A
 * forced routing (forced.h) replaces the top-1 choice. The sparse form computes only the
 * selected expert's channels for each sample; the mask form (full convolution
 * then channel mask times gate) is the reference and gives the same values
 * and gradients. Optional balancing losses of a per-layer router (off by
 * default, as AdvMoE and W2 train): importance_weight times the CV^2 of the
 * per-expert summed probabilities, switch_weight times the Switch loss
 * E sum_e f_e P_e (route.h), added to the auxiliary loss in training mode;
 * their values go into the trace. They keep a per-layer router from sending
 * every sample to one expert.
 *
 * MaskedConv2d (Sparse-CNN, HYDRA-style): a static mask keeping the fraction
 * `ratio` of output channels with the largest scores; scores (group "router")
 * learn through a straight-through estimator. */
#ifndef ML_NN_MOE_CONV_H
#define ML_NN_MOE_CONV_H

#include "../module.h"
#include "../options.h"

/* The options of MoEConv2d and MaskedConv2d (options.h: ml_moe_conv_options,
 * ml_masked_conv_options hold their keys, defaults and help). */
enum { ML_MOE_ROUTER_LAYER, ML_MOE_ROUTER_GLOBAL };
typedef struct {
    int in, out, kernel, stride, padding; /* padding -1: (kernel - 1) / 2 */
    int experts;
    double ratio;
    int router; /* ML_MOE_ROUTER_LAYER or ML_MOE_ROUTER_GLOBAL */
    bool mask;
    double w_importance, w_switch; /* balancing losses of a per-layer router */
} ml_moe_conv_opts;
typedef struct {
    int in, out, kernel, stride, padding;
    double ratio;
} ml_masked_conv_opts;
extern const ml_options ml_moe_conv_options, ml_masked_conv_options;
extern const ml_module_kind ml_moe_conv_kinds[]; /* for the registry */

void ml_moe_conv_defaults(ml_moe_conv_opts *o); /* every field its default (in and out 0) */
ml_module *ml_nn_moe_conv2d(const ml_moe_conv_opts *o);
ml_module *ml_nn_masked_conv2d(const ml_masked_conv_opts *o);
/* Switches every MoEConv2d in a tree between the sparse and the mask form. */
void ml_moe_conv_set_mask(ml_module *m, bool mask);
/* Number of MoEConv2d layers in a tree. */
int ml_moe_conv_count(const ml_module *m);
/* The output channels expert e (0-based) of a MoEConv2d computes:
 * [*first, *first + *count). -1 + error naming fn when m is not a MoEConv2d or
 * e is out of range. The analysis reads pathways through this accessor. */
int ml_moe_conv_expert_channels(const char *fn, const ml_module *m, int e, int64_t *first, int64_t *count);
/* The static channel mask of a MaskedConv2d as it stands: float [C_out] of
 * 0/1 (new; no autograd). NULL + error naming fn for another module type. */
ml_tensor *ml_masked_conv_mask(const char *fn, const ml_module *m);

/* The decisions of a model's global router in the current forward: logits
 * and probabilities [N, L, E] for its L MoE layers of E experts. Shared
 * (reference-counted) by the model, which sets it before running its layers
 * and clears it after, and by each globally routed MoEConv2d, which reads its
 * own column. */
typedef struct ml_global_route ml_global_route;
ml_global_route *ml_global_route_new(int layers, int experts);
void ml_global_route_release(ml_global_route *g);
/* Stores the router's logits [N, L*E] (and their softmax per layer). */
int ml_global_route_set(ml_global_route *g, ml_tensor *logits);
void ml_global_route_clear(ml_global_route *g);
/* Connects every globally routed MoEConv2d of a tree to g, numbering them in
 * tree (= forward) order: the next one reads the next column. Returns how
 * many, or -1 + error. */
int ml_moe_conv_attach_global(ml_module *m, ml_global_route *g);

#endif
