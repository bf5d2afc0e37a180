/* elementwise.c -- broadcasting pointwise kernels and their backward. */
#include "elementwise.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "../iter.h"
#include "act.h"
#include "vmath.h"


/* ------------------------------------------------------------ broadcasting */
int ml_broadcast_shape(const char *fn, const ml_tensor *a, const ml_tensor *b, int *ndim, int64_t *shape) {
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int d = 0; d < nd; d++) {
        int da = d - (nd - a->ndim), db = d - (nd - b->ndim);
        int64_t sa = da >= 0 ? a->shape[da] : 1, sb = db >= 0 ? b->shape[db] : 1;
        if (sa != sb && sa != 1 && sb != 1)
            return ml_failc("%s: shapes %s and %s cannot be broadcast together (dimension %d: %" PRId64
                            " vs %" PRId64 ")", fn, ML_SHAPE_STR(a), ML_SHAPE_STR(b), d + 1, sa, sb);
        shape[d] = sa == 1 ? sb : sa;
    }
    *ndim = nd;
    return 0;
}

/* ------------------------------------------------------------ binary kernels */
typedef enum { B_ADD, B_SUB, B_MUL, B_DIV, B_MIN, B_MAX, B_POW, B_EQ, B_NE, B_LT, B_LE, B_GT, B_GE } binop;
static const char *const binop_names[] = {"add", "sub", "mul", "div", "minimum", "maximum", "pow",
                                          "eq",  "ne",  "lt",  "le",  "gt",      "ge"};

typedef struct {
    binop op;
} bin_ctx;

/* The loop body E uses x (from a) and y (from b). Unit strides get their own
 * loop so the compiler vectorises it. */
#define BIN_LOOP(T, TO, E)                                                              \
    do {                                                                              \
        TO *o = (TO *)p[0];                                                           \
        const T *a = (const T *)p[1], *b = (const T *)p[2];                           \
        int64_t sa = st[1], sb = st[2];                                               \
        if (sa == 1 && sb == 1)                                                       \
            for (int64_t i = 0; i < n; i++) { T x = a[i], y = b[i]; o[i] = (TO)(E); } \
        else if (sa == 1 && sb == 0) {                                                \
            T y = b[0];                                                               \
            for (int64_t i = 0; i < n; i++) { T x = a[i]; o[i] = (TO)(E); }           \
        } else if (sa == 0 && sb == 1) {                                              \
            T x = a[0];                                                               \
            for (int64_t i = 0; i < n; i++) { T y = b[i]; o[i] = (TO)(E); }           \
        } else                                                                        \
            for (int64_t i = 0; i < n; i++) {                                         \
                T x = a[i * sa], y = b[i * sb];                                       \
                o[i] = (TO)(E);                                                       \
            }                                                                         \
    } while (0)

static void bin_run_f32(const void *vctx, int64_t n, char **p, const int64_t *st) {
    const bin_ctx *c = vctx;
    switch (c->op) {
    case B_ADD: BIN_LOOP(float, float, x + y); break;
    case B_SUB: BIN_LOOP(float, float, x - y); break;
    case B_MUL: BIN_LOOP(float, float, x * y); break;
    case B_DIV: BIN_LOOP(float, float, x / y); break;
    case B_MIN: BIN_LOOP(float, float, (x < y || isnan(x)) ? x : y); break;
    case B_MAX: BIN_LOOP(float, float, (x > y || isnan(x)) ? x : y); break;
    case B_POW: BIN_LOOP(float, float, powf(x, y)); break;
    case B_EQ: BIN_LOOP(float, float, x == y); break;
    case B_NE: BIN_LOOP(float, float, x != y); break;
    case B_LT: BIN_LOOP(float, float, x < y); break;
    case B_LE: BIN_LOOP(float, float, x <= y); break;
    case B_GT: BIN_LOOP(float, float, x > y); break;
    case B_GE: BIN_LOOP(float, float, x >= y); break;
    }
}

static void bin_run_i64(const void *vctx, int64_t n, char **p, const int64_t *st) {
    const bin_ctx *c = vctx;
    switch (c->op) {
    /* wrapping two's complement, as in Lua and PyTorch: a signed overflow would be undefined */
    case B_ADD: BIN_LOOP(int64_t, int64_t, (int64_t)((uint64_t)x + (uint64_t)y)); break;
    case B_SUB: BIN_LOOP(int64_t, int64_t, (int64_t)((uint64_t)x - (uint64_t)y)); break;
    case B_MUL: BIN_LOOP(int64_t, int64_t, (int64_t)((uint64_t)x * (uint64_t)y)); break;
    case B_MIN: BIN_LOOP(int64_t, int64_t, x < y ? x : y); break;
    case B_MAX: BIN_LOOP(int64_t, int64_t, x > y ? x : y); break;
    case B_EQ: BIN_LOOP(int64_t, float, x == y); break;
    case B_NE: BIN_LOOP(int64_t, float, x != y); break;
    case B_LT: BIN_LOOP(int64_t, float, x < y); break;
    case B_LE: BIN_LOOP(int64_t, float, x <= y); break;
    case B_GT: BIN_LOOP(int64_t, float, x > y); break;
    case B_GE: BIN_LOOP(int64_t, float, x >= y); break;
    default: break; /* div, pow promote to float before reaching here */
    }
}

