/* bench_ops.c -- GEMM and conv2d throughput (GFLOP/s), engine beside plain
 * cblas_sgemm in the same run (WORKLOADS.md, micro-benchmarks).
 *
 *   ./build/bench/bench_ops [runs] [--headline | name-filter]
 *
 * conv2d runs each shape on the default path (Winograd for 3x3 stride-1
 * layers where it pays, else the direct kernels), on Winograd wherever it
 * applies (MOELAB_CONV=winograd), on the direct kernels without Winograd
 * (MOELAB_CONV=direct) and on im2col + sgemm (ml_conv_set_impl) in the same
 * run, so the columns are comparable even on a shared, noisy machine. Without
 * AVX-512 the direct column is im2col too.
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "benchlib.h"
#include "moelab.h"

typedef struct {
    int M, N, K;
    float *A, *B, *C;
    ml_tensor *a, *b;
} gemm_case;

static void run_cblas(void *p) {
    gemm_case *g = p;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, g->M, g->N, g->K, 1.0f, g->A, g->K, g->B, g->N, 0.0f, g->C, g->N);
}

static void run_matmul(void *p) {
    gemm_case *g = p;
    ml_release(ml_matmul(g->a, g->b));
}

typedef struct {
    ml_tensor *x, *w, *gy;
    ml_conv_opts o;
    int mode; /* 0 forward, 1 forward + backward (x and w), 2 forward + input grad only */
} conv_case;

/* The backward starts from a fixed output gradient gy, so that only the
 * convolution is timed (not a loss's backward). */
static void run_conv(void *p) {
    conv_case *c = p;
    ml_tensor *y = ml_conv2d(c->x, c->w, NULL, &c->o);
    if (c->mode != 0) {
        ml_tensor *in[2] = {c->x, c->w}, *g[2] = {0};
        ml_grad(y, c->gy, c->mode == 1 ? 2 : 1, in, g, false);
        ml_release(g[0]);
        ml_release(g[1]);
    }
    ml_release(y);
}

/* One shape, forward / forward + input grad / forward + both grads, on the
 * three paths, interleaved in the same run. */
typedef struct {
    const char *name;
    int N, C, H, W, O, k, s, p;
} conv_shape;

static int use_min; /* BENCH_MIN=1: report the fastest run instead of the median (tuning on a busy machine) */

static void conv_side_by_side(const conv_shape *sh, int runs, double sgemm_rate, int modes) {
    int64_t xs[4] = {sh->N, sh->C, sh->H, sh->W}, ws[4] = {sh->O, sh->C, sh->k, sh->k};
    int64_t Ho = (sh->H + 2 * sh->p - sh->k) / sh->s + 1, Wo = (sh->W + 2 * sh->p - sh->k) / sh->s + 1;
    int64_t ys[4] = {sh->N, sh->O, Ho, Wo};
    conv_case c = {ml_randn(4, xs), ml_randn(4, ws), ml_randn(4, ys), {sh->s, sh->s, sh->p, sh->p, 1, 1, 1}, 0};
    ml_requires_grad_(c.x, true);
    ml_requires_grad_(c.w, true);
    double fwd = 2.0 * sh->N * sh->O * Ho * Wo * sh->C * sh->k * sh->k / 1e9;
    static const char *mode_name[3] = {"fwd", "fwd+gx", "fwd+gx+gw"};
    static const int order[3] = {0, 2, 1}, mult[3] = {1, 3, 2};
    for (int mi = 0; mi < modes; mi++) {
        c.mode = order[mi];
        static const ml_conv_impl impls[4] = {ML_CONV_AUTO, ML_CONV_WINOGRAD, ML_CONV_DIRECT, ML_CONV_IM2COL};
        double rate[4];
        bench_stats st[4];
        for (int impl = 0; impl < 4; impl++) {
            ml_conv_set_impl(impls[impl]);
            st[impl] = bench_run(run_conv, &c, 2, runs);
            if (use_min) st[impl].median = st[impl].min;
            rate[impl] = mult[c.mode] * fwd / st[impl].median;
        }
        ml_conv_set_impl(ML_CONV_AUTO);
        printf("%-34s %-9s %7.1f (%6.2f ms) %7.1f (%6.2f ms) %7.1f (%6.2f ms) %7.1f (%6.2f ms)  x%4.2f  %4.0f%% of sgemm\n",
               sh->name, mode_name[mi], rate[0], 1e3 * st[0].median, rate[1], 1e3 * st[1].median, rate[2],
               1e3 * st[2].median, rate[3], 1e3 * st[3].median, rate[0] / rate[2], 100.0 * rate[0] / sgemm_rate);
    }
    ml_release(c.x);
    ml_release(c.w);
    ml_release(c.gy);
}

static void report(const char *name, double gflop, bench_stats s, double ref) {
    printf("%-44s %8.1f GFLOP/s  (median %7.2f ms, min %7.2f, max %7.2f)", name, gflop / s.median, 1e3 * s.median,
           1e3 * s.min, 1e3 * s.max);
    if (ref > 0) printf("  %5.0f%% of sgemm", 100.0 * (gflop / s.median) / ref);
    printf("\n");
}

