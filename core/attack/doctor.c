/* doctor.c -- the attack doctor: flags what makes robustness numbers lie,
 * each with its remedy (after the checks of Croce & Hein's AutoAttack and
 * Carlini et al., "On Evaluating Adversarial Robustness", 2019).
 *
 * Cheap checks (AutoAttack runs them first): the model was in training mode;
 * five forwards of one batch differ (a randomised model); the outputs are
 * probabilities, not logits; examples whose input gradient is exactly zero;
 * MoE layers whose router receives no gradient.
 * The full doctor adds attacks: eps = 0 must give the clean accuracy, l_inf
 * eps = 1 must give 0%, Square must not beat APGD-CE by more than 0.2 points,
 * and the robust accuracy must not grow with eps. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "../ops/loss.h"
#include "driver.h"

void atk_flag(const ml_attack_ctx *a, ml_doctor_report *d, const char *name, const char *remedy, const char *fmt,
              ...) {
    if (d->n_flags >= ML_DOCTOR_MAX_FLAGS) return;
    ml_doctor_flag *f = &d->flags[d->n_flags++];
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(f->remedy, sizeof f->remedy, "%s", remedy);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->message, sizeof f->message, fmt, ap);
    va_end(ap);
    atk_log(a, "warning (%s): %s -- %s", f->name, f->message, f->remedy);
}

/* ---------------------------------------------------------------- cheap checks */
static int check_randomness(ml_attack_ctx *a, const ml_attack_batch *bt, ml_doctor_report *d) {
    enum { N = 5 };
    ml_tensor *z[N] = {0};
    int rc = 0;
    for (int k = 0; k < N && rc == 0; k++) rc = atk_eval(a, bt, bt->x, &z[k], NULL, NULL);
    if (rc == 0) {
        int64_t b = bt->b, C = a->C, changed = 0;
        double spread = 0;
        for (int64_t i = 0; i < b; i++) {
            /* rows scaled to unit l_2 norm (as AutoAttack compares them) */
            double n0 = 0;
            const float *r0 = ml_f32(z[0]) + i * C;
            for (int64_t c = 0; c < C; c++) n0 += (double)r0[c] * r0[c];
            int64_t p0 = atk_argmax(r0, C);
            bool moved = false;
            for (int k = 1; k < N; k++) {
                const float *rk = ml_f32(z[k]) + i * C;
                double nk = 0;
                for (int64_t c = 0; c < C; c++) nk += (double)rk[c] * rk[c];
                double diff = 0;
                for (int64_t c = 0; c < C; c++) {
                    double u = r0[c] / (sqrt(n0) + 1e-10) - rk[c] / (sqrt(nk) + 1e-10);
                    diff += u * u;
                }
                spread = sqrt(diff) > spread ? sqrt(diff) : spread;
                moved |= atk_argmax(rk, C) != p0;
            }
            changed += moved;
        }
        d->output_spread = spread;
        if (spread > 1e-4 || changed > 0)
            atk_flag(a, d, "randomness",
                     "the model is randomised: average gradients over draws (eot = 20) or run AutoAttack with "
                     "version = \"rand\"",
                     "five forwards of the same batch differ (largest change %.3g of the normalised outputs, "
                     "%lld predictions moved)", spread, (long long)changed);
    }
    for (int k = 0; k < N; k++) ml_release(z[k]);
    return rc;
}

static void check_probabilities(ml_attack_ctx *a, ml_doctor_report *d) {
    const ml_tensor *z = a->clean_logits;
    int64_t b = z->shape[0], C = z->shape[1];
    const float *v = ml_f32(z);
    bool probs = true;
    for (int64_t i = 0; i < b && probs; i++) {
        double s = 0;
        for (int64_t c = 0; c < C; c++) {
            probs &= v[i * C + c] > -1e-5 && v[i * C + c] < 1 + 1e-5;
            s += v[i * C + c];
        }
        probs &= fabs(s - 1) < 1e-5;
    }
    if (probs)
        atk_flag(a, d, "probabilities",
                 "return logits (drop the final softmax): the attack losses assume logits, and saturated "
                 "probabilities hide the gradient",
                 "every output row lies in [0, 1] and sums to 1: the model returns probabilities");
}