/* Computes op(a, b) with broadcasting, no autograd. */
static ml_tensor *binary_raw(binop op, ml_tensor *a, ml_tensor *b) {
    int nd;
    int64_t shape[ML_MAX_DIMS];
    if (ml_broadcast_shape(binop_names[op], a, b, &nd, shape)) return NULL;
    bool ints = a->dtype == ML_I64 && b->dtype == ML_I64 && op != B_DIV && op != B_POW;
    ml_tensor *ca = NULL, *cb = NULL, *out = NULL;
    if (!ints) { /* promote int64 operands to float */
        if (a->dtype == ML_I64 && !(a = ca = ml_to_dtype(a, ML_F32))) return NULL;
        if (b->dtype == ML_I64 && !(b = cb = ml_to_dtype(b, ML_F32))) goto out;
    }
    bool cmp = op >= B_EQ;
    out = ml_empty(ints && !cmp ? ML_I64 : ML_F32, nd, shape);
    if (!out) goto out;
    iter_t it;
    ml_tensor *ops[3] = {out, a, b};
    iter_init(&it, nd, shape, 3, ops);
    bin_ctx c = {op};
    iter_exec(&it, ints ? bin_run_i64 : bin_run_f32, &c);
out:
    ml_release(ca);
    ml_release(cb);
    return out;
}

/* ------------------------------------------------------------ binary backward */
static ml_tensor *reduce_to(ml_tensor *g, const ml_tensor *like) {
    return ml_sum_to_shape(g, like->ndim, like->shape);
}

/* gin = reduce_to(op(g, t)) : the common "g times something, then unbroadcast" */
static ml_tensor *grad_times(ml_tensor *g, ml_tensor *t, const ml_tensor *like) {
    ml_tensor *m = binary_raw(B_MUL, g, t);
    if (!m) return NULL;
    ml_tensor *r = reduce_to(m, like);
    ml_release(m);
    return r;
}

static int binary_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    binop op = (binop)n->i[0];
    ml_tensor *a = ml_saved(n, 0), *b = ml_saved(n, 1);
    if (!a || !b) return -1;
    ml_tensor *A = n->in[0], *B = n->in[1];
    switch (op) {
    case B_ADD:
        if (n->needs[0] && !(gin[0] = reduce_to(g, A))) return -1;
        if (n->needs[1] && !(gin[1] = reduce_to(g, B))) return -1;
        return 0;
    case B_SUB:
        if (n->needs[0] && !(gin[0] = reduce_to(g, A))) return -1;
        if (n->needs[1]) {
            ml_tensor *ng = ml_mul_scalar(g, -1.0);
            if (!ng) return -1;
            gin[1] = reduce_to(ng, B);
            ml_release(ng);
            if (!gin[1]) return -1;
        }
        return 0;
    case B_MUL:
        if (n->needs[0] && !(gin[0] = grad_times(g, b, A))) return -1;
        if (n->needs[1] && !(gin[1] = grad_times(g, a, B))) return -1;
        return 0;
    case B_DIV: {
        ml_tensor *q = binary_raw(B_DIV, g, b); /* g / b */
        if (!q) return -1;
        if (n->needs[0] && !(gin[0] = reduce_to(q, A))) goto fail_div;
        if (n->needs[1]) { /* -g a / b^2 = -(g/b) * (a/b) */
            ml_tensor *ab = binary_raw(B_DIV, a, b), *t;
            if (!ab) goto fail_div;
            t = binary_raw(B_MUL, q, ab);
            ml_release(ab);
            if (!t) goto fail_div;
            ml_tensor *nt = ml_mul_scalar(t, -1.0);
            ml_release(t);
            if (!nt) goto fail_div;
            gin[1] = reduce_to(nt, B);
            ml_release(nt);
            if (!gin[1]) goto fail_div;
        }
        ml_release(q);
        return 0;
    fail_div:
        ml_release(q);
        return -1;
    }
    case B_MIN:
    case B_MAX: {
        /* the gradient goes to the selected operand; ties split it evenly */
        ml_tensor *win_a = binary_raw(op == B_MAX ? B_GT : B_LT, a, b);
        ml_tensor *tie = binary_raw(B_EQ, a, b);
        if (!win_a || !tie) {
            ml_release(win_a);
            ml_release(tie);
            return -1;
        }
        int64_t nn = ml_numel(win_a);
        float *w = ml_f32(win_a), *tt = ml_f32(tie);
        for (int64_t i = 0; i < nn; i++) w[i] += 0.5f * tt[i];
        if (n->needs[0]) gin[0] = grad_times(g, win_a, A);
        if (n->needs[1]) {
            ml_tensor *win_b = ml_rsub_scalar(1.0, win_a);
            if (win_b) gin[1] = grad_times(g, win_b, B);
            ml_release(win_b);
        }
        ml_release(win_a);
        ml_release(tie);
        return (n->needs[0] && !gin[0]) || (n->needs[1] && !gin[1]) ? -1 : 0;
    }
    case B_POW: {
        ml_tensor *y = binary_raw(B_POW, a, b);
        if (!y) return -1;
        int rc = 0;
        if (n->needs[0]) { /* b a^(b-1) = b y / a, computed directly to survive a = 0 */
            ml_tensor *bm1 = ml_add_scalar(b, -1.0), *p = NULL, *d = NULL;
            if (bm1) p = binary_raw(B_POW, a, bm1);
            if (p) d = binary_raw(B_MUL, p, b);
            if (d) gin[0] = grad_times(g, d, A);
            ml_release(bm1);
            ml_release(p);
            ml_release(d);
            if (!gin[0]) rc = -1;
        }
        if (rc == 0 && n->needs[1]) { /* y log a */
            ml_tensor *la = ml_unary(ML_LOG, a), *d = NULL;
            if (la) d = binary_raw(B_MUL, y, la);
            if (d) gin[1] = grad_times(g, d, B);
            ml_release(la);
            ml_release(d);
            if (!gin[1]) rc = -1;
        }
        ml_release(y);
        return rc;
    }
    default:
        return 0;
    }
}

