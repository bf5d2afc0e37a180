/* bound.h -- sound bounds on how far the router inputs of a model's MoE
 * layers can move when each input moves by at most eps (in l2 or l_inf);
 * the certified routing radius (radius.h) inverts them. docs/ANALYSIS.md has
 * the derivation; in short:
 *
 * One forward of the batch (eval mode) records the routing and, through the
 * forward's per-module hook, the few statistics of the unperturbed ("centre")
 * activations that local bounds need (bound_centre.c). The model's module
 * tree becomes a program (bound_build.c) run for one sample at a time
 * (bound_eval.c) on three bounds of how far an activation moved: F on its l2
 * norm, I on its largest element, and d[t] on each token's l2 norm while it is
 * a sequence of tokens. The rules:
 *
 *   linear maps (Linear, Conv2d, BatchNorm2d in eval, Normalize, patch
 *   embedding): operator norms l2 -> l2, l_inf -> l_inf and l_inf -> l2
 *   (opnorm.h); activations their Lipschitz constant (ReLU 1, GELU 1.13);
 *   pooling ceil(k/s); global average pooling 1/sqrt(HW); residual sums add;
 *   LayerNorm, per row: max|gamma| / sqrt(max(0, sigma - a/sqrt(D))^2 + eps)
 *   for a row of standard deviation sigma moved by at most a;
 *   attention, per head and token, from the centre's Q, K, V and attention
 *   matrix P: sum_j P_ij dv_j + ||dp_i||_1 (max dv + R_V), with
 *   ||dp_i||_1 <= min(2, sqrt2 ||ds_i||_2, 2 ||ds_i||_inf);
 *   MoE layers with the routing held fixed (valid while every item of the
 *   sample stays inside its own certified region, checked as the program
 *   runs): the experts' Lipschitz constant plus the gates' movement times the
 *   centre experts' output norms.
 *
 * Modules the program does not know (a Lua function module, for instance)
 * make every bound after them infinite, with a note naming the module. */
#ifndef ML_ANALYSIS_BOUND_H
#define ML_ANALYSIS_BOUND_H

#include <stdbool.h>

#include "../nn/module.h"
#include "radius.h"

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

/* How far the router input of every item of sample s at layer i can move
 * (l2, into dz[items per sample]) when every input moves by at most eps in
 * `norm`; +inf where a layer before i may change its routing:
 * rz[j][item] is the l2 router-space radius of every item of an earlier
 * layer j, batch_radius[j] the radius under which every sample of the batch
 * keeps its routing at a coupled layer j. -1 + error when out of memory. */
int ml_bound_router_deviation(const ml_bound *b, int i, int64_t s, ml_radius_norm norm, double eps,
                              const double *const *rz, const double *batch_radius, double *dz);

#endif
