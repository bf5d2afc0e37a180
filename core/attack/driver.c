/* driver.c -- the parts every attack shares: forward and gradient passes with
 * EOT, success and margins, projections onto the norm balls, random starts,
 * progress callbacks and Ctrl-C, sub-batches. See driver.h. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../autograd.h"
#include "../ops/index.h"
#include "../ops/reduce.h"
#include "driver.h"

#define PAR_MIN (1 << 15) /* values below which the row loops stay serial */

/* ---------------------------------------------------------------- batches */
int atk_batch_rows(const ml_attack_batch *bt, const ml_tensor *rows, ml_attack_batch *out) {
    memset(out, 0, sizeof *out);
    out->b = rows->shape[0];
    out->D = bt->D;
    out->x = ml_index_select(bt->x, 0, rows);
    out->y = out->x ? ml_index_select(bt->y, 0, rows) : NULL;
    if (!out->y) goto fail;
    if (bt->target && !(out->target = ml_index_select(bt->target, 0, rows))) goto fail;
    if (bt->obj_target && !(out->obj_target = ml_index_select(bt->obj_target, 0, rows))) goto fail;
    out->index = bt->index ? ml_index_select(bt->index, 0, rows) : ml_retain((ml_tensor *)rows);
    if (!out->index) goto fail;
    return 0;
fail:
    atk_batch_free(out);
    return -1;
}

void atk_batch_free(ml_attack_batch *bt) {
    ml_release(bt->x);
    ml_release(bt->y);
    ml_release(bt->target);
    ml_release(bt->obj_target);
    ml_release(bt->index);
    memset(bt, 0, sizeof *bt);
}

int atk_out_new(ml_attack_out *out, const ml_attack_batch *bt) {
    memset(out, 0, sizeof *out);
    out->x_adv = ml_clone(bt->x);
    out->loss = ml_full(ML_F32, 1, &bt->b, -INFINITY);
    out->success = ml_zeros(ML_F32, 1, &bt->b);
    out->steps = ml_zeros(ML_I64, 1, &bt->b);
    if (!out->x_adv || !out->loss || !out->success || !out->steps) {
        atk_out_free(out);
        return -1;
    }
    return 0;
}

void atk_out_free(ml_attack_out *out) {
    ml_release(out->x_adv);
    ml_release(out->loss);
    ml_release(out->success);
    ml_release(out->steps);
    memset(out, 0, sizeof *out);
}

void atk_out_merge(ml_attack_out *dst, const ml_attack_out *src, const ml_tensor *rows, bool only_success) {
    int64_t k = rows->shape[0];
    if (k == 0) return;
    int64_t D = ml_numel(src->x_adv) / k;
    const int64_t *r = ml_i64(rows);
    const float *ss = ml_f32(src->success), *sl = ml_f32(src->loss);
    float *ds = ml_f32(dst->success), *dl = ml_f32(dst->loss);
    for (int64_t j = 0; j < k; j++) {
        int64_t i = r[j];
        ml_i64(dst->steps)[i] += ml_i64(src->steps)[j];
        bool take = ds[i] == 0 && (ss[j] != 0 || (!only_success && sl[j] > dl[i]));
        if (!take) continue;
        memcpy(ml_f32(dst->x_adv) + i * D, ml_f32(src->x_adv) + j * D, sizeof(float) * (size_t)D);
        dl[i] = sl[j];
        ds[i] = ss[j];
    }
    ml_bump_version(dst->x_adv);
}

ml_tensor *atk_rows_where(const ml_tensor *mask, int want) {
    int64_t b = mask->shape[0], k = 0;
    const float *m = ml_f32(mask);
    for (int64_t i = 0; i < b; i++) k += (m[i] != 0) == (want != 0);
    ml_tensor *rows = ml_empty(ML_I64, 1, &k);
    if (!rows) return NULL;
    int64_t *r = ml_i64(rows);
    for (int64_t i = 0, j = 0; i < b; i++)
        if ((m[i] != 0) == (want != 0)) r[j++] = i;
    return rows;
}

