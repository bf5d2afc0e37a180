/* The attacks' pieces that are easiest to pin down in C: APGD's step-size
 * schedule on scripted losses, FAB's box-constrained projection against its
 * optimality conditions, Ctrl-C, mode restoring, and errors. */
#include <stdlib.h>
#include <string.h>

#include "attack/attack.h"
#include "testlib.h"

/* ---------------------------------------------------------------- APGD schedule */
static int checkpoints(int n_iter, int *at, int max) {
    float loss = 0, best = 0;
    ml_apgd_schedule s;
    CHECK(ml_apgd_schedule_init(&s, n_iter, 0.75, 1, &loss) == 0);
    int k = 0;
    unsigned char halve;
    for (int it = 1; it <= n_iter; it++) {
        loss = best = (float)it;
        if (ml_apgd_schedule_step(&s, &loss, &best, &halve) && k < max) at[k++] = it;
    }
    ml_apgd_schedule_free(&s);
    return k;
}

TEST(apgd_checkpoints) {
    /* p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): for 100
     * iterations the intervals are 22, 19, 16, 13, 10, 7, 6, 6 */
    int at[32];
    int n = checkpoints(100, at, 32);
    static const int want[] = {22, 41, 57, 70, 80, 87, 93, 99};
    CHECK(n == 8);
    for (int i = 0; i < 8 && i < n; i++) CHECK(at[i] == want[i]);
    /* 10 iterations: intervals max(int(2.2), 1) = 2, then 1 (the floor max(int(0.6), 1)) */
    n = checkpoints(10, at, 32);
    CHECK(n == 9);
    for (int i = 0; i < n; i++) CHECK(at[i] == i + 2);
}

/* One example per scripted case, 100 iterations (intervals 22, 19, ...). */
TEST(apgd_halving_rule) {
    enum { B = 6, N = 100 };
    float loss0[B] = {0, 0, 0, 0, 1000, 0};
    ml_apgd_schedule s;
    CHECK(ml_apgd_schedule_init(&s, N, 0.75, B, loss0) == 0);
    float best[B], loss[B];
    memcpy(best, loss0, sizeof best);
    unsigned char halve[B];
    int check = 0;
    unsigned char halved[8][B];
    for (int it = 1; it <= 41; it++) {
        /* 0: always rising -> never halved */
        loss[0] = (float)it;
        /* 1: constant -> condition 1 at every checkpoint */
        loss[1] = 0;
        /* 2: rises at 16 of the 22 steps of interval 1 (16 < 0.75 * 22 = 16.5): halved */
        loss[2] = it <= 16 ? (float)it : 16.0f - 0.5f * (float)(it - 16);
        /* 3: rises at 17 of 22 (17 >= 16.5): not halved at the first checkpoint */
        loss[3] = it <= 17 ? (float)it : 17.0f - 0.5f * (float)(it - 17);
        /* 4: rises at every step but stays below the loss at the start (1000): the best does not move.
         * Not halved at the first checkpoint (condition 2 needs a checkpoint before it), halved at the
         * second: its step was not halved at the first and the best is still 1000. */
        loss[4] = (float)(it % 22);
        /* 5: rises 18 of 22 in interval 1 (to 100), then in interval 2 climbs again from 0 (18 of 19
         * steps rise) but never beats 100: condition 2 halves it at the second checkpoint */
        loss[5] = it <= 22 ? (it <= 18 ? 100.0f * (float)it / 18 : 100.0f) : (float)(it - 23);
        if (it > 22) loss[2] = loss[3] = 0; /* flat in interval 2 */
        for (int b = 0; b < B; b++) best[b] = loss[b] > best[b] ? loss[b] : best[b];
        if (ml_apgd_schedule_step(&s, loss, best, halve)) memcpy(halved[check++], halve, B);
    }
    CHECK(check == 2);
    /* first checkpoint (after 22 iterations) */
    CHECK(halved[0][0] == 0);
    CHECK(halved[0][1] == 1);
    CHECK(halved[0][2] == 1);
    CHECK(halved[0][3] == 0);
    CHECK(halved[0][4] == 0);
    CHECK(halved[0][5] == 0);
    /* second checkpoint (after 41): 2 halved before and flat since -> condition 1 again; 3 flat -> 1 */
    CHECK(halved[1][0] == 0);
    CHECK(halved[1][1] == 1);
    CHECK(halved[1][2] == 1);
    CHECK(halved[1][3] == 1);
    CHECK(halved[1][4] == 1);
    CHECK(halved[1][5] == 1);
    ml_apgd_schedule_free(&s);
}

/* Exactly 75% of rising steps is not "fewer than 75%": not halved (the third
 * interval of 100 iterations has 16 steps, 12 of them rising here). */
