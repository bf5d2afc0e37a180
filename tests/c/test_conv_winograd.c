/* Winograd F(4x4, 3x3) convolutions (conv_avx2_winograd.c) against the direct
 * kernels and im2col + sgemm, over the shape set of test_conv.c restricted to
 * what Winograd takes (3x3, stride 1): odd and rectangular sizes, batch 1 and
 * several, padding 0, 1 and 2, bias, every way a tile is stored; forward and
 * input gradient. The bound on the error is justified in docs/PERFORMANCE.md
 * (Winograd, accuracy). */
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "ops/conv_internal.h"
#include "rng.h"
#include "testlib.h"

/* The bound: float32's epsilon (1.2e-7) times 2^10 -- the transforms scale a
 * value by up to ~10 on the way in and out, and every output sums 36
 * products per input channel (docs/PERFORMANCE.md). The worst seen over the
 * W1/W2 layers and these shapes is below 1e-5. */
#define WINOGRAD_BOUND 1.2e-4

typedef struct {
    ml_tensor *y, *gx, *gw;
} fwd_bwd;

static fwd_bwd run(ml_conv_impl impl, ml_tensor *x, ml_tensor *w, ml_tensor *b, ml_tensor *gy, const ml_conv_opts *o) {
    fwd_bwd r = {0};
    ml_conv_set_impl(impl);
    r.y = ml_conv2d(x, w, b, o);
    ml_tensor *ins[2] = {x, w}, *g[2] = {0};
    if (r.y && ml_grad(r.y, gy, 2, ins, g, false)) fprintf(stderr, "  ml_grad: %s\n", ml_last_error());
    r.gx = g[0];
    r.gw = g[1];
    ml_conv_set_impl(ML_CONV_AUTO);
    return r;
}

static void release_all(fwd_bwd *r) {
    ml_release(r->y);
    ml_release(r->gx);
    ml_release(r->gw);
}

static int shapes_run, shapes_winograd;
static double worst_fwd, worst_gx, worst_gw;

/* One shape: Winograd (forced where it applies) against the direct kernels and im2col. */
static void check_shape(int N, int C, int H, int W, int O, int p, bool bias) {
    int64_t xs[4] = {N, C, H, W}, ws[4] = {O, C, 3, 3}, bs[1] = {O};
    ml_tensor *x = ml_randn(4, xs), *w = ml_randn(4, ws), *b = bias ? ml_randn(1, bs) : NULL;
    ml_requires_grad_(x, true);
    ml_requires_grad_(w, true);
    ml_conv_opts o = {1, 1, p, p, 1, 1, 1};
    int64_t Ho = H + 2 * p - 2, Wo = W + 2 * p - 2;
    if (Ho < 1 || Wo < 1) {
        ml_release(x); ml_release(w); ml_release(b);
        return;
    }
    int64_t ys[4] = {N, O, Ho, Wo}, before[3], after[3];
    ml_tensor *gy = ml_randn(4, ys);
    ml_conv_winograd_counts(before);
    fwd_bwd wi = run(ML_CONV_WINOGRAD, x, w, b, gy, &o);
    ml_conv_winograd_counts(after);
    fwd_bwd di = run(ML_CONV_DIRECT, x, w, b, gy, &o), im = run(ML_CONV_IM2COL, x, w, b, gy, &o);
    bool took = after[0] == before[0] + 1 && after[1] == before[1] + 1 && after[2] == before[2] + 1;
    shapes_run++;
    shapes_winograd += took;
    bool all = wi.y && wi.gx && wi.gw && di.y && di.gx && di.gw && im.y && im.gx && im.gw;
    CHECK(all);
    if (all) {
        double ef = test_rel_diff(wi.y, di.y), eg = test_rel_diff(wi.gx, di.gx), ew = test_rel_diff(wi.gw, di.gw);
        CHECK(ef <= WINOGRAD_BOUND && eg <= WINOGRAD_BOUND && ew <= WINOGRAD_BOUND);
        CHECK(test_rel_diff(wi.y, im.y) <= WINOGRAD_BOUND && test_rel_diff(wi.gx, im.gx) <= WINOGRAD_BOUND &&
              test_rel_diff(wi.gw, im.gw) <= WINOGRAD_BOUND);
        if (ef > worst_fwd) worst_fwd = ef;
        if (eg > worst_gx) worst_gx = eg;
        if (ew > worst_gw) worst_gw = ew;
        if (test_failures)
            fprintf(stderr, "  shape N%d C%d %dx%d O%d p%d bias%d: forward %.3g, input gradient %.3g, weight gradient %.3g\n",
                    N, C, H, W, O, p, bias, ef, eg, ew);
    }
    release_all(&wi);
    release_all(&di);
    release_all(&im);
    ml_release(gy); ml_release(x); ml_release(w); ml_release(b);
}

