/* radius.h -- the certified routing radius: for every input, MoE layer and
 * routed item, an eps below which the item's top-K selection provably cannot
 * change (docs/ANALYSIS.md has the derivation).
 *
 * In the router's input space the selection is a polyhedron: with logits
 * s = W z (+ b) and S the selected set, it stays S while s_i > s_j for every
 * i in S, j not in S. The distance from z to the halfspace boundary of the
 * pair is (s_i - s_j) / ||w_i - w_j||_q (q the dual norm of the perturbation's
 * norm), and the distance to the polyhedron's boundary, the exact router-space
 * radius, is the smallest over the pairs. Margins are first shrunk by
 * 2^-20 (|s_i| + |s_j|), an allowance for the rounding of float32 logits.
 *
 * In the input space: when only reshapes lie between the input and the
 * router, this is the exact radius (exact = true). Otherwise the deviation
 * program of bound.h bounds the router input's movement Delta_z(rho) for an
 * l2 ball of radius rho, and the radius is the largest rho found (bisection)
 * with Delta_z(rho) < the item's l2 router-space radius, while every earlier
 * MoE layer provably keeps its routing; an l_inf radius is the l2 one divided
 * by sqrt(n), n the input's size per sample (||d||_2 <= sqrt(n) ||d||_inf).
 * The routing of the item then cannot change for any perturbation of norm at
 * most the radius. With capacity limits, a layer that can drop items links the
 * samples of the batch (bound.h): the radius holds when every sample of the
 * batch is perturbed within it. */
#ifndef ML_ANALYSIS_RADIUS_H
#define ML_ANALYSIS_RADIUS_H

#include <stdbool.h>

#include "../nn/module.h"

typedef enum { ML_RADIUS_L2 = 0, ML_RADIUS_LINF = 1 } ml_radius_norm;

typedef struct {
    const char *layer;         /* borrowed from the trace */
    ml_trace_kind kind;
    int64_t T, per_sample;
    ml_tensor *radius;         /* float [T]: input-space radius of every item (rounded down) */
    ml_tensor *router_radius;  /* float [T]: router-space radius (l2, or the asked norm's when exact) */
    ml_tensor *sample_radius;  /* float [batch]: the smallest radius among each sample's items */
    bool exact;
    char note[256];            /* why every radius is 0 (a module without a bound), or "" */
} ml_radius_layer;

typedef struct {
    int n;
    int64_t batch, input_size; /* input_size: elements per sample */
    ml_radius_norm norm;
    ml_radius_layer *layers;
    ml_trace *trace;           /* the clean routing of the batch (owned) */
} ml_radius;

/* model in eval mode; x a batch. fn names the caller in messages. */
int ml_routing_radius(const char *fn, ml_module *model, ml_tensor *x, ml_radius_norm norm, ml_radius *out);
void ml_radius_free(ml_radius *r);

/* The router-space radius of one item: its logits [E], its selected experts
 * sel [K] (0-based) and the pairwise dual norms of the router rows,
 * dn[i * E + j] = ||w_i - w_j||_q. +inf when K = E. */
double ml_router_space_radius(const float *logits, const int64_t *sel, int K, int E, const double *dn);

#endif
