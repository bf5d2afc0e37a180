/* dispatch.h -- moving tokens (or samples) to experts and back, with gradients.
 *
 * An MoE layer computes only the selected experts: gather the rows routed to
 * each expert into one contiguous block (ml_moe_gather), run the expert on its
 * block, and add the weighted results back to their rows (ml_moe_combine).
 * For channel MoE (MoE-CNN), each sample's output holds only its expert's
 * block of channels (ml_moe_place_channels). */
#ifndef ML_NN_MOE_DISPATCH_H
#define ML_NN_MOE_DISPATCH_H

#include "../../tensor.h"

/* x [T, ...] -> [A, ...]: rows x[ids[a]] (ids int64 [A], 0-based). Backward
 * adds the row gradients back (repeated ids accumulate). */
ml_tensor *ml_moe_gather(ml_tensor *x, const ml_tensor *ids);

/* y [A, D], w [A] -> out [T, D] with out[ids[a]] += w[a] * y[a]; rows that no
 * assignment reaches are 0. Gradients to y and w. */
ml_tensor *ml_moe_combine(ml_tensor *y, ml_tensor *w, const ml_tensor *ids, int64_t T);

/* parts[e] [n_e, c, ...] (NULL or n_e = 0 for an idle expert), ids[e] int64
 * [n_e] (the samples routed to e), gates [N] -> out [N, C, ...] with
 * out[ids[e][i], start[e] : start[e] + c] = gates[ids[e][i]] * parts[e][i] and
 * zeros in every other channel. start may be NULL (expert e owns [e*c, (e+1)*c)
 * and C = E*c); blocks of different experts may overlap, but every sample must
 * appear in at most one expert. gates may be NULL (weight 1). Gradients to every
 * part and to gates. */
ml_tensor *ml_moe_place_channels(int E, ml_tensor *const *parts, ml_tensor *const *ids, ml_tensor *gates, int64_t N,
                                 int64_t C, const int64_t *start);

/* full [N, C, ...] -> the same with sample n's channels outside its block
 * [first[n], first[n] + c) zeroed and the block scaled by gates[n] (gates
 * [N], NULL: 1): the mask form of a channel-MoE convolution in one pass, with
 * a parallel backward (gradients to full and gates). */
ml_tensor *ml_moe_mask_channels(ml_tensor *full, const int64_t *first, int64_t c, ml_tensor *gates);

#endif
