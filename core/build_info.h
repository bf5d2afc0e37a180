/* build_info.h -- what this build of moelab is and what it runs on: version,
 * compiler, BLAS build, OpenMP, CPU and the kernels chosen for it. A result
 * table is reproducible only with this next to it (`moelab -v`,
 * ml.build_info()). */
#ifndef ML_BUILD_INFO_H
#define ML_BUILD_INFO_H

#include <stdbool.h>

#define ML_VERSION "0.1.0"

typedef struct {
    const char *version;      /* ML_VERSION */
    const char *compiler;     /* the compiler's version string */
    const char *blas;         /* OpenBLAS's own configuration string */
    bool blas_openmp;         /* the OpenMP build of OpenBLAS (one thread pool with moelab) */
    int openmp;               /* the OpenMP version the core was built with (yyyymm) */
    int threads;              /* OpenMP threads now (ml_set_num_threads changes it) */
    int cpus;                 /* online logical CPUs */
    char cpu[96];             /* the CPU's model name, or "unknown" */
    char features[48];        /* the CPU features the kernels look at, e.g. "avx512f avx2 fma" */
    bool conv_avx512;         /* the direct AVX-512 convolution kernels are in use */
    bool sanitized;           /* built with AddressSanitizer */
} ml_build_config;

/* Fills *out (never fails: what cannot be found reads "unknown"). */
void ml_build_info(ml_build_config *out);

#endif