static ml_tensor *binary(binop op, ml_tensor *a, ml_tensor *b) {
    ml_tensor *out = binary_raw(op, a, b);
    if (!out || op >= B_EQ || out->dtype != ML_F32) return out;
    ml_node *n = ml_record(binop_names[op], out, 2, (ml_tensor *[]){a, b}, binary_backward);
    if (n) {
        n->i[0] = op;
        /* save float views of both inputs (int64 operands never need grads) */
        ml_tensor *fa = a->dtype == ML_F32 ? ml_retain(a) : ml_to_dtype(a, ML_F32);
        ml_tensor *fb = b->dtype == ML_F32 ? ml_retain(b) : ml_to_dtype(b, ML_F32);
        if (!fa || !fb) {
            ml_release(fa);
            ml_release(fb);
            ml_release(out);
            return NULL;
        }
        ml_save(n, fa);
        ml_save(n, fb);
        ml_release(fa);
        ml_release(fb);
    }
    return out;
}

ml_tensor *ml_add(ml_tensor *a, ml_tensor *b) { return binary(B_ADD, a, b); }
ml_tensor *ml_sub(ml_tensor *a, ml_tensor *b) { return binary(B_SUB, a, b); }
ml_tensor *ml_mul(ml_tensor *a, ml_tensor *b) { return binary(B_MUL, a, b); }
ml_tensor *ml_div(ml_tensor *a, ml_tensor *b) { return binary(B_DIV, a, b); }
ml_tensor *ml_minimum(ml_tensor *a, ml_tensor *b) { return binary(B_MIN, a, b); }
ml_tensor *ml_maximum(ml_tensor *a, ml_tensor *b) { return binary(B_MAX, a, b); }
ml_tensor *ml_pow(ml_tensor *a, ml_tensor *b) { return binary(B_POW, a, b); }

ml_tensor *ml_cmp(ml_cmp_op op, ml_tensor *a, ml_tensor *b) { return binary_raw((binop)(B_EQ + op), a, b); }

ml_tensor *ml_cmp_scalar(ml_cmp_op op, ml_tensor *a, double s) {
    ml_tensor *t = a->dtype == ML_I64 && s == floor(s) ? ml_full(ML_I64, 0, NULL, s) : ml_scalar(s);
    if (!t) return NULL;
    ml_tensor *r = ml_cmp(op, a, t);
    ml_release(t);
    return r;
}

/* ------------------------------------------------------------ scalar ops
 * a (op) s is an affine or power map, so these get their own small kernels. */
typedef enum { S_ADD, S_MUL, S_RSUB, S_RDIV, S_POW, S_RPOW } scalop;
static const char *const scalop_names[] = {"add", "mul", "sub", "div", "pow", "pow"};

