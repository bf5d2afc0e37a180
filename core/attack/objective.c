/* objective.c -- the attack objectives: per-example losses to maximise, built
 * from the differentiable ops (so their gradients are the ops' tested ones). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "../ops/elementwise.h"
#include "../ops/index.h"
#include "../ops/loss.h"
#include "../ops/reduce.h"
#include "../ops/shape.h"
#include "objective.h"
#include "routing.h"

/* ------------------------------------------------------------ helpers */
/* z[i, idx[i]] as [B, 1] (differentiable). */
static ml_tensor *pick(ml_tensor *z, const ml_tensor *idx) {
    int64_t shape[2] = {idx->shape[0], 1};
    ml_tensor *i2 = ml_reshape((ml_tensor *)idx, 2, shape);
    ml_tensor *out = i2 ? ml_gather(z, 1, i2) : NULL;
    ml_release(i2);
    return out;
}

/* Column j of v [B, k] as [B, 1] (a differentiable view). */
static ml_tensor *col(ml_tensor *v, int64_t j) { return ml_narrow(v, 1, j, 1); }

/* [B, 1] float: 1 where the largest logit is the label's (first index on ties). */
static ml_tensor *top_is(const ml_tensor *top_idx, const ml_tensor *y) {
    int64_t B = y->shape[0], k = top_idx->shape[1], shape[2] = {B, 1};
    ml_tensor *m = ml_empty(ML_F32, 2, shape);
    if (!m) return NULL;
    const int64_t *ti = ml_i64(top_idx), *yy = ml_i64(y);
    float *mm = ml_f32(m);
    for (int64_t b = 0; b < B; b++) mm[b] = ti[b * k] == yy[b] ? 1.0f : 0.0f;
    return m;
}

/* The largest logit other than the label's, [B, 1]: from the sorted top
 * values v and their indices. */
static ml_tensor *max_other(ml_tensor *v, ml_tensor *vi, const ml_tensor *y) {
    ml_tensor *m = top_is(vi, y), *v0 = col(v, 0), *v1 = col(v, 1);
    ml_tensor *out = m && v0 && v1 ? ml_where(m, v1, v0) : NULL;
    ml_release(m);
    ml_release(v0);
    ml_release(v1);
    return out;
}

/* [B, 1] -> [B] */
static ml_tensor *flat(ml_tensor *t) {
    if (!t) return NULL;
    int64_t n = t->shape[0];
    ml_tensor *out = ml_reshape(t, 1, &n);
    ml_release(t);
    return out;
}

static int topk_sorted(ml_tensor *z, int64_t k, ml_tensor **v, ml_tensor **vi) {
    ml_tensor *zc = ml_contiguous(z);
    if (!zc) return -1;
    int rc = ml_topk(zc, k, 1, true, true, false, v, vi);
    ml_release(zc);
    return rc;
}

/* ------------------------------------------------------------ the losses */
static ml_tensor *loss_ce(ml_objective *o, const ml_objective_input *in) {
    return ml_cross_entropy(in->logits, in->y, ML_NONE, 0);
}

static ml_tensor *loss_ce_targeted(ml_objective *o, const ml_objective_input *in) {
    ml_tensor *ce = ml_cross_entropy(in->logits, in->target, ML_NONE, 0);
    ml_tensor *out = ce ? ml_neg(ce) : NULL;
    ml_release(ce);
    return out;
}

/* -(z_y - max_{i != y} z_i) / (z_(1) - z_(3) + 1e-12), z_(k) the k-th largest */
static ml_tensor *loss_dlr(ml_objective *o, const ml_objective_input *in) {
    ml_tensor *v = NULL, *vi = NULL;
    if (topk_sorted(in->logits, 3, &v, &vi)) return NULL;
    ml_tensor *zy = pick(in->logits, in->y), *other = max_other(v, vi, in->y);
    ml_tensor *v0 = col(v, 0), *v2 = col(v, 2);
    ml_tensor *num = zy && other ? ml_sub(other, zy) : NULL;
    ml_tensor *d = v0 && v2 ? ml_sub(v0, v2) : NULL, *den = d ? ml_add_scalar(d, 1e-12) : NULL;
    ml_tensor *out = num && den ? ml_div(num, den) : NULL;
    ml_release(v), ml_release(vi), ml_release(zy), ml_release(other), ml_release(v0), ml_release(v2);
    ml_release(num), ml_release(d), ml_release(den);
    return flat(out);
}