TEST(matches_direct_and_im2col) {
    static const int chans[] = {1, 3, 8, 15, 16, 17, 33, 64};
    ml_seed(5);
    uint64_t st = 4242;
    for (int i = 0; i < 90; i++) {
        /* a small deterministic generator, independent of the tensor RNG */
        st = st * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t v = st >> 11;
        int C = chans[v % 8];
        v /= 8;
        int O = chans[v % 8];
        v /= 8;
        int p = (int)(v % 3);
        v /= 3;
        int H = 1 + (int)(v % 33);
        v /= 33;
        int W = (v & 1) ? H : 1 + (int)((v >> 1) % 33);
        v >>= 7;
        int N = (v & 1) ? 1 : 2 + (int)((v >> 1) % 4);
        check_shape(N, C, H, W, O, p, (v >> 3) & 1);
    }
    /* every way a tile is stored: four tiles side by side (rows of 16, 32),
     * an 8x8 plane, a 4x4 plane, the general case (rows of 12); partial last
     * vectors, several blocks; the W1/W2 layer shapes at a smaller batch */
    static const int fixed[][6] = {{3, 16, 32, 32, 16, 1}, {2, 64, 16, 16, 64, 1}, {5, 64, 8, 8, 64, 1}, {3, 128, 4, 4, 128, 1},
                                   {2, 32, 12, 12, 16, 1}, {7, 16, 32, 32, 8, 1},  {4, 128, 4, 4, 64, 1}, {1, 9, 30, 14, 11, 0},
                                   {6, 32, 16, 16, 32, 1}, {3, 24, 9, 9, 40, 2}};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        check_shape(fixed[i][0], fixed[i][1], fixed[i][2], fixed[i][3], fixed[i][4], fixed[i][5], i % 2);
    printf("     %d of %d shapes on Winograd; worst error relative to the output's scale: forward %.2g, input gradient %.2g, "
           "weight gradient %.2g\n", shapes_winograd, shapes_run, worst_fwd, worst_gx, worst_gw);
    if (ml_conv_winograd_available()) CHECK(shapes_winograd > shapes_run / 2);
}

/* Central differences of L = sum(y r) on a few inputs, Winograd throughout
 * (the forward is linear in x: the difference quotient is exact up to
 * rounding). */
TEST(finite_differences) {
    int64_t xs[4] = {2, 16, 8, 8}, ws[4] = {16, 16, 3, 3};
    ml_seed(9);
    ml_tensor *x = ml_randn(4, xs), *w = ml_randn(4, ws);
    ml_requires_grad_(x, true);
    ml_conv_opts o = {1, 1, 1, 1, 1, 1, 1};
    ml_conv_set_impl(ML_CONV_WINOGRAD);
    ml_tensor *y = ml_conv2d(x, w, NULL, &o), *r = ml_randn(4, y->shape), *yr = ml_mul(y, r), *L = ml_sum(yr, ML_ALL_DIMS, false);
    ml_tensor *gx = NULL;
    CHECK(ml_grad(L, NULL, 1, &x, &gx, false) == 0 && gx);
    const int64_t probe[] = {0, 7, 63, 64 * 5 + 9, 2047};
    for (size_t k = 0; k < sizeof probe / sizeof probe[0]; k++) {
        double f[2];
        float *xp = ml_f32(x) + probe[k], keep = *xp, h = 1.0f; /* linear: any step is exact but for rounding */
        for (int sgn = 0; sgn < 2; sgn++) {
            *xp = keep + (sgn ? -h : h);
            ml_tensor *y2 = ml_conv2d(x, w, NULL, &o), *p2 = ml_mul(y2, r), *L2 = ml_sum(p2, ML_ALL_DIMS, false);
            f[sgn] = ml_f32(L2)[0];
            ml_release(y2); ml_release(p2); ml_release(L2);
        }
        *xp = keep;
        CHECK_NEAR((f[0] - f[1]) / (2 * h), ml_f32(gx)[probe[k]], 2e-3);
    }
    ml_conv_set_impl(ML_CONV_AUTO);
    ml_release(gx); ml_release(L); ml_release(yr); ml_release(r); ml_release(y); ml_release(x); ml_release(w);
}

/* Every output of the forward and the input gradient is computed by one
 * thread: the same bits with 1 and 2 threads, run after run. The weight
 * gradient adds fixed slices in slice order: the same bits run after run on
 * the same thread count. */