static void scal_kernel(scalop op, int64_t n, float *o, const float *x, float s) {
    switch (op) {
    case S_ADD: for (int64_t i = 0; i < n; i++) o[i] = x[i] + s; break;
    case S_MUL: for (int64_t i = 0; i < n; i++) o[i] = x[i] * s; break;
    case S_RSUB: for (int64_t i = 0; i < n; i++) o[i] = s - x[i]; break;
    case S_RDIV: for (int64_t i = 0; i < n; i++) o[i] = s / x[i]; break;
    case S_POW:
        if (s == 2.0f) for (int64_t i = 0; i < n; i++) o[i] = x[i] * x[i];
        else if (s == 0.5f) for (int64_t i = 0; i < n; i++) o[i] = sqrtf(x[i]);
        else for (int64_t i = 0; i < n; i++) o[i] = powf(x[i], s);
        break;
    case S_RPOW: for (int64_t i = 0; i < n; i++) o[i] = powf(s, x[i]); break;
    }
}

static ml_tensor *scalar_raw(scalop op, ml_tensor *a, double s) {
    ml_tensor *ca = a->dtype == ML_F32 ? ml_contiguous(a) : ml_to_dtype(a, ML_F32);
    if (!ca) return NULL;
    ml_tensor *out = ml_empty(ML_F32, a->ndim, a->shape);
    if (out) {
        int64_t n = ml_numel(out), chunk = 8192, nchunks = (n + chunk - 1) / chunk;
        float *o = ml_f32(out);
        const float *x = ml_f32(ca);
        #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t st = c * chunk, len = n - st < chunk ? n - st : chunk;
            scal_kernel(op, len, o + st, x + st, (float)s);
        }
    }
    ml_release(ca);
    return out;
}

static int scalar_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    scalop op = (scalop)n->i[0];
    double s = n->f[0];
    switch (op) {
    case S_ADD: gin[0] = ml_retain(g); return 0;
    case S_MUL: gin[0] = scalar_raw(S_MUL, g, s); break;
    case S_RSUB: gin[0] = scalar_raw(S_MUL, g, -1.0); break;
    case S_RDIV: { /* -s / x^2 */
        ml_tensor *x = ml_saved(n, 0);
        if (!x) return -1;
        ml_tensor *x2 = scalar_raw(S_POW, x, 2.0), *d = x2 ? scalar_raw(S_RDIV, x2, -s) : NULL;
        gin[0] = d ? binary_raw(B_MUL, g, d) : NULL;
        ml_release(x2);
        ml_release(d);
        break;
    }
    case S_POW: { /* s x^(s-1) */
        ml_tensor *x = ml_saved(n, 0);
        if (!x) return -1;
        ml_tensor *p = scalar_raw(S_POW, x, s - 1.0), *d = p ? scalar_raw(S_MUL, p, s) : NULL;
        gin[0] = d ? binary_raw(B_MUL, g, d) : NULL;
        ml_release(p);
        ml_release(d);
        break;
    }
    case S_RPOW: { /* s^x log s */
        ml_tensor *y = ml_saved(n, 0);
        if (!y) return -1;
        ml_tensor *d = scalar_raw(S_MUL, y, log(s));
        gin[0] = d ? binary_raw(B_MUL, g, d) : NULL;
        ml_release(d);
        break;
    }
    }
    return gin[0] ? 0 : -1;
}

static ml_tensor *scalar_op(scalop op, ml_tensor *a, double s) {
    /* int64 stays int64 for integer scalars that fit (inf or 1e300 go the float way) */
    if (a->dtype == ML_I64 && (op == S_ADD || op == S_MUL || op == S_RSUB) && s == floor(s) && fabs(s) < 9.2e18) {
        ml_tensor *t = ml_full(ML_I64, 0, NULL, s);
        if (!t) return NULL;
        ml_tensor *r = op == S_RSUB ? binary_raw(B_SUB, t, a) : binary_raw(op == S_ADD ? B_ADD : B_MUL, a, t);
        ml_release(t);
        return r;
    }
    ml_tensor *out = scalar_raw(op, a, s);
    ml_node *n = ml_record(scalop_names[op], out, 1, &a, scalar_backward);
    if (n) {
        n->i[0] = op;
        n->f[0] = s;
        if (op == S_RDIV || op == S_POW) ml_save(n, a);
        if (op == S_RPOW) ml_save(n, out);
    }
    return out;
}