int atk_run_unbroken(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out, int target_rank, int k,
                     atk_body body, bool only_success, int64_t *left) {
    ml_tensor *rows = atk_rows_where(out->success, 0);
    if (!rows) return -1;
    *left = rows->shape[0];
    ml_attack_batch sub = {0};
    ml_attack_out r = {0};
    int rc = 0;
    if (*left > 0) {
        rc = atk_batch_rows(bt, rows, &sub);
        if (rc == 0 && target_rank > 0 && !(sub.obj_target = atk_ranked_class(a, &sub, target_rank))) rc = -1;
        if (rc == 0 && atk_out_new(&r, &sub)) rc = -1;
        if (rc == 0) rc = body(a, &sub, &r, k);
        if (rc >= 0) atk_out_merge(out, &r, rows, only_success);
    }
    atk_out_free(&r);
    atk_batch_free(&sub);
    ml_release(rows);
    return rc;
}

/* ---------------------------------------------------------------- success */
void atk_margin(const ml_tensor *logits, const ml_tensor *y, float *out) {
    int64_t b = logits->shape[0], C = logits->shape[1];
    const float *z = ml_f32(logits);
    const int64_t *yy = ml_i64(y);
    for (int64_t i = 0; i < b; i++) {
        const float *row = z + i * C;
        float other = -INFINITY;
        for (int64_t c = 0; c < C; c++)
            if (c != yy[i] && row[c] > other) other = row[c];
        out[i] = row[yy[i]] - other;
    }
}

int64_t atk_argmax(const float *row, int64_t C) {
    int64_t best = 0;
    for (int64_t c = 1; c < C; c++)
        if (row[c] > row[best]) best = c;
    return best;
}

void atk_success(const ml_attack_ctx *a, const ml_attack_batch *bt, const ml_tensor *logits, float *out) {
    int64_t b = logits->shape[0], C = logits->shape[1];
    const float *z = ml_f32(logits);
    if (a->obj && a->obj->multilabel) {
        const float *t = ml_f32(bt->y);
        for (int64_t i = 0; i < b; i++) {
            bool differ = false;
            for (int64_t c = 0; c < C; c++) differ |= (z[i * C + c] > 0) != (t[i * C + c] > 0.5f);
            out[i] = differ;
        }
        return;
    }
    const int64_t *yy = ml_i64(bt->y), *tt = bt->target ? ml_i64(bt->target) : NULL;
    for (int64_t i = 0; i < b; i++) {
        int64_t p = atk_argmax(z + i * C, C);
        out[i] = tt ? p == tt[i] : p != yy[i];
    }
}

/* ---------------------------------------------------------------- passes */
static int check_logits(ml_attack_ctx *a, const ml_attack_batch *bt, const ml_tensor *z) {
    if (!(z->dtype == ML_F32 && z->ndim == 2 && z->shape[0] == bt->b && z->shape[1] == a->C))
        return ml_failc("%s: the model must return logits [%lld, %lld] (batch, classes), got a %s tensor %s", a->name,
                        (long long)bt->b, (long long)a->C, ml_dtype_name(z->dtype), ML_SHAPE_STR(z));
    if (a->o->nan_continue) return 0;
    /* NaN watch: a diverged model gives NaN losses and gradients, and an
     * attack on it reports nonsense; say where instead */
    ml_tensor *zc = ml_contiguous((ml_tensor *)z);
    if (!zc) return -1;
    const float *v = ml_f32(zc);
    int64_t n = bt->b * a->C, bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (!isfinite(v[i])) bad = i;
    float value = bad >= 0 ? v[bad] : 0.0f;
    ml_release(zc);
    if (bad < 0) return 0;
    int64_t row = bt->index ? ml_i64(bt->index)[bad / a->C] : bad / a->C;
    return ml_failc("%s: the model returned %s logits for example %lld at step %d (forward pass %lld); the attack "
                    "stops (nan = \"continue\" to go on)",
                    a->name, isnan(value) ? "NaN" : "infinite", (long long)(row + a->o->index_base), a->step + 1,
                    (long long)a->cost->forwards + 1);
}

