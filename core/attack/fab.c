/* fab.c -- the targeted Fast Adaptive Boundary attack FAB-T (Croce & Hein,
 * ICML 2020), l_inf and l_2: a minimum-norm attack.
 *
 * For each target class (ranks 2 .. n_targets + 1 of the clean logits), on the
 * examples not broken yet, n_iter iterations: linearise the boundary
 * z_t - z_y = 0 at the current point x1, project x1 and the clean x0 onto
 * that hyperplane within [0, 1] (d1, d2), and move to
 *     x1 = clamp((x1 + eta d1)(1 - alpha) + (x0 + eta d2) alpha),
 *     alpha = min(||d1|| / (||d1|| + ||d2||), alpha_max);
 * when x1 is misclassified, keep it if it is the closest to x0 so far and
 * step back towards x0: x1 = x0 + beta (x1 - x0). An example counts as broken
 * when its closest adversarial point is within eps; the others keep x0. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "driver.h"

/* ---------------------------------------------------------------- the projection */
/* Solves sum_i a_i min(lam, r_i) = c for lam (a_i > 0, r_i >= 0, and
 * c < sum_i a_i r_i) by partitioning around pivots: expected O(n). p holds the
 * pairs (r_i, a_i) interleaved and is reordered. */
static void swap_pairs(double *p, int64_t i, int64_t j) {
    double r = p[2 * i], w = p[2 * i + 1];
    p[2 * i] = p[2 * j], p[2 * i + 1] = p[2 * j + 1];
    p[2 * j] = r, p[2 * j + 1] = w;
}

static double solve_breakpoints(double *p, int64_t n, double c) {
    double below = 0; /* sum a r of the pairs known to saturate (r <= lam) */
    double above = 0; /* sum a of the pairs known not to (r >= lam) */
    int64_t lo = 0, hi = n; /* the undecided pairs p[lo .. hi) */
    while (lo < hi) {
        double pivot = p[2 * (lo + (hi - lo) / 2)];
        /* three-way partition: [lo, lt) < pivot, [lt, gt) == pivot, [gt, hi) > pivot */
        int64_t lt = lo, i = lo, gt = hi;
        while (i < gt) {
            double r = p[2 * i];
            if (r < pivot) swap_pairs(p, i++, lt++);
            else if (r > pivot) swap_pairs(p, i, --gt);
            else i++;
        }
        double sat = 0, slope = 0, at = 0;
        for (int64_t k = lo; k < gt; k++) sat += p[2 * k] * p[2 * k + 1];
        for (int64_t k = gt; k < hi; k++) slope += p[2 * k + 1];
        for (int64_t k = lt; k < gt; k++) at += p[2 * k + 1];
        if (below + sat + pivot * (above + slope) >= c) {
            above += slope + at; /* lam <= pivot: the pairs at or above it grow with lam */
            hi = lt;
        } else {
            below += sat; /* lam > pivot: the pairs up to it are saturated */
            lo = gt;
        }
    }
    return above > 0 ? (c - below) / above : 0;
}

void ml_fab_project(ml_attack_norm norm, int64_t D, const float *t, const float *w, double b, float *d, double *work) {
    double wt = 0;
    for (int64_t i = 0; i < D; i++) wt += (double)w[i] * t[i];
    double c = b - wt, s = c >= 0 ? 1 : -1, target = fabs(c);
    /* move coordinate i by m_i >= 0 in the direction sign(s w_i), at most room_i */
    int64_t n = 0;
    double reach = 0;
    for (int64_t i = 0; i < D; i++) {
        double u = s * w[i], au = fabs(u);
        double room = u > 0 ? 1.0 - t[i] : t[i];
        if (au == 0 || room <= 0) continue;
        reach += au * room;
        if (norm == ML_NORM_LINF) work[2 * n] = room, work[2 * n + 1] = au;
        else work[2 * n] = room / au, work[2 * n + 1] = au * au;
        n++;
    }
    if (target == 0) {
        memset(d, 0, sizeof(float) * (size_t)D);
        return;
    }
    double lam = reach <= target ? INFINITY : solve_breakpoints(work, n, target);
    for (int64_t i = 0; i < D; i++) {
        double u = s * w[i], au = fabs(u);
        double room = u > 0 ? 1.0 - t[i] : t[i];
        if (au == 0 || room <= 0) {
            d[i] = 0;
            continue;
        }
        double m = norm == ML_NORM_LINF ? lam : lam * au;
        m = m < room ? m : room;
        d[i] = (float)(u > 0 ? m : -m);
    }
}

/* ---------------------------------------------------------------- one run */
enum { X1, G, D1, D2, BEST, NBUF };

