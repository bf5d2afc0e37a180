/* openblas.h -- the OpenBLAS functions outside CBLAS that the core calls,
 * declared once here rather than through cblas.h, which would pull the whole
 * BLAS interface into files that only set threads or read the build. */
#ifndef ML_OPENBLAS_H
#define ML_OPENBLAS_H

void openblas_set_num_threads(int num_threads);
int openblas_get_num_threads(void);
char *openblas_get_config(void);

#endif