TEST(apgd_threshold_is_strict) {
    float loss = 0, best = 0, prev = 0;
    ml_apgd_schedule s;
    CHECK(ml_apgd_schedule_init(&s, 100, 0.75, 1, &loss) == 0);
    unsigned char halve = 9;
    int checks = 0;
    for (int it = 1; it <= 57; it++) {
        /* rising until 41; then in 42..57 three rises and one fall (+2, +2, +2, -1), the best still climbing */
        loss = it <= 41 ? (float)it : prev + ((it - 42) % 4 == 3 ? -1.0f : 2.0f);
        prev = loss;
        best = loss > best ? loss : best;
        if (ml_apgd_schedule_step(&s, &loss, &best, &halve)) {
            checks++;
            CHECK(halve == 0);
        }
    }
    CHECK(checks == 3);
    ml_apgd_schedule_free(&s);
}

/* ---------------------------------------------------------------- FAB projection */
static double dot(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

TEST(fab_projection_is_optimal) {
    enum { D = 37 };
    float t[D], w[D], d[D];
    double work[2 * D];
    ml_rng_state g;
    ml_rng_local_seed(&g, 11);
    int cases = 0;
    for (int rep = 0; rep < 200; rep++) {
        for (int i = 0; i < D; i++) {
            t[i] = (float)ml_rng_local_uniform(&g);
            w[i] = (float)(2 * ml_rng_local_uniform(&g) - 1);
            if (i % 7 == 3) w[i] = 0;
        }
        double reach = 0, wt = dot(w, t, D);
        double b = wt + (2 * ml_rng_local_uniform(&g) - 1) * 3;
        for (int i = 0; i < D; i++) reach += w[i] > 0 ? w[i] * (1 - t[i]) : -w[i] * t[i];
        bool up = b > wt;
        double reach_dir = 0;
        for (int i = 0; i < D; i++) {
            double u = up ? w[i] : -w[i];
            reach_dir += u > 0 ? u * (1 - t[i]) : -u * t[i];
        }
        bool feasible = fabs(b - wt) < reach_dir;
        (void)reach;
        for (int nrm = 0; nrm < 2; nrm++) {
            ml_attack_norm norm = nrm ? ML_NORM_L2 : ML_NORM_LINF;
            ml_fab_project(norm, D, t, w, b, d, work);
            for (int i = 0; i < D; i++) CHECK(t[i] + d[i] >= -1e-6 && t[i] + d[i] <= 1 + 1e-6);
            float td[D];
            for (int i = 0; i < D; i++) td[i] = t[i] + d[i];
            if (!feasible) {
                /* the corner furthest towards the plane */
                for (int i = 0; i < D; i++) {
                    double u = up ? w[i] : -w[i];
                    double want = u > 0 ? 1 - t[i] : u < 0 ? -t[i] : 0;
                    CHECK_NEAR(d[i], want, 1e-6);
                }
                continue;
            }
            cases++;
            CHECK_NEAR(dot(w, td, D), b, 1e-4);
            if (norm == ML_NORM_LINF) {
                /* minimal: with a slightly smaller l_inf budget the plane is out of reach */
                double lam = 0;
                for (int i = 0; i < D; i++) lam = fabs(d[i]) > lam ? fabs(d[i]) : lam;
                double progress = 0;
                for (int i = 0; i < D; i++) {
                    double u = up ? w[i] : -w[i], room = u > 0 ? 1 - t[i] : t[i];
                    double m = 0.999 * lam < room ? 0.999 * lam : room;
                    progress += fabs(u) * m;
                }
                CHECK(progress < fabs(b - wt));
            } else {
                /* KKT: d_i = clip(mu w_i) within the box for one mu */
                double mu = NAN;
                for (int i = 0; i < D; i++) {
                    double lo = -t[i], hi = 1 - t[i];
                    if (w[i] != 0 && d[i] > lo + 1e-5 && d[i] < hi - 1e-5) {
                        double m = d[i] / w[i];
                        if (isnan(mu)) mu = m;
                        else CHECK_NEAR(m, mu, 1e-3);
                    }
                }
                for (int i = 0; i < D && !isnan(mu); i++) {
                    double lo = -t[i], hi = 1 - t[i], v = mu * w[i];
                    double clipped = v < lo ? lo : v > hi ? hi : v;
                    CHECK_NEAR(d[i], clipped, 1e-4);
                }
            }
        }
    }
    CHECK(cases > 100);
}

/* ---------------------------------------------------------------- attacks in C */
static ml_module *linear_model(int64_t D, int64_t C) {
    ml_module *seq = ml_nn_sequential();
    ml_nn_sequential_add(seq, ml_nn_linear(D, C, true));
    return seq;
}

static int interrupt_at_3(void *ud, const ml_attack_step_info *in) {
    (*(int *)ud)++;
    if (in->step == 3) ml_interrupt_request();
    return 0;
}

TEST(ctrl_c_returns_best_so_far) {
    ml_seed(5);
    ml_module *m = linear_model(8, 3);
    int64_t xs[2] = {4, 8}, ys[1] = {4};
    ml_tensor *x0 = ml_rand(2, xs), *x = ml_mul_scalar(x0, 0.5), *y = ml_zeros(ML_I64, 1, ys);
    ml_tensor *xx = ml_add_scalar(x, 0.25);
    int calls = 0;
    ml_attack_opts o;
    ml_attack_opts_default(&o);
    o.eps = 0.05;
    o.steps = 50;
    o.on_step = interrupt_at_3;
    o.on_step_ud = &calls;
    ml_attack_report rep;
    ml_module_set_training(m, true);
    ml_tensor *xa = ml_attack_run("pgd", m, xx, y, &o, &rep);
    CHECK(xa != NULL);
    CHECK(calls == 3);
    CHECK(rep.interrupted);
    CHECK(ml_interrupt_pending()); /* still set for the loops around the attack */
    ml_interrupt_clear();
    CHECK(m->training); /* restored */
    CHECK(m->children[0].m->training);
    if (xa) {
        /* after 2 steps of eps/50: within 2 eps/50 of x */
        for (int64_t i = 0; i < ml_numel(xa); i++)
            CHECK(fabs(ml_f32(xa)[i] - ml_f32(xx)[i]) <= 2 * 0.05 / 50 + 1e-6);
    }
    /* no gradient on the parameters */
    ml_module *lin = m->children[0].m;
    for (int k = 0; k < lin->n_params; k++) CHECK(lin->params[k].t->grad == NULL);
    ml_attack_report_clear(&rep);
    ml_release(xa);
    ml_release(x0);
    ml_release(x);
    ml_release(xx);
    ml_release(y);
    ml_module_release(m);
}

TEST(errors_name_the_attack_and_option) {
    ml_module *m = linear_model(4, 3);
    int64_t xs[2] = {2, 4}, ys[1] = {2};
    ml_tensor *x = ml_full(ML_F32, 2, xs, 0.5), *y = ml_zeros(ML_I64, 1, ys);
    ml_attack_opts o;
    ml_attack_opts_default(&o);
    ml_attack_report rep;
    CHECK_FAILS(ml_attack_run("pgd", m, x, y, &o, &rep) != NULL, "pgd: eps must be a finite number >= 0, got nan");
    o.eps = -0.1;
    CHECK_FAILS(ml_attack_run("pgd", m, x, y, &o, &rep) != NULL, "pgd: eps must be a finite number >= 0, got -0.1");
    o.eps = 0.1;
    o.steps = 0;
    CHECK_FAILS(ml_attack_run("apgd", m, x, y, &o, &rep) != NULL, "apgd: steps must be a positive integer, got 0");
    o.steps = -1;
    CHECK_FAILS(ml_attack_run("nope", m, x, y, &o, &rep) != NULL, "attack: unknown attack 'nope'");
    ml_i64(y)[1] = 3;
    CHECK_FAILS(ml_attack_run("fgsm", m, x, y, &o, &rep) != NULL,
                "fgsm: the label of example 1 is 3, outside 0..2 (the model has 3 classes)");
    ml_i64(y)[1] = 0;
    ml_f32(x)[3] = 1.5f;
    CHECK_FAILS(ml_attack_run("fgsm", m, x, y, &o, &rep) != NULL,
                "fgsm: x must hold pixels in [0, 1] (models normalise inside), found values from 0.5 to 1.5");
    ml_f32(x)[3] = 0.5f;
    int64_t ys3[1] = {3};
    ml_tensor *y3 = ml_zeros(ML_I64, 1, ys3);
    CHECK_FAILS(ml_attack_run("fgsm", m, x, y3, &o, &rep) != NULL, "fgsm: x has 2 examples but the labels have shape [3]");
    ml_module *id = ml_nn_sequential(); /* returns x [2, 4] for 4 "classes", then not 2-d */
    int64_t x3s[3] = {2, 2, 2};
    ml_tensor *x3 = ml_full(ML_F32, 3, x3s, 0.5);
    CHECK_FAILS(ml_attack_run("pgd", id, x3, y, &o, &rep) != NULL, "pgd: the model must return logits [2, classes]");
    o.norm = ML_NORM_L2;
    CHECK_FAILS(ml_attack_run("square", m, x, y, &o, &rep) != NULL, "square: only norm = \"linf\" is implemented");
    ml_release(x3);
    ml_release(y3);
    ml_module_release(id);
    ml_release(x);
    ml_release(y);
    ml_module_release(m);
}

int main(void) {
    RUN(apgd_checkpoints);
    RUN(apgd_halving_rule);
    RUN(apgd_threshold_is_strict);
    RUN(fab_projection_is_optimal);
    RUN(ctrl_c_returns_best_so_far);
    RUN(errors_name_the_attack_and_option);
    return test_summary();
}
