/* route.h -- top-K routing with capacity, and the routers' auxiliary losses.
 *
 * The routing decision is computed from router probabilities P [T, E] (no
 * gradient flows through the choice itself; the combine weights read P with
 * autograd afterwards):
 *   1. each token picks its K most probable experts; ties are broken uniformly
 *      at random when asked (engine RNG), else by lowest expert index;
 *   2. capacity C = ceil(K * T * capacity_factor / E) (optionally rounded up to
 *      a multiple of 4, as V-MoE does); slots are filled by all top-1 choices
 *      first, then all top-2 choices, ...; within one rank, tokens go in token
 *      order, or by decreasing top-1 probability with batch-priority routing;
 *   3. an assignment past its expert's capacity is dropped (it adds nothing;
 *      the residual connection carries the token).
 * The kept assignments are listed expert by expert, in slot order, so each
 * expert's tokens form one contiguous block for one GEMM.
 * Forced routing (the metrics, experts-only attacks) changes step 1: experts
 * can be excluded (silenced); every token's first choice can be forced (then
 * no capacity limit applies); or the whole selection and its kept flags are
 * given (a trace's), replacing steps 1 to 3. */
#ifndef ML_NN_MOE_ROUTE_H
#define ML_NN_MOE_ROUTE_H

#include "../../tensor.h"

typedef struct {
    int k;                  /* experts per token */
    double capacity_factor; /* <= 0: no capacity limit */
    bool round_capacity;    /* round capacity up to a multiple of 4 */
    bool batch_priority;    /* order tokens by top-1 probability when filling slots */
    bool random_ties;       /* break exact ties uniformly at random (else lowest index) */
    const bool *excluded;   /* [E]: experts never chosen (silenced), or NULL */
    bool force_first;       /* every token's first choice is first_expert; no capacity limit */
    int first_expert;
    /* A given selection: int64 [T, K] expert ids and kept flags (valid: a
     * trace's, trace.h), used instead of steps 1 to 3. */
    const ml_tensor *given_experts, *given_kept;
} ml_route_opts;

typedef struct {
    int64_t T, E, K, capacity;
    ml_tensor *experts;  /* int64 [T, K]: chosen expert ids, by decreasing probability */
    ml_tensor *kept;     /* int64 [T, K]: 1 when the assignment got a slot */
    ml_tensor *load;     /* float [E]: kept assignments per expert */
    /* Kept assignments, grouped by expert (expert-major, slot order): */
    int64_t A;           /* number of kept assignments */
    ml_tensor *token;    /* int64 [A]: token of each assignment */
    ml_tensor *flat;     /* int64 [A]: token * E + expert, to read P[token, expert] */
    int64_t *offset;     /* [E + 1]: assignments of expert e are [offset[e], offset[e+1]) */
} ml_routing;

/* Computes the routing from probabilities P [T, E] (float32). */
int ml_route(const ml_tensor *probs, const ml_route_opts *opts, ml_routing *out);
void ml_routing_free(ml_routing *r);
int64_t ml_route_capacity(int64_t T, int64_t E, int k, double factor, bool round4);

/* Auxiliary losses (0-d, differentiable):
 * importance: CV^2 of imp_e = sum_t P[t, e] (P = softmax of the clean logits);
 * load (V-MoE): CV^2 of load_e = mean_t (1 - Phi((thr_t - logits[t, e]) / sigma)),
 *   thr_t = the K-th largest noisy logit of token t (held constant), sigma = noise std;
 * switch (Switch/GShard): E * sum_e f_e Pbar_e, f_e = fraction of tokens whose
 *   top-1 is e, Pbar_e = mean_t P[t, e];
 * z-loss: mean_t logsumexp(logits_t)^2.
 * CV^2(v) = (std(v) / mean(v))^2 with the population std. */
ml_tensor *ml_aux_importance(ml_tensor *probs_clean);
ml_tensor *ml_aux_load(ml_tensor *logits_clean, const ml_tensor *logits_noisy, int k, double sigma);
ml_tensor *ml_aux_switch(ml_tensor *probs, const ml_tensor *top1);
ml_tensor *ml_aux_zloss(ml_tensor *logits);
/* CV^2 of a 1-d tensor (differentiable). */
ml_tensor *ml_cv2(ml_tensor *v);

#endif