/* One run; the runs after the first (restarts) start at a random point. */
static int fab_run(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *r, int run) {
    bool random_start = run > 0;
    const ml_attack_opts *o = a->o;
    int n_iter = o->steps > 0 ? o->steps : 100;
    int64_t b = bt->b, D = bt->D;
    ml_tensor *buf[NBUF] = {0};
    ml_tensor *df_t = ml_empty(ML_F32, 1, &b), *adv_t = ml_empty(ML_F32, 1, &b), *res_t = ml_empty(ML_F32, 1, &b);
    double *work = malloc(sizeof(double) * 2 * (size_t)D);
    int rc = df_t && adv_t && res_t && work ? 0 : -1;
    for (int k = 0; k < NBUF && rc == 0; k++)
        if (!(buf[k] = ml_empty_like(bt->x))) rc = -1;
    if (rc) goto done;
    const float *x0 = ml_f32(bt->x);
    float *x1 = ml_f32(buf[X1]), *g = ml_f32(buf[G]), *d1 = ml_f32(buf[D1]), *d2 = ml_f32(buf[D2]);
    float *bestx = ml_f32(buf[BEST]), *df = ml_f32(df_t), *adv = ml_f32(adv_t), *res = ml_f32(res_t);
    memcpy(x1, x0, sizeof(float) * (size_t)(b * D));
    memcpy(bestx, x0, sizeof(float) * (size_t)(b * D));
    if (random_start) { /* a point at half the radius: x0 + eps/2 t / ||t|| */
        for (int64_t i = 0; i < b; i++) {
            float *v = x1 + i * D;
            ml_rng_state *rg = atk_rng(a, bt, i);
            for (int64_t j = 0; j < D; j++)
                v[j] = (float)(o->norm == ML_NORM_LINF ? 2 * atk_uniform(rg) - 1 : atk_normal(rg));
            double f = 0.5 * o->eps / (atk_row_dist(o->norm, v, NULL, D) + 1e-12);
            for (int64_t j = 0; j < D; j++) {
                float u = (float)(x0[i * D + j] + f * v[j]);
                v[j] = u < 0 ? 0 : u > 1 ? 1 : u;
            }
        }
        ml_bump_version(buf[X1]);
    }
    for (int64_t i = 0; i < b; i++) res[i] = INFINITY;

    for (int it = 0; it < n_iter; it++) {
        if ((rc = atk_loss_grad(a, bt, buf[X1], df, NULL, g))) break;
        for (int64_t i = 0; i < b; i++) {
            const float *xi = x1 + i * D, *x0i = x0 + i * D, *gi = g + i * D;
            double gx = 0;
            for (int64_t j = 0; j < D; j++) gx += (double)gi[j] * xi[j];
            double plane = gx - df[i]; /* the hyperplane g . z = plane where the linearised z_t - z_y is 0 */
            ml_fab_project(o->norm, D, xi, gi, plane, d1 + i * D, work);
            ml_fab_project(o->norm, D, x0i, gi, plane, d2 + i * D, work);
            double a1 = atk_row_dist(o->norm, d1 + i * D, NULL, D), a2 = atk_row_dist(o->norm, d2 + i * D, NULL, D);
            a1 = a1 > 1e-8 ? a1 : 1e-8;
            a2 = a2 > 1e-8 ? a2 : 1e-8;
            double al = a1 / (a1 + a2);
            al = al < o->alpha_max ? al : o->alpha_max;
            float *v = x1 + i * D;
            for (int64_t j = 0; j < D; j++) {
                double u = ((double)v[j] + o->fab_eta * d1[i * D + j]) * (1 - al) +
                           ((double)x0i[j] + o->fab_eta * d2[i * D + j]) * al;
                v[j] = (float)(u < 0 ? 0 : u > 1 ? 1 : u);
            }
        }
        ml_bump_version(buf[X1]);
        ml_attack_batch plain = *bt;
        plain.target = NULL;
        if ((rc = atk_eval(a, &plain, buf[X1], NULL, NULL, adv))) break;
        for (int64_t i = 0; i < b; i++) {
            if (adv[i] == 0) continue;
            float *v = x1 + i * D;
            const float *x0i = x0 + i * D;
            double t = atk_row_dist(o->norm, v, x0i, D);
            if (t < res[i]) {
                res[i] = (float)t;
                memcpy(bestx + i * D, v, sizeof(float) * (size_t)D);
            }
            for (int64_t j = 0; j < D; j++) v[j] = (float)(x0i[j] + o->fab_beta * ((double)v[j] - x0i[j]));
        }
        ml_bump_version(buf[X1]);
        for (int64_t i = 0; i < b; i++) {
            ml_f32(r->success)[i] = res[i] <= o->eps;
            ml_f32(r->loss)[i] = -res[i];
            ml_i64(r->steps)[i] = it + 1;
        }
        if ((rc = atk_progress(a, bt, it + 1, n_iter, buf[X1], r->loss, r->success))) break;
    }
    if (rc >= 0) {
        float *out = ml_f32(r->x_adv);
        for (int64_t i = 0; i < b; i++) {
            bool ok = res[i] <= o->eps;
            memcpy(out + i * D, ok ? bestx + i * D : x0 + i * D, sizeof(float) * (size_t)D);
            ml_f32(r->success)[i] = ok;
            ml_f32(r->loss)[i] = ok ? -res[i] : -INFINITY;
        }
        ml_bump_version(r->x_adv);
    }
done:
    for (int k = 0; k < NBUF; k++) ml_release(buf[k]);
    ml_release(df_t);
    ml_release(adv_t);
    ml_release(res_t);
    free(work);
    return rc;
}

int atk_fab_targeted(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out) {
    ml_objective *diff = ml_objective_new("logit_diff"), *saved = a->obj;
    if (!diff) return -1;
    a->obj = diff;
    int n_targets = a->o->n_targets < a->C - 1 ? a->o->n_targets : (int)(a->C - 1);
    int rc = 0;
    a->run = 0;
    /* an example misclassified at x is at distance 0: x itself */
    for (int64_t i = 0; i < bt->b; i++) {
        int64_t row = bt->index ? ml_i64(bt->index)[i] : i;
        if (atk_argmax(ml_f32(a->clean_logits) + row * a->C, a->C) != ml_i64(bt->y)[i]) ml_f32(out->success)[i] = 1, ml_f32(out->loss)[i] = 0;
    }
    for (int t = 1; t <= n_targets && rc == 0 && !a->stop; t++) {
        int64_t left = 1;
        for (int k = 0; k < a->o->restarts && rc == 0 && !a->stop && left > 0; k++, a->run++)
            rc = atk_run_unbroken(a, bt, out, t, k, fab_run, true, &left);
    }
    a->obj = saved;
    ml_objective_free(diff);
    return rc < 0 ? -1 : 0;
}
