/* routing.h -- the routing objectives (internal to core/attack; objective.h
 * lists them by name).
 *
 * Each reads the router logits of the current forward's trace (recorded with
 * their autograd history: the driver asks for it) and the clean routing the
 * objective was prepared with, compares them layer by layer, and sums over
 * the MoE layers and over the items (tokens, or the sample for a channel MoE)
 * of each example, for a loss per example to maximise:
 *
 *   routing_kl      KL(p_clean || p) between the clean and the current router
 *                   distributions (softmax of the logits) of every item.
 *   routing_margin  the violation of the clean top-K margin: with S the K
 *                   experts the clean input selected,
 *                       v = max_{e not in S} z_e - min_{e in S} z_e
 *                   (> 0: the selection changed), taken as min(v, 0): an item
 *                   whose selection changed stops pulling, so the gradient goes
 *                   to the items not changed yet. A layer whose K is its E
 *                   (every expert selected) has no margin and adds nothing.
 *   routing_steer   log p_{e*}: the log-probability of the expert e* each
 *                   layer's items are steered to (ml_objective_set_steer).
 *
 * The forward's trace lists the same layers as the clean one, with b * n
 * items for b examples of n items each; `index` maps them to the clean rows. */
#ifndef ML_ATTACK_ROUTING_H
#define ML_ATTACK_ROUTING_H

#include "objective.h"

ml_tensor *ml_loss_routing_kl(ml_objective *o, const ml_objective_input *in);
ml_tensor *ml_loss_routing_margin(ml_objective *o, const ml_objective_input *in);
ml_tensor *ml_loss_routing_steer(ml_objective *o, const ml_objective_input *in);

#endif
