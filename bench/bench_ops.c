/* bench_ops.c -- GEMM and conv2d throughput (GFLOP/s), engine beside plain
 * cblas_sgemm in the same run (WORKLOADS.md, micro-benchmarks).
 *
 *   ./build/bench/bench_ops [runs]
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

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
    ml_tensor *x, *w;
    int mode; /* 0 forward, 1 forward + backward (x and w), 2 forward + input grad only */
} conv_case;

static void run_conv(void *p) {
    conv_case *c = p;
    ml_conv_opts o = {1, 1, 1, 1, 1, 1, 1};
    ml_tensor *y = ml_conv2d(c->x, c->w, NULL, &o);
    if (c->mode == 0) {
        ml_release(y);
        return;
    }
    ml_tensor *L = ml_sum(y, ML_ALL_DIMS, false);
    if (c->mode == 1) {
        ml_backward(L, NULL, false);
        ml_zero_grad(c->x);
        ml_zero_grad(c->w);
    } else {
        ml_tensor *gx = NULL;
        ml_grad(L, NULL, 1, &c->x, &gx, false);
        ml_release(gx);
    }
    ml_release(L);
    ml_release(y);
}

static void report(const char *name, double gflop, bench_stats s, double ref) {
    printf("%-44s %8.1f GFLOP/s  (median %7.2f ms, min %7.2f, max %7.2f)", name, gflop / s.median, 1e3 * s.median,
           1e3 * s.min, 1e3 * s.max);
    if (ref > 0) printf("  %5.0f%% of sgemm", 100.0 * (gflop / s.median) / ref);
    printf("\n");
}

int main(int argc, char **argv) {
    int runs = argc > 1 ? atoi(argv[1]) : 10;
    printf("moelab micro-benchmarks: %d threads, %d runs after warm-up (median)\n\n", ml_num_threads(), runs);
    int shapes[2][3] = {{1024, 1024, 1024}, {128, 1024, 1024}};
    double sgemm_rate = 0;
    for (int i = 0; i < 2; i++) {
        gemm_case g = {shapes[i][0], shapes[i][1], shapes[i][2], 0, 0, 0, 0, 0};
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
    int64_t xs[4] = {128, 64, 16, 16}, ws[4] = {64, 64, 3, 3};
    conv_case c = {ml_randn(4, xs), ml_randn(4, ws), 0};
    ml_requires_grad_(c.x, true);
    ml_requires_grad_(c.w, true);
    double fwd = 2.0 * 128 * 64 * 16 * 16 * 64 * 9 / 1e9; /* 2.416 GFLOP */
    printf("\n");
    c.mode = 0;
    report("conv2d 3x3 64->64 [128,64,16,16] forward", fwd, bench_run(run_conv, &c, 3, runs), sgemm_rate);
    c.mode = 2;
    report("conv2d forward + input grad", 2 * fwd, bench_run(run_conv, &c, 3, runs), sgemm_rate);
    c.mode = 1;
    report("conv2d forward + input and weight grads", 3 * fwd, bench_run(run_conv, &c, 3, runs), sgemm_rate);
    ml_release(c.x);
    ml_release(c.w);
    return 0;
}
