/* optim.h -- optimizers over a list of parameters (leaf tensors with .grad).
 *
 * SGD (momentum, dampening, Nesterov), Adam and AdamW with PyTorch's update
 * rules, weight decay (L2 for SGD/Adam, decoupled for AdamW), and clipping by
 * global gradient norm. One optimizer per parameter group: AdvMoE updates the
 * router and the backbone with separate optimizers. The state (momentum
 * buffers, moments, step counts) can be exported and restored to resume. */
#ifndef ML_TRAIN_OPTIM_H
#define ML_TRAIN_OPTIM_H

#include "../tensor.h"

typedef enum { ML_OPT_SGD, ML_OPT_ADAM, ML_OPT_ADAMW } ml_optim_kind;

typedef struct {
    ml_optim_kind kind;
    double lr;
    double momentum, dampening; /* SGD */
    bool nesterov;              /* SGD */
    double weight_decay;
    double beta1, beta2, eps; /* Adam(W); zero means the default 0.9, 0.999, 1e-8 */
} ml_optim_opts;

typedef struct ml_optim ml_optim;

ml_optim *ml_optim_new(const ml_optim_opts *opts, int n, ml_tensor *const *params);
void ml_optim_free(ml_optim *o);
/* One update from the parameters' current .grad (parameters without a grad
 * are skipped). Runs without recording autograd. */
int ml_optim_step(ml_optim *o);
void ml_optim_zero_grad(ml_optim *o);
void ml_optim_set_lr(ml_optim *o, double lr);
double ml_optim_get_lr(const ml_optim *o);
int ml_optim_num_params(const ml_optim *o);
ml_tensor *ml_optim_param(const ml_optim *o, int i); /* borrowed; NULL for a bad i */
int64_t ml_optim_steps(const ml_optim *o);

/* State export: for parameter i, up to two state tensors (momentum buffer, or
 * Adam's first and second moments; NULL when not yet created), and the step count. */
int ml_optim_state(const ml_optim *o, int i, ml_tensor **s1, ml_tensor **s2);
/* Restores state (tensors are copied). */
int ml_optim_set_state(ml_optim *o, int i, const ml_tensor *s1, const ml_tensor *s2, int64_t steps);

/* Scales all gradients so that their global 2-norm is at most max_norm;
 * returns the norm before clipping (or -1 on error). */
double ml_clip_grad_norm(int n, ml_tensor *const *params, double max_norm);

#endif