int atk_pass_failed(ml_attack_ctx *a) {
    if (ml_interrupt_pending()) {
        a->stop = a->interrupted = true;
        ml_error_clear();
        return 1;
    }
    return -1;
}

/* A forward of bt's examples; grad_pass: a pass the attack differentiates
 * (the router-attack switches apply, routing objectives see differentiable
 * router logits). */
static ml_tensor *forward(ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *x, bool grad_pass) {
    bool obj_trace = a->obj && a->obj->needs_trace;
    /* experts-only: the clean routing of bt's rows (the whole clean trace when bt is the caller's batch) */
    ml_trace *subset = NULL;
    if (a->frozen && bt->index && !(subset = ml_attack_trace_rows(a->name, a->frozen, a->n_rows, bt->index)))
        return NULL;
    const ml_trace *frozen = subset ? subset : a->frozen;
    ml_attack_forward f = {.trace = a->o->trace || obj_trace || a->want_trace,
                           .trace_grad = grad_pass && obj_trace,
                           .aux = a->obj && a->obj->needs_aux,
                           .selection_ste = grad_pass && a->o->selection_ste,
                           .router_noise = grad_pass && a->o->router_noise,
                           .routing = frozen};
    ml_attack_routing_reset(&a->routing, &f);
    ml_tensor *z = ml_module_forward(a->model, x, ml_attack_routing_ctx(&a->routing));
    ml_trace_free(subset);
    if (z && check_logits(a, bt, z)) {
        ml_release(z);
        return NULL;
    }
    if (z) {
        a->cost->forwards++;
        a->cost->forward_examples += bt->b;
    }
    return z;
}

static ml_tensor *objective(ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *z) {
    ml_objective_input in = {z, &a->routing, bt->y, bt->obj_target ? bt->obj_target : bt->target, bt->index};
    return ml_objective_eval(a->name, a->obj, &in);
}

int atk_loss_grad(ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa, float *loss, float *success,
                  float *grad) {
    int eot = a->o->eot > 0 ? a->o->eot : 1;
    int64_t b = bt->b, n = b * bt->D;
    bool gm = ml_grad_set(true);
    int rc = 0;
    for (int e = 0; e < eot && rc == 0; e++) {
        ml_tensor *leaf = ml_detach(xa), *z = NULL, *l = NULL, *s = NULL, *g = NULL;
        if (!leaf || ml_requires_grad_(leaf, true)) rc = -1;
        if (!rc && !(z = forward(a, bt, leaf, true))) rc = -1;
        if (!rc && !(l = objective(a, bt, z))) rc = -1;
        if (!rc && grad) {
            if (!(s = ml_sum(l, ML_ALL_DIMS, false))) rc = -1;
            else if (!s->requires_grad) g = ml_zeros(ML_F32, xa->ndim, xa->shape); /* x does not reach the loss */
            else if (!ml_grad(s, NULL, 1, &leaf, &g, false)) {
                a->cost->backwards++;
                a->cost->backward_examples += b;
            }
            if (!rc && !g) rc = -1;
        }
        if (!rc) {
            const float *lv = ml_f32(l);
            if (loss)
                for (int64_t i = 0; i < b; i++) loss[i] = e ? loss[i] + lv[i] : lv[i];
            if (grad) {
                ml_tensor *gc = ml_contiguous(g);
                if (!gc) rc = -1;
                else {
                    const float *gv = ml_f32(gc);
                    if (e == 0) memcpy(grad, gv, sizeof(float) * (size_t)n);
                    else
                        for (int64_t i = 0; i < n; i++) grad[i] += gv[i];
                    ml_release(gc);
                }
            }
            if (success && e == eot - 1) atk_success(a, bt, z, success);
        }
        ml_release(g);
        ml_release(s);
        ml_release(l);
        ml_release(z);
        ml_release(leaf);
    }
    ml_grad_set(gm);
    if (rc) return atk_pass_failed(a);
    if (eot > 1) {
        float inv = 1.0f / (float)eot;
        if (loss)
            for (int64_t i = 0; i < b; i++) loss[i] *= inv;
        if (grad)
            for (int64_t i = 0; i < n; i++) grad[i] *= inv;
    }
    return 0;
}

