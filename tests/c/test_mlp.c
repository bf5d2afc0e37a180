/* The fused block MLP (core/ops/mlp.h): values and every gradient against the
 * composed ops (linear, unary, linear per block) for GELU and ReLU, blocks of
 * several tiles and slices, an empty block, the dense case; the routed form
 * against gather + blocks + combine (gates' gradient too); central
 * differences; bit-identical repeats; exact errors; and the MLP module and the
 * TokenMoE layer with the fused path on and off (same outputs, gradients and
 * routing). */
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

typedef struct {
    int E;
    int64_t off[8];
    ml_tensor *x, *w1[7], *b1[7], *w2[7], *b2[7], *r; /* r: weights of the scalar loss sum(y * r) */
} problem;

static ml_tensor *leaf(int ndim, const int64_t *shape, double scale) {
    ml_tensor *t = ml_randn(ndim, shape);
    ml_mul_scalar_(t, scale);
    ml_requires_grad_(t, true);
    return t;
}

static void make(problem *p, int E, const int64_t *sizes, int64_t D, int64_t H, int64_t O) {
    memset(p, 0, sizeof *p);
    p->E = E;
    for (int e = 0; e < E; e++) p->off[e + 1] = p->off[e] + sizes[e];
    int64_t xs[2] = {p->off[E], D}, ys[2] = {p->off[E], O};
    p->x = leaf(2, xs, 1.0);
    for (int e = 0; e < E; e++) {
        int64_t s1[2] = {H, D}, s2[2] = {O, H};
        p->w1[e] = leaf(2, s1, 0.5);
        p->b1[e] = leaf(1, &H, 0.5);
        p->w2[e] = leaf(2, s2, 0.3);
        p->b2[e] = leaf(1, &O, 0.3);
    }
    p->r = ml_randn(2, ys);
}

static void drop(problem *p) {
    ml_release(p->x);
    ml_release(p->r);
    for (int e = 0; e < p->E; e++) {
        ml_release(p->w1[e]);
        ml_release(p->b1[e]);
        ml_release(p->w2[e]);
        ml_release(p->b2[e]);
    }
}

static void zero_grads(problem *p) {
    ml_zero_grad(p->x);
    for (int e = 0; e < p->E; e++) {
        ml_zero_grad(p->w1[e]);
        ml_zero_grad(p->b1[e]);
        ml_zero_grad(p->w2[e]);
        ml_zero_grad(p->b2[e]);
    }
}

static ml_tensor *fused(problem *p, ml_unary_op act) {
    return ml_mlp_blocks(p->x, p->E, p->off, p->w1, p->b1, p->w2, p->b2, act);
}

/* linear -> unary -> linear per non-empty block, concatenated */
static ml_tensor *composed(problem *p, ml_unary_op act) {
    ml_tensor *parts[8] = {NULL};
    int n = 0;
    for (int e = 0; e < p->E; e++) {
        int64_t len = p->off[e + 1] - p->off[e];
        if (!len) continue;
        ml_tensor *xe = ml_narrow(p->x, 0, p->off[e], len);
        ml_tensor *h = ml_linear(xe, p->w1[e], p->b1[e]);
        ml_tensor *a = ml_unary(act, h);
        parts[n++] = ml_linear(a, p->w2[e], p->b2[e]);
        ml_release(xe);
        ml_release(h);
        ml_release(a);
    }
    ml_tensor *y = ml_cat(n, parts, 0);
    for (int i = 0; i < n; i++) ml_release(parts[i]);
    return y;
}

static double loss_value(problem *p, ml_tensor *y) {
    ml_tensor *l = ml_mul(y, p->r), *s = ml_sum(l, ML_ALL_DIMS, false);
    double v = 0;
    ml_item(s, &v);
    ml_release(l);
    ml_release(s);
    return v;
}

static void backward(problem *p, ml_tensor *y) {
    ml_tensor *l = ml_mul(y, p->r), *s = ml_sum(l, ML_ALL_DIMS, false);
    CHECK(ml_backward(s, NULL, false) == 0);
    ml_release(l);
    ml_release(s);
}

/* grads[0] = x's, then w1, b1, w2, b2 of each block (retained; NULL when none) */
static int take_grads(problem *p, ml_tensor **g) {
    int n = 0;
    g[n++] = ml_retain(p->x->grad);
    for (int e = 0; e < p->E; e++) {
        ml_tensor *ts[4] = {p->w1[e], p->b1[e], p->w2[e], p->b2[e]};
        for (int k = 0; k < 4; k++) g[n++] = ts[k]->grad ? ml_retain(ts[k]->grad) : NULL;
    }
    return n;
}

