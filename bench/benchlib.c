#include "benchlib.h"

#include <stdlib.h>
#include <time.h>

double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

bench_stats bench_run(void (*fn)(void *), void *ud, int warmup, int runs) {
    for (int i = 0; i < warmup; i++) fn(ud);
    double *t = malloc(sizeof *t * (size_t)runs);
    for (int i = 0; i < runs; i++) {
        double t0 = bench_now();
        fn(ud);
        t[i] = bench_now() - t0;
    }
    qsort(t, (size_t)runs, sizeof *t, cmp);
    bench_stats s = {t[runs / 2], t[0], t[runs - 1], runs};
    free(t);
    return s;
}