ml_tensor *ml_add_scalar(ml_tensor *a, double s) { return scalar_op(S_ADD, a, s); }
ml_tensor *ml_mul_scalar(ml_tensor *a, double s) { return scalar_op(S_MUL, a, s); }
ml_tensor *ml_rsub_scalar(double s, ml_tensor *a) { return scalar_op(S_RSUB, a, s); }
ml_tensor *ml_rdiv_scalar(double s, ml_tensor *a) { return scalar_op(S_RDIV, a, s); }
ml_tensor *ml_pow_scalar(ml_tensor *a, double p) { return scalar_op(S_POW, a, p); }
ml_tensor *ml_rpow_scalar(double s, ml_tensor *a) {
    if (!(s > 0)) return ml_fail("pow: base %g must be positive for a tensor exponent", s);
    return scalar_op(S_RPOW, a, s);
}

/* ------------------------------------------------------------ unary */
static const char *const unary_names[ML_UNARY_COUNT] = {
    "neg", "exp", "log", "sqrt", "abs", "sign", "relu", "gelu", "sigmoid", "tanh", "softplus",
    "sin", "cos", "floor", "ceil", "round", "square", "reciprocal", "erf", "log1p", "expm1"};

const char *ml_unary_name(ml_unary_op op) { return op < ML_UNARY_COUNT ? unary_names[op] : "?"; }

static inline float sigmoidf(float x) {
    float e = ml_vexpf(x >= 0 ? -x : x); /* exp(-|x|) never overflows */
    float r = 1.0f / (1.0f + e);
    return x >= 0 ? r : e * r;
}
static inline float softplusf(float x) { return x > 20.0f ? x : log1pf(expf(x)); }

ML_SIMD_CLONES
static void unary_kernel(ml_unary_op op, int64_t n, float *o, const float *x) {
    switch (op) {
    case ML_NEG: for (int64_t i = 0; i < n; i++) o[i] = -x[i]; break;
    case ML_EXP: for (int64_t i = 0; i < n; i++) o[i] = expf(x[i]); break;
    case ML_LOG: for (int64_t i = 0; i < n; i++) o[i] = logf(x[i]); break;
    case ML_SQRT: for (int64_t i = 0; i < n; i++) o[i] = sqrtf(x[i]); break;
    case ML_ABS: for (int64_t i = 0; i < n; i++) o[i] = fabsf(x[i]); break;
    case ML_SIGN: for (int64_t i = 0; i < n; i++) o[i] = (float)((x[i] > 0) - (x[i] < 0)); break;
    case ML_RELU: for (int64_t i = 0; i < n; i++) o[i] = x[i] > 0 ? x[i] : 0.0f; break;
    /* GELU with the vectorisable erf (vmath.h: its error is relative to 1 + erf) */
    case ML_GELU: for (int64_t i = 0; i < n; i++) o[i] = ml_gelu_from_erf(x[i], ml_gelu_erf(x[i])); break;
    case ML_SIGMOID: for (int64_t i = 0; i < n; i++) o[i] = sigmoidf(x[i]); break;
    case ML_TANH: for (int64_t i = 0; i < n; i++) o[i] = tanhf(x[i]); break;
    case ML_SOFTPLUS: for (int64_t i = 0; i < n; i++) o[i] = softplusf(x[i]); break;
    case ML_SIN: for (int64_t i = 0; i < n; i++) o[i] = sinf(x[i]); break;
    case ML_COS: for (int64_t i = 0; i < n; i++) o[i] = cosf(x[i]); break;
    case ML_FLOOR: for (int64_t i = 0; i < n; i++) o[i] = floorf(x[i]); break;
    case ML_CEIL: for (int64_t i = 0; i < n; i++) o[i] = ceilf(x[i]); break;
    case ML_ROUND: for (int64_t i = 0; i < n; i++) o[i] = nearbyintf(x[i]); break;
    case ML_SQUARE: for (int64_t i = 0; i < n; i++) o[i] = x[i] * x[i]; break;
    case ML_RECIPROCAL: for (int64_t i = 0; i < n; i++) o[i] = 1.0f / x[i]; break;
    case ML_ERF: for (int64_t i = 0; i < n; i++) o[i] = erff(x[i]); break;
    case ML_LOG1P: for (int64_t i = 0; i < n; i++) o[i] = log1pf(x[i]); break;
    case ML_EXPM1: for (int64_t i = 0; i < n; i++) o[i] = expm1f(x[i]); break;
    default: break;
    }
}

