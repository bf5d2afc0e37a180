/* parallel.c -- see parallel.h. */
#include "parallel.h"

#include <omp.h>

#include "openblas.h"

int ml_num_threads(void) { return omp_get_max_threads(); }

int ml_slices(int64_t items, int per_thread) {
    int64_t s = (int64_t)omp_get_max_threads() * (per_thread < 1 ? 1 : per_thread);
    if (s > items) s = items;
    return s < 1 ? 1 : (int)s;
}

int ml_serial_begin(void) {
    int saved = omp_get_max_threads();
    if (saved != 1) omp_set_num_threads(1);
    return saved;
}

void ml_serial_end(int saved) {
    if (saved != omp_get_max_threads()) omp_set_num_threads(saved);
}

#ifdef MOELAB_OPENBLAS_OPENMP
/* The OpenMP build of OpenBLAS threads a GEMM with the caller's OpenMP pool
 * (omp_get_max_threads()) and runs serially inside a parallel region, so it
 * needs no management. Its openblas_set_num_threads() calls
 * omp_set_num_threads(), so calling it here would silently shrink every
 * OpenMP loop of the engine as well (it once made the whole engine
 * single-threaded after the first matmul). */
bool ml_blas_threads_itself(void) { return true; }
void ml_set_num_threads(int n) { omp_set_num_threads(n < 1 ? 1 : n); }
int ml_blas_single_begin(void) { return 1; }
void ml_blas_single_end(int saved) { (void)saved; }
#else
/* The pthread build: its idle workers spin in sched_yield and steal the cores
 * from the OpenMP loops around them, and it must not run multithreaded inside
 * a parallel region. Keep it at one thread; ml_sgemm splits large products
 * across OpenMP threads itself. */
static void blas_serial(void) {
    static int done;
    if (!done) {
        done = 1;
        openblas_set_num_threads(1);
    }
}
bool ml_blas_threads_itself(void) {
    blas_serial();
    return false;
}
void ml_set_num_threads(int n) {
    blas_serial();
    omp_set_num_threads(n < 1 ? 1 : n);
}
int ml_blas_single_begin(void) {
    blas_serial();
    return 1;
}
void ml_blas_single_end(int saved) { (void)saved; }
#endif
