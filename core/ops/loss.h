/* loss.h -- losses. Labels are int64 class indices, 0-based in C.
 *
 * reduction: ML_MEAN (average over examples), ML_SUM, or ML_NONE (one value per
 * example, [N]). Every loss is differentiable w.r.t. its float inputs. */
#ifndef ML_OPS_LOSS_H
#define ML_OPS_LOSS_H

#include "../tensor.h"

typedef enum { ML_MEAN = 0, ML_SUM = 1, ML_NONE = 2 } ml_reduction;

/* Softmax cross-entropy of logits [N, K] against labels [N]; with label
 * smoothing eps the target is (1 - eps) one-hot + eps / K. Fused: one pass
 * forward, gradient (softmax - target) * g. */
ml_tensor *ml_cross_entropy(ml_tensor *logits, const ml_tensor *labels, ml_reduction red, double label_smoothing);
/* Negative log-likelihood of log-probabilities [N, K]. */
ml_tensor *ml_nll_loss(ml_tensor *logprobs, const ml_tensor *labels, ml_reduction red);
/* The TRADES term: batch mean over N of KL(softmax(clean) || softmax(adv)) =
 * sum_k p_clean (log p_clean - log p_adv). Gradients to both logit tensors. */
ml_tensor *ml_kl_div(ml_tensor *clean_logits, ml_tensor *adv_logits, ml_reduction red);
/* Mean squared error (elementwise; "none" keeps the shape). */
ml_tensor *ml_mse(ml_tensor *a, ml_tensor *b, ml_reduction red);
/* Sigmoid cross-entropy for multi-label targets in [0, 1], in the stable form
 * max(x, 0) - x t + log(1 + exp(-|x|)); reduced over all elements. */
ml_tensor *ml_bce_with_logits(ml_tensor *logits, ml_tensor *targets, ml_reduction red);

#endif
