/* run.c -- ml_attack_run: checks the options and the batch, puts the model in
 * eval mode and seeds the generators, runs the attack's body, and fills the
 * report from one last forward on the result (the bookkeeping forwards are not
 * counted in the attack's cost). Everything is restored on every path. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "../ops/reduce.h"
#include "driver.h"

const char *ml_attack_norm_name(ml_attack_norm n) { return n == ML_NORM_L2 ? "l2" : "linf"; }

void ml_attack_opts_default(ml_attack_opts *o) {
    memset(o, 0, sizeof *o);
    o->norm = ML_NORM_LINF;
    o->eps = NAN;
    o->steps = -1;
    o->alpha = NAN;
    o->restarts = 1;
    o->eot = 1;
    o->clamp = true;
    o->n_targets = 9;
    o->rho = 0.75;
    o->momentum = 0.75;
    o->alpha_max = 0.1;
    o->fab_eta = 1.05;
    o->fab_beta = 0.9;
    o->queries = 5000;
    o->p_init = 0.8;
    o->version = "standard";
    o->batch = 250;
    o->checks = true;
    o->steer_expert = -1;
}

void ml_attack_report_clear(ml_attack_report *r) {
    ml_release(r->success);
    ml_release(r->loss);
    ml_release(r->norm);
    ml_release(r->steps);
    ml_release(r->pred_clean);
    ml_release(r->pred_adv);
    ml_release(r->broken_by);
    free(r->layers);
    memset(r, 0, sizeof *r);
}

/* ---------------------------------------------------------------- names */
typedef enum { K_FGSM, K_PGD, K_APGD, K_APGD_CE, K_APGD_DLR, K_APGD_T, K_FAB_T, K_SQUARE, K_AUTO, K_CHECK, K_CHECK_CHEAP } kind;
static const struct {
    const char *name;
    kind k;
} attacks[] = {{"fgsm", K_FGSM},         {"pgd", K_PGD},       {"apgd", K_APGD},    {"apgd-ce", K_APGD_CE},
               {"apgd-dlr", K_APGD_DLR}, {"apgd-t", K_APGD_T}, {"fab-t", K_FAB_T}, {"fab", K_FAB_T},
               {"square", K_SQUARE},     {"autoattack", K_AUTO},  {"check", K_CHECK},  {"check-cheap", K_CHECK_CHEAP}};
#define N_ATTACKS (int)(sizeof attacks / sizeof attacks[0])

static int find_attack(const char *name) {
    for (int i = 0; i < N_ATTACKS; i++)
        if (!strcmp(attacks[i].name, name)) return i;
    return -1;
}

bool ml_attack_known(const char *name) { return find_attack(name) >= 0; }

