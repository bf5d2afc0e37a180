/* objective.h -- what a gradient attack maximises: a loss per example.
 *
 * An objective maps the logits of a forward (and, when it asks for them, the
 * forward's routing traces and auxiliary losses) to a float tensor [B] of
 * losses to maximise, differentiable w.r.t. the input. The attacks sum it and
 * take the input gradient; they never look inside. Built in:
 *
 *   "ce"            cross-entropy with the labels (untargeted)
 *   "dlr"           difference of logits ratio (Croce & Hein 2020), >= 3 classes
 *   "cw"            Carlini-Wagner margin: max_{i != y} z_i - z_y
 *   "ce_targeted"   -CE with the target classes (opts.target)
 *   "dlr_targeted"  targeted DLR (APGD-T), >= 4 classes
 *   "logit_diff"    z_t - z_y (FAB-T's linearised decision boundary)
 *   "bce"           sigmoid cross-entropy summed over classes, for multi-label
 *                   targets y float [B, C] in {0, 1}
 *   "ce_aux"        CE plus the routers' auxiliary losses with the weights they
 *                   train with (computed in eval mode too)
 *   "kl"            KL(softmax(clean logits) || softmax(logits)): TRADES' inner
 *                   maximisation
 *
 * the routing objectives (routing.c: they read the router logits of the
 * forward's trace, with their autograd history, and sum over MoE layers and
 * over the items of an example)
 *
 *   "routing_kl"     KL(clean router distribution || current one)
 *   "routing_margin" the violation of the clean top-K margin
 *   "routing_steer"  the log-probability of a chosen expert per layer
 *
 * and custom objectives (ml_objective_custom: a Lua function of (logits,
 * trace, y) from the bindings). Objectives that need the clean forward (the
 * KL, the routing objectives, which compare the clean and the current
 * routing) get it once through ml_objective_prepare; when an attack works on a
 * subset of the batch, `index` says which rows of the clean batch its
 * examples are. */
#ifndef ML_ATTACK_OBJECTIVE_H
#define ML_ATTACK_OBJECTIVE_H

#include <stdbool.h>

#include "../tensor.h"
#include "traces.h"

typedef struct ml_objective ml_objective;

typedef struct {
    ml_tensor *logits;                /* [b, C], differentiable */
    const ml_attack_routing *routing; /* the forward's traces/aux (as asked by needs_trace/needs_aux) */
    const ml_tensor *y;               /* int64 [b] 0-based labels, or float [b, C] targets (multilabel) */
    const ml_tensor *target;          /* int64 [b] 0-based target classes, or NULL */
    const ml_tensor *index;           /* int64 [b] rows of the clean batch, or NULL = all rows in order */
} ml_objective_input;

typedef ml_tensor *(*ml_objective_loss_fn)(ml_objective *o, const ml_objective_input *in);

struct ml_objective {
    char name[32];
    bool multilabel;  /* y is float [B, C]; success = some thresholded label differs */
    bool needs_trace; /* forwards collect routing traces */
    bool needs_aux;   /* forwards compute auxiliary losses in eval mode */
    bool needs_clean; /* prepare() is called with the clean forward */
    bool needs_target;/* targeted: opts.target (or the attack's target classes) required */
    int min_classes;
    ml_objective_loss_fn loss;
    bool routing;     /* a routing objective (changes the routing, not the prediction) */
    bool flat_at_clean; /* minimal, with zero gradient, at the clean input (the KLs): FGSM and PGD start
                         * from a point near x instead (driver.h, atk_nudge) */
    /* the clean forward, kept by ml_objective_prepare when needs_clean */
    ml_tensor *clean_logits;         /* detached [B, C] */
    ml_trace *clean_trace;           /* its routing (when needs_trace; owned) */
    /* routing_steer: the expert each MoE layer's items are steered to (0-based, by layer) */
    int *steer;
    int n_steer;
    /* custom objectives */
    void *ud;
    void (*free_ud)(void *ud);
};

/* A built-in objective by name; NULL + error (listing the names) if unknown. */
ml_objective *ml_objective_new(const char *name);
/* A custom objective: loss(o, in) with o->ud = ud; free_ud(ud) on free. */
ml_objective *ml_objective_custom(const char *name, ml_objective_loss_fn loss, void *ud, void (*free_ud)(void *),
                                  bool needs_trace);
void ml_objective_free(ml_objective *o);
/* true when name is a built-in objective */
bool ml_objective_known(const char *name);
/* "ce, dlr, cw, ..." for messages */
const char *ml_objective_names(void);

/* Keeps the clean forward's logits (and, for an objective that reads traces,
 * a copy of its routing) when the objective needs them; else does nothing. */
int ml_objective_prepare(ml_objective *o, ml_tensor *clean_logits, const ml_trace *clean_trace);
/* routing_steer: the expert (0-based) of each of the n MoE layers, copied. */
int ml_objective_set_steer(ml_objective *o, const int *experts, int n);

/* Evaluates the objective (a new [b] float tensor), checking what it returns:
 * `fn` names the attack in messages. */
ml_tensor *ml_objective_eval(const char *fn, ml_objective *o, const ml_objective_input *in);

/* Checks labels (or multi-label targets) and target classes for B examples
 * and C classes; `base` is the caller's index base, used in messages only
 * (the Lua binding passes 1, so a message shows the labels a user wrote). */
int ml_objective_check_labels(const char *fn, const ml_objective *o, const ml_tensor *y, const ml_tensor *target,
                              int64_t B, int64_t C, int base);

/* The losses without a model, for tests and for ml.attack.loss(): logits
 * [B, C], labels/target as above; clean: the clean logits for "kl". */
ml_tensor *ml_objective_apply(ml_objective *o, ml_tensor *logits, const ml_tensor *y, const ml_tensor *target,
                              ml_tensor *clean, int base);

#endif
