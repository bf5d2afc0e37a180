/* moe.h -- Mixture-of-Experts layers over tokens.
 *
 * Router: a linear map without bias, logits = x S^T with S [E, D] (group "router").
 *
 * TokenMoE (V-MoE, sparse): p = softmax(logits + noise) with Gaussian noise of
 * std noise_std / E in training mode only; top-K experts per token with
 * capacity and dropping (route.h); combine weights are the selected
 * probabilities (optionally renormalised over the token's K choices); only the
 * selected experts are computed (gather, one expert forward per expert block,
 * weighted scatter back). Auxiliary losses (importance, load, switch, z) are
 * added to the forward context in training mode, weighted; every forward can
 * record a routing trace.
 *
 * SmoothMoE (eq. 2 of the MoE robustness paper): f(x) = sum_i p_i(x) f_i(x),
 * p = softmax(S x), every expert computed.
 *
 * Experts are built from one expert config (any module type: the default is
 * the transformer MLP D -> hidden -> D with GELU; {"type": "Linear", ...} gives
 * the linear experts of the theory). Children: "router", "experts.<i>". */
#ifndef ML_NN_MOE_MOE_H
#define ML_NN_MOE_MOE_H

#include "../module.h"
#include "../options.h"
#include "route.h"

/* The options of TokenMoE (ml_token_moe_options: every field) and SmoothMoE
 * (ml_smooth_moe_options: dim, experts, expert); options.h. The defaults are
 * V-MoE's: E = 8, K = 2, capacity 1.25, noise 1, importance and load weights
 * 0.005, random tie-breaking in training, expert MLP(dim, 4 dim, dim). */
typedef struct {
    int dim;                /* D */
    int experts;            /* E */
    int k;                  /* K */
    double capacity_factor; /* <= 0: unlimited */
    bool round_capacity;
    bool batch_priority;
    bool random_ties;       /* training only: evaluation breaks ties by lowest index */
    bool renormalize;
    double noise_std;       /* noise std = noise_std / E, training only */
    double w_importance, w_load, w_switch, w_z; /* auxiliary loss weights */
    const cJSON *expert;    /* expert config (borrowed; NULL: the V-MoE MLP) */
} ml_moe_opts;

extern const ml_options ml_router_options, ml_token_moe_options, ml_smooth_moe_options;

/* The defaults for a layer of width dim. */
void ml_moe_defaults(ml_moe_opts *o, int dim);
ml_module *ml_nn_router(int64_t dim, int experts);
ml_module *ml_nn_token_moe(const ml_moe_opts *o);
ml_module *ml_nn_smooth_moe(const ml_moe_opts *o);

extern const ml_module_kind ml_moe_kinds[]; /* Router, TokenMoE, SmoothMoE (for the registry) */

#endif