static int check_gradients(ml_attack_ctx *a, const ml_attack_batch *bt, ml_doctor_report *d) {
    ml_objective *ce = ml_objective_new("ce"), *saved = a->obj;
    ml_tensor *g = ml_empty_like(bt->x);
    if (!ce || !g) {
        ml_objective_free(ce);
        ml_release(g);
        return -1;
    }
    a->obj = ce;
    int rc = atk_loss_grad(a, bt, bt->x, NULL, NULL, ml_f32(g));
    a->obj = saved;
    if (rc == 0) {
        int64_t zero = 0;
        for (int64_t i = 0; i < bt->b; i++) {
            const float *gi = ml_f32(g) + i * bt->D;
            bool all0 = true;
            for (int64_t j = 0; j < bt->D && all0; j++) all0 = gi[j] == 0;
            zero += all0;
        }
        d->zero_gradients = zero;
        if (zero > 0)
            atk_flag(a, d, "zero_gradients",
                     "gradient attacks cannot move these examples: look for non-differentiable steps (rounding, "
                     "argmax, saturated softmax) and use BPDA, a score-based attack (square) or a smoother loss",
                     "%lld of %lld examples have an input gradient of exactly zero", (long long)zero,
                     (long long)bt->b);
    }
    ml_objective_free(ce);
    ml_release(g);
    return rc;
}

/* Per MoE layer, whether its router gets any gradient from the loss: the
 * gradient of CE w.r.t. the router's parameters (group "router") under the
 * layer's path, or, for layers routed by a global router, w.r.t. the router
 * parameters under no MoE layer. A router without gradient is invisible to
 * gradient attacks (top-1 with renormalised gates: every gate is 1). */
typedef struct {
    int n, cap;
    char **paths;
    ml_tensor **params;
} router_params;

static int collect_router(void *ud, const char *path, ml_param *p, ml_module *owner) {
    router_params *r = ud;
    if (!p->group || strcmp(p->group, "router")) return 0;
    if (r->n == r->cap) {
        int cap = r->cap ? 2 * r->cap : 16;
        char **pp = realloc(r->paths, sizeof *pp * (size_t)cap);
        if (pp) r->paths = pp;
        ml_tensor **tt = pp ? realloc(r->params, sizeof *tt * (size_t)cap) : NULL;
        if (tt) r->params = tt;
        if (!pp || !tt) return ml_failc_oom(__func__);
        r->cap = cap;
    }
    if (!(r->paths[r->n] = strdup(path))) return ml_failc_oom(__func__);
    r->params[r->n++] = p->t;
    return 0;
}

/* Whether path lies under the module at prefix ("blocks.1.mlp" holds "blocks.1.mlp.router.weight"). */
static bool under(const char *path, const char *prefix) {
    size_t n = strlen(prefix);
    return n > 0 && !strncmp(path, prefix, n) && path[n] == '.';
}

static bool under_any_layer(const char *path, const ml_trace *t) {
    for (int l = 0; l < t->n; l++)
        if (under(path, t->layers[l].name)) return true;
    return false;
}

