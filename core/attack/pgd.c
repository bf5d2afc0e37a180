/* pgd.c -- projected gradient descent (Madry et al. 2018), l_inf and l_2:
 * `steps` steps of size alpha (default eps / steps, as in Puigcerver et al.
 * 2022) along sign(grad) or grad / ||grad||_2, each followed by the projection
 * onto the ball and [0, 1]; an optional uniform random start; restarts from
 * fresh random starts keep the worst case per example (a success over a
 * failure, else the higher loss); with early_stop an example is frozen at its
 * first success. */
#include <math.h>
#include <string.h>

#include "driver.h"

/* One run from x (or a random start) into r. */
static int pgd_once(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *r, float *g, float *frozen) {
    const ml_attack_opts *o = a->o;
    int steps = o->steps > 0 ? o->steps : 10;
    double eps = o->eps, alpha = isnan(o->alpha) ? eps / steps : o->alpha;
    int64_t b = bt->b, D = bt->D;
    float *xa = ml_f32(r->x_adv), *loss = ml_f32(r->loss), *succ = ml_f32(r->success);
    int64_t *used = ml_i64(r->steps);
    if (!atk_start(a, bt, r->x_adv)) {
        memcpy(xa, ml_f32(bt->x), sizeof(float) * (size_t)(b * D));
        if (o->random_start) atk_random_start(a, bt, r->x_adv, eps);
        else atk_nudge(a, bt, r->x_adv);
    }
    memset(frozen, 0, sizeof(float) * (size_t)b);
    int rc = 0;
    int64_t active = b;
    for (int s = 1; s <= steps && active > 0; s++) {
        if ((rc = atk_loss_grad(a, bt, r->x_adv, loss, succ, g))) break;
        if (o->early_stop)
            for (int64_t i = 0; i < b; i++)
                if (succ[i] != 0 && frozen[i] == 0) frozen[i] = 1, active--;
        if ((rc = atk_progress(a, bt, s, steps, r->x_adv, r->loss, r->success))) break;
        atk_direction(o->norm, b, D, g);
        for (int64_t i = 0; i < b; i++) {
            if (frozen[i] != 0) continue;
            float *v = xa + i * D, *d = g + i * D, st = (float)alpha;
            for (int64_t j = 0; j < D; j++) v[j] += st * d[j];
            used[i] = s;
        }
        atk_project(a, bt, r->x_adv, eps);
    }
    /* restarts compare runs by the final point's loss and success; a single run needs no extra forward
     * (its loss and success are the last step's, and the caller evaluates the result) */
    if (rc == 0 && o->restarts > 1) rc = atk_eval(a, bt, r->x_adv, NULL, loss, succ);
    return rc;
}

static int pgd_run(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *r, int k) {
    ml_tensor *g = ml_empty_like(bt->x), *frozen = ml_empty(ML_F32, 1, &bt->b);
    int rc = g && frozen ? pgd_once(a, bt, r, ml_f32(g), ml_f32(frozen)) : -1;
    ml_release(g);
    ml_release(frozen);
    return rc;
}

int atk_pgd(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out) {
    int rc = 0;
    int64_t left = 1;
    /* a restart re-attacks only the examples not broken yet */
    for (int k = 0; k < a->o->restarts && rc == 0 && !a->stop && left > 0; k++) {
        a->run = k;
        rc = atk_run_unbroken(a, bt, out, 0, k, pgd_run, false, &left);
    }
    return rc < 0 ? -1 : 0;
}
