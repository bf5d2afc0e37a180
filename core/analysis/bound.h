/* bound.h -- sound bounds on how far the router inputs of a model's MoE
 * layers can move when each input moves by at most rho in l2 (the certified
 * routing radius, radius.h, inverts them). docs/ANALYSIS.md has the
 * derivation; in short:
 *
 * One forward of the batch (eval mode) records the routing and, through the
 * forward's per-module hook, the few statistics of the unperturbed ("centre")
 * activations that local bounds need. The model's module tree is then turned
 * into a program over one number per sample, the l2 norm Delta of how far an
 * activation of that sample may have moved:
 *
 *   linear maps (Linear, Conv2d, BatchNorm2d in eval, Normalize, patch
 *   embedding)  Delta' = ||A||_2 Delta (spectral norm; for convolutions the
 *   smaller of ceil(k/s) ||W_mat||_2 and sqrt(max row sum x max column sum));
 *   activations  their Lipschitz constant (ReLU 1, GELU 1.13, ...); pooling
 *   ceil(k/s); global average pooling 1/sqrt(HW); residual sums add;
 *   LayerNorm   max|gamma| / sqrt(max(0, sigma_min - Delta/sqrt(D))^2 + eps),
 *               sigma_min the sample's smallest token standard deviation;
 *   attention   per head, from the centre's Q, K, V and attention matrix P:
 *               ||P'dV|| + ||dP V||, with ||dp_i||_1 <= min(2, sqrt2 ||ds_i||);
 *   MoE layers  with the routing held fixed (valid while every item of the
 *               sample stays inside its own certified region, checked as the
 *               program runs): experts' Lipschitz constant plus the gates'
 *               movement times the centre experts' output norms.
 *
 * Modules the program does not know (a Lua function module, for instance)
 * make every bound after them infinite, with a note naming the module. */
#ifndef ML_ANALYSIS_BOUND_H
#define ML_ANALYSIS_BOUND_H

#include <stdbool.h>

#include "../nn/module.h"

typedef struct ml_bound ml_bound;

/* Runs model (which must be in eval mode) on x, keeps its routing trace
 * (*trace, the caller's) and builds the program. fn names the caller. */
ml_bound *ml_bound_build(const char *fn, ml_module *model, ml_tensor *x, ml_trace **trace);
void ml_bound_free(ml_bound *b);

/* Layer i's router reads the model's input itself (only reshapes before it):
 * its router-space distance is the input-space distance. */
bool ml_bound_exact(const ml_bound *b, int i);
/* Why the bound of layer i is infinite ("" when it is not). */
const char *ml_bound_note(const ml_bound *b, int i);
/* Layer i can drop items for capacity: its kept flags depend on the whole
 * batch, so a layer after it stays certified only while every sample of the
 * batch keeps its routing there (coupled); with batch-priority routing the
 * kept flags can change without any selection changing (blocks). */
bool ml_bound_coupled(const ml_bound *b, int i);
bool ml_bound_blocks(const ml_bound *b, int i);

/* The bound on how far layer i's router input of sample s moves when every
 * input moves by at most rho (l2); +inf when a layer before i may change its
 * routing: rmin[j * batch + s] is the smallest router-space radius of sample
 * s's items at layer j < i, batch_radius[j] the input-space radius under which
 * every sample keeps its routing at a coupled layer j. */
double ml_bound_router_deviation(const ml_bound *b, int i, int64_t s, double rho, const double *rmin,
                                 const double *batch_radius);

#endif