static int check_router_gradients(ml_attack_ctx *a, const ml_attack_batch *bt, ml_doctor_report *d) {
    const ml_trace *t = a->clean_trace;
    if (!t || t->n == 0) return 0;
    router_params rp = {0};
    ml_tensor **g = NULL, *z = NULL, *ce = NULL;
    int rc = ml_module_visit_params(a->model, false, collect_router, &rp);
    if (rc || rp.n == 0) goto done;
    bool gm = ml_grad_set(true);
    z = ml_module_forward(a->model, bt->x, NULL);
    ce = z && z->ndim == 2 && bt->y->dtype == ML_I64 ? ml_cross_entropy(z, bt->y, ML_SUM, 0) : NULL;
    bool graph = ce && ce->requires_grad; /* else the parameters are frozen: nothing to tell */
    g = graph ? calloc((size_t)rp.n, sizeof *g) : NULL;
    rc = !ce || (graph && !g) ? -1 : graph ? ml_grad(ce, NULL, rp.n, rp.params, g, false) : 0;
    ml_grad_set(gm);
    if (z) {
        a->cost->forwards++;
        a->cost->forward_examples += bt->b;
    }
    if (rc || !graph) {
        if (rc) rc = atk_pass_failed(a);
        goto done;
    }
    a->cost->backwards++;
    a->cost->backward_examples += bt->b;
    for (int l = 0; l < t->n; l++) {
        const ml_trace_layer *layer = &t->layers[l];
        bool global = layer->kind == ML_TRACE_GLOBAL, any = false, moved = false;
        for (int i = 0; i < rp.n; i++) {
            bool mine = global ? !under_any_layer(rp.paths[i], t) : under(rp.paths[i], layer->name);
            if (!mine) continue;
            any = true;
            ml_tensor *gi = g[i] ? ml_contiguous(g[i]) : NULL;
            for (int64_t j = 0, n = gi ? ml_numel(gi) : 0; j < n && !moved; j++) moved = ml_f32(gi)[j] != 0;
            ml_release(gi);
        }
        if (any && !moved)
            atk_flag(a, d, "router_no_gradient",
                     "gradient attacks cannot move this routing: attack it with target = \"router\" (the routing "
                     "objectives read the router logits), add a straight-through gradient (selection_grad = "
                     "\"ste\"), or use a score-based attack (square)",
                     "the router of MoE layer '%s' receives no gradient from the loss (e.g. top-1 with renormalised "
                     "gates: every gate is 1)", layer->name);
    }
done:
    for (int i = 0; g && i < rp.n; i++) ml_release(g[i]);
    free(g);
    ml_release(z);
    ml_release(ce);
    for (int i = 0; i < rp.n; i++) free(rp.paths[i]);
    free(rp.paths);
    free(rp.params);
    return rc;
}

/* ---------------------------------------------------------------- attack checks */
/* Robust accuracy of one nested attack run; NAN when interrupted (a->stop set). */
static double robust(ml_attack_ctx *a, const ml_attack_batch *bt, const char *attack, ml_attack_norm norm, double eps,
                     int *rc) {
    ml_attack_opts c = *a->o;
    c.norm = norm;
    c.eps = eps;
    c.on_step = NULL;
    c.log = NULL;
    c.state_path = NULL;
    c.objective = NULL;
    c.target = NULL;
    c.moe_target = ML_TARGET_MODEL;
    c.steer_steps = 0;
    ml_attack_report r;
    ml_tensor *xa = ml_attack_run(attack, a->model, bt->x, bt->y, &c, &r);
    if (!xa) {
        *rc = -1;
        return NAN;
    }
    double acc = r.robust_accuracy;
    a->cost->forwards += r.cost.forwards;
    a->cost->backwards += r.cost.backwards;
    a->cost->forward_examples += r.cost.forward_examples;
    a->cost->backward_examples += r.cost.backward_examples;
    if (r.interrupted || r.stopped) {
        a->stop = true;
        a->interrupted |= r.interrupted;
        a->stopped |= r.stopped;
        acc = NAN;
    }
    ml_release(xa);
    ml_attack_report_clear(&r);
    return acc;
}

