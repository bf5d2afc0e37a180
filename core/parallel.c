/* parallel.c -- see parallel.h. */
#include "parallel.h"

#include <omp.h>

/* OpenBLAS's own controls (declared here to keep cblas.h out of this file). */
void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);

int ml_num_threads(void) { return omp_get_max_threads(); }

void ml_set_num_threads(int n) {
    if (n < 1) n = 1;
    omp_set_num_threads(n); /* BLAS stays single-threaded: ml_sgemm splits work itself */
}

int ml_blas_single_begin(void) {
    int saved = openblas_get_num_threads();
    if (saved != 1) openblas_set_num_threads(1);
    return saved;
}

void ml_blas_single_end(int saved) {
    if (saved != 1) openblas_set_num_threads(saved);
}
