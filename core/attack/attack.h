/* attack.h -- adversarial attacks on a model: FGSM, PGD, APGD, APGD-T, FAB-T,
 * Square, AutoAttack, and the attack doctor.
 *
 * Every attack has the same shape:
 *
 *     ml_attack_opts o;
 *     ml_attack_opts_default(&o);
 *     o.eps = 8.0 / 255;  o.steps = 10;
 *     ml_attack_report rep;
 *     ml_tensor *x_adv = ml_attack_run("pgd", model, x, y, &o, &rep);
 *     ... rep.success[i], rep.robust_accuracy, rep.cost ...
 *     ml_attack_report_clear(&rep); ml_release(x_adv);
 *
 * x is a batch [B, ...] of pixels in [0, 1]; y holds 0-based int64 class labels
 * [B] (or float targets [B, C] in {0, 1} for the multi-label objective "bce").
 * The model must return logits [B, classes]. It runs in eval mode during the
 * attack and every module's mode is restored afterwards; parameters get no
 * .grad (the input gradient comes from ml_grad). The attack's own randomness
 * (random starts, Square's squares) comes from private generators, one per
 * example, seeded from (o.seed, attack, row); the engine generator (dropout, router noise of a stochastic model) is
 * seeded from o.seed too for the attack and restored afterwards, so the same
 * seed gives the same adversarial batch. Ctrl-C (ml_interrupt_request) stops an
 * attack cleanly: it returns the best batch found so far with
 * rep.interrupted set. The result is NULL + error only for bad input or a
 * failing model.
 *
 * Objectives (what the gradient attacks maximise) are pluggable: see
 * objective.h. Routing traces are read only through traces.h.
 *
 * Attacks on the parts of an MoE (target.c; FGSM, PGD and APGD): o.moe_target
 * chooses what the gradient attack changes --
 *   ML_TARGET_MODEL    the prediction, through everything (the default);
 *   ML_TARGET_ROUTER   only the routing: the objective is a routing objective
 *                      (routing_kl by default, objective.h);
 *   ML_TARGET_EXPERTS  only the experts: every forward is forced to the clean
 *                      input's selection (nn/moe/forced.h), so the attack moves
 *                      along the pathway the clean input took, and the result
 *                      is evaluated on that pathway;
 *   ML_TARGET_STEER_THEN_BREAK  first steer the routing to an expert per layer
 *                      (o.steer_expert, or each layer's weakest: the expert
 *                      that, when every item of that layer is forced to it,
 *                      gives the highest clean loss) with routing_steer for
 *                      steer_steps, then the objective (CE) from there.
 * The report says, for a model with MoE layers, how the routing of x_adv
 * differs from the clean routing per layer and how many examples changed
 * routing and prediction. o.selection_ste adds a straight-through gradient
 * for the hard top-K selection (nn/moe/ste.h); o.router_noise attacks with
 * the router noise the model trains with (V-MoE), with EOT (o.eot). */
#ifndef ML_ATTACK_H
#define ML_ATTACK_H

#include <stdbool.h>
#include <stdint.h>

#include "../nn/module.h"
#include "../tensor.h"
#include "objective.h"

typedef enum { ML_NORM_LINF = 0, ML_NORM_L2 = 1 } ml_attack_norm;
const char *ml_attack_norm_name(ml_attack_norm n); /* "linf", "l2" */

typedef enum { ML_TARGET_MODEL, ML_TARGET_ROUTER, ML_TARGET_EXPERTS, ML_TARGET_STEER_THEN_BREAK } ml_moe_target;
const char *ml_moe_target_name(ml_moe_target t); /* "model", "router", "experts", "steer_then_break" */
/* The target named s; -1 + an error naming fn and the names when unknown. */
int ml_moe_target_parse(const char *fn, const char *s, ml_moe_target *out);

/* ------------------------------------------------------------ progress */
typedef struct {
    const char *attack;  /* "pgd", "apgd-ce", "square", ... (the component inside AutoAttack) */
    int step;            /* 1-based iteration (queries for Square) */
    int total;           /* planned iterations of this run */
    int run;             /* 0-based restart / target class / chunk counter */
    ml_tensor *loss;     /* float [b]: current loss per attacked example */
    ml_tensor *success;  /* float [b]: 1 where the example is broken so far */
    ml_tensor *x_adv;    /* [b, ...]: the current adversarial batch */
    ml_tensor *index;    /* int64 [b]: rows of the caller's batch (0-based), or NULL = all rows */
    const ml_attack_routing *routing; /* the last forward's routing (opts.trace), else NULL */
} ml_attack_step_info;
/* Returns 0 to continue, 1 to stop the attack (it returns what it has), -1
 * on error (the message is set; the attack fails with it). The tensors are
 * the attack's working buffers: valid during the call, clone to keep. */
