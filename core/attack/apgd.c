/* apgd.c -- Auto-PGD (Croce & Hein, ICML 2020) and its targeted version
 * APGD-T, l_inf and l_2.
 *
 * From a random point on the sphere of radius eps, n_iter steps with momentum
 *     z = P(x_k + eta_k dir(g_k)),  x_{k+1} = P(x_k + a (z - x_k) + (1 - a)(x_k - x_{k-1}))
 * (a = 1 at the first step, then 0.75; dir = sign or g / ||g||_2; P the
 * projection onto the ball and [0, 1]), initial step eta = 2 eps, halved per
 * example at the checkpoints of ml_apgd_schedule, where the example also
 * restarts from its best point. The result is, per example, the last point
 * found adversarial, else the point of highest loss. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

/* ---------------------------------------------------------------- the schedule */
static int max_int(int a, int b) { return a > b ? a : b; }

int ml_apgd_schedule_init(ml_apgd_schedule *s, int n_iter, double rho, int64_t B, const float *loss0) {
    memset(s, 0, sizeof *s);
    if (n_iter < 1 || B < 0) return ml_failc("apgd schedule: n_iter must be >= 1 and B >= 0, got %d and %lld", n_iter,
                                            (long long)B);
    s->n_iter = n_iter;
    s->interval = max_int((int)(0.22 * n_iter), 1);
    s->size_decr = max_int((int)(0.03 * n_iter), 1);
    s->min_interval = max_int((int)(0.06 * n_iter), 1);
    s->rho = rho;
    s->B = B;
    size_t n = (size_t)(B > 0 ? B : 1);
    s->increases = calloc(n, sizeof *s->increases);
    s->prev_loss = malloc(n * sizeof *s->prev_loss);
    s->best_at_check = malloc(n * sizeof *s->best_at_check);
    s->halved_last = malloc(n);
    if (!s->increases || !s->prev_loss || !s->best_at_check || !s->halved_last) {
        ml_apgd_schedule_free(s);
        return ml_failc("apgd schedule: out of memory");
    }
    for (int64_t i = 0; i < B; i++) {
        s->prev_loss[i] = s->best_at_check[i] = loss0[i];
        s->halved_last[i] = 1; /* condition 2 cannot fire at the first checkpoint */
    }
    return 0;
}

int ml_apgd_schedule_step(ml_apgd_schedule *s, const float *loss, const float *best, unsigned char *halve) {
    for (int64_t i = 0; i < s->B; i++) {
        s->increases[i] += loss[i] > s->prev_loss[i];
        s->prev_loss[i] = loss[i];
    }
    if (++s->since < s->interval) return 0;
    for (int64_t i = 0; i < s->B; i++) {
        bool oscillating = s->increases[i] < s->rho * s->interval;               /* condition 1 */
        bool stalled = !s->halved_last[i] && s->best_at_check[i] >= best[i];   /* condition 2 */
        halve[i] = oscillating || stalled;
        s->halved_last[i] = halve[i];
        s->best_at_check[i] = best[i];
        s->increases[i] = 0;
    }
    s->since = 0;
    s->interval = max_int(s->interval - s->size_decr, s->min_interval);
    return 1;
}

void ml_apgd_schedule_free(ml_apgd_schedule *s) {
    free(s->increases);
    free(s->prev_loss);
    free(s->best_at_check);
    free(s->halved_last);
    memset(s, 0, sizeof *s);
}

/* ---------------------------------------------------------------- one run */
static void copy_row(float *dst, const float *src, int64_t i, int64_t D) {
    memcpy(dst + i * D, src + i * D, sizeof(float) * (size_t)D);
}

/* The starting point: x + eps * t / ||t|| with t uniform in [-1, 1] (l_inf,
 * normalised by its largest entry) or Gaussian (l_2), clamped to [0, 1]. */