/* -(z_y - z_t) / (z_(1) - (z_(3) + z_(4)) / 2 + 1e-12) */
static ml_tensor *loss_dlr_targeted(ml_objective *o, const ml_objective_input *in) {
    ml_tensor *v = NULL, *vi = NULL;
    if (topk_sorted(in->logits, 4, &v, &vi)) return NULL;
    ml_tensor *zy = pick(in->logits, in->y), *zt = pick(in->logits, in->target);
    ml_tensor *v0 = col(v, 0), *v2 = col(v, 2), *v3 = col(v, 3);
    ml_tensor *num = zy && zt ? ml_sub(zt, zy) : NULL;
    ml_tensor *s = v2 && v3 ? ml_add(v2, v3) : NULL, *h = s ? ml_mul_scalar(s, 0.5) : NULL;
    ml_tensor *d = v0 && h ? ml_sub(v0, h) : NULL, *den = d ? ml_add_scalar(d, 1e-12) : NULL;
    ml_tensor *out = num && den ? ml_div(num, den) : NULL;
    ml_release(v), ml_release(vi), ml_release(zy), ml_release(zt), ml_release(v0), ml_release(v2), ml_release(v3);
    ml_release(num), ml_release(s), ml_release(h), ml_release(d), ml_release(den);
    return flat(out);
}

/* max_{i != y} z_i - z_y */
static ml_tensor *loss_cw(ml_objective *o, const ml_objective_input *in) {
    ml_tensor *v = NULL, *vi = NULL;
    if (topk_sorted(in->logits, 2, &v, &vi)) return NULL;
    ml_tensor *zy = pick(in->logits, in->y), *other = max_other(v, vi, in->y);
    ml_tensor *out = zy && other ? ml_sub(other, zy) : NULL;
    ml_release(v), ml_release(vi), ml_release(zy), ml_release(other);
    return flat(out);
}

/* z_t - z_y: FAB's linearised boundary between the label and the target */
static ml_tensor *loss_logit_diff(ml_objective *o, const ml_objective_input *in) {
    ml_tensor *zy = pick(in->logits, in->y), *zt = pick(in->logits, in->target);
    ml_tensor *out = zy && zt ? ml_sub(zt, zy) : NULL;
    ml_release(zy), ml_release(zt);
    return flat(out);
}

static ml_tensor *loss_bce(ml_objective *o, const ml_objective_input *in) {
    ml_tensor *e = ml_bce_with_logits(in->logits, (ml_tensor *)in->y, ML_NONE);
    ml_tensor *out = e ? ml_sum(e, 1, false) : NULL;
    ml_release(e);
    return out;
}

/* CE + the auxiliary losses (a batch quantity: every example gets it, so the
 * summed objective weighs it as the training loss mean(CE) + aux does). */
static ml_tensor *loss_ce_aux(ml_objective *o, const ml_objective_input *in) {
    ml_tensor *ce = ml_cross_entropy(in->logits, in->y, ML_NONE, 0);
    ml_tensor *aux = in->routing ? ml_attack_routing_aux(in->routing) : NULL;
    if (!ce || !aux) return ce;
    ml_tensor *out = ml_add(ce, aux);
    ml_release(ce);
    return out;
}

static ml_tensor *loss_kl(ml_objective *o, const ml_objective_input *in) {
    if (!o->clean_logits) return ml_fail("kl: the objective has no clean prediction (internal: not prepared)");
    ml_tensor *clean = in->index ? ml_index_select(o->clean_logits, 0, in->index) : ml_retain(o->clean_logits);
    ml_tensor *out = clean ? ml_kl_div(clean, in->logits, ML_NONE) : NULL;
    ml_release(clean);
    return out;
}

/* ------------------------------------------------------------ the table */
typedef struct {
    const char *name;
    ml_objective_loss_fn loss;
    bool multilabel, needs_aux, needs_clean, needs_target, routing;
    int min_classes;
} builtin;

