/* parallel.h -- sharing the cores between OpenMP and OpenBLAS.
 *
 * OpenBLAS (Debian's pthread build) runs its own threads. Calling a
 * multithreaded sgemm from inside an OpenMP parallel region oversubscribes the
 * cores, so a kernel that runs one GEMM per sample in parallel sets BLAS to one
 * thread for the duration:
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