/* d out / d x as a function of x and y = f(x); gx = g * f'(x). */
ML_SIMD_CLONES
static void unary_grad_kernel(ml_unary_op op, int64_t n, float *gx, const float *g, const float *x,
                              const float *y) {
    switch (op) {
    case ML_NEG: for (int64_t i = 0; i < n; i++) gx[i] = -g[i]; break;
    case ML_EXP: for (int64_t i = 0; i < n; i++) gx[i] = g[i] * y[i]; break;
    case ML_LOG: for (int64_t i = 0; i < n; i++) gx[i] = g[i] / x[i]; break;
    case ML_SQRT: for (int64_t i = 0; i < n; i++) gx[i] = g[i] * 0.5f / y[i]; break;
    case ML_ABS: for (int64_t i = 0; i < n; i++) gx[i] = g[i] * (float)((x[i] > 0) - (x[i] < 0)); break;
    case ML_RELU:
        /* g[i] loaded unconditionally, so that the select is branch-free and
         * vectorised (a branch on the sign mispredicts half of the time) */
        for (int64_t i = 0; i < n; i++) {
            float gi = g[i];
            gx[i] = x[i] > 0 ? gi : 0.0f;
        }
        break;
    case ML_GELU:
        for (int64_t i = 0; i < n; i++) {
            float e;
            gx[i] = g[i] * ml_gelu_grad(x[i], &e);
        }
        break;
    case ML_SIGMOID: for (int64_t i = 0; i < n; i++) gx[i] = g[i] * y[i] * (1.0f - y[i]); break;
    case ML_TANH: for (int64_t i = 0; i < n; i++) gx[i] = g[i] * (1.0f - y[i] * y[i]); break;
    case ML_SOFTPLUS: for (int64_t i = 0; i < n; i++) gx[i] = x[i] > 20.0f ? g[i] : g[i] * sigmoidf(x[i]); break;
    case ML_SIN: for (int64_t i = 0; i < n; i++) gx[i] = g[i] * cosf(x[i]); break;
    case ML_COS: for (int64_t i = 0; i < n; i++) gx[i] = -g[i] * sinf(x[i]); break;
    case ML_SQUARE: for (int64_t i = 0; i < n; i++) gx[i] = 2.0f * g[i] * x[i]; break;
    case ML_RECIPROCAL: for (int64_t i = 0; i < n; i++) gx[i] = -g[i] * y[i] * y[i]; break;
    case ML_ERF:
        /* expf of an argument below -0x1.9fe368p6 underflows to 0 through
         * libm's slow error path (errno), which the V-MoE load loss hits for
         * most of its [tokens, experts] entries; the select gives the same 0 */
        for (int64_t i = 0; i < n; i++) {
            float a = x[i] * x[i];
            bool under = a > 0x1.9fe368p6f;
            float e = expf(under ? 0.0f : -a);
            gx[i] = g[i] * 1.12837916709551257390f * (under ? 0.0f : e);
        }
        break;
    case ML_LOG1P: for (int64_t i = 0; i < n; i++) gx[i] = g[i] / (1.0f + x[i]); break;
    case ML_EXPM1: for (int64_t i = 0; i < n; i++) gx[i] = g[i] * (y[i] + 1.0f); break;
    default: /* sign, floor, ceil, round: zero almost everywhere */
        for (int64_t i = 0; i < n; i++) gx[i] = 0.0f;
        break;
    }
}

static int unary_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_unary_op op = (ml_unary_op)n->i[0];
    ml_tensor *x = ml_saved(n, 0), *y = ml_saved(n, 1);
    if (!x || !y) return -1;
    ml_tensor *gx = ml_empty(ML_F32, g->ndim, g->shape);
    if (!gx) return -1;
    int64_t total = ml_numel(g), chunk = 8192, nchunks = (total + chunk - 1) / chunk;
    float *o = ml_f32(gx);
    const float *gg = ml_f32(g), *xx = ml_f32(x), *yy = ml_f32(y);
    #pragma omp parallel for schedule(static) if (total >= PAR_MIN)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t st = c * chunk, len = total - st < chunk ? total - st : chunk;
        unary_grad_kernel(op, len, o + st, gg + st, xx + st, yy + st);
    }
    gin[0] = gx;
    return 0;
}