typedef int (*ml_attack_step_fn)(void *ud, const ml_attack_step_info *info);
/* A line of progress ("robust accuracy after APGD-CE: 61.2% (3.4 s)"). */
typedef void (*ml_attack_log_fn)(void *ud, const char *line);

/* ------------------------------------------------------------ options */
#define ML_ATTACK_MAX_PARTS 16

typedef struct {
    ml_attack_norm norm;        /* linf (default) or l2 */
    double eps;          /* radius of the ball, >= 0 (required: default NAN fails) */
    int steps;           /* iterations; 0 = the attack's default (PGD 10, APGD/FAB 100) */
    double alpha;        /* PGD step size; NAN = eps / steps */
    bool random_start;   /* PGD: start at a uniform point of the ball */
    int restarts;        /* PGD / APGD / FAB: runs from fresh starts, worst case kept (1) */
    bool early_stop;     /* PGD: freeze an example at its first success */
    int eot;             /* gradients averaged over eot forwards (1) */
    uint64_t seed;
    bool clamp;          /* clamp to [0, 1] (true) */
    bool nan_continue;   /* go on when the model returns NaN or inf logits (false: stop with an error) */
    int index_base;      /* the caller's first index (0 in C; the Lua binding sets 1): messages only */
    ml_objective *objective; /* borrowed; NULL = the attack's default (CE) */
    ml_tensor *target;   /* int64 [B] 0-based target classes: a targeted attack (borrowed) */
    int n_targets;       /* APGD-T / FAB-T: classes tried, by clean logit rank 2, 3, ... (9) */
    double rho;          /* APGD: checkpoint threshold (0.75) */
    double momentum;     /* APGD: 0.75 */
    double alpha_max, fab_eta, fab_beta; /* FAB: 0.1, 1.05, 0.9 */
    int queries;         /* Square: query budget per example (5000) */
    double p_init;       /* Square: initial fraction of pixels changed (0.8) */
    /* AutoAttack */
    const char *version;                          /* "standard", "rand", "custom" */
    int n_attacks;                                /* custom: the list */
    const char *attacks[ML_ATTACK_MAX_PARTS];
    const char *state_path;                       /* resumable state (JSON), or NULL */
    int64_t batch;                                /* examples per chunk (250; 0 = all at once) */
    bool checks;                                  /* run the doctor's cheap checks first (true) */
    /* the parts of an MoE (FGSM, PGD, APGD) */
    ml_moe_target moe_target; /* what the attack changes (model); Lua: target = "router", ... */
    int steer_steps;          /* steer_then_break: steps of the steering phase (0: half of steps) */
    int steer_expert;         /* routing_steer, steer_then_break: 0-based expert of every layer; -1: each layer's weakest */
    bool selection_ste;       /* straight-through gradient of the hard selection (false: the model's gradient) */
    bool router_noise;        /* the training router noise in the gradient passes (with eot) */
    /* progress */
    ml_attack_step_fn on_step;
    void *on_step_ud;
    bool trace;          /* collect routing traces for on_step */
    ml_attack_log_fn log;
    void *log_ud;
} ml_attack_opts;

void ml_attack_opts_default(ml_attack_opts *o);

/* ------------------------------------------------------------ the attack doctor */
#define ML_DOCTOR_MAX_FLAGS 16
typedef struct {
    char name[32];     /* "randomness", "probabilities", "zero_gradients", ... */
    char message[256]; /* what was seen */
    char remedy[256];  /* what to do */
} ml_doctor_flag;

typedef struct {
    int n_flags;
    ml_doctor_flag flags[ML_DOCTOR_MAX_FLAGS];
    double clean_accuracy;
    double eps_zero_accuracy, eps_one_accuracy;  /* NAN when not run */
    double white_box_accuracy, square_accuracy;  /* NAN when not run */
    int n_eps;
    double eps_grid[8], eps_accuracy[8];
    int64_t zero_gradients;                      /* examples whose input gradient is exactly 0 */
    double output_spread;                        /* largest change between five forwards of x */
} ml_doctor_report;

/* ------------------------------------------------------------ report */
typedef struct {
    int64_t forwards, backwards;                 /* model passes over a batch */
    int64_t forward_examples, backward_examples; /* the same, counted per example (queries) */
    double seconds;
} ml_attack_cost;

/* One component of AutoAttack (or the attack itself). */
typedef struct {
    char name[24];           /* "apgd-ce", "apgd-t", "fab-t", "square", ... */
    double robust_accuracy;  /* after this component (fraction of the batch) */
    int64_t broken;          /* examples this component broke */
    ml_attack_cost cost;
} ml_attack_part;

/* The routing of x_adv against the clean routing, for one MoE layer. */
typedef struct {
    char name[128];
    double change;   /* fraction of the layer's items whose kept experts changed */
    int steer;       /* the expert the layer was steered to (0-based), or -1 */
    double steered;  /* fraction of the items whose first choice is that expert (NAN without steering) */
} ml_attack_layer;