static const builtin builtins[] = {
    {"ce", loss_ce, false, false, false, false, false, 2},
    {"dlr", loss_dlr, false, false, false, false, false, 3},
    {"cw", loss_cw, false, false, false, false, false, 2},
    {"ce_targeted", loss_ce_targeted, false, false, false, true, false, 2},
    {"dlr_targeted", loss_dlr_targeted, false, false, false, true, false, 4},
    {"logit_diff", loss_logit_diff, false, false, false, true, false, 2},
    {"bce", loss_bce, true, false, false, false, false, 1},
    {"ce_aux", loss_ce_aux, false, true, false, false, false, 2},
    {"kl", loss_kl, false, false, true, false, false, 2},
    {"routing_kl", ml_loss_routing_kl, false, false, true, false, true, 1},
    {"routing_margin", ml_loss_routing_margin, false, false, true, false, true, 1},
    {"routing_steer", ml_loss_routing_steer, false, false, true, false, true, 1},
};
#define N_BUILTINS (int)(sizeof builtins / sizeof builtins[0])

bool ml_objective_known(const char *name) {
    for (int i = 0; i < N_BUILTINS; i++)
        if (!strcmp(builtins[i].name, name)) return true;
    return false;
}

const char *ml_objective_names(void) {
    return "ce, dlr, cw, ce_targeted, dlr_targeted, logit_diff, bce, ce_aux, kl, routing_kl, routing_margin, "
           "routing_steer";
}

static ml_objective *alloc_objective(const char *name) {
    ml_objective *o = calloc(1, sizeof *o);
    if (!o) return ml_fail("objective: out of memory");
    snprintf(o->name, sizeof o->name, "%s", name);
    return o;
}

ml_objective *ml_objective_new(const char *name) {
    for (int i = 0; i < N_BUILTINS; i++) {
        const builtin *b = &builtins[i];
        if (strcmp(b->name, name)) continue;
        ml_objective *o = alloc_objective(name);
        if (!o) return NULL;
        o->loss = b->loss;
        o->multilabel = b->multilabel;
        o->needs_aux = b->needs_aux;
        o->needs_clean = b->needs_clean;
        o->needs_target = b->needs_target;
        o->routing = o->needs_trace = b->routing;
        o->flat_at_clean = b->loss == loss_kl || b->loss == ml_loss_routing_kl;
        o->min_classes = b->min_classes;
        return o;
    }
    return ml_fail("objective: unknown objective '%s' (use %s, or a function)", name, ml_objective_names());
}

ml_objective *ml_objective_custom(const char *name, ml_objective_loss_fn loss, void *ud, void (*free_ud)(void *),
                                  bool needs_trace) {
    ml_objective *o = alloc_objective(name);
    if (!o) return NULL;
    o->loss = loss;
    o->ud = ud;
    o->free_ud = free_ud;
    o->needs_trace = needs_trace;
    o->min_classes = 1;
    return o;
}

void ml_objective_free(ml_objective *o) {
    if (!o) return;
    ml_release(o->clean_logits);
    ml_trace_free(o->clean_trace);
    free(o->steer);
    if (o->free_ud) o->free_ud(o->ud);
    free(o);
}

int ml_objective_prepare(ml_objective *o, ml_tensor *clean_logits, const ml_trace *clean_trace) {
    if (!o->needs_clean) return 0;
    ml_release(o->clean_logits);
    o->clean_logits = ml_detach(clean_logits);
    if (!o->clean_logits) return -1;
    ml_trace_free(o->clean_trace);
    o->clean_trace = NULL;
    if (o->needs_trace && clean_trace && !(o->clean_trace = ml_trace_copy(clean_trace, false))) return -1;
    return 0;
}

int ml_objective_set_steer(ml_objective *o, const int *experts, int n) {
    int *s = malloc(sizeof *s * (size_t)(n > 0 ? n : 1));
    if (!s) return ml_failc_oom(__func__);
    if (n > 0) memcpy(s, experts, sizeof *s * (size_t)n);
    free(o->steer);
    o->steer = s;
    o->n_steer = n;
    return 0;
}

