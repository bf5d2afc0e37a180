/* conv2d and pooling against naive loops written from the definition, and
 * the direct (AVX-512) kernels against im2col + sgemm on many shapes. */
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops/conv_internal.h"
#include "testlib.h"
#include "rng.h"

typedef struct {
    int N, C, H, W, O, kh, kw, s, p, d, g;
    bool bias;
} cfg;

/* y[n,o,i,j] = b[o] + sum_{c,ki,kj} x[n, gi*Cg + c, i s - p + ki d, j s - p + kj d] w[o, c, ki, kj] */
static void naive(const cfg *c, const float *x, const float *w, const float *b, float *y, int Ho, int Wo) {
    int Cg = c->C / c->g, Og = c->O / c->g;
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->O; o++)
            for (int i = 0; i < Ho; i++)
                for (int j = 0; j < Wo; j++) {
                    double s = b ? b[o] : 0;
                    int gi = o / Og;
                    for (int ch = 0; ch < Cg; ch++)
                        for (int ki = 0; ki < c->kh; ki++)
                            for (int kj = 0; kj < c->kw; kj++) {
                                int iy = i * c->s - c->p + ki * c->d, ix = j * c->s - c->p + kj * c->d;
                                if (iy < 0 || iy >= c->H || ix < 0 || ix >= c->W) continue;
                                s += (double)x[((n * c->C + gi * Cg + ch) * c->H + iy) * c->W + ix] *
                                     w[((o * Cg + ch) * c->kh + ki) * c->kw + kj];
                            }
                    y[((n * c->O + o) * Ho + i) * Wo + j] = (float)s;
                }
}

/* Gradients of L = sum(y * r) by the naive route: perturbation-free, since the
 * op is linear: gx = conv^T(r), gw = correlation, computed directly. */
static void naive_grads(const cfg *c, const float *x, const float *w, const float *r, float *gx, float *gw, float *gb,
                        int Ho, int Wo) {
    int Cg = c->C / c->g, Og = c->O / c->g;
    memset(gx, 0, sizeof(float) * (size_t)(c->N * c->C * c->H * c->W));
    memset(gw, 0, sizeof(float) * (size_t)(c->O * Cg * c->kh * c->kw));
    memset(gb, 0, sizeof(float) * (size_t)c->O);
    for (int n = 0; n < c->N; n++)
        for (int o = 0; o < c->O; o++)
            for (int i = 0; i < Ho; i++)
                for (int j = 0; j < Wo; j++) {
                    float rv = r[((n * c->O + o) * Ho + i) * Wo + j];
                    gb[o] += rv;
                    int gi = o / Og;
                    for (int ch = 0; ch < Cg; ch++)
                        for (int ki = 0; ki < c->kh; ki++)
                            for (int kj = 0; kj < c->kw; kj++) {
                                int iy = i * c->s - c->p + ki * c->d, ix = j * c->s - c->p + kj * c->d;
                                if (iy < 0 || iy >= c->H || ix < 0 || ix >= c->W) continue;
                                int xi = ((n * c->C + gi * Cg + ch) * c->H + iy) * c->W + ix;
                                int wi = ((o * Cg + ch) * c->kh + ki) * c->kw + kj;
                                gx[xi] += rv * w[wi];
                                gw[wi] += rv * x[xi];
                            }
                }
}

static void run_case(const cfg *c) {
    int Cg = c->C / c->g;
    int64_t xs[4] = {c->N, c->C, c->H, c->W}, ws[4] = {c->O, Cg, c->kh, c->kw}, bs[1] = {c->O};
    ml_tensor *x = ml_randn(4, xs), *w = ml_randn(4, ws), *b = c->bias ? ml_randn(1, bs) : NULL;
    ml_requires_grad_(x, true);
    ml_requires_grad_(w, true);
    if (b) ml_requires_grad_(b, true);
    ml_conv_opts o = {c->s, c->s, c->p, c->p, c->d, c->d, c->g};
    ml_tensor *y = ml_conv2d(x, w, b, &o);
    CHECK(y != NULL);
    if (!y) {
        fprintf(stderr, "  %s\n", ml_last_error());
        return;
    }
    int Ho = (int)y->shape[2], Wo = (int)y->shape[3];
    float *ref = malloc(sizeof(float) * (size_t)ml_numel(y));
    naive(c, ml_f32(x), ml_f32(w), b ? ml_f32(b) : NULL, ref, Ho, Wo);
    ml_tensor *rt = ml_from_data(ML_F32, 4, y->shape, ref);
    double fwd = test_close_ratio(y, rt, 1e-4, 1e-4);
    CHECK(fwd <= 1);
    /* backward */
    ml_tensor *r = ml_randn(4, y->shape);
    ml_tensor *yr = ml_mul(y, r), *L = ml_sum(yr, ML_ALL_DIMS, false);
    CHECK(ml_backward(L, NULL, false) == 0);
    float *gx = malloc(sizeof(float) * (size_t)ml_numel(x)), *gw = malloc(sizeof(float) * (size_t)ml_numel(w)),
          *gb = malloc(sizeof(float) * (size_t)c->O);
    naive_grads(c, ml_f32(x), ml_f32(w), ml_f32(r), gx, gw, gb, Ho, Wo);
    ml_tensor *tgx = ml_from_data(ML_F32, 4, xs, gx), *tgw = ml_from_data(ML_F32, 4, ws, gw), *tgb = ml_from_data(ML_F32, 1, bs, gb);
    CHECK(test_close_ratio(x->grad, tgx, 1e-4, 1e-4) <= 1);
    CHECK(test_close_ratio(w->grad, tgw, 1e-4, 1e-3) <= 1);
    if (b) CHECK(test_close_ratio(b->grad, tgb, 1e-4, 1e-3) <= 1);
    if (test_failures)
        fprintf(stderr, "  case N%d C%d %dx%d O%d k%dx%d s%d p%d d%d g%d\n", c->N, c->C, c->H, c->W, c->O, c->kh, c->kw,
                c->s, c->p, c->d, c->g);
    free(ref); free(gx); free(gw); free(gb);
    ml_release(tgx); ml_release(tgw); ml_release(tgb); ml_release(rt);
    ml_release(r); ml_release(yr); ml_release(L); ml_release(y);
    ml_release(x); ml_release(w); ml_release(b);
}