ml_tensor *ml_unary(ml_unary_op op, ml_tensor *a) {
    if ((unsigned)op >= ML_UNARY_COUNT) return ml_fail("unary: unknown op %d", (int)op);
    if (a->dtype == ML_I64 && (op == ML_NEG || op == ML_ABS || op == ML_SIGN)) {
        ml_tensor *c = ml_contiguous(a), *out = c ? ml_empty(ML_I64, a->ndim, a->shape) : NULL;
        if (out) {
            const int64_t *x = ml_i64(c);
            int64_t *o = ml_i64(out);
            for (int64_t i = 0, n = ml_numel(out); i < n; i++)
                /* negation wraps (two's complement): -INT64_MIN would be undefined */
                o[i] = op == ML_NEG ? (int64_t)(0u - (uint64_t)x[i])
                       : op == ML_ABS ? (x[i] < 0 ? (int64_t)(0u - (uint64_t)x[i]) : x[i])
                                      : (x[i] > 0) - (x[i] < 0);
        }
        ml_release(c);
        return out;
    }
    ml_tensor *ca = a->dtype == ML_F32 ? ml_contiguous(a) : ml_to_dtype(a, ML_F32);
    if (!ca) return NULL;
    ml_tensor *out = ml_empty(ML_F32, a->ndim, a->shape);
    if (out) {
        int64_t total = ml_numel(out), chunk = 8192, nchunks = (total + chunk - 1) / chunk;
        float *o = ml_f32(out);
        const float *x = ml_f32(ca);
        #pragma omp parallel for schedule(static) if (total >= PAR_MIN)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t st = c * chunk, len = total - st < chunk ? total - st : chunk;
            unary_kernel(op, len, o + st, x + st);
        }
        ml_node *n = ml_record(unary_names[op], out, 1, &a, unary_backward);
        if (n) {
            n->i[0] = op;
            ml_save(n, ca);
            ml_save(n, out);
        }
    }
    ml_release(ca);
    return out;
}

/* ------------------------------------------------------------ clamp, where */
static int clamp_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *x = ml_saved(n, 0);
    if (!x) return -1;
    float lo = (float)n->f[0], hi = (float)n->f[1];
    ml_tensor *gx = ml_empty(ML_F32, g->ndim, g->shape);
    if (!gx) return -1;
    const float *xx = ml_f32(x), *gg = ml_f32(g);
    float *o = ml_f32(gx);
    for (int64_t i = 0, N = ml_numel(g); i < N; i++) o[i] = (xx[i] >= lo && xx[i] <= hi) ? gg[i] : 0.0f;
    gin[0] = gx;
    return 0;
}

ml_tensor *ml_clamp(ml_tensor *a, double lo, double hi) {
    if (lo > hi) return ml_fail("clamp: min %g is greater than max %g", lo, hi);
    if (a->dtype == ML_I64) {
        ml_tensor *out = ml_clone(a);
        if (out && ml_clamp_(out, lo, hi)) {
            ml_release(out);
            return NULL;
        }
        return out;
    }
    ml_tensor *ca = ml_contiguous(a);
    if (!ca) return NULL;
    ml_tensor *out = ml_empty(ML_F32, a->ndim, a->shape);
    if (out) {
        const float *x = ml_f32(ca);
        float *o = ml_f32(out), l = (float)lo, h = (float)hi;
        int64_t N = ml_numel(out);
        #pragma omp parallel for schedule(static) if (N >= PAR_MIN)
        for (int64_t i = 0; i < N; i++) o[i] = x[i] < l ? l : (x[i] > h ? h : x[i]);
        ml_node *n = ml_record("clamp", out, 1, &a, clamp_backward);
        if (n) {
            n->f[0] = lo;
            n->f[1] = hi;
            ml_save(n, ca);
        }
    }
    ml_release(ca);
    return out;
}

typedef struct {
    ml_dtype cond_dtype;
} where_ctx;

static void where_run(const void *vctx, int64_t n, char **p, const int64_t *st) {
    const where_ctx *c = vctx;
    float *o = (float *)p[0];
    const float *a = (const float *)p[2], *b = (const float *)p[3];
    if (c->cond_dtype == ML_F32) {
        const float *m = (const float *)p[1];
        for (int64_t i = 0; i < n; i++) o[i] = m[i * st[1]] != 0 ? a[i * st[2]] : b[i * st[3]];
    } else {
        const int64_t *m = (const int64_t *)p[1];
        for (int64_t i = 0; i < n; i++) o[i] = m[i * st[1]] != 0 ? a[i * st[2]] : b[i * st[3]];
    }
}

static int where_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *mask = ml_saved(n, 0); /* float 0/1, broadcast shape of cond */
    if (!mask) return -1;
    /* in[0] is cond (never needs grad); in[1] = a, in[2] = b */
    if (n->needs[1] && !(gin[1] = grad_times(g, mask, n->in[1]))) return -1;
    if (n->needs[2]) {
        ml_tensor *inv = ml_rsub_scalar(1.0, mask);
        if (!inv) return -1;
        gin[2] = grad_times(g, inv, n->in[2]);
        ml_release(inv);
        if (!gin[2]) return -1;
    }
    return 0;
}

