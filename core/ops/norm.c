/* norm.c -- batch norm, layer norm and dropout with backward. */
#include "norm.h"

#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "../autograd.h"
#include "vmath.h"

/* ------------------------------------------------------------ batch norm */
/* Sums in double with four independent partial sums (a single chain of
 * double adds waits on the add latency at every element). */
static double row_sum(const float *x, int64_t n) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += x[i];
        a1 += x[i + 1];
        a2 += x[i + 2];
        a3 += x[i + 3];
    }
    for (; i < n; i++) a0 += x[i];
    return (a0 + a1) + (a2 + a3);
}

static double row_sqdev(const float *x, int64_t n, double m) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        double d0 = x[i] - m, d1 = x[i + 1] - m, d2 = x[i + 2] - m, d3 = x[i + 3] - m;
        a0 += d0 * d0;
        a1 += d1 * d1;
        a2 += d2 * d2;
        a3 += d3 * d3;
    }
    for (; i < n; i++) a0 += (x[i] - m) * (x[i] - m);
    return (a0 + a1) + (a2 + a3);
}

static int bn_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *x = ml_saved(n, 0), *mean = ml_saved(n, 1), *invstd = ml_saved(n, 2);
    if (!x || !mean || !invstd) return -1;
    ml_tensor *w = n->n_saved > 3 ? ml_saved(n, 3) : NULL;
    if (n->n_saved > 3 && !w) return -1;
    bool training = n->i[0];
    int64_t N = x->shape[0], C = x->shape[1], inner = n->i[1], M = N * inner;
    const float *xx = ml_f32(x), *gg = ml_f32(g), *mu = ml_f32(mean), *is = ml_f32(invstd);
    ml_tensor *gx = n->needs[0] ? ml_empty(ML_F32, x->ndim, x->shape) : NULL;
    ml_tensor *gw = n->n_in > 1 && n->needs[1] ? ml_empty(ML_F32, 1, &C) : NULL;
    ml_tensor *gb = n->n_in > 2 && n->needs[2] ? ml_empty(ML_F32, 1, &C) : NULL;
    if ((n->needs[0] && !gx) || (n->n_in > 1 && n->needs[1] && !gw) || (n->n_in > 2 && n->needs[2] && !gb)) {
        ml_release(gx);
        ml_release(gw);
        ml_release(gb);
        return -1;
    }
    /* the sums are needed for the parameters' gradients and, in training, for
     * gx; an attack in eval mode with frozen parameters needs neither */
    bool sums = gw || gb || (gx && training);
    #pragma omp parallel for schedule(static) if (M * C >= 65536)
    for (int64_t c = 0; c < C; c++) {
        double sg = 0, sgx = 0;
        float m = mu[c], s = is[c];
        for (int64_t b = 0; b < N && sums; b++) {
            const float *xr = xx + (b * C + c) * inner, *gr = gg + (b * C + c) * inner;
            /* four independent partial sums: a single chain of double adds
             * waits on the add latency at every element */
            double a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
            int64_t i = 0;
            for (; i + 4 <= inner; i += 4) {
                a0 += gr[i];
                a1 += gr[i + 1];
                a2 += gr[i + 2];
                a3 += gr[i + 3];
                b0 += (double)gr[i] * (xr[i] - m);
                b1 += (double)gr[i + 1] * (xr[i + 1] - m);
                b2 += (double)gr[i + 2] * (xr[i + 2] - m);
                b3 += (double)gr[i + 3] * (xr[i + 3] - m);
            }
            for (; i < inner; i++) {
                a0 += gr[i];
                b0 += (double)gr[i] * (xr[i] - m);
            }
            sg += (a0 + a1) + (a2 + a3);
            sgx += ((b0 + b1) + (b2 + b3)) * s;
        }
        if (gw) ml_f32(gw)[c] = (float)sgx;
        if (gb) ml_f32(gb)[c] = (float)sg;
        if (gx) {
            float gamma = w ? ml_f32(w)[c] : 1.0f;
            float mg = (float)(sg / (double)M), mgx = (float)(sgx / (double)M);
            for (int64_t b = 0; b < N; b++) {
                const float *xr = xx + (b * C + c) * inner, *gr = gg + (b * C + c) * inner;
                float *o = ml_f32(gx) + (b * C + c) * inner;
                if (training)
                    for (int64_t i = 0; i < inner; i++) o[i] = gamma * s * (gr[i] - mg - (xr[i] - m) * s * mgx);
                else
                    for (int64_t i = 0; i < inner; i++) o[i] = gamma * s * gr[i];
            }
        }
    }
    gin[0] = gx;
    if (n->n_in > 1) gin[1] = gw;
    if (n->n_in > 2) gin[2] = gb;
    return 0;
}