TEST(conv_matches_naive) {
    const cfg cases[] = {
        {2, 3, 7, 7, 4, 3, 3, 1, 1, 1, 1, true},   {5, 4, 8, 8, 6, 3, 3, 2, 1, 1, 1, false},
        {2, 4, 6, 6, 6, 3, 3, 1, 0, 1, 2, false},  {1, 8, 5, 7, 8, 3, 3, 1, 2, 1, 4, true},
        {2, 4, 8, 8, 8, 1, 1, 2, 0, 1, 1, false},  {3, 6, 5, 5, 4, 1, 1, 1, 0, 1, 1, true},
        {2, 1, 8, 8, 5, 4, 4, 4, 0, 1, 1, true},   {2, 3, 9, 9, 2, 3, 3, 1, 2, 2, 1, false},
        {1, 2, 6, 10, 3, 2, 3, 1, 1, 1, 1, true},  {4, 16, 8, 8, 16, 3, 3, 1, 1, 1, 16, false},
    };
    ml_seed(5);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i]);
}

TEST(weight_view_and_input_grad_only) {
    /* a block of output channels of a bigger weight (channel MoE) */
    int64_t xs[4] = {2, 3, 6, 6}, ws[4] = {8, 3, 3, 3};
    ml_tensor *x = ml_randn(4, xs), *W = ml_randn(4, ws);
    ml_tensor *blk = ml_narrow(W, 0, 4, 4), *blkc = ml_contiguous(blk);
    ml_conv_opts o = {1, 1, 1, 1, 1, 1, 1};
    ml_tensor *a = ml_conv2d(x, blk, NULL, &o), *b = ml_conv2d(x, blkc, NULL, &o);
    CHECK(test_close_ratio(a, b, 0, 1e-30) == 0);
    /* only the input gradient requested: ml_grad prunes the weight's branch */
    ml_requires_grad_(x, true);
    ml_requires_grad_(W, true);
    ml_tensor *w2 = ml_narrow(W, 0, 0, 4), *y = ml_conv2d(x, w2, NULL, &o), *L = ml_sum(y, ML_ALL_DIMS, false);
    ml_tensor *gx = NULL;
    CHECK(ml_grad(L, NULL, 1, &x, &gx, false) == 0);
    CHECK(gx && ml_same_shape(gx, x));
    CHECK(W->grad == NULL);
    ml_release(gx); ml_release(L); ml_release(y); ml_release(w2);
    ml_release(a); ml_release(b); ml_release(blk); ml_release(blkc); ml_release(x); ml_release(W);
}

/* ---------------------------------------------------------------- direct kernels vs im2col */

/* y, and the gradients of L = sum(y * r) w.r.t. x, w (and b), on one path. */
typedef struct {
    ml_tensor *y, *gx, *gw, *gb;
} conv_eval_out;

/* w is wleaf, or (vlen > 0) the view narrow(wleaf, 0, vstart, vlen), made
 * afresh since a backward frees the graph of the narrow. */
static conv_eval_out conv_eval(ml_conv_impl impl, ml_tensor *x, ml_tensor *wleaf, int64_t vstart, int64_t vlen,
                               ml_tensor *b, ml_tensor *r, const ml_conv_opts *o, bool grads) {
    conv_eval_out out = {0};
    ml_conv_set_impl(impl);
    ml_tensor *w = vlen ? ml_narrow(wleaf, 0, vstart, vlen) : ml_retain(wleaf);
    out.y = ml_conv2d(x, w, b, o);
    ml_release(w);
    if (out.y && grads) {
        ml_tensor *yr = ml_mul(out.y, r), *L = ml_sum(yr, ML_ALL_DIMS, false);
        ml_tensor *ins[3] = {x, wleaf, b}, *gs[3] = {0};
        if (ml_grad(L, NULL, b ? 3 : 2, ins, gs, false) != 0) fprintf(stderr, "  ml_grad: %s\n", ml_last_error());
        else {
            out.gx = gs[0];
            out.gw = gs[1];
            out.gb = gs[2];
        }
        ml_release(yr);
        ml_release(L);
    }
    ml_conv_set_impl(ML_CONV_AUTO);
    return out;
}

static void conv_eval_free(conv_eval_out *e) {
    ml_release(e->y);
    ml_release(e->gx);
    ml_release(e->gw);
    ml_release(e->gb);
}

/* Compares the direct path with im2col + sgemm on one shape (forward and
 * both gradients), optionally with a weight that is a block of output
 * channels of a bigger weight (channel MoE), and with the naive loops when
 * the shape is small. Returns whether the direct path was taken for all three. */
