/* norm.c -- batch norm, layer norm and dropout with backward. */
#include "norm.h"

#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "../autograd.h"
#include "vmath.h"

/* ------------------------------------------------------------ batch norm (+ residual, + ReLU) */
/* One channel c is the N rows x[b, c, :] of `inner` floats, `cs` = C inner
 * floats apart. Its sums run in float lane accumulators (so they vectorise),
 * flushed into double lanes every BN_FLUSH elements per lane, so that the
 * accuracy across a batch is that of a double sum. The kernels are SIMD clones
 * (vmath.h) called once per channel or per block of rows. */
#define BN_LANES 16
#define BN_FLUSH 64

static inline double lanes_total(const double *d) {
    double t = 0;
    for (int l = 0; l < BN_LANES; l++) t += d[l];
    return t;
}

/* Training statistics of one channel: the mean, and the biased variance from
 * the deviations from the (float) mean, corrected by their mean. */
ML_SIMD_CLONES
static void bn_chan_stats(const float *x, int64_t N, int64_t cs, int64_t inner, double *mean, double *var) {
    const int64_t M = N * inner, per_row = inner / BN_LANES;
    float f[BN_LANES] = {0};
    double d[BN_LANES] = {0}, tail = 0;
    int64_t cnt = 0;
    for (int64_t b = 0; b < N; b++) {
        const float *r = x + b * cs;
        int64_t j = 0;
        for (; j + BN_LANES <= inner; j += BN_LANES)
            for (int l = 0; l < BN_LANES; l++) f[l] += r[j + l];
        for (; j < inner; j++) tail += r[j];
        if ((cnt += per_row) >= BN_FLUSH) {
            for (int l = 0; l < BN_LANES; l++) {
                d[l] += f[l];
                f[l] = 0;
            }
            cnt = 0;
        }
    }
    for (int l = 0; l < BN_LANES; l++) d[l] += f[l];
    double m = (lanes_total(d) + tail) / (double)M;
    const float mf = (float)m;
    float f1[BN_LANES] = {0}, f2[BN_LANES] = {0};
    double d1[BN_LANES] = {0}, d2[BN_LANES] = {0}, t1 = 0, t2 = 0;
    cnt = 0;
    for (int64_t b = 0; b < N; b++) {
        const float *r = x + b * cs;
        int64_t j = 0;
        for (; j + BN_LANES <= inner; j += BN_LANES)
            for (int l = 0; l < BN_LANES; l++) {
                float dv = r[j + l] - mf;
                f1[l] += dv;
                f2[l] += dv * dv;
            }
        for (; j < inner; j++) {
            double dv = (double)r[j] - mf;
            t1 += dv;
            t2 += dv * dv;
        }
        if ((cnt += per_row) >= BN_FLUSH) {
            for (int l = 0; l < BN_LANES; l++) {
                d1[l] += f1[l];
                d2[l] += f2[l];
                f1[l] = f2[l] = 0;
            }
            cnt = 0;
        }
    }
    for (int l = 0; l < BN_LANES; l++) {
        d1[l] += f1[l];
        d2[l] += f2[l];
    }
    double s1 = (lanes_total(d1) + t1) / (double)M, s2 = (lanes_total(d2) + t2) / (double)M;
    double v = s2 - s1 * s1;
    *mean = (double)mf + s1;
    *var = v > 0 ? v : 0;
}

/* y = act(a x + bb [+ r]) over `rows` rows of `inner` floats, `cs` apart
 * (one channel), or over consecutive rows with per-row coefficients when
 * `a_row` is given (channel of row k: (row0 + k) % C). */
