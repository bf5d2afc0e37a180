/* driver.h -- what every attack shares (internal to core/attack): the
 * attack's context (model, options, objective, private generator, cost),
 * the forward/gradient pass with EOT, success, projections and norms,
 * progress and interrupts, and sub-batches.
 *
 * An attack body works on an ml_attack_batch (clean inputs, labels, targets,
 * rows of the caller's batch) and writes its result into an ml_attack_out.
 * Per-example state lives in tensors allocated once per run, so a step
 * allocates nothing beyond what the forward and backward need. */
#ifndef ML_ATTACK_DRIVER_H
#define ML_ATTACK_DRIVER_H

#include "../rng.h"
#include "attack.h"

typedef struct {
    const char *name;          /* for messages: the attack the user called */
    const char *part;          /* the running component (on_step's info.attack) */
    ml_module *model;
    const ml_attack_opts *o;
    ml_objective *obj;         /* the objective of the gradient attacks (borrowed) */
    ml_attack_cost *cost;      /* where passes are counted */
    ml_rng_state *row_rng;     /* a private generator per row of the caller's batch */
    int64_t n_rows;
    ml_attack_routing routing; /* the last forward's traces / aux */
    ml_tensor *clean_logits;   /* [B, C] of the caller's batch (detached) */
    ml_trace *clean_trace;     /* the clean forward's routing (owned; empty without MoE layers) */
    const ml_trace *frozen;    /* experts-only: every forward is forced to this routing of the caller's batch */
    ml_tensor *start;          /* [B, ...] where FGSM, PGD and APGD start (steer_then_break), or NULL */
    bool want_trace;           /* trace every forward (the report's routing) */
    ml_objective *steering;    /* the objective steering the routing (routing_steer), or NULL (borrowed) */
    int64_t C;                 /* classes */
    int run;                   /* restart / target counter for on_step */
    int step;                  /* the last step reported to atk_progress (messages name step + 1, the one running) */
    bool was_training;         /* some module was in training mode before the attack */
    bool stop, interrupted, stopped;
} ml_attack_ctx;

typedef struct {
    ml_tensor *x;          /* [b, ...] clean, contiguous */
    ml_tensor *y;          /* int64 [b] labels (float [b, C] multi-label) */
    ml_tensor *target;     /* int64 [b] user targets (success = reaching them), or NULL */
    ml_tensor *obj_target; /* int64 [b] the objective's target classes (APGD-T), or NULL */
    ml_tensor *index;      /* int64 [b] rows of the caller's batch, or NULL = all in order */
    int64_t b, D;          /* examples, values per example */
} ml_attack_batch;

typedef struct {
    ml_tensor *x_adv;   /* [b, ...] the result */
    ml_tensor *loss;    /* float [b] the best objective value reached */
    ml_tensor *success; /* float [b] 0/1 */
    ml_tensor *steps;   /* int64 [b] iterations or queries used */
} ml_attack_out;

/* ---------------------------------------------------------------- batches */
/* A new batch of the given rows (int64 [k], 0-based) of bt. */
int atk_batch_rows(const ml_attack_batch *bt, const ml_tensor *rows, ml_attack_batch *out);
void atk_batch_free(ml_attack_batch *bt);
/* An out for b examples shaped like x (x_adv = a copy of x, loss -inf, no success, 0 steps). */
int atk_out_new(ml_attack_out *out, const ml_attack_batch *bt);
void atk_out_free(ml_attack_out *out);
/* Merges the result src of the rows `rows` (int64 [k]) into dst, keeping the
 * worst case per example: a success replaces a failure, and (unless
 * only_success) a higher loss replaces a lower one; steps add up. */
void atk_out_merge(ml_attack_out *dst, const ml_attack_out *src, const ml_tensor *rows, bool only_success);
/* One run of an attack body on a batch; k counts the runs (restarts, targets). */
typedef int (*atk_body)(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *r, int k);
/* Runs body on the examples of bt not broken in out (with the objective's
 * target classes of rank target_rank when > 0) and merges the result into
 * out (atk_out_merge). *left = how many examples it ran on (0: none was left).
 * Returns 0, 1 (stopped: what was found is merged) or -1. */
int atk_run_unbroken(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out, int target_rank, int k,
                     atk_body body, bool only_success, int64_t *left);
/* int64 [k] of the rows where mask (float [b]) is 0 (want = 0) or 1 (want = 1). */
ml_tensor *atk_rows_where(const ml_tensor *mask, int want);

/* ---------------------------------------------------------------- passes */
/* Loss per example (mean over the EOT draws), success (the last draw) and the
 * input gradient of the summed loss (mean over the draws) at xa [b, ...];
 * any output may be NULL. Returns 0, 1 when interrupted, -1 on error. */
int atk_loss_grad(ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa, float *loss, float *success,
                  float *grad);
/* After a failed pass: 1 when Ctrl-C caused it (the attack stops cleanly:
 * a->stop, a->interrupted, the error cleared), else -1 (an error). */
int atk_pass_failed(ml_attack_ctx *a);
/* One forward without autograd: logits (new ref, optional), loss and success
 * (optional). Counts one query per example. 0, 1 (interrupted) or -1. */