static bool compare_paths(const cfg *c, int64_t wrows, int64_t wstart) {
    if (getenv("CONV_TEST_TRACE")) /* prints each case before it runs, to find a crashing one */
        fprintf(stderr, "case N%d C%d %dx%d O%d k%d s%d p%d d%d g%d\n", c->N, c->C, c->H, c->W, c->O, c->kh, c->s, c->p, c->d, c->g);
    int Cg = c->C / c->g;
    int64_t xs[4] = {c->N, c->C, c->H, c->W}, ws[4] = {wrows ? wrows : c->O, Cg, c->kh, c->kw}, bs[1] = {c->O};
    ml_tensor *x = ml_randn(4, xs), *W = ml_randn(4, ws), *b = c->bias ? ml_randn(1, bs) : NULL;
    ml_requires_grad_(x, true);
    ml_requires_grad_(W, true);
    if (b) ml_requires_grad_(b, true);
    ml_tensor *w = wrows ? ml_narrow(W, 0, wstart, c->O) : ml_retain(W);
    ml_conv_opts o = {c->s, c->s, c->p, c->p, c->d, c->d, c->g};
    int64_t before[6], after[6];
    ml_conv_path_counts(before);
    ml_tensor *y0 = ml_conv2d(x, w, b, &o);
    CHECK(y0 != NULL);
    if (!y0) {
        fprintf(stderr, "  %s\n", ml_last_error());
        ml_release(x); ml_release(W); ml_release(b); ml_release(w);
        return false;
    }
    ml_tensor *r = ml_randn(4, y0->shape);
    ml_release(y0);
    ml_conv_path_counts(before);
    conv_eval_out d = conv_eval(ML_CONV_DIRECT, x, W, wstart, wrows ? c->O : 0, b, r, &o, true);
    ml_conv_path_counts(after);
    bool all_direct = after[0] > before[0] && after[1] > before[1] && after[2] > before[2];
    conv_eval_out m = conv_eval(ML_CONV_IM2COL, x, W, wstart, wrows ? c->O : 0, b, r, &o, true);
    int fails = test_failures;
    CHECK(d.y && m.y && d.gx && m.gx && d.gw && m.gw);
    if (d.y && m.y && d.gx && m.gx && d.gw && m.gw) {
        CHECK(test_close_ratio(d.y, m.y, 1e-4, 1e-4) <= 1);
        CHECK(test_close_ratio(d.gx, m.gx, 1e-4, 1e-4) <= 1);
        CHECK(test_close_ratio(d.gw, m.gw, 1e-4, 1e-3) <= 1);
        if (b) CHECK(d.gb && m.gb && test_close_ratio(d.gb, m.gb, 1e-4, 1e-3) <= 1);
        if (wrows) {
            /* rows of the big weight outside the block get exactly zero */
            double outside = 0;
            for (int64_t i = 0; i < ml_numel(d.gw); i++) {
                int64_t row = i / ((int64_t)Cg * c->kh * c->kw);
                if (row < wstart || row >= wstart + c->O) outside += fabs(ml_f32(d.gw)[i]);
            }
            CHECK(outside == 0);
        }
        /* the naive loops too, when cheap */
        double macs = (double)c->N * c->O * Cg * c->kh * c->kw * d.y->shape[2] * d.y->shape[3];
        if (macs < 2e6 && !wrows) {
            int Ho = (int)d.y->shape[2], Wo = (int)d.y->shape[3];
            float *ref = malloc(sizeof(float) * (size_t)ml_numel(d.y));
            naive(c, ml_f32(x), ml_f32(w), b ? ml_f32(b) : NULL, ref, Ho, Wo);
            ml_tensor *rt = ml_from_data(ML_F32, 4, d.y->shape, ref);
            CHECK(test_close_ratio(d.y, rt, 1e-4, 1e-4) <= 1);
            float *gx = malloc(sizeof(float) * (size_t)ml_numel(x)), *gw = malloc(sizeof(float) * (size_t)ml_numel(w)),
                  *gb = malloc(sizeof(float) * (size_t)c->O);
            naive_grads(c, ml_f32(x), ml_f32(w), ml_f32(r), gx, gw, gb, Ho, Wo);
            ml_tensor *tgx = ml_from_data(ML_F32, 4, xs, gx), *tgw = ml_from_data(ML_F32, 4, ws, gw);
            CHECK(test_close_ratio(d.gx, tgx, 1e-4, 1e-4) <= 1);
            CHECK(test_close_ratio(d.gw, tgw, 1e-4, 1e-3) <= 1);
            free(ref); free(gx); free(gw); free(gb);
            ml_release(rt); ml_release(tgx); ml_release(tgw);
        }
    }
    if (test_failures != fails)
        fprintf(stderr, "  case N%d C%d %dx%d O%d k%dx%d s%d p%d d%d g%d bias%d view%d (direct %d)\n", c->N, c->C, c->H,
                c->W, c->O, c->kh, c->kw, c->s, c->p, c->d, c->g, c->bias, (int)wrows, all_direct);
    conv_eval_free(&d);
    conv_eval_free(&m);
    ml_release(r); ml_release(w); ml_release(x); ml_release(W); ml_release(b);
    return all_direct;
}

/* The shapes the brief of the direct kernels names: channels 1, 3, 8, 15,
 * 16, 17, 33, 64; spatial sizes 1..33; stride 1/2; padding 0/1; kernel 1 and
 * 3; batch 1 and several; plus bias, groups, dilation and weight views. */
/* Run with each family of forward / input-gradient tiles forced in turn
 * (channels in lanes, pixels in lanes, 3x3 tiles that skip the padding), then
 * with the cost model's choice: every family meets every shape it can take. */
static void direct_matches_im2col_with(int kind);
TEST(direct_matches_im2col) {
    int64_t before[3], after[3];
    for (int kind = 0; kind < 3; kind++) {
        ml_conv_avx512_kind_counts(before);
        ml_conv_avx512_force_kind(kind);
        direct_matches_im2col_with(kind);
        ml_conv_avx512_force_kind(-1);
        ml_conv_avx512_kind_counts(after);
        if (ml_conv_direct_available()) CHECK(after[kind] > before[kind] + 50);
    }
    ml_conv_avx512_kind_counts(before);
    direct_matches_im2col_with(-1);
    ml_conv_avx512_kind_counts(after);
    if (ml_conv_direct_available()) {
        /* the cost model picks each family somewhere */
        CHECK(after[0] > before[0] && after[1] > before[1] && after[2] > before[2]);
        printf("     cost model's plans: %lld channel-lane, %lld pixel-lane, %lld edge\n",
               (long long)(after[0] - before[0]), (long long)(after[1] - before[1]), (long long)(after[2] - before[2]));
    }
}

