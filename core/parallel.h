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

#endif
