/* parallel.h -- sharing the cores between OpenMP and OpenBLAS.
 *
 * One thread pool: OpenMP. ml_sgemm (ops/linalg.h) keeps OpenBLAS at one
 * thread and splits large products across OpenMP threads itself, because
 * OpenBLAS's idle pthreads spin in sched_yield and steal the cores from the
 * OpenMP loops around them. Code that calls cblas directly inside a parallel
 * region still brackets it, in case a user's environment raised BLAS threads:
 *
 *     int saved = ml_blas_single_begin();
 *     #pragma omp parallel for
 *     for (...) cblas_sgemm(...);
 *     ml_blas_single_end(saved);
 */
#ifndef ML_PARALLEL_H
#define ML_PARALLEL_H

int ml_num_threads(void);          /* threads available to OpenMP loops */
void ml_set_num_threads(int n);    /* OpenMP and OpenBLAS together */
int ml_blas_single_begin(void);    /* returns the previous BLAS thread count */
void ml_blas_single_end(int saved);

#endif