static int check_vec(const char *what, const ml_tensor *t, int64_t C) {
    if (!t) return 0;
    if (t->dtype != ML_F32 || t->ndim != 1 || t->shape[0] != C)
        return ml_failc("batch_norm: %s has shape %s, expected [%" PRId64 "] (one per channel)", what, ML_SHAPE_STR(t), C);
    if (!ml_is_contiguous(t)) return ml_failc("batch_norm: %s must be contiguous", what);
    return 0;
}

ml_tensor *ml_batch_norm(ml_tensor *x, ml_tensor *weight, ml_tensor *bias, ml_tensor *rm, ml_tensor *rv, bool training,
                         double momentum, double eps) {
    if (x->dtype != ML_F32 || x->ndim < 2)
        return ml_fail("batch_norm: expects a float32 input [N, C, ...], got %s", ML_SHAPE_STR(x));
    int64_t N = x->shape[0], C = x->shape[1], inner = 1;
    for (int d = 2; d < x->ndim; d++) inner *= x->shape[d];
    if (check_vec("weight", weight, C) || check_vec("bias", bias, C) || check_vec("running_mean", rm, C) ||
        check_vec("running_var", rv, C))
        return NULL;
    if (!training && (!rm || !rv)) return ml_fail("batch_norm: evaluation mode needs running_mean and running_var");
    if (training && N * inner < 2)
        return ml_fail("batch_norm: training needs more than one value per channel (input %s)", ML_SHAPE_STR(x));
    if (!(eps > 0)) return ml_fail("batch_norm: eps must be positive");
    if ((rm && rm->requires_grad) || (rv && rv->requires_grad))
        return ml_fail("batch_norm: running statistics must not require grad");
    ml_tensor *xc = ml_contiguous(x);
    ml_tensor *y = xc ? ml_empty(ML_F32, x->ndim, x->shape) : NULL;
    ml_tensor *mean = ml_empty(ML_F32, 1, &C), *invstd = ml_empty(ML_F32, 1, &C);
    if (!y || !mean || !invstd) {
        ml_release(xc);
        ml_release(y);
        ml_release(mean);
        ml_release(invstd);
        return NULL;
    }
    int64_t M = N * inner;
    const float *xx = ml_f32(xc);
    float *o = ml_f32(y);
    #pragma omp parallel for schedule(static) if (M * C >= 65536)
    for (int64_t c = 0; c < C; c++) {
        double m, var;
        if (training) {
            double s = 0, ss = 0;
            for (int64_t b = 0; b < N; b++) s += row_sum(xx + (b * C + c) * inner, inner);
            m = s / (double)M;
            for (int64_t b = 0; b < N; b++) ss += row_sqdev(xx + (b * C + c) * inner, inner, m);
            var = ss / (double)M;
            if (rm) ml_f32(rm)[c] = (float)((1.0 - momentum) * ml_f32(rm)[c] + momentum * m);
            if (rv) ml_f32(rv)[c] = (float)((1.0 - momentum) * ml_f32(rv)[c] + momentum * var * (double)M / (double)(M - 1));
        } else {
            m = ml_f32(rm)[c];
            var = ml_f32(rv)[c];
        }
        float s = (float)(1.0 / sqrt(var + eps)), mf = (float)m;
        float gamma = weight ? ml_f32(weight)[c] : 1.0f, beta = bias ? ml_f32(bias)[c] : 0.0f;
        float a = gamma * s, bb = beta - mf * a; /* y = a x + bb */
        ml_f32(mean)[c] = mf;
        ml_f32(invstd)[c] = s;
        for (int64_t b = 0; b < N; b++) {
            const float *xr = xx + (b * C + c) * inner;
            float *yr = o + (b * C + c) * inner;
            for (int64_t i = 0; i < inner; i++) yr[i] = a * xr[i] + bb;
        }
    }
    if (training) {
        if (rm) ml_bump_version(rm);
        if (rv) ml_bump_version(rv);
    }
    ml_tensor *ins[3] = {x, weight, bias};
    int nin = bias ? 3 : weight ? 2 : 1;
    if (bias && !weight) {
        /* keep input positions fixed: weight slot holds a constant ones vector */
        ins[1] = NULL;
    }
    ml_node *n = ml_record("batch_norm", y, nin, ins, bn_backward);
    if (n) {
        n->i[0] = training;
        n->i[1] = inner;
        ml_save(n, xc);
        ml_save(n, mean);
        ml_save(n, invstd);
        if (weight) ml_save(n, weight);
    }
    ml_release(xc);
    ml_release(mean);
    ml_release(invstd);
    return y;
}