ML_SIMD_CLONES
static void bn_apply(const float *x, const float *r, float *y, int64_t rows, int64_t cs, int64_t inner, float a,
                     float bb, const float *a_row, const float *b_row, int64_t row0, int64_t C, bool relu) {
    for (int64_t k = 0; k < rows; k++) {
        const float *xr = x + k * cs;
        const float *rr = r ? r + k * cs : NULL;
        float *yr = y + k * cs;
        if (a_row) {
            a = a_row[(row0 + k) % C];
            bb = b_row[(row0 + k) % C];
        }
        if (rr && relu)
            for (int64_t i = 0; i < inner; i++) {
                float v = a * xr[i] + bb + rr[i];
                yr[i] = v > 0 ? v : 0.0f;
            }
        else if (rr)
            for (int64_t i = 0; i < inner; i++) yr[i] = a * xr[i] + bb + rr[i];
        else if (relu)
            for (int64_t i = 0; i < inner; i++) {
                float v = a * xr[i] + bb;
                yr[i] = v > 0 ? v : 0.0f;
            }
        else
            for (int64_t i = 0; i < inner; i++) yr[i] = a * xr[i] + bb;
    }
}

/* The gradient reaching the pre-activation, gm = g (y > 0) with a ReLU (y
 * NULL: g), optionally stored into gr; returns sum gm and sum gm (x - m)
 * over one channel. */
ML_SIMD_CLONES
static void bn_chan_grad_sums(const float *x, const float *g, const float *y, float *gr, int64_t N, int64_t cs,
                              int64_t inner, float m, double *sg, double *sgx) {
    const int64_t per_row = inner / BN_LANES;
    float f1[BN_LANES] = {0}, f2[BN_LANES] = {0};
    double d1[BN_LANES] = {0}, d2[BN_LANES] = {0}, t1 = 0, t2 = 0;
    int64_t cnt = 0;
    for (int64_t b = 0; b < N; b++) {
        const float *xr = x + b * cs, *gg = g + b * cs, *yr = y ? y + b * cs : NULL;
        float *gro = gr ? gr + b * cs : NULL;
        int64_t j = 0;
        for (; j + BN_LANES <= inner; j += BN_LANES)
            for (int l = 0; l < BN_LANES; l++) {
                float gi = gg[j + l];
                float gm = yr ? (yr[j + l] > 0 ? gi : 0.0f) : gi;
                if (gro) gro[j + l] = gm;
                f1[l] += gm;
                f2[l] += gm * (xr[j + l] - m);
            }
        for (; j < inner; j++) {
            float gi = gg[j];
            float gm = yr ? (yr[j] > 0 ? gi : 0.0f) : gi;
            if (gro) gro[j] = gm;
            t1 += gm;
            t2 += (double)gm * (xr[j] - m);
        }
        if ((cnt += per_row) >= BN_FLUSH) {
            for (int l = 0; l < BN_LANES; l++) {
                d1[l] += f1[l];
                d2[l] += f2[l];
                f1[l] = f2[l] = 0;
            }
            cnt = 0;
        }
    }
    for (int l = 0; l < BN_LANES; l++) {
        d1[l] += f1[l];
        d2[l] += f2[l];
    }
    *sg = lanes_total(d1) + t1;
    *sgx = lanes_total(d2) + t2;
}

/* gx over `rows` rows (`cs` apart) of one channel, or of consecutive rows
 * with per-row channel coefficients (k0_row given): training
 * gx = k0 (gm - mg - (x - m) s mgx), eval gx = k0 gm, gm as above; gr (if
 * given) gets gm. */
ML_SIMD_CLONES
static void bn_grad_x(const float *x, const float *g, const float *y, float *gx, float *gr, int64_t rows, int64_t cs,
                      int64_t inner, bool training, float k0, float m, float s, float mg, float mgx,
                      const float *k0_row, int64_t row0, int64_t C) {
    for (int64_t k = 0; k < rows; k++) {
        const float *gg = g + k * cs, *yr = y ? y + k * cs : NULL, *xr = x + k * cs;
        float *o = gx ? gx + k * cs : NULL, *gro = gr ? gr + k * cs : NULL;
        if (k0_row) k0 = k0_row[(row0 + k) % C];
        if (!o) {
            if (gro)
                for (int64_t i = 0; i < inner; i++) {
                    float gi = gg[i];
                    gro[i] = yr ? (yr[i] > 0 ? gi : 0.0f) : gi;
                }
            continue;
        }
        if (training && yr)
            for (int64_t i = 0; i < inner; i++) {
                float gi = gg[i], gm = yr[i] > 0 ? gi : 0.0f;
                o[i] = k0 * (gm - mg - (xr[i] - m) * s * mgx);
            }
        else if (training)
            for (int64_t i = 0; i < inner; i++) o[i] = k0 * (gg[i] - mg - (xr[i] - m) * s * mgx);
        else if (yr && gro)
            for (int64_t i = 0; i < inner; i++) {
                float gi = gg[i], gm = yr[i] > 0 ? gi : 0.0f;
                gro[i] = gm;
                o[i] = k0 * gm;
            }
        else if (yr)
            for (int64_t i = 0; i < inner; i++) {
                float gi = gg[i];
                o[i] = k0 * (yr[i] > 0 ? gi : 0.0f);
            }
        else
            for (int64_t i = 0; i < inner; i++) o[i] = k0 * gg[i];
    }
}