/* ---------------------------------------------------------------- checks */
static int check_opts(const char *fn, kind k, const ml_attack_opts *o) {
    if (!(o->eps >= 0) || !isfinite(o->eps))
        return ml_failc("%s: eps must be a finite number >= 0, got %g", fn, o->eps);
    if (o->norm != ML_NORM_LINF && o->norm != ML_NORM_L2) return ml_failc("%s: unknown norm %d", fn, (int)o->norm);
    if (o->norm == ML_NORM_L2 && k == K_SQUARE)
        return ml_failc("%s: only norm = \"linf\" is implemented for Square", fn);
    if (o->steps == 0) return ml_failc("%s: steps must be a positive integer, got 0", fn);
    if (!isnan(o->alpha) && !(o->alpha > 0 && isfinite(o->alpha)))
        return ml_failc("%s: alpha must be a finite number > 0, got %g", fn, o->alpha);
    if (o->restarts < 1) return ml_failc("%s: restarts must be >= 1, got %d", fn, o->restarts);
    if (o->eot < 1) return ml_failc("%s: eot must be >= 1, got %d", fn, o->eot);
    if (o->n_targets < 1) return ml_failc("%s: n_targets must be >= 1, got %d", fn, o->n_targets);
    if (o->queries < 1) return ml_failc("%s: queries must be >= 1, got %d", fn, o->queries);
    if (!(o->p_init > 0 && o->p_init <= 1)) return ml_failc("%s: p_init must be in (0, 1], got %g", fn, o->p_init);
    if (!(o->rho > 0 && o->rho < 1)) return ml_failc("%s: rho must be in (0, 1), got %g", fn, o->rho);
    if (!(o->momentum >= 0 && o->momentum <= 1))
        return ml_failc("%s: momentum must be in [0, 1], got %g", fn, o->momentum);
    if (!(o->alpha_max >= 0 && o->alpha_max <= 1))
        return ml_failc("%s: alpha_max must be in [0, 1], got %g", fn, o->alpha_max);
    if (!(o->fab_eta >= 1 && isfinite(o->fab_eta))) return ml_failc("%s: eta must be >= 1, got %g", fn, o->fab_eta);
    if (!(o->fab_beta > 0 && o->fab_beta <= 1)) return ml_failc("%s: beta must be in (0, 1], got %g", fn, o->fab_beta);
    if (o->batch < 0) return ml_failc("%s: batch must be >= 0, got %lld", fn, (long long)o->batch);
    bool gradient = k == K_FGSM || k == K_PGD || k == K_APGD;
    if (o->objective && !gradient)
        return ml_failc("%s: the objective is fixed for this attack (use pgd, apgd or fgsm to choose one)", fn);
    if (o->target && !gradient)
        return ml_failc("%s: target classes are chosen by the attack itself (use pgd, apgd or fgsm with target)", fn);
    if (o->moe_target != ML_TARGET_MODEL && !gradient)
        return ml_failc("%s: target = \"%s\" applies to the gradient attacks fgsm, pgd and apgd", fn,
                        ml_moe_target_name(o->moe_target));
    if (o->steer_steps != 0 && o->moe_target != ML_TARGET_STEER_THEN_BREAK)
        return ml_failc("%s: steer_steps applies to target = \"steer_then_break\"", fn);
    if (o->steer_steps < 0) return ml_failc("%s: steer_steps must be a positive integer, got %d", fn, o->steer_steps);
    if (o->moe_target < ML_TARGET_MODEL || o->moe_target > ML_TARGET_STEER_THEN_BREAK)
        return ml_failc("%s: unknown target %d", fn, (int)o->moe_target);
    if (k == K_SQUARE && (o->selection_ste || o->router_noise))
        return ml_failc("%s: selection_grad and router_noise change gradients; Square reads only the outputs", fn);
    return 0;
}

