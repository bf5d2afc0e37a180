/* fgsm.c -- the fast gradient sign method (Goodfellow et al. 2015): one step
 * of size eps along sign(grad) (linf) or grad / ||grad||_2 (l2), from x (or
 * from a given start, projected back onto the ball around x). */
#include <math.h>

#include "driver.h"

int atk_fgsm(ml_attack_ctx *a, const ml_attack_batch *bt, ml_attack_out *out) {
    ml_tensor *g = ml_empty_like(bt->x);
    if (!g) return -1;
    a->run = 0;
    bool started = atk_start(a, bt, out->x_adv); /* else x_adv = x, or near x for a KL: the step starts from x */
    if (!started && atk_nudge(a, bt, out->x_adv)) ml_bump_version(out->x_adv);
    int rc = atk_loss_grad(a, bt, out->x_adv, ml_f32(out->loss), ml_f32(out->success), ml_f32(g));
    if (rc == 0) rc = atk_progress(a, bt, 1, 1, out->x_adv, out->loss, out->success);
    if (rc == 0) {
        atk_direction(a->o->norm, bt->b, bt->D, ml_f32(g));
        float *v = ml_f32(out->x_adv), *d = ml_f32(g);
        const float *x = started ? v : ml_f32(bt->x);
        float eps = (float)a->o->eps;
        for (int64_t i = 0, n = bt->b * bt->D; i < n; i++) v[i] = x[i] + eps * d[i];
        atk_project(a, bt, out->x_adv, a->o->eps);
        /* the loss and success above were the clean point's: unknown at x_adv until the caller evaluates it */
        ml_fill_(out->loss, -INFINITY);
        ml_fill_(out->success, 0);
        ml_fill_(out->steps, 1);
    }
    ml_release(g);
    return rc < 0 ? -1 : 0;
}
