/* elementwise.h -- pointwise math with broadcasting, and its gradients.
 *
 * Binary ops broadcast as NumPy/PyTorch do (trailing dimensions aligned, size 1
 * stretches). float32 throughout; add/sub/mul, minimum/maximum and the
 * comparisons also work on two int64 tensors (no gradient). Mixed int64/float
 * promotes to float32. All return new references; NULL + error on bad shapes. */
#ifndef ML_OPS_ELEMENTWISE_H
#define ML_OPS_ELEMENTWISE_H

#include "../tensor.h"

/* Computes the broadcast shape of a and b; fails naming fn. */
int ml_broadcast_shape(const char *fn, const ml_tensor *a, const ml_tensor *b, int *ndim, int64_t *shape);

ml_tensor *ml_add(ml_tensor *a, ml_tensor *b);
ml_tensor *ml_sub(ml_tensor *a, ml_tensor *b);
ml_tensor *ml_mul(ml_tensor *a, ml_tensor *b);
ml_tensor *ml_div(ml_tensor *a, ml_tensor *b);
ml_tensor *ml_minimum(ml_tensor *a, ml_tensor *b);
ml_tensor *ml_maximum(ml_tensor *a, ml_tensor *b);
ml_tensor *ml_pow(ml_tensor *a, ml_tensor *b); /* a^b, elementwise */

ml_tensor *ml_add_scalar(ml_tensor *a, double s);  /* a + s */
ml_tensor *ml_mul_scalar(ml_tensor *a, double s);  /* a * s */
ml_tensor *ml_rsub_scalar(double s, ml_tensor *a); /* s - a */
ml_tensor *ml_rdiv_scalar(double s, ml_tensor *a); /* s / a */
ml_tensor *ml_pow_scalar(ml_tensor *a, double p);  /* a^p */
ml_tensor *ml_rpow_scalar(double s, ml_tensor *a); /* s^a */

typedef enum {
    ML_NEG, ML_EXP, ML_LOG, ML_SQRT, ML_ABS, ML_SIGN, ML_RELU, ML_GELU, ML_SIGMOID, ML_TANH, ML_SOFTPLUS,
    ML_SIN, ML_COS, ML_FLOOR, ML_CEIL, ML_ROUND, ML_SQUARE, ML_RECIPROCAL, ML_ERF, ML_LOG1P, ML_EXPM1,
    ML_UNARY_COUNT
} ml_unary_op;
ml_tensor *ml_unary(ml_unary_op op, ml_tensor *a);
const char *ml_unary_name(ml_unary_op op);
#define ml_neg(a) ml_unary(ML_NEG, a)
#define ml_exp(a) ml_unary(ML_EXP, a)
#define ml_log(a) ml_unary(ML_LOG, a)
#define ml_sqrt(a) ml_unary(ML_SQRT, a)
#define ml_abs(a) ml_unary(ML_ABS, a)
#define ml_sign(a) ml_unary(ML_SIGN, a)
#define ml_relu(a) ml_unary(ML_RELU, a)
#define ml_gelu(a) ml_unary(ML_GELU, a) /* exact: x * Phi(x) */
#define ml_sigmoid(a) ml_unary(ML_SIGMOID, a)
#define ml_tanh(a) ml_unary(ML_TANH, a)
#define ml_softplus(a) ml_unary(ML_SOFTPLUS, a) /* log(1 + e^x), linear above 20 */

/* Clamps to [lo, hi]; pass -INFINITY / INFINITY for an open side. The gradient
 * passes where lo <= x <= hi. */
ml_tensor *ml_clamp(ml_tensor *a, double lo, double hi);
/* cond ? a : b (cond: any dtype, nonzero = true), broadcasting all three. */
ml_tensor *ml_where(ml_tensor *cond, ml_tensor *a, ml_tensor *b);

typedef enum { ML_EQ, ML_NE, ML_LT, ML_LE, ML_GT, ML_GE } ml_cmp_op;
/* 1.0 where the comparison holds, else 0.0 (float32; no gradient). */
ml_tensor *ml_cmp(ml_cmp_op op, ml_tensor *a, ml_tensor *b);
ml_tensor *ml_cmp_scalar(ml_cmp_op op, ml_tensor *a, double s);

/* In place, no autograd (optimizers, attack updates under no_grad):
 * a += alpha * b (b broadcast to a), a *= s, a = clamp(a). */
int ml_add_(ml_tensor *a, ml_tensor *b, double alpha);
int ml_mul_scalar_(ml_tensor *a, double s);
int ml_clamp_(ml_tensor *a, double lo, double hi);

#endif