static int check_input(const char *fn, const ml_tensor *x, const ml_tensor *y) {
    if (x->dtype != ML_F32 || x->ndim < 2 || x->shape[0] < 1)
        return ml_failc("%s: x must be a float batch [B, ...] with B >= 1, got a %s tensor %s", fn,
                        ml_dtype_name(x->dtype), ML_SHAPE_STR(x));
    if (!y) return ml_failc("%s: labels are missing", fn);
    if (y->ndim < 1 || y->shape[0] != x->shape[0])
        return ml_failc("%s: x has %lld examples but the labels have shape %s", fn, (long long)x->shape[0],
                        ML_SHAPE_STR(y));
    const float *v = ml_f32(x);
    double lo = INFINITY, hi = -INFINITY;
    bool nan = false;
    for (int64_t i = 0, n = ml_numel(x); i < n; i++) {
        nan |= v[i] != v[i];
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    if (nan || lo < 0 || hi > 1)
        return ml_failc("%s: x must hold pixels in [0, 1] (models normalise inside), found values from %g to %g%s", fn,
                        lo, hi, nan ? " and NaN" : "");
    return 0;
}

/* ---------------------------------------------------------------- modes */
typedef struct {
    int n, cap;
    ml_module **m;
    bool *training;
    bool any_training;
} modes;

static int save_mode(void *ud, const char *path, ml_module *m, int depth) {
    modes *s = ud;
    s->any_training |= m->training;
    if (s->n == s->cap) {
        int cap = s->cap ? 2 * s->cap : 32;
        ml_module **mm = realloc(s->m, sizeof *mm * (size_t)cap);
        if (mm) s->m = mm;
        bool *tt = mm ? realloc(s->training, sizeof *tt * (size_t)cap) : NULL;
        if (tt) s->training = tt;
        if (!mm || !tt) return ml_failc("attack: out of memory");
        s->cap = cap;
    }
    s->m[s->n] = m;
    s->training[s->n++] = m->training;
    return 0;
}

static void restore_modes(modes *s) {
    for (int i = 0; i < s->n; i++) {
        ml_module *m = s->m[i];
        m->training = s->training[i];
        if (m->type->set_training) m->type->set_training(m, m->training);
    }
    free(s->m);
    free(s->training);
    memset(s, 0, sizeof *s);
}

/* ---------------------------------------------------------------- report */
static ml_tensor *predictions(const ml_tensor *z) {
    int64_t B = z->shape[0], C = z->shape[1];
    ml_tensor *p = ml_empty(ML_I64, 1, &B);
    if (p)
        for (int64_t i = 0; i < B; i++) ml_i64(p)[i] = atk_argmax(ml_f32(z) + i * C, C);
    return p;
}

/* Fraction of examples classified right (every label right, multi-label). */
static double accuracy(const ml_attack_ctx *a, const ml_attack_batch *bt, const ml_tensor *z) {
    float *s = malloc(sizeof(float) * (size_t)bt->b);
    if (!s) return NAN;
    ml_attack_batch plain = *bt;
    plain.target = NULL; /* accuracy w.r.t. the labels, also for targeted attacks */
    atk_success(a, &plain, z, s);
    double wrong = 0;
    for (int64_t i = 0; i < bt->b; i++) wrong += s[i];
    free(s);
    return 1.0 - wrong / (double)bt->b;
}

/* The loss reported per example: the objective, or the CW margin for attacks without one. */
static int final_loss(ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *z, float *out) {
    if (a->obj) {
        ml_objective_input in = {z, &a->routing, bt->y, bt->obj_target ? bt->obj_target : bt->target, bt->index};
        bool gm = ml_grad_set(false);
        ml_tensor *l = ml_objective_eval(a->name, a->obj, &in);
        ml_grad_set(gm);
        if (!l) return -1;
        memcpy(out, ml_f32(l), sizeof(float) * (size_t)bt->b);
        ml_release(l);
        return 0;
    }
    atk_margin(z, bt->y, out);
    for (int64_t i = 0; i < bt->b; i++) out[i] = -out[i];
    return 0;
}

/* The bookkeeping forwards: into a scratch cost, not the attack's. */
static int finalize(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out, ml_attack_report *rep) {
    ml_attack_cost scratch = {0}, *saved = a->cost;
    a->cost = &scratch;
    ml_tensor *z = NULL, *z8 = NULL, *x8 = NULL;
    int rc = -1;
    int64_t B = bt->b;
    rep->success = ml_empty(ML_F32, 1, &B);
    rep->loss = ml_empty(ML_F32, 1, &B);
    rep->norm = ml_empty(ML_F32, 1, &B);
    if (!rep->success || !rep->loss || !rep->norm) goto done;
    a->want_trace = true; /* the routing of x_adv, for the report */
    int erc = atk_eval(a, bt, out->x_adv, &z, NULL, ml_f32(rep->success));
    a->want_trace = false;
    if (erc || final_loss(a, bt, z, ml_f32(rep->loss))) goto done;
    rep->pred_adv = predictions(z);
    if (!rep->pred_adv || atk_target_report(a, bt, rep)) goto done;
    rep->steps = ml_retain(out->steps);
    atk_norms(a->o->norm, bt, out->x_adv, ml_f32(rep->norm));
    rep->robust_accuracy = accuracy(a, bt, z);
    /* 8 bits per value, as a PNG stores it */
    x8 = ml_empty(ML_F32, out->x_adv->ndim, out->x_adv->shape);
    if (!x8 || !rep->pred_adv) goto done;
    for (int64_t i = 0, n = ml_numel(x8); i < n; i++) ml_f32(x8)[i] = nearbyintf(ml_f32(out->x_adv)[i] * 255.0f) / 255.0f;
    if (atk_eval(a, bt, x8, &z8, NULL, NULL)) goto done;
    rep->robust_accuracy_8bit = accuracy(a, bt, z8);
    rc = 0;
done:
    ml_release(z);
    ml_release(z8);
    ml_release(x8);
    a->cost = saved;
    return rc;
}

/* ---------------------------------------------------------------- the entry */
static const char *default_objective(kind k, bool targeted, ml_moe_target part) {
    if (k == K_APGD_DLR) return "dlr";
    if (k == K_APGD_T || k == K_FAB_T || k == K_SQUARE || k == K_AUTO || k == K_CHECK || k == K_CHECK_CHEAP)
        return NULL;
    if (part == ML_TARGET_ROUTER) return "routing_kl";
    return targeted ? "ce_targeted" : "ce";
}

/* The body of a gradient attack (steer_then_break runs it twice) and its default steps. */
static atk_attack_body gradient_body(kind k, int *default_steps) {
    *default_steps = k == K_FGSM ? 1 : k == K_PGD ? 10 : 100;
    return k == K_FGSM ? atk_fgsm : k == K_PGD ? atk_pgd : atk_apgd;
}

static int run_body(kind k, ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out, ml_attack_report *rep) {
    switch (k) {
    case K_FGSM: return atk_fgsm(a, bt, out);
    case K_PGD: return atk_pgd(a, bt, out);
    case K_APGD:
    case K_APGD_CE:
    case K_APGD_DLR: return atk_apgd(a, bt, out);
    case K_APGD_T: return atk_apgd_targeted(a, bt, out);
    case K_FAB_T: return atk_fab_targeted(a, bt, out);
    case K_SQUARE: return atk_square(a, bt, out);
    case K_AUTO: return atk_autoattack(a, bt, out, rep);
    case K_CHECK: return atk_doctor(a, bt, rep, false);
    case K_CHECK_CHEAP: return atk_doctor(a, bt, rep, true);
    }
    return ml_failc("attack: internal: unknown kind");
}

ml_tensor *ml_attack_run(const char *name, ml_module *model, ml_tensor *x, ml_tensor *y, const ml_attack_opts *o,
                         ml_attack_report *rep) {
    memset(rep, 0, sizeof *rep);
    int idx = find_attack(name);
    if (idx < 0)
        return ml_fail("attack: unknown attack '%s' (use fgsm, pgd, apgd, apgd-ce, apgd-dlr, apgd-t, fab-t, square, "
                       "autoattack, check or check-cheap)", name);
    kind k = attacks[idx].k;
    const char *fn = attacks[idx].name;
    if (check_opts(fn, k, o) || check_input(fn, x, y)) return NULL;

    double t0 = atk_now();
    ml_attack_ctx a = {0};
    a.name = a.part = fn;
    a.model = model;
    a.o = o;
    a.cost = &rep->cost;
    ml_attack_batch bt = {0};
    ml_attack_out out = {0};
    ml_objective *own = NULL, *steer = NULL;
    ml_tensor *result = NULL, *clean = NULL;
    modes saved_modes = {0};
    ml_rng_state saved_rng;
    ml_rng_get_state(&saved_rng);
    bool grad_mode = ml_grad_enabled();

    const char *objname = o->objective ? NULL : default_objective(k, o->target != NULL, o->moe_target);
    if (objname && !(own = ml_objective_new(objname))) return NULL;
    a.obj = o->objective ? o->objective : own;
    if (o->moe_target == ML_TARGET_STEER_THEN_BREAK && !(steer = ml_objective_new("routing_steer"))) {
        ml_objective_free(own);
        return NULL;
    }

    bt.x = ml_contiguous(x);
    bt.y = bt.x ? ml_contiguous(y) : NULL;
    bt.target = o->target ? ml_contiguous(o->target) : NULL;
    if (!bt.x || !bt.y || (o->target && !bt.target)) goto done;
    bt.b = x->shape[0];
    bt.D = ml_numel(x) / bt.b;

    if (ml_module_visit(model, save_mode, &saved_modes)) goto done;
    a.was_training = saved_modes.any_training;
    ml_module_set_training(model, false);
    ml_seed(o->seed ^ 0x5eed5eed5eedULL);
    a.n_rows = bt.b;
    if (!(a.row_rng = malloc(sizeof *a.row_rng * (size_t)bt.b))) {
        ml_fail("%s: out of memory", fn);
        goto done;
    }
    atk_reseed(&a, fn);

    /* the clean forward: the number of classes, labels, clean prediction */
    {
        ml_attack_cost scratch = {0};
        a.cost = &scratch;
        ml_grad_set(false);
        ml_attack_forward f = {.trace = true, .aux = a.obj && a.obj->needs_aux}; /* the clean routing, kept */
        ml_attack_routing_reset(&a.routing, &f);
        clean = ml_module_forward(model, bt.x, ml_attack_routing_ctx(&a.routing));
        ml_grad_set(grad_mode);
        a.cost = &rep->cost;
        if (!clean) goto done;
        if (clean->dtype != ML_F32 || clean->ndim != 2 || clean->shape[0] != bt.b) {
            ml_fail("%s: the model must return logits [%lld, classes], got a %s tensor %s", fn, (long long)bt.b,
                    ml_dtype_name(clean->dtype), ML_SHAPE_STR(clean));
            goto done;
        }
        a.C = clean->shape[1];
        if (a.obj && ml_objective_check_labels(fn, a.obj, bt.y, bt.target, bt.b, a.C, o->index_base)) goto done;
        if (!a.obj && (y->dtype != ML_I64 || y->ndim != 1)) {
            ml_fail("%s: the labels must be an int64 tensor [B] of class indices, got a %s tensor %s", fn,
                    ml_dtype_name(y->dtype), ML_SHAPE_STR(y));
            goto done;
        }
        if (!a.obj) {
            ml_objective *ce = ml_objective_new("ce");
            int bad = !ce || ml_objective_check_labels(fn, ce, bt.y, NULL, bt.b, a.C, o->index_base);
            ml_objective_free(ce);
            if (bad) goto done;
        }
        const ml_trace *ct = ml_attack_routing_trace(&a.routing);
        if (!(a.clean_trace = ct ? ml_trace_copy(ct, false) : ml_trace_new())) goto done;
        if (a.obj && ml_objective_prepare(a.obj, clean, a.clean_trace)) goto done;
        if (steer && ml_objective_prepare(steer, clean, a.clean_trace)) goto done;
        a.clean_logits = ml_detach(clean);
        rep->pred_clean = predictions(clean);
        rep->clean_accuracy = accuracy(&a, &bt, clean);
        if (!a.clean_logits || !rep->pred_clean) goto done;
    }

    if (atk_out_new(&out, &bt)) goto done;
    int prc = atk_target_prepare(&a, &bt, steer); /* 1: Ctrl-C while finding the weakest experts */
    if (prc < 0) goto done;
    if (prc == 0 && o->moe_target == ML_TARGET_STEER_THEN_BREAK) {
        int default_steps;
        atk_attack_body body = gradient_body(k, &default_steps);
        if (atk_steer_then_break(&a, &bt, &out, body, steer, default_steps) < 0) goto done;
    } else if (prc == 0 && run_body(k, &a, &bt, &out, rep)) {
        goto done;
    }

    /* an interrupted attack still gets its report: let the last forwards run */
    if (a.interrupted) ml_interrupt_clear();
    int frc = finalize(&a, &bt, &out, rep);
    if (a.interrupted) ml_interrupt_request();
    if (frc) goto done;

    snprintf(rep->attack, sizeof rep->attack, "%s", fn);
    snprintf(rep->objective, sizeof rep->objective, "%s", a.obj ? a.obj->name : "cw");
    rep->n = bt.b;
    rep->seed = o->seed;
    rep->interrupted = a.interrupted;
    rep->stopped = a.stopped;
    rep->moe_target = o->moe_target;
    rep->selection_ste = o->selection_ste;
    rep->router_noise = o->router_noise;
    result = ml_retain(out.x_adv);
done:
    rep->cost.seconds = atk_now() - t0;
    if (!result) {
        /* keep the error message across the cleanup below */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", ml_last_error());
        ml_attack_report_clear(rep);
        ml_fail("%s", msg);
    }
    ml_grad_set(grad_mode);
    restore_modes(&saved_modes);
    ml_rng_set_state(&saved_rng);
    ml_release(clean);
    ml_release(a.clean_logits);
    ml_trace_free(a.clean_trace);
    ml_attack_routing_free(&a.routing);
    free(a.row_rng);
    atk_out_free(&out);
    atk_batch_free(&bt);
    ml_objective_free(own);
    ml_objective_free(steer);
    return result;
}