static void direct_matches_im2col_with(int kind) {
    static const int chans[] = {1, 3, 8, 15, 16, 17, 33, 64};
    ml_seed(11 + kind);
    uint64_t st = 12345 + (uint64_t)(kind + 1) * 7777;
    int direct = 0, total = 0;
    for (int i = 0; i < 120; i++) {
        /* a small deterministic generator, independent of the tensor RNG */
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t v = st >> 11;
        cfg c = {0};
        c.C = chans[v % 8];
        v /= 8;
        c.O = chans[v % 8];
        v /= 8;
        c.kh = c.kw = (v & 1) ? 3 : 1;
        v >>= 1;
        c.s = (v & 1) ? 2 : 1;
        v >>= 1;
        c.p = c.kh == 3 ? (int)(v & 1) : 0;
        v >>= 1;
        c.H = 1 + (int)(v % 33);
        v /= 33;
        c.W = (v & 1) ? c.H : 1 + (int)((v >> 1) % 33);
        v >>= 7;
        if (c.H + 2 * c.p < c.kh) c.H = c.kh;
        if (c.W + 2 * c.p < c.kw) c.W = c.kw;
        c.N = (v & 1) ? 1 : 2 + (int)((v >> 1) % 4);
        v >>= 3;
        c.bias = v & 1;
        c.d = 1;
        c.g = 1;
        /* keep the suite fast: shrink the batch of the biggest shapes */
        if ((double)c.C * c.O * c.H * c.W * c.kh * c.kw * c.N > 4e7) c.N = 1;
        bool dir = compare_paths(&c, 0, 0);
        direct += dir;
        total++;
        if (ml_conv_direct_available() && c.O >= 8) CHECK(dir);
    }
    const cfg extra[] = {
        /* W1-like layers (small batch) and exact tile edges */
        {3, 16, 32, 32, 32, 3, 3, 2, 1, 1, 1, false},  {2, 64, 4, 4, 128, 3, 3, 1, 1, 1, 1, false},
        {2, 32, 8, 8, 64, 1, 1, 2, 0, 1, 1, false},    {2, 128, 4, 4, 128, 3, 3, 1, 1, 1, 1, true},
        {1, 3, 33, 33, 16, 3, 3, 1, 1, 1, 1, true},    {2, 17, 7, 9, 33, 3, 3, 2, 1, 1, 1, false},
        {1, 16, 1, 1, 16, 3, 3, 1, 1, 1, 1, false},    {2, 8, 2, 2, 24, 3, 3, 2, 1, 1, 1, false},
        /* groups, dilation, other kernels and paddings */
        {2, 16, 9, 9, 32, 3, 3, 1, 1, 1, 2, true},     {2, 32, 8, 8, 32, 3, 3, 2, 1, 1, 4, false},
        {2, 8, 11, 11, 16, 3, 3, 1, 2, 2, 1, false},   {2, 4, 12, 10, 16, 5, 5, 2, 2, 1, 1, true},
        {1, 1, 28, 28, 64, 4, 4, 4, 0, 1, 1, true},    {2, 6, 9, 8, 16, 2, 3, 1, 1, 1, 1, false},
        {2, 16, 8, 8, 16, 3, 3, 1, 0, 1, 1, false},    {2, 16, 10, 10, 16, 3, 3, 3, 1, 1, 1, false},
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        bool dir = compare_paths(&extra[i], 0, 0);
        direct += dir;
        total++;
        if (ml_conv_direct_available()) CHECK(dir);
    }
    /* weight views: a block of output channels of a bigger weight (channel MoE) */
    const cfg views[] = {
        {5, 16, 8, 8, 8, 3, 3, 1, 1, 1, 1, false},   {3, 32, 16, 16, 16, 3, 3, 2, 1, 1, 1, false},
        {4, 64, 4, 4, 32, 3, 3, 1, 1, 1, 1, false},  {2, 17, 5, 5, 33, 1, 1, 2, 0, 1, 1, false},
    };
    for (size_t i = 0; i < sizeof views / sizeof views[0]; i++) {
        bool dir = compare_paths(&views[i], 2 * views[i].O + 3, views[i].O / 2 + 1);
        direct += dir;
        total++;
        if (ml_conv_direct_available()) CHECK(dir);
    }
    printf("     tiles %s: %d of %d shapes ran on the direct kernels%s\n",
           kind == 0 ? "channel-lane" : kind == 1 ? "pixel-lane" : kind == 2 ? "edge" : "by cost", direct, total,
           ml_conv_direct_available() ? "" : " (not available on this CPU: im2col compared with itself)");
}

/* L = sum(conv(x, w) * r) is linear in x and in w, so central differences
 * are exact up to rounding: check a few coordinates of both gradients of the
 * direct path, at stride 1 and 2. */
TEST(direct_finite_differences) {
    const cfg cases[] = {{2, 5, 6, 7, 17, 3, 3, 1, 1, 1, 1, true}, {2, 16, 7, 6, 16, 3, 3, 2, 1, 1, 1, false},
                         {1, 8, 5, 5, 16, 1, 1, 2, 0, 1, 1, false}};
    ml_seed(3);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const cfg *c = &cases[ci];
        int64_t xs[4] = {c->N, c->C, c->H, c->W}, ws[4] = {c->O, c->C, c->kh, c->kw}, bs[1] = {c->O};
        ml_tensor *x = ml_randn(4, xs), *w = ml_randn(4, ws), *b = c->bias ? ml_randn(1, bs) : NULL;
        ml_requires_grad_(x, true);
        ml_requires_grad_(w, true);
        ml_conv_opts o = {c->s, c->s, c->p, c->p, 1, 1, 1};
        ml_tensor *y = ml_conv2d(x, w, b, &o);
        ml_tensor *r = ml_randn(4, y->shape);
        ml_release(y);
        conv_eval_out d = conv_eval(ML_CONV_DIRECT, x, w, 0, 0, NULL, r, &o, true);
        CHECK(d.gx && d.gw);
        bool saved = ml_grad_set(false);
        for (int which = 0; which < 2 && d.gx && d.gw; which++) {
            ml_tensor *t = which ? w : x, *g = which ? d.gw : d.gx;
            for (int k = 0; k < 6; k++) {
                int64_t i = (int64_t)((k * 7919u + 13u * ci) % (uint64_t)ml_numel(t));
                float *v = ml_f32(t) + i, v0 = *v;
                double Lp, Lm, h = 0.05;
                *v = v0 + (float)h;
                ml_tensor *yp = ml_conv2d(x, w, NULL, &o), *pp = ml_mul(yp, r), *sp = ml_sum(pp, ML_ALL_DIMS, false);
                Lp = ml_f32(sp)[0];
                *v = v0 - (float)h;
                ml_tensor *ym = ml_conv2d(x, w, NULL, &o), *pm = ml_mul(ym, r), *sm = ml_sum(pm, ML_ALL_DIMS, false);
                Lm = ml_f32(sm)[0];
                *v = v0;
                CHECK_NEAR((Lp - Lm) / (2 * h), ml_f32(g)[i], 2e-3);
                ml_release(yp); ml_release(pp); ml_release(sp); ml_release(ym); ml_release(pm); ml_release(sm);
            }
        }
        ml_grad_set(saved);
        conv_eval_free(&d);
        ml_release(r); ml_release(x); ml_release(w); ml_release(b);
    }
}

