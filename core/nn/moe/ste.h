/* ste.h -- a straight-through gradient for the hard expert selection of a
 * sparse MoE layer (asked for by ctx->selection_ste, module.h; the attacks'
 * option selection_grad = "ste").
 *
 * A sparse layer computes y = sum_e m_e g_e f_e(x): the selection mask m
 * (top-K, kept) is a step function of the router probabilities p, so the
 * gradient the model defines reaches p only through the gates g of the
 * selected experts. The straight-through estimator replaces dm_e/dp_e = 0 by
 * 1 (m_ste = m + p - sg(p), sg = stop-gradient), which adds to every
 * probability the gradient of
 *
 *     ste = sum_e (p_e - sg(p_e)) sg(p_e f_e(x))
 *
 * -- zero in value, so the forward is unchanged, and d ste / d p_e = p_e f_e
 * for every expert, selected or not (the raw probabilities, also where the
 * layer renormalises its gates). It needs every expert's output, computed
 * without gradient: the price of the estimator. */
#ifndef ML_NN_MOE_STE_H
#define ML_NN_MOE_STE_H

#include "../../tensor.h"

/* Whether a layer should add the term: the context asks and gradients are recorded. */
struct ml_ctx;
bool ml_moe_ste_wanted(const struct ml_ctx *ctx);

/* Token layers: probs [T, E] (differentiable), outputs[e] = f_e(X) [T, D]
 * computed without gradient. Returns the term [T, D] (new). */
ml_tensor *ml_moe_ste_tokens(ml_tensor *probs, ml_tensor *const *outputs, int E);

/* Channel layers (MoEConv2d): probs [N, E] (differentiable), full = the
 * convolution with every channel [N, C, H, W] computed without gradient,
 * expert e owning channels start[e] .. start[e] + block - 1. Returns the term
 * [N, C, H, W] (new). */
ml_tensor *ml_moe_ste_channels(ml_tensor *probs, ml_tensor *full, const int64_t *start, int64_t block);

#endif