static void apgd_start(ml_attack_ctx *a, const ml_attack_batch *bt, float *xk) {
    int64_t D = bt->D;
    const float *x = ml_f32(bt->x);
    double eps = a->o->eps;
    for (int64_t i = 0; i < bt->b; i++) {
        double n = 0;
        float *v = xk + i * D;
        ml_rng_state *g = atk_rng(a, bt, i);
        for (int64_t j = 0; j < D; j++) {
            double t = a->o->norm == ML_NORM_LINF ? 2 * atk_uniform(g) - 1 : atk_normal(g);
            v[j] = (float)t;
            n = a->o->norm == ML_NORM_LINF ? (fabs(t) > n ? fabs(t) : n) : n + t * t;
        }
        double f = eps / ((a->o->norm == ML_NORM_LINF ? n : sqrt(n)) + 1e-12);
        for (int64_t j = 0; j < D; j++) {
            float u = (float)(x[i * D + j] + f * v[j]);
            v[j] = a->o->clamp ? (u < 0 ? 0 : u > 1 ? 1 : u) : u;
        }
    }
}

enum { XK, XPREV, Z, XBEST, XADV, G, GBEST, NBUF };

/* One APGD run on bt into r (x_adv, loss = best loss, success, steps). */
static int apgd_once(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *r) {
    const ml_attack_opts *o = a->o;
    int n_iter = o->steps > 0 ? o->steps : 100;
    int64_t b = bt->b, D = bt->D;
    ml_tensor *buf[NBUF] = {0};
    float *step = malloc(sizeof(float) * (size_t)b);
    unsigned char *halve = malloc((size_t)b);
    ml_tensor *cur_loss = ml_empty(ML_F32, 1, &b), *now = ml_empty(ML_F32, 1, &b);
    ml_apgd_schedule sched = {0};
    int rc = step && halve && cur_loss && now ? 0 : ml_failc("%s: out of memory", a->name);
    for (int k = 0; k < NBUF && rc == 0; k++)
        if (!(buf[k] = ml_empty_like(bt->x))) rc = -1;
    if (rc) goto done;
    float *xk = ml_f32(buf[XK]), *xprev = ml_f32(buf[XPREV]), *z = ml_f32(buf[Z]), *xbest = ml_f32(buf[XBEST]);
    float *xadv = ml_f32(buf[XADV]), *g = ml_f32(buf[G]), *gbest = ml_f32(buf[GBEST]);
    float *best = ml_f32(r->loss), *broken = ml_f32(r->success), *cl = ml_f32(cur_loss), *succ = ml_f32(now);
    size_t bytes = sizeof(float) * (size_t)(b * D);

    if (!atk_start(a, bt, buf[XK])) apgd_start(a, bt, xk);
    ml_bump_version(buf[XK]);
    if ((rc = atk_loss_grad(a, bt, buf[XK], cl, succ, g))) goto assemble;
    memcpy(xbest, xk, bytes);
    memcpy(xadv, xk, bytes);
    memcpy(gbest, g, bytes);
    memcpy(xprev, xk, bytes);
    for (int64_t i = 0; i < b; i++) {
        best[i] = cl[i];
        broken[i] = succ[i];
        step[i] = (float)(2 * o->eps);
    }
    if ((rc = ml_apgd_schedule_init(&sched, n_iter, o->rho, b, cl))) goto assemble;

    for (int it = 0; it < n_iter; it++) {
        float am = it == 0 ? 1.0f : (float)o->momentum;
        atk_direction(o->norm, b, D, g);
        for (int64_t i = 0; i < b; i++)
            for (int64_t j = i * D; j < (i + 1) * D; j++) z[j] = xk[j] + step[i] * g[j];
        ml_bump_version(buf[Z]);
        atk_project(a, bt, buf[Z], o->eps);
        for (int64_t j = 0; j < b * D; j++) {
            float next = xk[j] + am * (z[j] - xk[j]) + (1 - am) * (xk[j] - xprev[j]);
            xprev[j] = xk[j];
            xk[j] = next;
        }
        atk_project(a, bt, buf[XK], o->eps);
        if ((rc = atk_loss_grad(a, bt, buf[XK], cl, succ, g))) break;
        for (int64_t i = 0; i < b; i++) {
            if (succ[i] != 0) {
                copy_row(xadv, xk, i, D);
                broken[i] = 1;
            }
            if (cl[i] > best[i]) {
                copy_row(xbest, xk, i, D);
                copy_row(gbest, g, i, D);
                best[i] = cl[i];
            }
        }
        for (int64_t i = 0; i < b; i++) ml_i64(r->steps)[i] = it + 1;
        if ((rc = atk_progress(a, bt, it + 1, n_iter, buf[XK], cur_loss, r->success))) break;
        if (ml_apgd_schedule_step(&sched, cl, best, halve)) {
            for (int64_t i = 0; i < b; i++) {
                if (!halve[i]) continue;
                step[i] /= 2;
                copy_row(xk, xbest, i, D);
                copy_row(g, gbest, i, D);
            }
            ml_bump_version(buf[XK]);
        }
    }
assemble:
    if (rc >= 0) {
        float *out = ml_f32(r->x_adv);
        for (int64_t i = 0; i < b; i++) copy_row(out, broken[i] != 0 ? xadv : xbest, i, D);
        ml_bump_version(r->x_adv);
    }
done:
    ml_apgd_schedule_free(&sched);
    for (int k = 0; k < NBUF; k++) ml_release(buf[k]);
    ml_release(cur_loss);
    ml_release(now);
    free(step);
    free(halve);
    return rc;
}