static void compare_with_composed(int E, const int64_t *sizes, int64_t D, int64_t H, int64_t O, ml_unary_op act) {
    problem p;
    make(&p, E, sizes, D, H, O);
    ml_tensor *yc = composed(&p, act);
    backward(&p, yc);
    ml_tensor *gc[40], *gf[40];
    int n = take_grads(&p, gc);
    zero_grads(&p);
    ml_tensor *yf = fused(&p, act);
    CHECK(yf && yf->grad_fn && !strcmp(yf->grad_fn->op, "mlp_blocks"));
    CHECK(yf && test_close_ratio(yf, yc, 1e-5, 1e-5) <= 1);
    backward(&p, yf);
    take_grads(&p, gf);
    for (int i = 0; i < n; i++) {
        /* an empty block's parameters get no gradient, as in the composed form */
        CHECK((gc[i] == NULL) == (gf[i] == NULL));
        if (gc[i] && gf[i]) {
            double r = test_close_ratio(gf[i], gc[i], 1e-4, 1e-5);
            if (r > 1) fprintf(stderr, "  gradient %d differs (ratio %g)\n", i, r);
            CHECK(r <= 1);
        }
        ml_release(gc[i]);
        ml_release(gf[i]);
    }
    ml_release(yc);
    ml_release(yf);
    drop(&p);
}

TEST(matches_composed_ops) {
    ml_seed(1);
    /* H = 300: 109-row tiles, so blocks of 130 and 250 rows span several tiles
     * and (2 threads, 3 active blocks) two slices each; block 2 is empty */
    int64_t sizes[4] = {130, 0, 3, 250};
    compare_with_composed(4, sizes, 5, 300, 7, ML_GELU);
    compare_with_composed(4, sizes, 5, 300, 7, ML_RELU);
    int64_t dense[1] = {1000};
    compare_with_composed(1, dense, 16, 64, 16, ML_GELU);
    int64_t many[7] = {40, 1, 0, 77, 12, 5, 64};
    compare_with_composed(7, many, 8, 32, 8, ML_GELU);
}

/* every element of the tensors in check[n] against central differences of
 * the loss of forward(arg), with the gradients of one backward already taken */
static void check_central_differences(problem *p, ml_tensor *const *check, int n, ml_tensor *(*forward)(void *),
                                      void *arg) {
    bool was = ml_grad_set(false);
    for (int c = 0; c < n; c++) {
        ml_tensor *t = check[c];
        for (int64_t i = 0; i < ml_numel(t); i++) {
            float *v = ml_f32(t) + i, keep = *v;
            double h = 1e-2;
            *v = keep + (float)h;
            ml_tensor *yp = forward(arg);
            double lp = loss_value(p, yp);
            *v = keep - (float)h;
            ml_tensor *ym = forward(arg);
            double lm = loss_value(p, ym);
            *v = keep;
            ml_release(yp);
            ml_release(ym);
            CHECK_NEAR(ml_f32(t->grad)[i], (lp - lm) / (2 * h), 2e-3);
        }
    }
    ml_grad_set(was);
}

static ml_tensor *fused_gelu(void *p) { return fused(p, ML_GELU); }

TEST(central_differences) {
    ml_seed(2);
    int64_t sizes[2] = {2, 3};
    problem p;
    make(&p, 2, sizes, 3, 4, 2);
    ml_tensor *y = fused(&p, ML_GELU);
    backward(&p, y);
    ml_release(y);
    ml_tensor *check[4] = {p.x, p.w1[1], p.b1[0], p.w2[1]};
    check_central_differences(&p, check, 4, fused_gelu, &p);
    drop(&p);
}

TEST(bit_identical_repeats) {
    ml_seed(3);
    int64_t sizes[3] = {300, 0, 517};
    problem p;
    make(&p, 3, sizes, 16, 256, 16);
    ml_tensor *g1[20], *g2[20];
    ml_tensor *y1 = fused(&p, ML_GELU);
    backward(&p, y1);
    int n = take_grads(&p, g1);
    zero_grads(&p);
    ml_tensor *y2 = fused(&p, ML_GELU);
    backward(&p, y2);
    take_grads(&p, g2);
    CHECK(!memcmp(ml_f32(y1), ml_f32(y2), sizeof(float) * (size_t)ml_numel(y1)));
    for (int i = 0; i < n; i++) {
        CHECK((g1[i] == NULL) == (g2[i] == NULL));
        if (g1[i] && g2[i]) CHECK(!memcmp(ml_f32(g1[i]), ml_f32(g2[i]), sizeof(float) * (size_t)ml_numel(g1[i])));
        ml_release(g1[i]);
        ml_release(g2[i]);
    }
    ml_release(y1);
    ml_release(y2);
    drop(&p);
}