ml_tensor *ml_objective_eval(const char *fn, ml_objective *o, const ml_objective_input *in) {
    ml_tensor *l = o->loss(o, in);
    if (!l) return NULL;
    int64_t b = in->logits->shape[0];
    if (l->dtype != ML_F32 || l->ndim != 1 || l->shape[0] != b) {
        ml_fail("%s: the objective '%s' must return one loss per example (a float tensor [%lld]), got a %s tensor %s",
                fn, o->name, (long long)b, ml_dtype_name(l->dtype), ML_SHAPE_STR(l));
        ml_release(l);
        return NULL;
    }
    return l;
}

static int check_classes(const char *fn, const char *what, const ml_tensor *t, int64_t B, int64_t C, int base) {
    if (t->dtype != ML_I64 || t->ndim != 1)
        return ml_failc("%s: %s must be an int64 tensor [B] of class indices, got a %s tensor %s", fn, what,
                        ml_dtype_name(t->dtype), ML_SHAPE_STR(t));
    if (t->shape[0] != B)
        return ml_failc("%s: the batch has %lld examples but %s has %lld entries", fn, (long long)B, what,
                        (long long)t->shape[0]);
    ml_tensor *c = ml_contiguous((ml_tensor *)t);
    if (!c) return -1;
    const int64_t *v = ml_i64(c);
    for (int64_t i = 0; i < B; i++)
        if (v[i] < 0 || v[i] >= C) {
            int rc = ml_failc("%s: %s of example %lld is %lld, outside %d..%lld (the model has %lld classes)", fn,
                              what, (long long)(i + base), (long long)(v[i] + base), base,
                              (long long)(C - 1 + base), (long long)C);
            ml_release(c);
            return rc;
        }
    ml_release(c);
    return 0;
}

int ml_objective_check_labels(const char *fn, const ml_objective *o, const ml_tensor *y, const ml_tensor *target,
                              int64_t B, int64_t C, int base) {
    if (C < o->min_classes)
        return ml_failc("%s: the objective '%s' needs at least %d classes, the model has %lld", fn, o->name,
                        o->min_classes, (long long)C);
    if (o->multilabel) {
        if (y->dtype != ML_F32 || y->ndim != 2 || y->shape[0] != B || y->shape[1] != C)
            return ml_failc("%s: the objective '%s' takes multi-label targets, a float tensor [%lld, %lld] of 0/1, "
                            "got a %s tensor %s", fn, o->name, (long long)B, (long long)C, ml_dtype_name(y->dtype),
                            ML_SHAPE_STR(y));
    } else if (check_classes(fn, "the label", y, B, C, base)) {
        return -1;
    }
    if (target && check_classes(fn, "the target", target, B, C, base)) return -1;
    if (o->needs_target && !target)
        return ml_failc("%s: the objective '%s' is targeted: give target classes (option target)", fn, o->name);
    return 0;
}

ml_tensor *ml_objective_apply(ml_objective *o, ml_tensor *logits, const ml_tensor *y, const ml_tensor *target,
                              ml_tensor *clean, int base) {
    const char *fn = "objective";
    if (logits->ndim != 2 || logits->dtype != ML_F32)
        return ml_fail("%s %s: logits must be a float tensor [B, classes], got a %s tensor %s", fn, o->name,
                       ml_dtype_name(logits->dtype), ML_SHAPE_STR(logits));
    if (o->needs_trace)
        return ml_fail("%s %s: reads the routing of a forward; give it to an attack (objective = \"%s\")", fn,
                       o->name, o->name);
    if (ml_objective_check_labels(fn, o, y, target, logits->shape[0], logits->shape[1], base)) return NULL;
    if (o->needs_clean) {
        if (!clean || !ml_same_shape(clean, logits))
            return ml_fail("%s %s: needs the clean logits (option clean), of the logits' shape %s", fn, o->name,
                           ML_SHAPE_STR(logits));
        if (ml_objective_prepare(o, clean, NULL)) return NULL;
    }
    ml_objective_input in = {logits, NULL, y, target, NULL};
    return ml_objective_eval(fn, o, &in);
}