/* saved: 0 x, 1 mean, 2 invstd, [weight], [y when relu]; inputs: x, weight,
 * bias, [residual]; i[0] training, i[1] inner, i[2] relu, i[3] has weight */
static int bn_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *x = ml_saved(n, 0), *mean = ml_saved(n, 1), *invstd = ml_saved(n, 2);
    if (!x || !mean || !invstd) return -1;
    bool training = n->i[0], relu = n->i[2], has_w = n->i[3];
    int k = 3;
    ml_tensor *w = has_w ? ml_saved(n, k++) : NULL;
    ml_tensor *yo = relu ? ml_saved(n, k++) : NULL;
    if ((has_w && !w) || (relu && !yo)) return -1;
    int64_t N = x->shape[0], C = x->shape[1], inner = n->i[1], M = N * inner, cs = C * inner;
    const float *xx = ml_f32(x), *gg = ml_f32(g), *mu = ml_f32(mean), *is = ml_f32(invstd);
    const float *yy = yo ? ml_f32(yo) : NULL;
    bool want_r = n->n_in > 3 && n->needs[3];
    ml_tensor *gx = n->needs[0] ? ml_empty(ML_F32, x->ndim, x->shape) : NULL;
    ml_tensor *gw = n->n_in > 1 && n->needs[1] ? ml_empty(ML_F32, 1, &C) : NULL;
    ml_tensor *gb = n->n_in > 2 && n->needs[2] ? ml_empty(ML_F32, 1, &C) : NULL;
    ml_tensor *gr = want_r ? ml_empty(ML_F32, x->ndim, x->shape) : NULL;
    if ((n->needs[0] && !gx) || (n->n_in > 1 && n->needs[1] && !gw) || (n->n_in > 2 && n->needs[2] && !gb) ||
        (want_r && !gr)) {
        ml_release(gx);
        ml_release(gw);
        ml_release(gb);
        ml_release(gr);
        return -1;
    }
    float *gxp = gx ? ml_f32(gx) : NULL, *grp = gr ? ml_f32(gr) : NULL;
    /* the sums are needed for the parameters' gradients and, in training, for
     * gx; an attack in eval mode with frozen parameters needs neither */
    bool sums = gw || gb || (gx && training);
    if (sums) {
        #pragma omp parallel for schedule(static) if (M * C >= 65536)
        for (int64_t c = 0; c < C; c++) {
            double sg, sgx;
            float m = mu[c], s = is[c];
            bn_chan_grad_sums(xx + c * inner, gg + c * inner, yy ? yy + c * inner : NULL, grp ? grp + c * inner : NULL,
                              N, cs, inner, m, &sg, &sgx);
            sgx *= s;
            if (gw) ml_f32(gw)[c] = (float)sgx;
            if (gb) ml_f32(gb)[c] = (float)sg;
            if (gx) {
                float gamma = w ? ml_f32(w)[c] : 1.0f;
                float mg = (float)(sg / (double)M), mgx = (float)(sgx / (double)M);
                /* gm was stored into gr by the sums: read it from there */
                bn_grad_x(xx + c * inner, grp ? grp + c * inner : gg + c * inner, grp ? NULL : yy ? yy + c * inner : NULL,
                          gxp + c * inner, NULL, N, cs, inner, training, gamma * s, m, s, mg, mgx, NULL, 0, C);
            }
        }
    } else if (gx || gr) {
        /* one pass over the rows, in parallel: gr = gm, gx = gamma s gm */
        float k0s[4096], *k0 = C <= 4096 ? k0s : ml_alloc(sizeof(float) * (size_t)C);
        if (!k0) {
            ml_release(gx);
            ml_release(gr);
            return -1;
        }
        for (int64_t c = 0; c < C; c++) k0[c] = (w ? ml_f32(w)[c] : 1.0f) * is[c];
        int64_t rows = N * C, blk = inner >= 256 ? 1 : 256 / inner;
        #pragma omp parallel for schedule(static) if (M * C >= 65536)
        for (int64_t r0 = 0; r0 < rows; r0 += blk) {
            int64_t nr = rows - r0 < blk ? rows - r0 : blk;
            bn_grad_x(xx + r0 * inner, gg + r0 * inner, yy ? yy + r0 * inner : NULL, gxp ? gxp + r0 * inner : NULL,
                      grp ? grp + r0 * inner : NULL, nr, inner, inner, false, 0, 0, 0, 0, 0, k0, r0, C);
        }
        if (k0 != k0s) ml_free(k0, sizeof(float) * (size_t)C);
    }
    gin[0] = gx;
    if (n->n_in > 1) gin[1] = gw;
    if (n->n_in > 2) gin[2] = gb;
    if (n->n_in > 3) gin[3] = gr;
    return 0;
}