ml_tensor *ml_where(ml_tensor *cond, ml_tensor *a, ml_tensor *b) {
    int nd1, nd;
    int64_t s1[ML_MAX_DIMS], shape[ML_MAX_DIMS];
    if (ml_broadcast_shape("where", a, b, &nd1, s1)) return NULL;
    ml_tensor tmp = {.ndim = nd1};
    for (int d = 0; d < nd1; d++) tmp.shape[d] = s1[d];
    if (ml_broadcast_shape("where", cond, &tmp, &nd, shape)) return NULL;
    ml_tensor *fa = a->dtype == ML_F32 ? ml_retain(a) : ml_to_dtype(a, ML_F32);
    ml_tensor *fb = b->dtype == ML_F32 ? ml_retain(b) : ml_to_dtype(b, ML_F32);
    ml_tensor *out = fa && fb ? ml_empty(ML_F32, nd, shape) : NULL;
    if (out) {
        iter_t it;
        ml_tensor *ops[4] = {out, cond, fa, fb};
        iter_init(&it, nd, shape, 4, ops);
        where_ctx c = {cond->dtype};
        iter_exec(&it, where_run, &c);
        ml_node *n = ml_record("where", out, 3, (ml_tensor *[]){cond, a, b}, where_backward);
        if (n) {
            ml_tensor *zero = ml_scalar(0.0), *mask = zero ? binary_raw(B_NE, cond, zero) : NULL;
            ml_release(zero);
            if (!mask) {
                ml_release(out);
                out = NULL;
            } else {
                ml_save(n, mask);
                ml_release(mask);
            }
        }
    }
    ml_release(fa);
    ml_release(fb);
    return out;
}

/* ------------------------------------------------------------ in place */
int ml_add_(ml_tensor *a, ml_tensor *b, double alpha) {
    if (ml_check_inplace("add_", a)) return -1;
    int nd;
    int64_t shape[ML_MAX_DIMS];
    if (ml_broadcast_shape("add_", a, b, &nd, shape)) return -1;
    bool fits = nd == a->ndim;
    for (int d = 0; fits && d < nd; d++) fits = shape[d] == a->shape[d];
    if (!fits)
        return ml_failc("add_: %s cannot be broadcast into %s in place", ML_SHAPE_STR(b), ML_SHAPE_STR(a));
    if (a->dtype != ML_F32 || b->dtype != ML_F32) return ml_failc("add_: both tensors must be float32");
    if (ml_is_contiguous(a) && ml_is_contiguous(b) && ml_same_shape(a, b)) {
        float *x = ml_f32(a), al = (float)alpha;
        const float *y = ml_f32(b);
        int64_t N = ml_numel(a);
        #pragma omp parallel for schedule(static) if (N >= PAR_MIN)
        for (int64_t i = 0; i < N; i++) x[i] += al * y[i];
    } else {
        ml_tensor *s = alpha == 1.0 ? ml_retain(b) : scalar_raw(S_MUL, b, alpha);
        ml_tensor *r = s ? binary_raw(B_ADD, a, s) : NULL;
        ml_release(s);
        if (!r) return -1;
        int rc = ml_copy_(a, r);
        ml_release(r);
        if (rc) return -1;
    }
    ml_bump_version(a);
    return 0;
}

int ml_mul_scalar_(ml_tensor *a, double s) {
    if (ml_check_inplace("mul_", a)) return -1;
    if (a->dtype != ML_F32) return ml_failc("mul_: tensor must be float32");
    if (!ml_is_contiguous(a)) {
        ml_tensor *r = scalar_raw(S_MUL, a, s);
        if (!r) return -1;
        int rc = ml_copy_(a, r);
        ml_release(r);
        return rc;
    }
    float *x = ml_f32(a), f = (float)s;
    for (int64_t i = 0, N = ml_numel(a); i < N; i++) x[i] *= f;
    ml_bump_version(a);
    return 0;
}

int ml_clamp_(ml_tensor *a, double lo, double hi) {
    if (ml_check_inplace("clamp_", a)) return -1;
    if (lo > hi) return ml_failc("clamp: min %g is greater than max %g", lo, hi);
    if (!ml_is_contiguous(a)) {
        ml_tensor *c = ml_contiguous(a);
        if (!c || ml_clamp_(c, lo, hi) || ml_copy_(a, c)) {
            ml_release(c);
            return -1;
        }
        ml_release(c);
        return 0;
    }
    int64_t N = ml_numel(a);
    if (a->dtype == ML_F32) {
        float *x = ml_f32(a), l = (float)lo, h = (float)hi;
        for (int64_t i = 0; i < N; i++) x[i] = x[i] < l ? l : (x[i] > h ? h : x[i]);
    } else {
        int64_t *x = ml_i64(a);
        for (int64_t i = 0; i < N; i++) {
            if ((double)x[i] < lo) x[i] = (int64_t)ceil(lo);
            if ((double)x[i] > hi) x[i] = (int64_t)floor(hi);
        }
    }
    ml_bump_version(a);
    return 0;
}