static int apgd_run(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *r, int k) {
    return apgd_once(a, bt, r);
}

/* `restarts` runs on the examples of bt not broken yet, merging the worst
 * case into out; target_rank > 0 targets the class of that rank at the clean
 * point (APGD-T). */
static int apgd_runs(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out, int target_rank) {
    int rc = 0;
    int64_t left = 1;
    for (int k = 0; k < a->o->restarts && rc == 0 && !a->stop && left > 0; k++, a->run++)
        rc = atk_run_unbroken(a, bt, out, target_rank, k, apgd_run, false, &left);
    return rc < 0 ? -1 : 0;
}

int atk_apgd(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out) {
    a->run = 0;
    return apgd_runs(a, bt, out, 0);
}

ml_tensor *atk_ranked_class(const ml_attack_ctx *a, const ml_attack_batch *bt, int r) {
    int64_t C = a->C;
    ml_tensor *t = ml_empty(ML_I64, 1, &bt->b);
    int64_t *order = malloc(sizeof(int64_t) * (size_t)C);
    if (!t || !order) {
        ml_release(t);
        free(order);
        return ml_fail("%s: out of memory", a->name);
    }
    const float *z = ml_f32(a->clean_logits);
    for (int64_t i = 0; i < bt->b; i++) {
        int64_t row = bt->index ? ml_i64(bt->index)[i] : i;
        const float *zr = z + row * C;
        /* the r+1 largest by selection (ties: lower class first) */
        for (int64_t c = 0; c < C; c++) order[c] = c;
        for (int64_t k = 0; k <= r && k < C; k++) {
            int64_t m = k;
            for (int64_t c = k + 1; c < C; c++)
                if (zr[order[c]] > zr[order[m]]) m = c;
            int64_t tmp = order[k];
            order[k] = order[m];
            order[m] = tmp;
        }
        ml_i64(t)[i] = order[r < C ? r : C - 1];
    }
    free(order);
    return t;
}

int atk_apgd_targeted(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out) {
    ml_objective *dlr = ml_objective_new("dlr_targeted"), *saved = a->obj;
    if (!dlr) return -1;
    if (a->C < dlr->min_classes) {
        ml_objective_free(dlr);
        return ml_failc("%s: the targeted DLR loss needs at least 4 classes, the model has %lld", a->name,
                        (long long)a->C);
    }
    a->obj = dlr;
    int n_targets = a->o->n_targets < a->C - 1 ? a->o->n_targets : (int)(a->C - 1);
    int rc = 0;
    a->run = 0;
    for (int t = 1; t <= n_targets && rc == 0 && !a->stop; t++) rc = apgd_runs(a, bt, out, t);
    a->obj = saved;
    ml_objective_free(dlr);
    return rc;
}