static int attack_checks(ml_attack_ctx *a, const ml_attack_batch *bt, ml_doctor_report *d) {
    const ml_attack_opts *o = a->o;
    int rc = 0;
    d->eps_zero_accuracy = robust(a, bt, "pgd", o->norm, 0, &rc);
    if (rc || a->stop) return rc;
    if (d->eps_zero_accuracy != d->clean_accuracy)
        atk_flag(a, d, "eps_zero",
                 "an attack with eps = 0 must return x: a randomised model (use EOT) or a model whose prediction "
                 "depends on the batch (batch norm in training mode, batch-level routing)",
                 "eps = 0 gives %.2f%% robust accuracy, the clean accuracy is %.2f%%", 100 * d->eps_zero_accuracy,
                 100 * d->clean_accuracy);

    d->eps_one_accuracy = robust(a, bt, "apgd-ce", ML_NORM_LINF, 1, &rc);
    if (rc || a->stop) return rc;
    if (d->eps_one_accuracy > 0)
        atk_flag(a, d, "eps_one",
                 "with l_inf eps = 1 any image can be replaced: the attack is failing (gradient masking or "
                 "obfuscation); check gradients, use more steps, EOT, or a score-based attack (square)",
                 "l_inf eps = 1 leaves %.2f%% robust accuracy instead of 0%%", 100 * d->eps_one_accuracy);

    d->white_box_accuracy = robust(a, bt, "apgd-ce", o->norm, o->eps, &rc);
    if (rc || a->stop) return rc;
    if (o->norm == ML_NORM_LINF) {
        d->square_accuracy = robust(a, bt, "square", o->norm, o->eps, &rc);
        if (rc || a->stop) return rc;
        if (d->square_accuracy < d->white_box_accuracy - 0.002)
            atk_flag(a, d, "gradient_masking",
                     "a black-box attack should not beat the white-box one: the gradients mislead (masking); "
                     "report the worst case over attacks (AutoAttack) and look for non-differentiable parts",
                     "Square reaches %.2f%% robust accuracy, APGD-CE only %.2f%% (more than 0.2 points apart)",
                     100 * d->square_accuracy, 100 * d->white_box_accuracy);
    }

    /* monotone in eps: clean >= eps/4 >= eps/2 >= eps >= 2 eps */
    static const double scale[] = {0.25, 0.5, 1, 2};
    d->n_eps = 0;
    d->eps_grid[d->n_eps] = 0;
    d->eps_accuracy[d->n_eps++] = d->clean_accuracy;
    for (int k = 0; k < 4; k++) {
        double e = scale[k] * o->eps;
        if (o->norm == ML_NORM_LINF && e > 1) e = 1;
        double acc = scale[k] == 1 ? d->white_box_accuracy : robust(a, bt, "apgd-ce", o->norm, e, &rc);
        if (rc || a->stop) return rc;
        d->eps_grid[d->n_eps] = e;
        d->eps_accuracy[d->n_eps++] = acc;
    }
    for (int k = 1; k < d->n_eps; k++)
        if (d->eps_accuracy[k] > d->eps_accuracy[k - 1] + 1e-12) {
            atk_flag(a, d, "not_monotone",
                     "a larger ball contains the smaller one, so robust accuracy cannot grow with eps: the attack "
                     "is unreliable (more steps, restarts, a different loss)",
                     "robust accuracy grows from %.2f%% at eps = %.4g to %.2f%% at eps = %.4g",
                     100 * d->eps_accuracy[k - 1], d->eps_grid[k - 1], 100 * d->eps_accuracy[k], d->eps_grid[k]);
            break;
        }
    return 0;
}

int atk_doctor(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_report *rep, bool cheap) {
    ml_doctor_report *d = &rep->doctor;
    memset(d, 0, sizeof *d);
    d->clean_accuracy = rep->clean_accuracy;
    d->eps_zero_accuracy = d->eps_one_accuracy = d->white_box_accuracy = d->square_accuracy = NAN;
    if (a->was_training)
        atk_flag(a, d, "training_mode",
                 "call model:eval() before evaluating: the attacks switch to eval mode themselves, but accuracy "
                 "measured in training mode uses batch statistics, dropout and router noise",
                 "the model was in training mode");
    int rc = check_randomness(a, bt, d);
    if (rc == 0) check_probabilities(a, d);
    if (rc == 0) rc = check_gradients(a, bt, d);
    if (rc == 0 && !a->stop) rc = check_router_gradients(a, bt, d);
    if (rc == 0 && !cheap && !a->stop) rc = attack_checks(a, bt, d);
    return rc < 0 ? -1 : 0;
}