/* ------------------------------------------------------------ layer norm */
/* Rows are short (a token's features): lane accumulators instead of one scalar
 * sum, so the reductions vectorise (a scalar double sum was a tenth of a ViT
 * forward). */
#define LN_LANES 16

static inline float lane_total(const float *lanes) {
    double t = 0;
    for (int l = 0; l < LN_LANES; l++) t += lanes[l];
    return (float)t;
}

ML_SIMD_CLONES
static void ln_row(const float *x, float *y, int64_t D, const float *w, const float *b, double eps, float *mean,
                   float *invstd) {
    float acc[LN_LANES] = {0};
    int64_t j = 0;
    for (; j + LN_LANES <= D; j += LN_LANES)
        for (int l = 0; l < LN_LANES; l++) acc[l] += x[j + l];
    double s = lane_total(acc);
    for (; j < D; j++) s += x[j];
    float m = (float)(s / (double)D);
    float sq[LN_LANES] = {0};
    for (j = 0; j + LN_LANES <= D; j += LN_LANES)
        for (int l = 0; l < LN_LANES; l++) {
            float d = x[j + l] - m;
            sq[l] += d * d;
        }
    double ss = lane_total(sq);
    for (; j < D; j++) ss += (double)(x[j] - m) * (x[j] - m);
    float is = (float)(1.0 / sqrt(ss / (double)D + eps));
    *mean = m;
    *invstd = is;
    if (w && b)
        for (j = 0; j < D; j++) y[j] = (x[j] - m) * is * w[j] + b[j];
    else if (w)
        for (j = 0; j < D; j++) y[j] = (x[j] - m) * is * w[j];
    else if (b)
        for (j = 0; j < D; j++) y[j] = (x[j] - m) * is + b[j];
    else
        for (j = 0; j < D; j++) y[j] = (x[j] - m) * is;
}

/* One row of the backward: gx (if asked) and the row's contributions to the
 * weight and bias gradients (if asked), into gw / gb. */