/* Forcing im2col really takes the other path (so the comparisons above
 * compare two implementations), and the environment's choice is reported. */
TEST(path_selection) {
    int64_t xs[4] = {2, 16, 8, 8}, ws[4] = {16, 16, 3, 3}, before[6], after[6];
    ml_tensor *x = ml_randn(4, xs), *w = ml_randn(4, ws);
    ml_conv_opts o = {1, 1, 1, 1, 1, 1, 1};
    ml_conv_set_impl(ML_CONV_IM2COL);
    CHECK(ml_conv_get_impl() == ML_CONV_IM2COL);
    ml_conv_path_counts(before);
    ml_release(ml_conv2d(x, w, NULL, &o));
    ml_conv_path_counts(after);
    CHECK(after[3] == before[3] + 1 && after[0] == before[0]);
    ml_conv_set_impl(ML_CONV_DIRECT); /* AUTO would take Winograd for this 3x3 stride-1 shape */
    ml_conv_path_counts(before);
    ml_release(ml_conv2d(x, w, NULL, &o));
    ml_conv_path_counts(after);
    ml_conv_set_impl(ML_CONV_AUTO);
    if (ml_conv_direct_available())
        CHECK(after[0] == before[0] + 1 && after[3] == before[3]);
    else
        CHECK(after[3] == before[3] + 1);
    /* the weight gradient of a group with fewer than 8 output channels stays on im2col */
    int64_t wg[4] = {8, 4, 3, 3};
    ml_tensor *w4 = ml_randn(4, wg);
    ml_requires_grad_(w4, true);
    ml_conv_opts og = {1, 1, 1, 1, 1, 1, 4};
    ml_tensor *y4 = ml_conv2d(x, w4, NULL, &og), *L4 = ml_sum(y4, ML_ALL_DIMS, false);
    ml_conv_path_counts(before);
    CHECK(ml_backward(L4, NULL, false) == 0);
    ml_conv_path_counts(after);
    CHECK(after[5] == before[5] + 1 && after[2] == before[2]);
    ml_release(y4); ml_release(L4);
    printf("     direct kernels %s on this CPU\n", ml_conv_direct_available() ? "available" : "NOT available");
    ml_release(x); ml_release(w); ml_release(w4);
}

/* ---------------------------------------------------------------- conv2d + affine (+ ReLU) */

static double max_abs(const ml_tensor *t) {
    double m = 0;
    for (int64_t i = 0; i < ml_numel(t); i++) m = fmax(m, fabs((double)ml_f32(t)[i]));
    return m;
}

/* ml_conv2d_affine (and, with res, ml_conv2d_affine_residual) against the
 * same computation from separate ops (conv2d, mul, add, [add], relu), on both
 * paths, forward and all four (five) gradients. */
static void check_affine(int N, int C, int H, int W, int O, int k, int s, int p, bool relu, bool res) {
    int64_t xs[4] = {N, C, H, W}, ws[4] = {O, C, k, k}, cs[1] = {O}, v4[4] = {1, O, 1, 1};
    ml_tensor *x = ml_randn(4, xs), *w = ml_randn(4, ws), *sc = ml_randn(1, cs), *sh = ml_randn(1, cs);
    ml_tensor *ins[5] = {x, w, sc, sh, NULL};
    int nin = res ? 5 : 4;
    ml_conv_opts o = {s, s, p, p, 1, 1, 1};
    /* the reference: conv, then * scale + shift (broadcast over [N, O, H, W]), [+ residual], then ReLU */
    ml_conv_set_impl(ML_CONV_IM2COL);
    ml_tensor *z = ml_conv2d(x, w, NULL, &o);
    if (res) ins[4] = ml_randn(4, z->shape);
    for (int i = 0; i < nin; i++) ml_requires_grad_(ins[i], true);
    ml_release(z);
    z = ml_conv2d(x, w, NULL, &o);
    ml_tensor *s4 = ml_reshape(sc, 4, v4), *t4 = ml_reshape(sh, 4, v4);
    ml_tensor *zs = ml_mul(z, s4), *za0 = ml_add(zs, t4), *za = res ? ml_add(za0, ins[4]) : ml_retain(za0);
    ml_tensor *ref = relu ? ml_relu(za) : ml_retain(za);
    ml_conv_set_impl(ML_CONV_AUTO);
    ml_tensor *r = ml_randn(4, ref->shape);
    ml_tensor *g_ref[5] = {0}, *rr = ml_mul(ref, r), *Lr = ml_sum(rr, ML_ALL_DIMS, false);
    CHECK(ml_grad(Lr, NULL, nin, ins, g_ref, false) == 0);
    /* the direct kernels, im2col, and AUTO (Winograd where it applies) */
    static const ml_conv_impl impls[3] = {ML_CONV_DIRECT, ML_CONV_IM2COL, ML_CONV_AUTO};
    for (int impl = 0; impl < 3; impl++) {
        ml_conv_set_impl(impls[impl]);
        ml_tensor *y = res ? ml_conv2d_affine_residual(x, w, sc, sh, ins[4], relu, &o) : ml_conv2d_affine(x, w, sc, sh, relu, &o);
        /* Winograd's error is bounded relative to the output's scale (test_conv_winograd.c) */
        double atol = impls[impl] == ML_CONV_AUTO ? 1.2e-4 * max_abs(ref) : 1e-4;
        CHECK(y && test_close_ratio(y, ref, 1e-4, atol) <= 1);
        ml_tensor *g[5] = {0}, *yr = y ? ml_mul(y, r) : NULL, *L = yr ? ml_sum(yr, ML_ALL_DIMS, false) : NULL;
        CHECK(L && ml_grad(L, NULL, nin, ins, g, false) == 0);
        for (int i = 0; i < nin; i++)
            CHECK(g[i] && g_ref[i] &&
                  test_close_ratio(g[i], g_ref[i], 1e-4, impls[impl] == ML_CONV_AUTO ? 1.2e-4 * max_abs(g_ref[i]) + 1e-3 : 1e-3) <= 1);
        if (test_failures)
            fprintf(stderr, "  affine case N%d C%d %dx%d O%d k%d s%d p%d relu%d res%d impl %d\n", N, C, H, W, O, k, s, p,
                    relu, res, impl);
        for (int i = 0; i < nin; i++) ml_release(g[i]);
        ml_release(y); ml_release(yr); ml_release(L);
    }
    ml_conv_set_impl(ML_CONV_AUTO);
    for (int i = 0; i < nin; i++) ml_release(g_ref[i]);
    ml_release(rr); ml_release(Lr); ml_release(r); ml_release(ref); ml_release(za); ml_release(za0); ml_release(zs);
    ml_release(s4); ml_release(t4); ml_release(z);
    for (int i = 0; i < nin; i++) ml_release(ins[i]);
}