TEST(same_bits_on_any_thread_count) {
    int64_t xs[4] = {9, 32, 16, 16}, ws[4] = {32, 32, 3, 3}, ys[4] = {9, 32, 16, 16};
    ml_seed(13);
    ml_tensor *x = ml_randn(4, xs), *w = ml_randn(4, ws), *gy = ml_randn(4, ys);
    ml_requires_grad_(x, true);
    ml_requires_grad_(w, true);
    ml_conv_opts o = {1, 1, 1, 1, 1, 1, 1};
    int saved = ml_num_threads();
    ml_set_num_threads(1);
    fwd_bwd a = run(ML_CONV_WINOGRAD, x, w, NULL, gy, &o);
    ml_set_num_threads(2);
    fwd_bwd b = run(ML_CONV_WINOGRAD, x, w, NULL, gy, &o), c = run(ML_CONV_WINOGRAD, x, w, NULL, gy, &o);
    ml_set_num_threads(saved);
    CHECK(test_same_bits(a.y, b.y) && test_same_bits(b.y, c.y));
    CHECK(test_same_bits(a.gx, b.gx) && test_same_bits(b.gx, c.gx));
    CHECK(test_same_bits(b.gw, c.gw));
    release_all(&a);
    release_all(&b);
    release_all(&c);
    ml_release(x); ml_release(w); ml_release(gy);
}

/* What Winograd takes, and MOELAB_CONV=direct's choice turning it off. */
TEST(selection) {
    ml_conv_geom g = {.N = 2, .C = 16, .H = 8, .W = 8, .O = 16, .kh = 3, .kw = 3, .Ho = 8, .Wo = 8,
                      .sh = 1, .sw = 1, .ph = 1, .pw = 1, .dh = 1, .dw = 1, .groups = 1};
    CHECK(ml_conv_winograd_handles(&g, 0) == ml_conv_winograd_handles(&g, 1));
    if (ml_conv_winograd_available()) CHECK(ml_conv_winograd_handles(&g, 0));
    ml_conv_geom s2 = g, d2 = g, gr = g, k5 = g, few = g;
    s2.sh = s2.sw = 2;
    d2.dh = d2.dw = 2;
    gr.groups = 2;
    k5.kh = k5.kw = 5;
    few.C = 3;
    CHECK(!ml_conv_winograd_handles(&s2, 0) && !ml_conv_winograd_handles(&d2, 0) && !ml_conv_winograd_handles(&gr, 0) &&
          !ml_conv_winograd_handles(&k5, 0) && !ml_conv_winograd_handles(&few, 0));
    int64_t xs[4] = {2, 16, 8, 8}, ws[4] = {16, 16, 3, 3}, before[3], after[3];
    ml_tensor *x = ml_randn(4, xs), *w = ml_randn(4, ws);
    ml_conv_opts o = {1, 1, 1, 1, 1, 1, 1};
    ml_conv_set_impl(ML_CONV_DIRECT);
    ml_conv_winograd_counts(before);
    ml_release(ml_conv2d(x, w, NULL, &o));
    ml_conv_winograd_counts(after);
    CHECK(after[0] == before[0]);
    ml_conv_set_impl(ML_CONV_AUTO);
    ml_conv_winograd_counts(before);
    ml_release(ml_conv2d(x, w, NULL, &o));
    ml_conv_winograd_counts(after);
    CHECK(after[0] == before[0] + (ml_conv_winograd_available() ? 1 : 0));
    /* beside the direct AVX-512 kernels, the default leaves a 4x4 image to
     * them (measured faster); ML_CONV_WINOGRAD takes it anyway */
    int64_t xs4[4] = {2, 16, 4, 4};
    ml_tensor *x4 = ml_randn(4, xs4);
    ml_conv_winograd_counts(before);
    ml_release(ml_conv2d(x4, w, NULL, &o));
    ml_conv_winograd_counts(after);
    CHECK(after[0] == before[0] + (ml_conv_winograd_available() && !ml_conv_direct_available() ? 1 : 0));
    ml_conv_set_impl(ML_CONV_WINOGRAD);
    ml_release(ml_conv2d(x4, w, NULL, &o));
    ml_conv_winograd_counts(before);
    CHECK(before[0] == after[0] + (ml_conv_winograd_available() ? 1 : 0));
    ml_conv_set_impl(ML_CONV_AUTO);
    ml_release(x4);
    printf("     Winograd kernels %s on this CPU\n", ml_conv_winograd_available() ? "available" : "NOT available");
    ml_release(x); ml_release(w);
}

/* y, gx and gw of a padding-1 3x3 convolution in double precision, the naive
 * way: every product (sample, output and input channel, pixel, tap) adds to
 * all three. */
