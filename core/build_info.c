/* build_info.c -- see build_info.h. */
#include "build_info.h"

#include <omp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "openblas.h"
#include "ops/conv.h"
#include "parallel.h"

#ifndef _OPENMP
#define _OPENMP 0
#endif

static void read_cpu_model(char *out, size_t n) {
    snprintf(out, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10) != 0) continue;
        const char *v = strchr(line, ':');
        if (!v) break;
        v++;
        while (*v == ' ' || *v == '\t') v++;
        snprintf(out, n, "%s", v);
        out[strcspn(out, "\n")] = 0;
        break;
    }
    fclose(f);
}

static void cpu_features(char *out, size_t n) {
    out[0] = 0;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    size_t len = 0;
    if (__builtin_cpu_supports("avx512f")) len += (size_t)snprintf(out + len, n - len, "avx512f ");
    if (len < n && __builtin_cpu_supports("avx2")) len += (size_t)snprintf(out + len, n - len, "avx2 ");
    if (len < n && __builtin_cpu_supports("fma")) len += (size_t)snprintf(out + len, n - len, "fma ");
    if (len > 0 && len <= n) out[len - 1] = 0;
#endif
    if (!out[0]) snprintf(out, n, "baseline");
}

void ml_build_info(ml_build_config *out) {
    memset(out, 0, sizeof *out);
    out->version = ML_VERSION;
#ifdef __VERSION__
    out->compiler = "gcc-compatible " __VERSION__;
#else
    out->compiler = "unknown";
#endif
    const char *blas = openblas_get_config();
    out->blas = blas ? blas : "unknown";
    out->blas_openmp = ml_blas_threads_itself();
    out->openmp = _OPENMP;
    out->threads = ml_num_threads();
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    out->cpus = cpus > 0 ? (int)cpus : 0;
    read_cpu_model(out->cpu, sizeof out->cpu);
    cpu_features(out->features, sizeof out->features);
    out->conv_avx512 = ml_conv_direct_available() && ml_conv_get_impl() == ML_CONV_AUTO;
#if defined(__SANITIZE_ADDRESS__)
    out->sanitized = true;
#endif
}