TEST(conv_affine_matches_ops) {
    ml_seed(21);
    for (int kind = -1; kind < 3; kind++) {
        ml_conv_avx512_force_kind(kind); /* each tile family's epilogue */
        for (int res = 0; res < 2; res++) {
            check_affine(2, 16, 8, 8, 16, 3, 1, 1, true, res);
            check_affine(3, 5, 9, 7, 19, 3, 2, 1, true, res);
            check_affine(2, 32, 4, 4, 40, 3, 1, 1, false, res);
            check_affine(2, 8, 12, 12, 8, 1, 2, 0, true, res);
            check_affine(1, 3, 17, 33, 16, 3, 1, 1, true, res);
        }
    }
    /* big enough for the threaded paths, with a residual */
    check_affine(8, 16, 16, 16, 16, 3, 1, 1, true, true);
    ml_conv_avx512_force_kind(-1);
    /* argument checks */
    int64_t xs[4] = {1, 3, 5, 5}, ws[4] = {4, 3, 3, 3}, c3[1] = {3}, c4[1] = {4};
    ml_tensor *x = ml_zeros(ML_F32, 4, xs), *w = ml_zeros(ML_F32, 4, ws), *s3 = ml_zeros(ML_F32, 1, c3),
              *s4 = ml_zeros(ML_F32, 1, c4);
    ml_conv_opts o = {0};
    CHECK_FAILS(ml_conv2d_affine(x, w, s3, s4, true, &o) != NULL, "conv2d_affine: scale has shape [3], expected [4]");
    CHECK_FAILS(ml_conv2d_affine(x, w, s4, NULL, true, &o) != NULL, "conv2d_affine: scale and shift are required");
    CHECK_FAILS(ml_conv2d_affine_residual(x, w, s4, s4, x, true, &o) != NULL, "conv2d_affine: the residual has shape [1, 3, 5, 5]");
    ml_release(x); ml_release(w); ml_release(s3); ml_release(s4);
}

/* Nodes of the autograd graph behind t whose op is `op` (each node once). */
static int count_ops(const ml_tensor *t, const char *op) {
    const ml_node *seen[4096], *stack[4096];
    int ns = 0, top = 0, count = 0;
    if (t->grad_fn) stack[top++] = t->grad_fn;
    while (top > 0) {
        const ml_node *n = stack[--top];
        bool dup = false;
        for (int i = 0; i < ns && !dup; i++) dup = seen[i] == n;
        if (dup || ns == 4096) continue;
        seen[ns++] = n;
        count += !strcmp(n->op, op);
        for (int i = 0; i < n->n_in; i++)
            if (n->in[i] && n->in[i]->grad_fn && top < 4096) stack[top++] = n->in[i]->grad_fn;
    }
    return count;
}

/* ResNet-18 in eval mode: BatchNorm folded into the convolutions (the
 * default) gives the logits and the input gradient of the model run layer by
 * layer; in train mode nothing is folded into the convolutions, but BatchNorm,
 * the residual and the ReLU run as one op. */
