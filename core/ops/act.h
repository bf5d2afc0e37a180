/* act.h -- the GELU formulas shared by the elementwise op and the fused MLP
 * kernels (one definition), inline and branch-free so that the loops calling
 * them vectorise (vmath.h). GELU is the exact one, x Phi(x), on the
 * vectorisable erf; value and derivative share one erf evaluation. */
#ifndef ML_OPS_ACT_H
#define ML_OPS_ACT_H

#include "vmath.h"

#define ML_INV_SQRT2 0.70710678118654752440f
#define ML_INV_SQRT_2PI 0.39894228040143267794f

/* e = erf(x / sqrt 2); GELU(x) = x Phi(x) = 0.5 x (1 + e) */
static inline float ml_gelu_erf(float x) { return ml_verff(x * ML_INV_SQRT2); }
static inline float ml_gelu_from_erf(float x, float e) { return 0.5f * x * (1.0f + e); }
/* GELU'(x) = Phi(x) + x phi(x): its erf and its exponential exp(-x^2 / 2)
 * are computed from one exponential (*q), shared with the value's erf (*e) */
static inline float ml_gelu_grad(float x, float *e) {
    float u = x * ML_INV_SQRT2, q = ml_vexpf(-u * u);
    *e = ml_verff_q(u, q);
    return 0.5f * (1.0f + *e) + x * (ML_INV_SQRT_2PI * q);
}

#endif
