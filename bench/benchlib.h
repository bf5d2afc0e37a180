/* benchlib.h -- timing helpers for the benchmarks: warm up, then median, min
 * and max of repeated runs (these machines are shared and noisy). */
#ifndef ML_BENCHLIB_H
#define ML_BENCHLIB_H

#include <stdbool.h>

typedef struct {
    double median, min, max; /* seconds */
    int runs;
} bench_stats;

double bench_now(void);
/* Runs fn(ud) `warmup` times, then `runs` times, timing each run. */
bench_stats bench_run(void (*fn)(void *), void *ud, int warmup, int runs);

#endif