TEST(resnet_folded_batchnorm) {
    ml_seed(4);
    ml_module *m = ml_zoo_build("resnet18", NULL);
    CHECK(m != NULL);
    if (!m) return;
    int64_t xs[4] = {3, 3, 32, 32}, ls[1] = {3};
    ml_tensor *x = ml_rand(4, xs), *lab = ml_zeros(ML_I64, 1, ls);
    for (int i = 0; i < 3; i++) ml_i64(lab)[i] = i;
    /* non-trivial BatchNorm statistics: one train-mode forward */
    ml_module_set_training(m, true);
    ml_release(ml_module_forward(m, x, NULL));
    ml_module_set_training(m, false);
    ml_tensor *logits[2], *gx[2];
    int64_t before[6], after[6], wbefore[3], wafter[3];
    for (int fuse = 1; fuse >= 0; fuse--) {
        ml_nn_set_fuse(fuse);
        ml_tensor *xr = ml_detach(x);
        ml_requires_grad_(xr, true);
        ml_conv_path_counts(before);
        ml_conv_winograd_counts(wbefore);
        logits[fuse] = ml_module_forward(m, xr, NULL);
        if (logits[fuse]) {
            /* stem, 16 convolutions in the blocks, 3 shortcuts: each folded or not */
            CHECK(count_ops(logits[fuse], "conv2d_affine") == (fuse ? 20 : 0));
            CHECK(count_ops(logits[fuse], "batch_norm") == (fuse ? 0 : 20));
            CHECK(count_ops(logits[fuse], "conv2d") == (fuse ? 0 : 20));
            /* the 8 blocks' residual add and ReLU go into the second convolution's store */
            CHECK(count_ops(logits[fuse], "add") == (fuse ? 0 : 8));
        }
        ml_tensor *loss = logits[fuse] ? ml_cross_entropy(logits[fuse], lab, ML_MEAN, 0.0) : NULL;
        gx[fuse] = NULL;
        CHECK(loss && ml_grad(loss, NULL, 1, &xr, &gx[fuse], false) == 0);
        ml_conv_path_counts(after);
        ml_conv_winograd_counts(wafter);
        /* 20 convolutions either way (direct, im2col or Winograd) */
        CHECK(after[0] + after[3] + wafter[0] - before[0] - before[3] - wbefore[0] == 20);
        ml_release(loss);
        ml_release(xr);
    }
    ml_nn_set_fuse(true);
    /* train mode: never folded (BatchNorm uses the batch's statistics) */
    ml_module_set_training(m, true);
    ml_tensor *xt = ml_detach(x);
    ml_requires_grad_(xt, true);
    ml_tensor *lt = ml_module_forward(m, xt, NULL);
    /* BatchNorm + ReLU (stem, conv1) and BatchNorm + residual + ReLU (conv2)
     * as one op each, the shortcuts' BatchNorm alone */
    CHECK(lt && count_ops(lt, "conv2d_affine") == 0 && count_ops(lt, "batch_norm") == 3 &&
          count_ops(lt, "batch_norm_act") == 17 && count_ops(lt, "add") == 0);
    ml_release(lt);
    ml_release(xt);
    ml_module_set_training(m, false);
    CHECK(logits[0] && logits[1] && test_close_ratio(logits[1], logits[0], 1e-4, 1e-5) <= 1);
    /* Per image: a ReLU input within float32 rounding of zero takes either
     * side of the kink depending on the order of the sums, and the gradient of
     * that image changes near it (seen on AVX-512 CPUs: 1e-3 of the image's
     * gradient, the other images 1e-7). Every image within 1e-2 of the
     * gradient's scale, all but one within the tight bound. */
    CHECK(gx[0] && gx[1]);
    if (gx[0] && gx[1]) {
        int tight = 0;
        for (int64_t i = 0; i < xs[0]; i++) {
            /* image i of a contiguous batch: a contiguous view */
            ml_tensor *a = ml_select(gx[1], 0, i), *b = ml_select(gx[0], 0, i);
            CHECK(a && b && test_rel_diff(a, b) < 1e-2);
            tight += a && b && test_close_ratio(a, b, 1e-3, 1e-6) <= 1;
            ml_release(a), ml_release(b);
        }
        CHECK(tight >= xs[0] - 1);
    }
    for (int i = 0; i < 2; i++) {
        ml_release(logits[i]);
        ml_release(gx[i]);
    }
    ml_release(x); ml_release(lab);
    ml_module_release(m);
}

TEST(pooling_matches_naive) {
    int64_t xs[4] = {2, 3, 7, 6};
    ml_tensor *x = ml_randn(4, xs);
    ml_tensor *mp = ml_max_pool2d(x, 3, 3, 2, 2, 1, 1);
    CHECK(mp && mp->shape[2] == 4 && mp->shape[3] == 3);
    /* check every max by brute force */
    for (int n = 0; n < 2; n++)
        for (int c = 0; c < 3; c++)
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 3; j++) {
                    float best = -1e30f;
                    for (int a = -1; a < 2; a++)
                        for (int b = -1; b < 2; b++) {
                            int iy = 2 * i + a, ix = 2 * j + b;
                            if (iy < 0 || iy >= 7 || ix < 0 || ix >= 6) continue;
                            float v = ml_f32(x)[((n * 3 + c) * 7 + iy) * 6 + ix];
                            if (v > best) best = v;
                        }
                    CHECK(ml_f32(mp)[((n * 3 + c) * 4 + i) * 3 + j] == best);
                }
    ml_tensor *ap = ml_avg_pool2d(x, 2, 2, 2, 2, 0, 0);
    CHECK_NEAR(ml_f32(ap)[0], (ml_f32(x)[0] + ml_f32(x)[1] + ml_f32(x)[6] + ml_f32(x)[7]) / 4.0, 1e-6);
    ml_tensor *gp = ml_global_avg_pool2d(x);
    double s = 0;
    for (int k = 0; k < 42; k++) s += ml_f32(x)[k];
    CHECK_NEAR(ml_f32(gp)[0], s / 42, 1e-5);
    ml_release(mp); ml_release(ap); ml_release(gp); ml_release(x);
}

/* An empty batch gives an empty result, forward and backward, on every path
 * and tile family: no division by the batch size, no work split into zero
 * pieces (the direct kernels once divided by zero with 2 threads). */