static void reference_f64(const ml_tensor *x, const ml_tensor *w, const ml_tensor *gy, double *y, double *gx, double *gw) {
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3], O = w->shape[0];
    const float *xs = ml_f32(x), *ws = ml_f32(w), *gs = ml_f32(gy);
    memset(y, 0, sizeof(double) * (size_t)(N * O * H * W));
    memset(gx, 0, sizeof(double) * (size_t)(N * C * H * W));
    memset(gw, 0, sizeof(double) * (size_t)(O * C * 9));
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < O; o++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t t = 0; t < 9; t++) {
                    const int64_t ki = t / 3, kj = t % 3;
                    const double wv = ws[(o * C + c) * 9 + t];
                    double acc = 0;
                    for (int64_t i = 0; i < H; i++) {
                        const int64_t xi = i + ki - 1;
                        if (xi < 0 || xi >= H) continue;
                        for (int64_t j = 0; j < W; j++) {
                            const int64_t xj = j + kj - 1;
                            if (xj < 0 || xj >= W) continue;
                            const int64_t yo = ((n * O + o) * H + i) * W + j, xo = ((n * C + c) * H + xi) * W + xj;
                            y[yo] += xs[xo] * wv;
                            gx[xo] += gs[yo] * wv;
                            acc += (double)gs[yo] * xs[xo];
                        }
                    }
                    gw[(o * C + c) * 9 + t] += acc;
                }
}

/* max |a - ref| over max |ref| */
static double rel_err_f64(const ml_tensor *a, const double *ref) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < ml_numel(a); i++) {
        d = fmax(d, fabs((double)ml_f32(a)[i] - ref[i]));
        m = fmax(m, fabs(ref[i]));
    }
    return m > 0 ? d / m : d;
}

/* The table of docs/PERFORMANCE.md (Winograd, accuracy): Winograd and im2col
 * + sgemm against a float64 reference, on the 3x3 stride-1 layer shapes of
 * W1 (ResNet-18, base width 16) and W2 (MoE-CNN, experts of half the output
 * channels), at batch 32 (W1 runs 128: the weight gradient sums 4x more). */
TEST(error_against_float64) {
    static const int shapes[][4] = {/* C, H = W, O */
                                    {16, 32, 16}, {32, 16, 32}, {64, 8, 64}, {128, 4, 128},
                                    {16, 32, 8},  {32, 16, 16}, {64, 8, 32}, {128, 4, 64}};
    const int N = 32;
    ml_seed(21);
    printf("     C -> O @ HxW, batch %d: error relative to the output's scale, Winograd / im2col + sgemm\n", N);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int C = shapes[s][0], H = shapes[s][1], O = shapes[s][2];
        int64_t xs[4] = {N, C, H, H}, ws[4] = {O, C, 3, 3}, ys[4] = {N, O, H, H};
        ml_tensor *x = ml_randn(4, xs), *w = ml_randn(4, ws), *gy = ml_randn(4, ys);
        ml_requires_grad_(x, true);
        ml_requires_grad_(w, true);
        ml_conv_opts o = {1, 1, 1, 1, 1, 1, 1};
        double *ref = malloc(sizeof(double) * (size_t)(N * O * H * H + N * C * H * H + O * C * 9));
        double *ry = ref, *rgx = ref + N * O * H * H, *rgw = rgx + N * C * H * H;
        reference_f64(x, w, gy, ry, rgx, rgw);
        fwd_bwd wi = run(ML_CONV_WINOGRAD, x, w, NULL, gy, &o), im = run(ML_CONV_IM2COL, x, w, NULL, gy, &o);
        CHECK(wi.y && wi.gx && wi.gw && im.y && im.gx && im.gw);
        if (wi.y && wi.gx && wi.gw && im.y && im.gx && im.gw) {
            double e[2][3] = {{rel_err_f64(wi.y, ry), rel_err_f64(wi.gx, rgx), rel_err_f64(wi.gw, rgw)},
                              {rel_err_f64(im.y, ry), rel_err_f64(im.gx, rgx), rel_err_f64(im.gw, rgw)}};
            printf("     %3d -> %3d @ %2dx%-2d  forward %.1e / %.1e  input gradient %.1e / %.1e  weight gradient %.1e / %.1e\n",
                   C, O, H, H, e[0][0], e[1][0], e[0][1], e[1][1], e[0][2], e[1][2]);
            for (int k = 0; k < 3; k++) CHECK(e[0][k] <= WINOGRAD_BOUND);
        }
        release_all(&wi);
        release_all(&im);
        free(ref);
        ml_release(gy); ml_release(x); ml_release(w);
    }
}

int main(void) {
    RUN(matches_direct_and_im2col);
    RUN(error_against_float64);
    RUN(finite_differences);
    RUN(same_bits_on_any_thread_count);
    RUN(selection);
    return test_summary();
}