int atk_eval(ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa, ml_tensor **logits, float *loss,
             float *success) {
    bool gm = ml_grad_set(false);
    ml_tensor *z = forward(a, bt, xa, false), *l = NULL;
    int rc = z ? 0 : -1;
    if (!rc && loss) {
        if (!(l = objective(a, bt, z))) rc = -1;
        else memcpy(loss, ml_f32(l), sizeof(float) * (size_t)bt->b);
    }
    ml_grad_set(gm);
    if (!rc && success) atk_success(a, bt, z, success);
    ml_release(l);
    if (rc) {
        ml_release(z);
        return atk_pass_failed(a);
    }
    if (logits) *logits = z;
    else ml_release(z);
    return 0;
}

bool atk_start(const ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa) {
    if (!a->start) return false;
    int64_t D = bt->D;
    for (int64_t i = 0; i < bt->b; i++) {
        int64_t row = bt->index ? ml_i64(bt->index)[i] : i;
        memcpy(ml_f32(xa) + i * D, ml_f32(a->start) + row * D, sizeof(float) * (size_t)D);
    }
    ml_bump_version(xa);
    return true;
}

#define NUDGE 1e-3 /* the radius of atk_nudge's start, as a fraction of eps */

bool atk_nudge(ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa) {
    if (!a->obj || !a->obj->flat_at_clean || !(a->o->eps > 0)) return false;
    atk_random_start(a, bt, xa, NUDGE * a->o->eps);
    return true;
}

/* ---------------------------------------------------------------- geometry */
void atk_project(const ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa, double eps) {
    int64_t b = bt->b, D = bt->D;
    const float *x = ml_f32(bt->x);
    float *v = ml_f32(xa);
    bool clamp = a->o->clamp;
    ml_attack_norm norm = a->o->norm;
#pragma omp parallel for schedule(static) if (b * D >= PAR_MIN)
    for (int64_t i = 0; i < b; i++) {
        const float *xi = x + i * D;
        float *vi = v + i * D;
        if (norm == ML_NORM_LINF) {
            float e = (float)eps;
            for (int64_t j = 0; j < D; j++) {
                float lo = xi[j] - e, hi = xi[j] + e, t = vi[j];
                t = t < lo ? lo : t > hi ? hi : t;
                if (clamp) t = t < 0 ? 0 : t > 1 ? 1 : t;
                vi[j] = t;
            }
        } else {
            double s = 0;
            for (int64_t j = 0; j < D; j++) {
                double d = (double)vi[j] - xi[j];
                s += d * d;
            }
            double n = sqrt(s), f = n > eps ? eps / n : 1.0;
            for (int64_t j = 0; j < D; j++) {
                float t = (float)(xi[j] + f * ((double)vi[j] - xi[j]));
                if (clamp) t = t < 0 ? 0 : t > 1 ? 1 : t;
                vi[j] = t;
            }
        }
    }
    ml_bump_version(xa);
}

double atk_row_dist(ml_attack_norm norm, const float *u, const float *v, int64_t D) {
    double acc = 0;
    for (int64_t j = 0; j < D; j++) {
        double d = fabs((double)u[j] - (v ? v[j] : 0));
        if (norm == ML_NORM_LINF) acc = d > acc ? d : acc;
        else acc += d * d;
    }
    return norm == ML_NORM_LINF ? acc : sqrt(acc);
}

void atk_norms(ml_attack_norm norm, const ml_attack_batch *bt, const ml_tensor *xa, float *out) {
    int64_t D = bt->D;
    for (int64_t i = 0; i < bt->b; i++)
        out[i] = (float)atk_row_dist(norm, ml_f32(xa) + i * D, ml_f32(bt->x) + i * D, D);
}