static int check_vec(const char *what, const ml_tensor *t, int64_t C) {
    if (!t) return 0;
    if (t->dtype != ML_F32 || t->ndim != 1 || t->shape[0] != C)
        return ml_failc("batch_norm: %s has shape %s, expected [%" PRId64 "] (one per channel)", what, ML_SHAPE_STR(t), C);
    if (!ml_is_contiguous(t)) return ml_failc("batch_norm: %s must be contiguous", what);
    return 0;
}

ml_tensor *ml_batch_norm_act(ml_tensor *x, ml_tensor *weight, ml_tensor *bias, ml_tensor *rm, ml_tensor *rv,
                             bool training, double momentum, double eps, ml_tensor *residual, bool relu) {
    if (x->dtype != ML_F32 || x->ndim < 2)
        return ml_fail("batch_norm: expects a float32 input [N, C, ...], got %s", ML_SHAPE_STR(x));
    int64_t N = x->shape[0], C = x->shape[1], inner = 1;
    for (int d = 2; d < x->ndim; d++) inner *= x->shape[d];
    if (check_vec("weight", weight, C) || check_vec("bias", bias, C) || check_vec("running_mean", rm, C) ||
        check_vec("running_var", rv, C))
        return NULL;
    if (residual) {
        bool same = residual->dtype == ML_F32 && residual->ndim == x->ndim;
        for (int d = 0; same && d < x->ndim; d++) same = residual->shape[d] == x->shape[d];
        if (!same)
            return ml_fail("batch_norm: the residual has shape %s, expected the input's %s", ML_SHAPE_STR(residual),
                           ML_SHAPE_STR(x));
    }
    if (!training && (!rm || !rv)) return ml_fail("batch_norm: evaluation mode needs running_mean and running_var");
    if (training && N * inner < 2)
        return ml_fail("batch_norm: training needs more than one value per channel (input %s)", ML_SHAPE_STR(x));
    if (!(eps > 0)) return ml_fail("batch_norm: eps must be positive");
    if ((rm && rm->requires_grad) || (rv && rv->requires_grad))
        return ml_fail("batch_norm: running statistics must not require grad");
    ml_tensor *xc = ml_contiguous(x), *rc = residual ? ml_contiguous(residual) : NULL;
    ml_tensor *y = xc && (!residual || rc) ? ml_empty(ML_F32, x->ndim, x->shape) : NULL;
    ml_tensor *mean = ml_empty(ML_F32, 1, &C), *invstd = ml_empty(ML_F32, 1, &C);
    float as[256], bs[256], *a = C <= 256 ? as : ml_alloc(sizeof(float) * 2 * (size_t)C);
    float *bsh = C <= 256 ? bs : a ? a + C : NULL;
    if (!y || !mean || !invstd || !a) {
        ml_release(xc);
        ml_release(rc);
        ml_release(y);
        ml_release(mean);
        ml_release(invstd);
        if (a && a != as) ml_free(a, sizeof(float) * 2 * (size_t)C);
        return NULL;
    }
    int64_t M = N * inner, cs = C * inner;
    const float *xx = ml_f32(xc), *rr = rc ? ml_f32(rc) : NULL;
    float *o = ml_f32(y);
    /* training: per channel (statistics, then y while the channel is in cache);
     * eval: the coefficients, then y over blocks of rows */
    #pragma omp parallel for schedule(static) if (training && M * C >= 65536)
    for (int64_t c = 0; c < C; c++) {
        double m, var;
        if (training) {
            bn_chan_stats(xx + c * inner, N, cs, inner, &m, &var);
            if (rm) ml_f32(rm)[c] = (float)((1.0 - momentum) * ml_f32(rm)[c] + momentum * m);
            if (rv) ml_f32(rv)[c] = (float)((1.0 - momentum) * ml_f32(rv)[c] + momentum * var * (double)M / (double)(M - 1));
        } else {
            m = ml_f32(rm)[c];
            var = ml_f32(rv)[c];
        }
        float s = (float)(1.0 / sqrt(var + eps)), mf = (float)m;
        float gamma = weight ? ml_f32(weight)[c] : 1.0f, beta = bias ? ml_f32(bias)[c] : 0.0f;
        a[c] = gamma * s;
        bsh[c] = beta - mf * a[c]; /* y = a x + b */
        ml_f32(mean)[c] = mf;
        ml_f32(invstd)[c] = s;
        if (training)
            bn_apply(xx + c * inner, rr ? rr + c * inner : NULL, o + c * inner, N, cs, inner, a[c], bsh[c], NULL, NULL, 0,
                     C, relu);
    }
    if (!training) {
        int64_t rows = N * C, blk = inner >= 256 ? 1 : 256 / inner;
        #pragma omp parallel for schedule(static) if (M * C >= 65536)
        for (int64_t r0 = 0; r0 < rows; r0 += blk) {
            int64_t nr = rows - r0 < blk ? rows - r0 : blk;
            bn_apply(xx + r0 * inner, rr ? rr + r0 * inner : NULL, o + r0 * inner, nr, inner, inner, 0, 0, a, bsh, r0, C,
                     relu);
        }
    }
    if (a != as) ml_free(a, sizeof(float) * 2 * (size_t)C);
    if (training) {
        if (rm) ml_bump_version(rm);
        if (rv) ml_bump_version(rv);
    }
    /* input positions fixed: x, weight, bias, residual (absent ones NULL) */
    ml_tensor *ins[4] = {x, weight, bias, residual};
    int nin = residual ? 4 : bias ? 3 : weight ? 2 : 1;
    ml_node *n = ml_record(residual || relu ? "batch_norm_act" : "batch_norm", y, nin, ins, bn_backward);
    if (n) {
        n->i[0] = training;
        n->i[1] = inner;
        n->i[2] = relu;
        n->i[3] = weight != NULL;
        ml_save(n, xc);
        ml_save(n, mean);
        ml_save(n, invstd);
        if (weight) ml_save(n, weight);
        if (relu) ml_save(n, y);
    }
    ml_release(xc);
    ml_release(rc);
    ml_release(mean);
    ml_release(invstd);
    return y;
}

ml_tensor *ml_batch_norm(ml_tensor *x, ml_tensor *weight, ml_tensor *bias, ml_tensor *rm, ml_tensor *rv, bool training,
                         double momentum, double eps) {
    return ml_batch_norm_act(x, weight, bias, rm, rv, training, momentum, eps, NULL, false);
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