ML_SIMD_CLONES
static void ln_row_backward(const float *x, const float *g, float m, float s, const float *gamma, int64_t D, float *gx,
                            float *gw, float *gb) {
    float la[LN_LANES] = {0}, lb[LN_LANES] = {0}; /* sums of g*gamma and g*gamma*xhat */
    int64_t j = 0;
    for (; j + LN_LANES <= D; j += LN_LANES)
        for (int l = 0; l < LN_LANES; l++) {
            float xh = (x[j + l] - m) * s, gj = g[j + l] * (gamma ? gamma[j + l] : 1.0f);
            la[l] += gj;
            lb[l] += gj * xh;
        }
    double a = lane_total(la), b = lane_total(lb);
    for (; j < D; j++) {
        float xh = (x[j] - m) * s, gj = g[j] * (gamma ? gamma[j] : 1.0f);
        a += gj;
        b += gj * xh;
    }
    if (gw)
        for (j = 0; j < D; j++) gw[j] += g[j] * ((x[j] - m) * s);
    if (gb)
        for (j = 0; j < D; j++) gb[j] += g[j];
    if (gx) {
        float ma = (float)(a / (double)D), mb = (float)(b / (double)D);
        for (j = 0; j < D; j++) {
            float xh = (x[j] - m) * s, gj = g[j] * (gamma ? gamma[j] : 1.0f);
            gx[j] = s * (gj - ma - xh * mb);
        }
    }
}

static int ln_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *x = ml_saved(n, 0), *mean = ml_saved(n, 1), *invstd = ml_saved(n, 2);
    if (!x || !mean || !invstd) return -1;
    ml_tensor *w = n->n_saved > 3 ? ml_saved(n, 3) : NULL;
    if (n->n_saved > 3 && !w) return -1;
    int64_t D = n->i[0], rows = D ? ml_numel(x) / D : 0;
    const float *xx = ml_f32(x), *gg = ml_f32(g), *mu = ml_f32(mean), *is = ml_f32(invstd);
    const float *gamma = w ? ml_f32(w) : NULL;
    ml_tensor *gx = n->needs[0] ? ml_empty(ML_F32, x->ndim, x->shape) : NULL;
    bool want_w = n->n_in > 1 && n->in[1] && n->needs[1], want_b = n->n_in > 2 && n->in[2] && n->needs[2];
    ml_tensor *gw = want_w ? ml_zeros(ML_F32, n->in[1]->ndim, n->in[1]->shape) : NULL;
    ml_tensor *gb = want_b ? ml_zeros(ML_F32, n->in[2]->ndim, n->in[2]->shape) : NULL;
    if ((n->needs[0] && !gx) || (want_w && !gw) || (want_b && !gb)) {
        ml_release(gx);
        ml_release(gw);
        ml_release(gb);
        return -1;
    }
    /* rows in parallel; each thread sums its rows' weight and bias gradients
     * into its own buffers, added up afterwards */
    int threads = rows * D >= 65536 ? omp_get_max_threads() : 1;
    size_t part = (size_t)D * 2;
    float *parts = (gw || gb) ? ml_alloc(sizeof(float) * part * (size_t)threads) : NULL;
    if ((gw || gb) && !parts) {
        ml_release(gx);
        ml_release(gw);
        ml_release(gb);
        return -1;
    }
    if (parts) memset(parts, 0, sizeof(float) * part * (size_t)threads);
    #pragma omp parallel num_threads(threads)
    {
        float *pw = parts ? parts + part * (size_t)omp_get_thread_num() : NULL;
        #pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++)
            ln_row_backward(xx + r * D, gg + r * D, mu[r], is[r], gamma, D, gx ? ml_f32(gx) + r * D : NULL,
                            gw ? pw : NULL, gb ? pw + D : NULL);
    }
    if (parts) {
        for (int t = 0; t < threads; t++)
            for (int64_t j = 0; j < D; j++) {
                if (gw) ml_f32(gw)[j] += parts[part * (size_t)t + (size_t)j];
                if (gb) ml_f32(gb)[j] += parts[part * (size_t)t + (size_t)(D + j)];
            }
        ml_free(parts, sizeof(float) * part * (size_t)threads);
    }
    gin[0] = gx;
    if (n->n_in > 1) gin[1] = gw;
    if (n->n_in > 2) gin[2] = gb;
    return 0;
}

