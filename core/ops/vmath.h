/* vmath.h -- branch-free float math that the compiler vectorises, and run-time
 * selection of SIMD clones for hot loops.
 *
 * glibc's expf and erff are scalar calls, so a loop calling them runs one
 * element at a time (measured: GELU and softmax were a third of a ViT forward).
 * The inline versions here have no calls and no branches, so the loops that use
 * them vectorise; ML_SIMD_CLONES compiles a function for AVX-512, AVX2 and the
 * x86-64 baseline and picks one at load time (the core is otherwise built for
 * the baseline, so that one binary runs everywhere).
 *
 * Accuracy: ml_vexpf within 2 ulp of expf on [-87.3, 88] (the Cephes polynomial
 * on [-ln2/2, ln2/2] after a two-constant range reduction), 0 below -87.3 (so
 * exp(-inf) = 0; the true values there are denormal), +inf above 88 (where the
 * true value is at least 1.6e38), NaN for NaN; ml_verff within 3e-7 absolute
 * (Abramowitz and Stegun 7.1.26; its Taylor series below 0.65) -- used for GELU, where the error is relative
 * to 1 + erf; ml.erf itself keeps libm's erff. */
#ifndef ML_OPS_VMATH_H
#define ML_OPS_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define ML_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define ML_SIMD_CLONES
#endif

static inline float ml_vexpf(float x) {
    const float hi = 88.0f, lo = -87.33654022216797f;
    float xc = x > hi ? hi : x;
    xc = xc < lo ? lo : xc;
    xc = xc == xc ? xc : 0.0f; /* NaN: computed on 0, returned as NaN below */
    /* n = round(x / ln2) by the magic-number trick (exact for |n| < 2^22) */
    float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* n in [-126, 127] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = p * scale;
    y = x < lo ? 0.0f : y;
    y = x > hi ? (float)INFINITY : y;
    y = x == x ? y : x;
    return y;
}

/* erf(x) given q = exp(-x * x), for callers that need that exponential too
 * (GELU's derivative); ml_verff(x) is ml_verff_q(x, ml_vexpf(-x * x)). */
static inline float ml_verff_q(float x, float q) {
    float ax = x < 0 ? -x : x;
    float t = 1.0f / (1.0f + 0.3275911f * ax);
    float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
    float y = 1.0f - poly * q;
    /* near 0 the subtraction cancels: the Taylor series is exact there */
    float x2 = ax * ax;
    float taylor = 1.12837916709551257f * ax *
                   (1.0f + x2 * (-1.0f / 3 + x2 * (1.0f / 10 + x2 * (-1.0f / 42 + x2 * (1.0f / 216 + x2 * (-1.0f / 1320 + x2 * (1.0f / 9360)))))));
    y = ax < 0.65f ? taylor : y;
    return x < 0 ? -y : y;
}

static inline float ml_verff(float x) { return ml_verff_q(x, ml_vexpf(-x * x)); }

#endif