int main(int argc, char **argv) {
    int runs = argc > 1 ? atoi(argv[1]) : 10;
    use_min = getenv("BENCH_MIN") && atoi(getenv("BENCH_MIN"));
    printf("moelab micro-benchmarks: %d threads, %d runs after warm-up (median)\n\n", ml_num_threads(), runs);
    int gemm_shapes[2][3] = {{1024, 1024, 1024}, {128, 1024, 1024}};
    double sgemm_rate = 0;
    for (int i = 0; i < 2; i++) {
        gemm_case g = {gemm_shapes[i][0], gemm_shapes[i][1], gemm_shapes[i][2], 0, 0, 0, 0, 0};
        int64_t sa[2] = {g.M, g.K}, sb[2] = {g.K, g.N};
        g.a = ml_randn(2, sa);
        g.b = ml_randn(2, sb);
        g.A = ml_f32(g.a);
        g.B = ml_f32(g.b);
        g.C = malloc(sizeof(float) * (size_t)g.M * (size_t)g.N);
        double gflop = 2.0 * g.M * g.N * g.K / 1e9;
        char name[64];
        snprintf(name, sizeof name, "cblas_sgemm %dx%dx%d", g.M, g.N, g.K);
        bench_stats s = bench_run(run_cblas, &g, 3, runs);
        report(name, gflop, s, 0);
        if (i == 0) sgemm_rate = gflop / s.median;
        snprintf(name, sizeof name, "ml_matmul   %dx%dx%d", g.M, g.N, g.K);
        report(name, gflop, bench_run(run_matmul, &g, 3, runs), sgemm_rate);
        free(g.C);
        ml_release(g.a);
        ml_release(g.b);
    }
    printf("\nconv2d GFLOP/s (%s): default (Winograd where it pays), Winograd wherever it applies, direct kernels%s, "
           "im2col + sgemm, same run\n",
           use_min ? "fastest run" : "median",
           ml_conv_direct_available() ? "" : " (NOT AVAILABLE on this CPU: im2col)");
    printf("%-34s %-9s %-19s %-19s %-19s %-19s %s\n", "shape [N,C,H,W] -> O, kxk/s", "mode", "default", "winograd", "direct",
           "im2col", "default/direct");
    const conv_shape headline = {"3x3 64->64 [128,64,16,16] s1", 128, 64, 16, 16, 64, 3, 1, 1};
    conv_side_by_side(&headline, runs, sgemm_rate, 3);
    if (argc > 2 && !strcmp(argv[2], "--headline")) return 0;
    const char *filter = argc > 2 ? argv[2] : NULL; /* only shapes whose name contains this */
    /* the W1 layers (CIFAR ResNet-18, base width 16) at batch 128, and the
     * W2 expert blocks (half the output channels) at batch 64 */
    const conv_shape shapes[] = {
        {"W1 stem 3x3 3->16 [128,3,32,32]", 128, 3, 32, 32, 16, 3, 1, 1},
        {"W1 3x3 16->16 [128,16,32,32]", 128, 16, 32, 32, 16, 3, 1, 1},
        {"W1 3x3 16->32 s2 [128,16,32,32]", 128, 16, 32, 32, 32, 3, 2, 1},
        {"W1 3x3 32->32 [128,32,16,16]", 128, 32, 16, 16, 32, 3, 1, 1},
        {"W1 1x1 16->32 s2 [128,16,32,32]", 128, 16, 32, 32, 32, 1, 2, 0},
        {"W1 3x3 32->64 s2 [128,32,16,16]", 128, 32, 16, 16, 64, 3, 2, 1},
        {"W1 3x3 64->64 [128,64,8,8]", 128, 64, 8, 8, 64, 3, 1, 1},
        {"W1 1x1 32->64 s2 [128,32,16,16]", 128, 32, 16, 16, 64, 1, 2, 0},
        {"W1 3x3 64->128 s2 [128,64,8,8]", 128, 64, 8, 8, 128, 3, 2, 1},
        {"W1 3x3 128->128 [128,128,4,4]", 128, 128, 4, 4, 128, 3, 1, 1},
        {"W1 1x1 64->128 s2 [128,64,8,8]", 128, 64, 8, 8, 128, 1, 2, 0},
        {"W2 3x3 16->8 [64,16,32,32]", 64, 16, 32, 32, 8, 3, 1, 1},
        {"W2 3x3 32->16 [64,32,16,16]", 64, 32, 16, 16, 16, 3, 1, 1},
        {"W2 3x3 64->32 [64,64,8,8]", 64, 64, 8, 8, 32, 3, 1, 1},
        {"W2 3x3 128->64 [64,128,4,4]", 64, 128, 4, 4, 64, 3, 1, 1},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!filter || strstr(shapes[i].name, filter)) conv_side_by_side(&shapes[i], runs, sgemm_rate, 3);
    return 0;
}