TEST(empty_batch) {
    static const int shapes[][6] = {/* C, H, O, k, s, p */
                                    {3, 32, 16, 3, 1, 1}, {16, 8, 32, 3, 2, 1}, {16, 8, 32, 1, 2, 0}, {8, 5, 8, 1, 1, 0},
                                    {16, 8, 16, 3, 1, 1} /* Winograd */};
    for (int impl = 0; impl < 2; impl++)
        for (int kind = -1; kind < 3; kind++)
            for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
                const int *c = shapes[i];
                ml_conv_set_impl(impl ? ML_CONV_IM2COL : ML_CONV_AUTO);
                ml_conv_avx512_force_kind(kind);
                int64_t xs[4] = {0, c[0], c[1], c[1]}, ws[4] = {c[2], c[0], c[3], c[3]}, bs[1] = {c[2]};
                ml_tensor *x = ml_zeros(ML_F32, 4, xs), *w = ml_randn(4, ws), *b = ml_randn(1, bs);
                ml_tensor *sc = ml_randn(1, bs), *sh = ml_randn(1, bs);
                ml_tensor *ins[5] = {x, w, b, sc, sh};
                for (int k = 0; k < 5; k++) ml_requires_grad_(ins[k], true);
                ml_conv_opts o = {c[4], c[4], c[5], c[5], 1, 1, 1};
                int64_t Ho = (c[1] + 2 * c[5] - c[3]) / c[4] + 1;
                for (int affine = 0; affine < 2; affine++) {
                    ml_tensor *y = affine ? ml_conv2d_affine(x, w, sc, sh, true, &o) : ml_conv2d(x, w, b, &o);
                    CHECK(y && y->shape[0] == 0 && y->shape[1] == c[2] && y->shape[2] == Ho && y->shape[3] == Ho);
                    ml_tensor *L = y ? ml_sum(y, ML_ALL_DIMS, false) : NULL, *g[5] = {0};
                    ml_tensor *gin[4] = {x, w, affine ? sc : b, affine ? sh : NULL};
                    int ng = affine ? 4 : 3;
                    CHECK(L && ml_grad(L, NULL, ng, gin, g, false) == 0);
                    CHECK(g[0] && g[0]->shape[0] == 0 && g[0]->shape[1] == c[0]);
                    for (int k = 1; k < ng; k++) {
                        bool zero = g[k] != NULL;
                        for (int64_t j = 0; zero && j < ml_numel(g[k]); j++) zero = ml_f32(g[k])[j] == 0.0f;
                        CHECK(zero); /* a sum over no samples */
                    }
                    if (test_failures) fprintf(stderr, "  empty batch: shape %zu impl %d kind %d affine %d\n", i, impl, kind, affine);
                    for (int k = 0; k < ng; k++) ml_release(g[k]);
                    ml_release(L);
                    ml_release(y);
                }
                for (int k = 0; k < 5; k++) ml_release(ins[k]);
            }
    ml_conv_set_impl(ML_CONV_AUTO);
    ml_conv_avx512_force_kind(-1);
    /* pooling */
    int64_t ps[4] = {0, 4, 8, 8};
    ml_tensor *x = ml_zeros(ML_F32, 4, ps);
    ml_requires_grad_(x, true);
    ml_tensor *pools[3] = {ml_max_pool2d(x, 2, 2, 2, 2, 0, 0), ml_avg_pool2d(x, 3, 3, 2, 2, 1, 1), ml_global_avg_pool2d(x)};
    for (int k = 0; k < 3; k++) {
        CHECK(pools[k] && pools[k]->shape[0] == 0 && pools[k]->shape[1] == 4);
        ml_tensor *L = pools[k] ? ml_sum(pools[k], ML_ALL_DIMS, false) : NULL, *gx = NULL;
        CHECK(L && ml_grad(L, NULL, 1, &x, &gx, false) == 0 && gx && gx->shape[0] == 0);
        ml_release(gx);
        ml_release(L);
        ml_release(pools[k]);
    }
    ml_release(x);
}

TEST(bad_input) {
    int64_t xs[4] = {2, 3, 8, 8}, ws[4] = {4, 1, 3, 3}, w5[4] = {4, 2, 3, 3}, s3[3] = {3, 8, 8}, b5[1] = {5};
    ml_tensor *x = ml_zeros(ML_F32, 4, xs), *w = ml_zeros(ML_F32, 4, ws), *wb = ml_zeros(ML_F32, 4, w5);
    ml_tensor *x3 = ml_zeros(ML_F32, 3, s3), *b = ml_zeros(ML_F32, 1, b5);
    ml_conv_opts o = {0};
    CHECK_FAILS(ml_conv2d(x, w, NULL, &o) != NULL, "conv2d: input has 3 channels, weight expects 1");
    CHECK_FAILS(ml_conv2d(x3, w, NULL, &o) != NULL, "conv2d: expected a 4-d input [N, C, H, W], got [3, 8, 8]");
    CHECK_FAILS(ml_conv2d(x, x3, NULL, &o) != NULL, "expected a 4-d weight");
    ml_conv_opts g2 = {.groups = 2};
    CHECK_FAILS(ml_conv2d(x, wb, NULL, &g2) != NULL, "groups = 2 must divide the input channels (3)");
    ml_conv_opts big = {.pad_h = 0};
    int64_t tiny[4] = {1, 3, 2, 2};
    ml_tensor *xt = ml_zeros(ML_F32, 4, tiny), *w3 = ml_zeros(ML_F32, 4, (int64_t[]){4, 3, 3, 3});
    CHECK_FAILS(ml_conv2d(xt, w3, NULL, &big) != NULL, "output would be empty (input 2x2, kernel 3x3, padding 0x0)");
    CHECK_FAILS(ml_conv2d(x, w3, b, &o) != NULL, "conv2d: bias has shape [5], expected [4]");
    ml_conv_opts neg = {.stride_h = -1, .stride_w = 1};
    CHECK_FAILS(ml_conv2d(x, w3, NULL, &neg) != NULL, "invalid stride");
    CHECK_FAILS(ml_max_pool2d(x3, 2, 2, 2, 2, 0, 0) != NULL, "max_pool2d: expected a float32 input [N, C, H, W]");
    CHECK_FAILS(ml_max_pool2d(xt, 3, 3, 1, 1, 0, 0) != NULL, "kernel 3x3 is larger than the padded input 2x2");
    CHECK_FAILS(ml_avg_pool2d(x, 2, 2, 2, 2, 2, 2) != NULL, "padding 2x2 must be at most half the kernel");
    CHECK_FAILS(ml_global_avg_pool2d(x3) != NULL, "global_avg_pool: expected a float32 input");
    ml_release(x); ml_release(w); ml_release(wb); ml_release(x3); ml_release(b); ml_release(xt); ml_release(w3);
}

int main(void) {
    RUN(conv_matches_naive);
    RUN(weight_view_and_input_grad_only);
    RUN(direct_matches_im2col);
    RUN(direct_finite_differences);
    RUN(path_selection);
    RUN(conv_affine_matches_ops);
    RUN(resnet_folded_batchnorm);
    RUN(pooling_matches_naive);
    RUN(empty_batch);
    RUN(bad_input);
    return test_summary();
}