ml_tensor *ml_layer_norm(ml_tensor *x, int dims, ml_tensor *weight, ml_tensor *bias, double eps) {
    if (x->dtype != ML_F32) return ml_fail("layer_norm: expects a float32 tensor");
    if (dims < 1 || dims > x->ndim)
        return ml_fail("layer_norm: cannot normalise over the last %d dimensions of a %d-d tensor", dims, x->ndim);
    int64_t D = 1;
    for (int d = x->ndim - dims; d < x->ndim; d++) D *= x->shape[d];
    if ((weight && (ml_numel(weight) != D || weight->dtype != ML_F32)) || (bias && (ml_numel(bias) != D || bias->dtype != ML_F32)))
        return ml_fail("layer_norm: weight and bias must have %" PRId64 " elements (the normalised shape)", D);
    if (!(eps > 0)) return ml_fail("layer_norm: eps must be positive");
    int64_t rows = D ? ml_numel(x) / D : 0;
    ml_tensor *xc = ml_contiguous(x), *wc = weight ? ml_contiguous(weight) : NULL, *bc = bias ? ml_contiguous(bias) : NULL;
    ml_tensor *y = ml_empty(ML_F32, x->ndim, x->shape);
    ml_tensor *mean = ml_empty(ML_F32, 1, &rows), *invstd = ml_empty(ML_F32, 1, &rows);
    if (xc && y && mean && invstd && (!weight || wc) && (!bias || bc)) {
        const float *xx = ml_f32(xc), *wp = wc ? ml_f32(wc) : NULL, *bp = bc ? ml_f32(bc) : NULL;
        float *yy = ml_f32(y), *mp = ml_f32(mean), *ip = ml_f32(invstd);
        #pragma omp parallel for schedule(static) if (rows * D >= 65536)
        for (int64_t r = 0; r < rows; r++) ln_row(xx + r * D, yy + r * D, D, wp, bp, eps, mp + r, ip + r);
        ml_tensor *ins[3] = {x, weight, bias};
        ml_node *n = ml_record("layer_norm", y, bias ? 3 : weight ? 2 : 1, ins, ln_backward);
        if (n) {
            n->i[0] = D;
            ml_save(n, xc);
            ml_save(n, mean);
            ml_save(n, invstd);
            if (wc) ml_save(n, wc);
        }
    } else {
        ml_release(y);
        y = NULL;
    }
    ml_release(xc);
    ml_release(wc);
    ml_release(bc);
    ml_release(mean);
    ml_release(invstd);
    return y;
}

/* ------------------------------------------------------------ dropout */
static int dropout_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *mask = ml_saved(n, 0);
    if (!mask) return -1;
    ml_tensor *gx = ml_empty(ML_F32, g->ndim, g->shape);
    if (!gx) return -1;
    const float *m = ml_f32(mask), *gg = ml_f32(g);
    float *o = ml_f32(gx);
    for (int64_t i = 0, N = ml_numel(g); i < N; i++) o[i] = gg[i] * m[i];
    gin[0] = gx;
    return 0;
}

ml_tensor *ml_dropout(ml_tensor *x, double p, bool training) {
    if (!(p >= 0 && p < 1)) return ml_fail("dropout: p must be in [0, 1), got %g", p);
    if (x->dtype != ML_F32) return ml_fail("dropout: expects a float32 tensor");
    if (!training || p == 0) return ml_retain(x);
    ml_tensor *xc = ml_contiguous(x);
    ml_tensor *mask = xc ? ml_empty(ML_F32, x->ndim, x->shape) : NULL, *y = mask ? ml_empty(ML_F32, x->ndim, x->shape) : NULL;
    if (y) {
        float scale = (float)(1.0 / (1.0 - p));
        float *m = ml_f32(mask), *o = ml_f32(y);
        const float *xx = ml_f32(xc);
        for (int64_t i = 0, N = ml_numel(x); i < N; i++) {
            m[i] = ml_rng_uniform() < p ? 0.0f : scale;
            o[i] = xx[i] * m[i];
        }
        ml_node *n = ml_record("dropout", y, 1, &x, dropout_backward);
        if (n) ml_save(n, mask);
    }
    ml_release(xc);
    ml_release(mask);
    return y;
}
