/* optim.c -- SGD, Adam, AdamW: fused per-parameter update loops. */
#include "optim.h"

#include "../autograd.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

struct ml_optim {
    ml_optim_opts o;
    int n;
    ml_tensor **params; /* retained */
    ml_tensor **s1, **s2; /* momentum / exp_avg, exp_avg_sq (created lazily) */
    int64_t steps;
};

ml_optim *ml_optim_new(const ml_optim_opts *opts, int n, ml_tensor *const *params) {
    if (!(opts->lr >= 0)) return ml_fail("optimizer: learning rate must be >= 0, got %g", opts->lr);
    if (opts->momentum < 0 || opts->momentum >= 1)
        return ml_fail("optimizer: momentum must be in [0, 1), got %g", opts->momentum);
    if (opts->weight_decay < 0) return ml_fail("optimizer: weight_decay must be >= 0, got %g", opts->weight_decay);
    if (opts->nesterov && (opts->momentum <= 0 || opts->dampening != 0))
        return ml_fail("optimizer: Nesterov momentum needs momentum > 0 and dampening 0");
    for (int i = 0; i < n; i++) {
        if (params[i]->dtype != ML_F32) return ml_fail("optimizer: parameter %d is not float32", i + 1);
        if (!params[i]->requires_grad || params[i]->grad_fn)
            return ml_fail("optimizer: parameter %d is not a leaf tensor that requires grad", i + 1);
        if (!ml_is_contiguous(params[i])) return ml_fail("optimizer: parameter %d is not contiguous", i + 1);
    }
    ml_optim *o = calloc(1, sizeof *o);
    if (!o) return ml_fail("out of memory");
    o->o = *opts;
    if (o->o.beta1 == 0) o->o.beta1 = 0.9;
    if (o->o.beta2 == 0) o->o.beta2 = 0.999;
    if (o->o.eps == 0) o->o.eps = 1e-8;
    if (o->o.beta1 < 0 || o->o.beta1 >= 1 || o->o.beta2 < 0 || o->o.beta2 >= 1) {
        free(o);
        return ml_fail("optimizer: betas must be in [0, 1)");
    }
    o->n = n;
    o->params = calloc((size_t)(n ? n : 1), sizeof *o->params);
    o->s1 = calloc((size_t)(n ? n : 1), sizeof *o->s1);
    o->s2 = calloc((size_t)(n ? n : 1), sizeof *o->s2);
    if (!o->params || !o->s1 || !o->s2) {
        ml_optim_free(o);
        return ml_fail("out of memory");
    }
    for (int i = 0; i < n; i++) o->params[i] = ml_retain(params[i]);
    return o;
}

void ml_optim_free(ml_optim *o) {
    if (!o) return;
    for (int i = 0; i < o->n; i++) {
        ml_release(o->params[i]);
        if (o->s1) ml_release(o->s1[i]);
        if (o->s2) ml_release(o->s2[i]);
    }
    free(o->params);
    free(o->s1);
    free(o->s2);
    free(o);
}

static int ensure(ml_tensor **slot, const ml_tensor *like) {
    if (*slot) return 0;
    *slot = ml_zeros(ML_F32, like->ndim, like->shape);
    return *slot ? 0 : -1;
}