TEST(no_grad_and_input_gradient_only) {
    ml_seed(4);
    int64_t sizes[2] = {20, 9};
    problem p;
    make(&p, 2, sizes, 6, 24, 6);
    ml_tensor *yc = composed(&p, ML_GELU);
    bool was = ml_grad_set(false);
    ml_tensor *yn = fused(&p, ML_GELU);
    ml_grad_set(was);
    CHECK(yn && !yn->grad_fn && test_close_ratio(yn, yc, 1e-5, 1e-5) <= 1);
    /* the input gradient alone (an attack): the parameters are not targets */
    ml_tensor *yf = fused(&p, ML_GELU), *gx = NULL, *gxc = NULL;
    ml_tensor *l = ml_mul(yf, p.r), *s = ml_sum(l, ML_ALL_DIMS, false);
    ml_tensor *lc = ml_mul(yc, p.r), *sc = ml_sum(lc, ML_ALL_DIMS, false);
    CHECK(ml_grad(s, NULL, 1, &p.x, &gx, false) == 0);
    CHECK(ml_grad(sc, NULL, 1, &p.x, &gxc, false) == 0);
    CHECK(gx && gxc && test_close_ratio(gx, gxc, 1e-4, 1e-5) <= 1);
    CHECK(p.w1[0]->grad == NULL);
    ml_release(gx);
    ml_release(gxc);
    ml_release(l);
    ml_release(s);
    ml_release(lc);
    ml_release(sc);
    ml_release(yn);
    ml_release(yf);
    ml_release(yc);
    drop(&p);
}

TEST(errors) {
    ml_seed(5);
    int64_t sizes[2] = {3, 2};
    problem p;
    make(&p, 2, sizes, 4, 8, 3);
    CHECK_FAILS(fused(&p, ML_TANH) != NULL, "mlp_blocks: activation tanh has no fused kernel (GELU and ReLU do)");
    p.off[2] = 6;
    CHECK_FAILS(fused(&p, ML_GELU) != NULL, "mlp_blocks: block offsets run from 0 to 6, expected 0 to 5");
    p.off[2] = 5;
    p.off[1] = 6;
    CHECK_FAILS(fused(&p, ML_GELU) != NULL, "mlp_blocks: block 2 ends (5) before it starts (6)");
    p.off[1] = 3;
    ml_tensor *keep = p.w2[1];
    int64_t bad[2] = {3, 7};
    p.w2[1] = ml_zeros(ML_F32, 2, bad);
    CHECK_FAILS(fused(&p, ML_GELU) != NULL, "mlp_blocks: W2 of block 2 has shape [3, 7], expected [3, 8]");
    ml_release(p.w2[1]);
    p.w2[1] = keep;
    /* a parameter changed in place between forward and backward */
    ml_tensor *y = fused(&p, ML_GELU);
    ml_tensor *l = ml_mul(y, p.r), *s = ml_sum(l, ML_ALL_DIMS, false);
    ml_bump_version(p.w1[0]);
    CHECK_FAILS(ml_backward(s, NULL, false) == 0, "modified in place");
    ml_release(l);
    ml_release(s);
    ml_release(y);
    drop(&p);
}

/* ------------------------------------------------------------ routed */
/* x [T, D], assignments grouped in blocks of `sizes`, each to a random token
 * (a token may get several), gates in (0, 1) */
typedef struct {
    problem p; /* p.x: the tokens; p.r: [T, O] loss weights */
    int64_t T;
    ml_tensor *ids, *gates;
} routed;

static void make_routed(routed *q, int E, const int64_t *sizes, int64_t T, int64_t D, int64_t H, int64_t O) {
    make(&q->p, E, sizes, D, H, O);
    ml_release(q->p.x);
    ml_release(q->p.r);
    q->T = T;
    int64_t xs[2] = {T, D}, rs[2] = {T, O}, A = q->p.off[E];
    q->p.x = leaf(2, xs, 1.0);
    q->p.r = ml_randn(2, rs);
    q->ids = ml_empty(ML_I64, 1, &A);
    for (int64_t a = 0; a < A; a++) ml_i64(q->ids)[a] = (a * 7919 + a / 3) % (T - 1); /* the last token gets none */
    q->gates = ml_rand(1, &A);
    ml_requires_grad_(q->gates, true);
}