void atk_direction(ml_attack_norm norm, int64_t b, int64_t D, float *g) {
#pragma omp parallel for schedule(static) if (b * D >= PAR_MIN)
    for (int64_t i = 0; i < b; i++) {
        float *gi = g + i * D;
        if (norm == ML_NORM_LINF) {
            for (int64_t j = 0; j < D; j++) gi[j] = gi[j] > 0 ? 1.0f : gi[j] < 0 ? -1.0f : 0.0f;
        } else {
            double s = 0;
            for (int64_t j = 0; j < D; j++) s += (double)gi[j] * gi[j];
            float f = (float)(1.0 / (sqrt(s) + 1e-12));
            for (int64_t j = 0; j < D; j++) gi[j] *= f;
        }
    }
}

ml_rng_state *atk_rng(ml_attack_ctx *a, const ml_attack_batch *bt, int64_t i) {
    return &a->row_rng[bt->index ? ml_i64(bt->index)[i] : i];
}

double atk_uniform(ml_rng_state *g) { return ml_rng_local_uniform(g); }

double atk_normal(ml_rng_state *g) {
    /* Box-Muller (no cached spare: one draw = two uniforms) */
    double u1 = atk_uniform(g), u2 = atk_uniform(g);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

static uint64_t splitmix(uint64_t z) {
    z += 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void atk_reseed(ml_attack_ctx *a, const char *attack) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const char *c = attack; *c; c++) h = (h ^ (unsigned char)*c) * 0x100000001b3ULL;
    uint64_t base = splitmix(a->o->seed ^ splitmix(h));
    for (int64_t r = 0; r < a->n_rows; r++) ml_rng_local_seed(&a->row_rng[r], splitmix(base ^ splitmix((uint64_t)r)));
}

void atk_random_start(ml_attack_ctx *a, const ml_attack_batch *bt, ml_tensor *xa, double eps) {
    int64_t b = bt->b, D = bt->D;
    const float *x = ml_f32(bt->x);
    float *v = ml_f32(xa);
    for (int64_t i = 0; i < b; i++) {
        ml_rng_state *g = atk_rng(a, bt, i);
        if (a->o->norm == ML_NORM_LINF) {
            for (int64_t j = 0; j < D; j++) v[i * D + j] = (float)(x[i * D + j] + eps * (2 * atk_uniform(g) - 1));
        } else {
            double s = 0;
            for (int64_t j = 0; j < D; j++) {
                double z = atk_normal(g);
                v[i * D + j] = (float)z;
                s += z * z;
            }
            double r = atk_uniform(g) * eps / (sqrt(s) + 1e-12);
            for (int64_t j = 0; j < D; j++) v[i * D + j] = (float)(x[i * D + j] + r * v[i * D + j]);
        }
    }
    atk_project(a, bt, xa, eps);
}

/* ---------------------------------------------------------------- progress */
double atk_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void atk_log(const ml_attack_ctx *a, const char *fmt, ...) {
    if (!a->o->log) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    a->o->log(a->o->log_ud, line);
}

int atk_progress(ml_attack_ctx *a, const ml_attack_batch *bt, int step, int total, ml_tensor *xa,
                 ml_tensor *loss, ml_tensor *success) {
    a->step = step;
    if (ml_interrupt_pending()) {
        a->stop = a->interrupted = true;
        return 1;
    }
    if (!a->o->on_step) return 0;
    ml_attack_step_info info = {a->part ? a->part : a->name, step, total, a->run, loss, success, xa, bt->index,
                                a->o->trace ? &a->routing : NULL};
    int rc = a->o->on_step(a->o->on_step_ud, &info);
    if (ml_interrupt_pending()) { /* Ctrl-C inside the callback */
        a->stop = a->interrupted = true;
        ml_error_clear();
        return 1;
    }
    if (rc > 0) a->stop = a->stopped = true;
    return rc;
}