typedef struct {
    char attack[24];
    int64_t n;                 /* examples */
    /* per example (new references; NULL until filled) */
    ml_tensor *success;        /* float [B]: 1 = adversarial (misclassified, or the target reached) */
    ml_tensor *loss;           /* float [B]: the objective at the returned point */
    ml_tensor *norm;           /* float [B]: perturbation norm (in opts.norm) */
    ml_tensor *steps;          /* int64 [B]: iterations (or queries) used */
    ml_tensor *pred_clean;     /* int64 [B]: 0-based predictions on x and on x_adv */
    ml_tensor *pred_adv;
    ml_tensor *broken_by;      /* int64 [B] (AutoAttack): part index, -1 robust, -2 misclassified clean */
    double clean_accuracy, robust_accuracy;
    double robust_accuracy_8bit; /* x_adv rounded to 8 bits, as a PNG would store it */
    ml_attack_cost cost;
    int n_parts;
    ml_attack_part parts[ML_ATTACK_MAX_PARTS];
    bool interrupted;          /* Ctrl-C: the best batch so far was returned */
    bool stopped;              /* on_step asked to stop */
    bool resumed;              /* AutoAttack continued from its state file */
    uint64_t seed;
    char objective[32];
    ml_doctor_report doctor;   /* the checks ("check", and AutoAttack's cheap ones) */
    /* the parts of an MoE */
    ml_moe_target moe_target;
    bool selection_ste, router_noise;
    int n_layers;              /* MoE layers of the model (0: no routing) */
    ml_attack_layer *layers;   /* [n_layers] (owned) */
    int64_t routing_changed;   /* examples whose routing changed in some layer */
    int64_t prediction_changed;/* examples whose prediction changed */
} ml_attack_report;

void ml_attack_report_clear(ml_attack_report *r);

/* ------------------------------------------------------------ attacks */
/* name: "fgsm", "pgd", "apgd" (APGD with the objective, CE by default),
 * "apgd-ce", "apgd-dlr", "apgd-t", "fab-t" (alias "fab"), "square",
 * "autoattack", "check", "check-cheap". Returns x_adv (new) and fills rep. */
ml_tensor *ml_attack_run(const char *name, ml_module *model, ml_tensor *x, ml_tensor *y, const ml_attack_opts *o,
                         ml_attack_report *rep);
/* true when name is an attack ml_attack_run knows */
bool ml_attack_known(const char *name);

/* ------------------------------------------------------------ APGD's step-size schedule
 * Separate so that it can be tested on a scripted loss sequence. Checkpoints
 * at the fractions p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} -
 * 0.03, 0.06) of n iterations, as integer interval lengths (as the reference
 * code): the first max(int(0.22 n), 1), then each one max(int(0.03 n), 1)
 * shorter, never below max(int(0.06 n), 1). At a checkpoint an example's step
 * is halved (and it restarts from its best point) when fewer than rho of the
 * steps of the interval raised its loss (condition 1; the first step is
 * compared with the starting point), or when its step was not halved at the
 * last checkpoint and its best loss did not improve since (condition 2). */
typedef struct {
    int n_iter, interval, size_decr, min_interval, since; /* since: iterations in the current interval */
    double rho;
    int64_t B;
    int *increases;          /* [B] steps of the interval that raised the loss */
    float *prev_loss;        /* [B] loss at the previous iteration */
    float *best_at_check;    /* [B] best loss at the last checkpoint */
    unsigned char *halved_last; /* [B] step halved at the last checkpoint (starts at 1) */
} ml_apgd_schedule;

int ml_apgd_schedule_init(ml_apgd_schedule *s, int n_iter, double rho, int64_t B, const float *loss0);
/* Feeds the losses after one iteration and the current best losses; returns
 * 1 at a checkpoint (halve[b] = 1 where example b's step is halved), else 0. */
int ml_apgd_schedule_step(ml_apgd_schedule *s, const float *loss, const float *best, unsigned char *halve);
void ml_apgd_schedule_free(ml_apgd_schedule *s);

/* ------------------------------------------------------------ FAB's projection
 * The smallest perturbation d (in l_inf or l_2) with w.(t + d) = b and
 * 0 <= t + d <= 1, for one point t of dimension D; when the box makes the
 * hyperplane unreachable, the box corner that goes furthest towards it.
 * work: 2 D doubles of scratch. */
void ml_fab_project(ml_attack_norm norm, int64_t D, const float *t, const float *w, double b, float *d, double *work);

/* ------------------------------------------------------------ the attack doctor
 * ml_attack_run("check", ...) (or "check-cheap") runs the checks and leaves
 * them in rep.doctor; x_adv is x. The cheap checks (randomness, probabilities,
 * training mode, zero gradients) are what AutoAttack runs first; the full
 * doctor adds eps = 0, eps = 1, Square against APGD-CE and monotonicity in
 * eps, each an attack run with o's norm, eps, steps and seed. */

#endif
