/* parallel.h -- sharing the cores between OpenMP and OpenBLAS.
 *
 * One thread pool: OpenMP. With the OpenMP build of OpenBLAS (the default,
 * libopenblas-openmp-dev) a large GEMM outside a parallel region uses the
 * pool's threads and one inside a region runs serially. With the pthread
 * build, OpenBLAS is kept at one thread (its idle workers spin in
 * sched_yield and steal the cores from the OpenMP loops around them) and
 * ml_sgemm (ops/linalg.h) splits large products across OpenMP threads.
 * Code that calls cblas directly inside a parallel region brackets it:
 *
 *     int saved = ml_blas_single_begin();
 *     #pragma omp parallel for
 *     for (...) cblas_sgemm(...);
 *     ml_blas_single_end(saved);
 */
#ifndef ML_PARALLEL_H
#define ML_PARALLEL_H

#include <stdbool.h>
#include <stdint.h>

int ml_num_threads(void);          /* threads available to OpenMP loops */
/* True when BLAS threads a large GEMM itself with the OpenMP pool (the OpenMP
 * build of OpenBLAS); false when it runs serially and ml_sgemm splits. */
bool ml_blas_threads_itself(void);
void ml_set_num_threads(int n);    /* OpenMP and OpenBLAS together */
int ml_blas_single_begin(void);    /* returns the previous BLAS thread count */
void ml_blas_single_end(int saved);
/* A serial scope for code that makes many small BLAS/LAPACK calls (the theory
 * toolkit's SVDs): each would open an OpenMP region for a few microseconds of
 * work, and on a busy machine the pool's spin-waits make them thousands of
 * times slower (measured: theory_scaling.lua 0.4 s alone, 95 s beside a
 * compile). Returns the previous thread count for ml_serial_end. */
int ml_serial_begin(void);
void ml_serial_end(int saved);

/* Sums that come out the same on every run. A sum whose partials are indexed
 * by thread while the work is handed out dynamically adds in an order that
 * depends on timing (and so on the machine's load). Instead the items are
 * cut into `slices` fixed consecutive ranges -- their number depends only on
 * the sizes and the thread count -- each slice sums into its own partial, the
 * slices may run on any thread in any order, and the partials are added in
 * slice order:
 *
 *     int S = ml_slices(items, 4);
 *     #pragma omp parallel for schedule(dynamic, 1)
 *     for (int s = 0; s < S; s++)
 *         for (int64_t i = ml_slice_begin(items, S, s); i < ml_slice_begin(items, S, s + 1); i++)
 *             partial[s] += f(i);
 *     total = partial[0] + partial[1] + ... (in this order)
 *
 * ml_slices: per_thread slices for each thread (ml_num_threads()), at most
 * `items`, at least 1. */
int ml_slices(int64_t items, int per_thread);
static inline int64_t ml_slice_begin(int64_t items, int64_t slices, int64_t s) {
    int64_t q = items / slices, r = items % slices;
    return q * s + (s < r ? s : r);
}

#endif