int ml_optim_step(ml_optim *o) {
    o->steps++;
    const ml_optim_opts *op = &o->o;
    float lr = (float)op->lr, wd = (float)op->weight_decay;
    for (int i = 0; i < o->n; i++) {
        ml_tensor *p = o->params[i], *g = p->grad;
        if (!g) continue;
        ml_tensor *gc = ml_contiguous(g);
        if (!gc) return -1;
        float *w = ml_f32(p);
        const float *gr = ml_f32(gc);
        int64_t n = ml_numel(p);
        if (op->kind == ML_OPT_SGD) {
            float mom = (float)op->momentum, damp = (float)op->dampening;
            if (mom > 0) {
                bool fresh = o->s1[i] == NULL;
                if (ensure(&o->s1[i], p)) {
                    ml_release(gc);
                    return -1;
                }
                float *buf = ml_f32(o->s1[i]);
                #pragma omp parallel for schedule(static) if (n >= 65536)
                for (int64_t k = 0; k < n; k++) {
                    float d = gr[k] + wd * w[k];
                    /* PyTorch: the first step stores the gradient itself */
                    buf[k] = fresh ? d : mom * buf[k] + (1.0f - damp) * d;
                    float upd = op->nesterov ? d + mom * buf[k] : buf[k];
                    w[k] -= lr * upd;
                }
            } else {
                #pragma omp parallel for schedule(static) if (n >= 65536)
                for (int64_t k = 0; k < n; k++) w[k] -= lr * (gr[k] + wd * w[k]);
            }
        } else {
            if (ensure(&o->s1[i], p) || ensure(&o->s2[i], p)) {
                ml_release(gc);
                return -1;
            }
            float b1 = (float)op->beta1, b2 = (float)op->beta2, eps = (float)op->eps;
            double bc1 = 1.0 - pow(op->beta1, (double)o->steps), bc2 = 1.0 - pow(op->beta2, (double)o->steps);
            float step = (float)(op->lr / bc1), inv_sqrt_bc2 = (float)(1.0 / sqrt(bc2));
            bool decoupled = op->kind == ML_OPT_ADAMW;
            float *m1 = ml_f32(o->s1[i]), *m2 = ml_f32(o->s2[i]);
            #pragma omp parallel for schedule(static) if (n >= 65536)
            for (int64_t k = 0; k < n; k++) {
                float d = gr[k];
                if (decoupled) w[k] *= 1.0f - lr * wd;
                else d += wd * w[k];
                m1[k] = b1 * m1[k] + (1.0f - b1) * d;
                m2[k] = b2 * m2[k] + (1.0f - b2) * d * d;
                w[k] -= step * m1[k] / (sqrtf(m2[k]) * inv_sqrt_bc2 + eps);
            }
        }
        ml_bump_version(p);
        ml_release(gc);
    }
    return 0;
}

void ml_optim_zero_grad(ml_optim *o) {
    for (int i = 0; i < o->n; i++) ml_zero_grad(o->params[i]);
}

void ml_optim_set_lr(ml_optim *o, double lr) { o->o.lr = lr; }
double ml_optim_get_lr(const ml_optim *o) { return o->o.lr; }
int ml_optim_num_params(const ml_optim *o) { return o->n; }
ml_tensor *ml_optim_param(const ml_optim *o, int i) { return i >= 0 && i < o->n ? o->params[i] : NULL; }
int64_t ml_optim_steps(const ml_optim *o) { return o->steps; }

int ml_optim_state(const ml_optim *o, int i, ml_tensor **s1, ml_tensor **s2) {
    if (i < 0 || i >= o->n) return ml_failc("optimizer state: no parameter %d", i + 1);
    *s1 = o->s1[i];
    *s2 = o->s2[i];
    return 0;
}

int ml_optim_set_state(ml_optim *o, int i, const ml_tensor *s1, const ml_tensor *s2, int64_t steps) {
    if (i < 0 || i >= o->n) return ml_failc("optimizer state: no parameter %d", i + 1);
    const ml_tensor *src[2] = {s1, s2};
    ml_tensor **dst[2] = {&o->s1[i], &o->s2[i]};
    for (int k = 0; k < 2; k++) {
        if (!src[k]) continue;
        if (!ml_same_shape(src[k], o->params[i]))
            return ml_failc("optimizer state: state of parameter %d has shape %s, the parameter %s", i + 1,
                            ML_SHAPE_STR(src[k]), ML_SHAPE_STR(o->params[i]));
        if (ensure(dst[k], o->params[i]) || ml_copy_(*dst[k], src[k])) return -1;
    }
    o->steps = steps;
    return 0;
}

double ml_clip_grad_norm(int n, ml_tensor *const *params, double max_norm) {
    if (!(max_norm > 0)) {
        ml_fail("clip_grad_norm: max_norm must be positive, got %g", max_norm);
        return -1;
    }
    double ss = 0;
    for (int i = 0; i < n; i++) {
        ml_tensor *g = params[i]->grad;
        if (!g) continue;
        const float *p = ml_f32(g);
        for (int64_t k = 0, m = ml_numel(g); k < m; k++) ss += (double)p[k] * p[k];
    }
    double norm = sqrt(ss);
    if (norm > max_norm) {
        float scale = (float)(max_norm / (norm + 1e-6));
        for (int i = 0; i < n; i++) {
            ml_tensor *g = params[i]->grad;
            if (!g) continue;
            float *p = ml_f32(g);
            for (int64_t k = 0, m = ml_numel(g); k < m; k++) p[k] *= scale;
        }
    }
    return norm;
}