int atk_eval(ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa, ml_tensor **logits, float *loss,
             float *success);
/* 1 where logits say the example is broken (misclassified, target reached,
 * or a multi-label prediction differs). */
void atk_success(const ml_attack_ctx *a, const ml_attack_batch *bt, const ml_tensor *logits, float *out);
/* The index of the largest of C values (the first on ties). */
int64_t atk_argmax(const float *row, int64_t C);
/* The margin z_y - max_{i != y} z_i per example (<= 0: misclassified). */
void atk_margin(const ml_tensor *logits, const ml_tensor *y, float *out);

/* Copies the starting point of bt's rows (a->start) into xa; false (nothing
 * done) when the attack starts from x. */
bool atk_start(const ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa);
/* For an objective flat at the clean input (a KL: zero gradient at x, where
 * sign() would step along rounding noise), xa := a random point at 1e-3 eps
 * around x (as TRADES starts at x + 0.001 N(0, 1)); true when done. */
bool atk_nudge(ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa);

/* ---------------------------------------------------------------- geometry */
/* xa := projection of xa onto the norm ball of radius eps around x (and [0, 1]
 * when clamping), row by row. */
void atk_project(const ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa, double eps);
/* ||u - v|| in the norm for one row of D values (v NULL: ||u||). */
double atk_row_dist(ml_attack_norm norm, const float *u, const float *v, int64_t D);
/* out[i] = ||xa_i - x_i|| in the attack's norm. */
void atk_norms(ml_attack_norm norm, const ml_attack_batch *bt, const ml_tensor *xa, float *out);
/* dir := sign(g) (linf) or g / ||g||_2 (l2), row by row (in place). */
void atk_direction(ml_attack_norm norm, int64_t b, int64_t D, float *g);
/* xa := x + a random point of the ball (uniform in each coordinate for linf;
 * for l2 a uniform direction scaled by U(0, 1) eps), then clamped. */
void atk_random_start(ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa, double eps);
/* The private generator of example i of bt. Every random draw about an example
 * (starts, squares) comes from its own row's generator, so what an attack does
 * to an example depends on the seed, the attack and the example, never on
 * which other examples share its batch (AutoAttack's subsets and chunks). */
ml_rng_state *atk_rng(ml_attack_ctx *a, const ml_attack_batch *bt, int64_t i);
double atk_uniform(ml_rng_state *g); /* [0, 1) */
double atk_normal(ml_rng_state *g);
/* Reseeds every row's generator from opts.seed, the attack's name and the row. */
void atk_reseed(ml_attack_ctx *a, const char *attack);

/* ---------------------------------------------------------------- progress */
/* Calls on_step (when set) and checks Ctrl-C: 0 to go on, 1 to stop (sets
 * a->stop and a->interrupted / a->stopped), -1 on error. */
int atk_progress(ml_attack_ctx *a, const ml_attack_batch *bt, int step, int total, ml_tensor *xa,
                 ml_tensor *loss, ml_tensor *success);
double atk_now(void);
void atk_log(const ml_attack_ctx *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---------------------------------------------------------------- the attacks' bodies */
int atk_fgsm(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out);
int atk_pgd(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out);
/* APGD with the context's objective; restarts re-attack the examples not yet broken. */
int atk_apgd(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out);
/* APGD-T: targeted DLR towards the classes ranked 2 .. n_targets + 1 at the clean point. */
int atk_apgd_targeted(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out);
int atk_fab_targeted(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out);
int atk_square(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out);
/* The classes of rank r (0 = the largest logit) of the clean prediction of bt's rows. */
ml_tensor *atk_ranked_class(const ml_attack_ctx *a, const ml_attack_batch *bt, int r);

/* ---------------------------------------------------------------- the parts of an MoE (target.c) */
/* After the clean forward: checks the target against the objective and the
 * model, freezes the routing (experts), sets the steering targets (computing
 * each layer's weakest expert when asked). steer: the steering objective of
 * steer_then_break (borrowed), or NULL. */
int atk_target_prepare(ml_attack_ctx *a, const ml_attack_batch *bt, ml_objective *steer);
/* steer_then_break: body with the steering objective for the first steps,
 * then with a->obj from where it ended; the phases' results are merged
 * (an example broken while steering stays broken). */
typedef int (*atk_attack_body)(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out);
int atk_steer_then_break(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out, atk_attack_body body,
                         ml_objective *steer, int default_steps);
/* The report's routing: x_adv's routing (the last forward's trace, of the
 * whole batch) against the clean one, per layer, and the changed examples. */
int atk_target_report(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_report *rep);

/* AutoAttack (autoattack.c) and the doctor (doctor.c) work on the whole
 * caller's batch and fill the report's parts / doctor. */
int atk_autoattack(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out, ml_attack_report *rep);
int atk_doctor(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_report *rep, bool cheap);
/* Adds a flag to a doctor report (ignored past ML_DOCTOR_MAX_FLAGS) and logs it. */
void atk_flag(const ml_attack_ctx *a, ml_doctor_report *d, const char *name, const char *remedy, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#endif