static void drop_routed(routed *q) {
    drop(&q->p);
    ml_release(q->ids);
    ml_release(q->gates);
}

static ml_tensor *routed_fused(routed *q, ml_unary_op act) {
    problem *p = &q->p;
    return ml_mlp_routed(p->x, q->ids, q->gates, p->E, p->off, p->w1, p->b1, p->w2, p->b2, act);
}

/* gather, the blocks one by one, weighted combine */
static ml_tensor *routed_composed(routed *q, ml_unary_op act) {
    problem b = q->p;
    ml_tensor *xd = ml_moe_gather(q->p.x, q->ids);
    b.x = xd;
    ml_tensor *y = composed(&b, act);
    ml_tensor *out = ml_moe_combine(y, q->gates, q->ids, q->T);
    ml_release(xd);
    ml_release(y);
    return out;
}

TEST(routed_matches_gather_blocks_combine) {
    ml_seed(8);
    int64_t sizes[4] = {130, 0, 3, 227};
    for (int k = 0; k < 2; k++) {
        ml_unary_op act = k ? ML_RELU : ML_GELU;
        routed q;
        make_routed(&q, 4, sizes, 101, 6, 300, 6);
        ml_tensor *yc = routed_composed(&q, act);
        backward(&q.p, yc);
        ml_tensor *gc[40], *gf[40];
        int n = take_grads(&q.p, gc);
        ml_tensor *ggc = ml_retain(q.gates->grad);
        zero_grads(&q.p);
        ml_zero_grad(q.gates);
        ml_tensor *yf = routed_fused(&q, act);
        CHECK(yf && yf->grad_fn && !strcmp(yf->grad_fn->op, "mlp_routed"));
        CHECK(yf && test_close_ratio(yf, yc, 1e-5, 1e-5) <= 1);
        /* a token no assignment reaches gets 0 */
        CHECK(yf && ml_f32(yf)[100 * 6] == 0.0f && ml_f32(yf)[100 * 6 + 5] == 0.0f);
        backward(&q.p, yf);
        take_grads(&q.p, gf);
        CHECK(q.gates->grad && test_close_ratio(q.gates->grad, ggc, 1e-4, 1e-5) <= 1);
        for (int i = 0; i < n; i++) {
            CHECK((gc[i] == NULL) == (gf[i] == NULL));
            if (gc[i] && gf[i]) CHECK(test_close_ratio(gf[i], gc[i], 1e-4, 1e-5) <= 1);
            ml_release(gc[i]);
            ml_release(gf[i]);
        }
        ml_release(ggc);
        ml_release(yc);
        ml_release(yf);
        drop_routed(&q);
    }
}

static ml_tensor *routed_gelu(void *q) { return routed_fused(q, ML_GELU); }

TEST(routed_central_differences) {
    ml_seed(9);
    int64_t sizes[2] = {3, 4};
    routed q;
    make_routed(&q, 2, sizes, 5, 3, 4, 2);
    ml_tensor *y = routed_fused(&q, ML_GELU);
    backward(&q.p, y);
    ml_release(y);
    ml_tensor *check[3] = {q.p.x, q.gates, q.p.w2[0]};
    check_central_differences(&q.p, check, 3, routed_gelu, &q);
    drop_routed(&q);
}

TEST(routed_errors) {
    ml_seed(10);
    int64_t sizes[2] = {3, 2};
    routed q;
    make_routed(&q, 2, sizes, 4, 4, 8, 3);
    ml_i64(q.ids)[4] = 4;
    CHECK_FAILS(routed_fused(&q, ML_GELU) != NULL, "mlp_routed: id 4 at position 4 is out of range [0, 4)");
    ml_i64(q.ids)[4] = 0;
    ml_tensor *keep = q.gates;
    int64_t four = 4;
    q.gates = ml_full(ML_F32, 1, &four, 1.0);
    CHECK_FAILS(routed_fused(&q, ML_GELU) != NULL, "mlp_routed: gates must be float32 [5], got [4]");
    ml_release(q.gates);
    q.gates = keep;
    drop_routed(&q);
}

/* ------------------------------------------------------------ modules */
typedef struct {
    ml_tensor *g[64];
    int n;
} grads;

