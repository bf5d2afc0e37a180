/* square.c -- the Square attack (Andriushchenko et al., ECCV 2020), l_inf,
 * score-based: it only reads the logits.
 *
 * Start from vertical stripes x + eps * (+-1 per example, channel and column).
 * Each iteration, for every example not yet broken, draw a square window of
 * side s = round(sqrt(p * H * W)) at a random position and a sign per channel,
 * set the window to x +- eps (a change of 2 eps projected onto the ball), and
 * keep the new point when the margin z_y - max_{i != y} z_i drops or the
 * example becomes misclassified. The fraction p follows the paper's schedule
 * of the iteration number (p_init halved at iterations 10, 50, 200, 500, 1000,
 * 2000, 4000, 6000, 8000), not rescaled to the query budget, as AutoAttack runs
 * it. One query per example for the start and one per iteration. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/shape.h"
#include "driver.h"

/* The paper's schedule for p (iteration i counted from 0). */
static double p_selection(double p_init, int i) {
    static const int edges[] = {10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000};
    double p = p_init;
    for (int k = 0; k < 9; k++)
        if (i > edges[k]) p = p_init / (double)(2 << k);
    return p;
}

static int random_below(ml_rng_state *g, int n) { /* uniform in 0 .. n-1 */
    int v = (int)(atk_uniform(g) * n);
    return v < n ? v : n - 1;
}

int atk_square(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out) {
    const ml_attack_opts *o = a->o;
    int64_t b = bt->b, D = bt->D;
    /* [b, C, H, W]; [b, H, W] and [b, D] are read as one channel */
    const ml_tensor *x = bt->x;
    int64_t C = x->ndim >= 4 ? x->shape[1] : 1;
    int64_t H = x->ndim >= 3 ? x->shape[x->ndim - 2] : 1, W = x->shape[x->ndim - 1];
    if (C * H * W != D) return ml_failc("%s: Square needs images [B, C, H, W], got %s", a->name, ML_SHAPE_STR(x));
    float eps = (float)o->eps;
    const float *x0 = ml_f32(bt->x);
    float *best = ml_f32(out->x_adv), *loss = ml_f32(out->loss), *succ = ml_f32(out->success);
    int64_t *queries = ml_i64(out->steps);

    ml_tensor *cand = ml_empty_like(bt->x), *yb = ml_empty(ML_I64, 1, &b), *rows = ml_empty(ML_I64, 1, &b);
    float *margin = malloc(sizeof(float) * (size_t)b), *m_new = malloc(sizeof(float) * (size_t)b);
    int rc = cand && yb && rows && margin && m_new ? 0 : -1;
    if (rc) goto done;

    /* the start: vertical stripes */
    for (int64_t i = 0; i < b; i++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t w = 0; w < W; w++) {
                float s = atk_uniform(atk_rng(a, bt, i)) < 0.5 ? -eps : eps;
                for (int64_t h = 0; h < H; h++) best[((i * C + c) * H + h) * W + w] += s;
            }
    ml_bump_version(out->x_adv);
    atk_project(a, bt, out->x_adv, o->eps);
    {
        ml_tensor *z = NULL;
        ml_attack_batch plain = *bt;
        plain.target = NULL;
        if ((rc = atk_eval(a, &plain, out->x_adv, &z, NULL, NULL))) goto done;
        atk_margin(z, bt->y, margin);
        ml_release(z);
        for (int64_t i = 0; i < b; i++) {
            queries[i] = 1;
            succ[i] = margin[i] <= 0;
            loss[i] = -margin[i];
        }
    }

    for (int it = 0; it < o->queries; it++) {
        /* the examples still robust, packed at the front of cand / yb */
        int64_t k = 0;
        for (int64_t i = 0; i < b; i++)
            if (margin[i] > 0) ml_i64(rows)[k++] = i;
        if (k == 0) break;
        double p = p_selection(o->p_init, it);
        int64_t s = (int64_t)llround(sqrt(p * (double)(H * W)));
        s = s < 1 ? 1 : s;
        s = s < H ? s : H;
        s = s < W ? s : W;
        float *cv = ml_f32(cand);
        for (int64_t j = 0; j < k; j++) {
            int64_t i = ml_i64(rows)[j];
            ml_i64(yb)[j] = ml_i64(bt->y)[i];
            float *v = cv + j * D;
            const float *xi = x0 + i * D;
            memcpy(v, best + i * D, sizeof(float) * (size_t)D);
            ml_rng_state *g = atk_rng(a, bt, i);
            int64_t vh = random_below(g, (int)(H - s + 1)), vw = random_below(g, (int)(W - s + 1));
            for (int64_t c = 0; c < C; c++) {
                float delta = atk_uniform(g) < 0.5 ? -2 * eps : 2 * eps;
                for (int64_t h = vh; h < vh + s; h++)
                    for (int64_t w = vw; w < vw + s; w++) {
                        int64_t q = (c * H + h) * W + w;
                        float u = v[q] + delta, lo = xi[q] - eps, hi = xi[q] + eps;
                        u = u < lo ? lo : u > hi ? hi : u;
                        if (o->clamp) u = u < 0 ? 0 : u > 1 ? 1 : u;
                        v[q] = u;
                    }
            }
        }
        ml_bump_version(cand);
        ml_tensor *xs = ml_narrow(cand, 0, 0, k), *ys = ml_narrow(yb, 0, 0, k), *z = NULL;
        ml_attack_batch sub = {.x = NULL, .y = ys, .b = k, .D = D};
        rc = xs && ys ? atk_eval(a, &sub, xs, &z, NULL, NULL) : -1;
        if (rc == 0) atk_margin(z, ys, m_new);
        ml_release(z);
        ml_release(xs);
        ml_release(ys);
        if (rc) break;
        for (int64_t j = 0; j < k; j++) {
            int64_t i = ml_i64(rows)[j];
            queries[i]++;
            if (m_new[j] < margin[i] || m_new[j] <= 0) {
                margin[i] = m_new[j];
                memcpy(best + i * D, cv + j * D, sizeof(float) * (size_t)D);
                succ[i] = margin[i] <= 0;
                loss[i] = -margin[i];
            }
        }
        ml_bump_version(out->x_adv);
        if ((rc = atk_progress(a, bt, it + 1, o->queries, out->x_adv, out->loss, out->success))) break;
    }
done:
    ml_release(cand);
    ml_release(yb);
    ml_release(rows);
    free(margin);
    free(m_new);
    return rc < 0 ? -1 : 0;
}