static int collect(void *ud, const char *path, ml_param *p, ml_module *owner) {
    grads *gs = ud;
    gs->g[gs->n++] = p->t->grad ? ml_retain(p->t->grad) : NULL;
    return 0;
}

/* forward (train mode, fixed seed for the router noise), backward of sum(y * r) */
static ml_tensor *run_module(ml_module *m, ml_tensor *x, ml_tensor *r, bool fuse, grads *gs, ml_trace **trace) {
    ml_nn_set_fuse(fuse);
    ml_seed(77);
    ml_ctx ctx = {.trace = trace != NULL};
    ml_tensor *y = ml_module_forward(m, x, &ctx);
    if (trace) *trace = ml_ctx_take_trace(&ctx);
    ml_ctx_clear(&ctx);
    ml_tensor *l = ml_mul(y, r), *s = ml_sum(l, ML_ALL_DIMS, false);
    CHECK(ml_backward(s, NULL, false) == 0);
    ml_release(l);
    ml_release(s);
    gs->n = 0;
    ml_module_visit_params(m, false, collect, gs);
    return y;
}

static int drop_grad(void *ud, const char *path, ml_param *p, ml_module *owner) {
    ml_zero_grad(p->t);
    return 0;
}

static void compare_module(ml_module *m, int64_t rows, int64_t D, bool moe) {
    int64_t xs[3] = {rows / 10, 10, D};
    ml_tensor *x = ml_randn(3, xs), *r = ml_randn(3, xs);
    ml_requires_grad_(x, true);
    grads a = {.n = 0}, b = {.n = 0};
    ml_trace *ta = NULL, *tb = NULL;
    ml_tensor *ya = run_module(m, x, r, false, &a, moe ? &ta : NULL);
    ml_tensor *gxa = ml_retain(x->grad);
    ml_module_visit_params(m, false, drop_grad, NULL);
    ml_zero_grad(x);
    ml_tensor *yb = run_module(m, x, r, true, &b, moe ? &tb : NULL);
    CHECK(test_close_ratio(yb, ya, 1e-5, 1e-5) <= 1);
    CHECK(x->grad && test_close_ratio(x->grad, gxa, 1e-4, 1e-5) <= 1);
    CHECK(a.n == b.n && a.n > 0);
    for (int i = 0; i < a.n; i++) {
        CHECK((a.g[i] == NULL) == (b.g[i] == NULL));
        if (a.g[i] && b.g[i]) CHECK(test_close_ratio(b.g[i], a.g[i], 1e-4, 1e-5) <= 1);
        ml_release(a.g[i]);
        ml_release(b.g[i]);
    }
    if (moe) {
        /* the same routing decisions */
        const ml_trace_layer *la = &ta->layers[0], *lb = &tb->layers[0];
        CHECK(ta->n == 1 && tb->n == 1);
        CHECK(!memcmp(ml_i64(la->experts), ml_i64(lb->experts), sizeof(int64_t) * (size_t)ml_numel(la->experts)));
        CHECK(!memcmp(ml_i64(la->kept), ml_i64(lb->kept), sizeof(int64_t) * (size_t)ml_numel(la->kept)));
        ml_trace_free(ta);
        ml_trace_free(tb);
    }
    ml_module_visit_params(m, false, drop_grad, NULL);
    ml_release(ya);
    ml_release(yb);
    ml_release(gxa);
    ml_release(x);
    ml_release(r);
    ml_nn_set_fuse(true);
}

TEST(mlp_module_fused_and_composed) {
    ml_seed(6);
    ml_module *m = ml_nn_mlp(12, 48, 12, ML_GELU);
    compare_module(m, 200, 12, false);
    ml_module_release(m);
}

TEST(token_moe_fused_and_composed) {
    ml_seed(7);
    ml_moe_opts o;
    ml_moe_defaults(&o, 16);
    o.experts = 6;
    ml_module *m = ml_nn_token_moe(&o);
    ml_module_set_training(m, true);
    compare_module(m, 400, 16, true);
    ml_module_release(m);
}

int main(void) {
    RUN(matches_composed_ops);
    RUN(central_differences);
    RUN(bit_identical_repeats);
    RUN(no_grad_and_input_gradient_only);
    RUN(errors);
    RUN(routed_matches_gather_blocks_combine);
    RUN(routed_central_differences);
    RUN(routed_errors);
    RUN(mlp_module_fused_and_composed);
    RUN(token_moe_fused_and_composed);
    return test_summary();
}
