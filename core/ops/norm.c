/* norm.c -- batch norm, layer norm and dropout with backward. */
#include "norm.h"

#include <inttypes.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "../autograd.h"
#include "../parallel.h"
#include "vmath.h"
#include "../memory.h"
#include "../rng.h"

/* ------------------------------------------------------------ batch norm (+ residual, + ReLU) */
/* Every pass runs over consecutive rows x[b, c, :] of `inner` floats (row k
 * of the tensor has channel k % C), so that memory is read in order whatever
 * the image size (one channel's rows are C inner floats apart: walking a
 * channel at a time read 4x4 and 8x8 activations at a fraction of the
 * bandwidth). The per-channel sums of a pass are per-thread double lanes
 * [C][BN_LANES], added up after the pass; within a row they run in float
 * lanes (flushed every 1024 elements), so the kernels vectorise. The kernels
 * are SIMD clones (vmath.h). The training statistics take one pass: sums of
 * d = x - K[c] and d^2 around a shift K[c] (the mean of the channel's first
 * row), var = E[d^2] - E[d]^2, which keeps the cancellation small. */
#define BN_LANES 16

/* rows [row0, row0 + rows): d1[c] += sum (x - K[c]), d2[c] += sum (x - K[c])^2 */
ML_SIMD_CLONES
static void bn_rows_stats(const float *x, int64_t rows, int64_t row0, int64_t C, int64_t inner, const float *K,
                          double *d1, double *d2) {
    for (int64_t k = 0; k < rows; k++) {
        int64_t c = (row0 + k) % C;
        const float *r = x + k * inner;
        const float kc = K[c];
        double *a1 = d1 + c * BN_LANES, *a2 = d2 + c * BN_LANES;
        float f1[BN_LANES] = {0}, f2[BN_LANES] = {0};
        int64_t j = 0;
        for (; j + BN_LANES <= inner; j += BN_LANES) {
            for (int l = 0; l < BN_LANES; l++) {
                float d = r[j + l] - kc;
                f1[l] += d;
                f2[l] += d * d;
            }
            if ((j & 1023) == 1024 - BN_LANES) {
                for (int l = 0; l < BN_LANES; l++) {
                    a1[l] += f1[l];
                    a2[l] += f2[l];
                    f1[l] = f2[l] = 0;
                }
            }
        }
        for (int l = 0; l < BN_LANES; l++) {
            a1[l] += f1[l];
            a2[l] += f2[l];
        }
        for (; j < inner; j++) {
            double d = (double)r[j] - kc;
            a1[0] += d;
            a2[0] += d * d;
        }
    }
}

/* y = act(a[c] x + b[c] [+ r]) over rows [row0, row0 + rows) */
ML_SIMD_CLONES
static void bn_apply(const float *x, const float *r, float *y, int64_t rows, int64_t row0, int64_t C, int64_t inner,
                     const float *a_c, const float *b_c, bool relu) {
    for (int64_t k = 0; k < rows; k++) {
        const float *xr = x + k * inner;
        const float *rr = r ? r + k * inner : NULL;
        float *yr = y + k * inner;
        const float a = a_c[(row0 + k) % C], bb = b_c[(row0 + k) % C];
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
 * NULL: g), optionally stored into gr; d1[c] += sum gm, d2[c] += sum gm (x -
 * m[c]) over rows [row0, row0 + rows). */
ML_SIMD_CLONES
static void bn_rows_grad_sums(const float *x, const float *g, const float *y, float *gr, int64_t rows, int64_t row0,
                              int64_t C, int64_t inner, const float *mean, double *d1, double *d2) {
    for (int64_t k = 0; k < rows; k++) {
        int64_t c = (row0 + k) % C;
        const float *xr = x + k * inner, *gg = g + k * inner, *yr = y ? y + k * inner : NULL;
        float *gro = gr ? gr + k * inner : NULL;
        const float m = mean[c];
        double *a1 = d1 + c * BN_LANES, *a2 = d2 + c * BN_LANES;
        float f1[BN_LANES] = {0}, f2[BN_LANES] = {0};
        int64_t j = 0;
        for (; j + BN_LANES <= inner; j += BN_LANES) {
            for (int l = 0; l < BN_LANES; l++) {
                float gi = gg[j + l];
                float gm = yr ? (yr[j + l] > 0 ? gi : 0.0f) : gi;
                if (gro) gro[j + l] = gm;
                f1[l] += gm;
                f2[l] += gm * (xr[j + l] - m);
            }
            if ((j & 1023) == 1024 - BN_LANES) {
                for (int l = 0; l < BN_LANES; l++) {
                    a1[l] += f1[l];
                    a2[l] += f2[l];
                    f1[l] = f2[l] = 0;
                }
            }
        }
        for (int l = 0; l < BN_LANES; l++) {
            a1[l] += f1[l];
            a2[l] += f2[l];
        }
        for (; j < inner; j++) {
            float gi = gg[j];
            float gm = yr ? (yr[j] > 0 ? gi : 0.0f) : gi;
            if (gro) gro[j] = gm;
            a1[0] += gm;
            a2[0] += (double)gm * (xr[j] - m);
        }
    }
}

/* gx over rows [row0, row0 + rows): training gx = k0 (gm - mg - (x - m) s
 * mgx), eval gx = k0 gm (coefficients per channel), gm as above; gr (if
 * given) gets gm; gx NULL: only gr. */
typedef struct {
    const float *k0, *m, *s, *mg, *mgx;
} bn_gcoef;

ML_SIMD_CLONES
static void bn_rows_grad_x(const float *x, const float *g, const float *y, float *gx, float *gr, int64_t rows,
                           int64_t row0, int64_t C, int64_t inner, bool training, const bn_gcoef *cf) {
    for (int64_t k = 0; k < rows; k++) {
        int64_t c = (row0 + k) % C;
        const float *gg = g + k * inner, *yr = y ? y + k * inner : NULL, *xr = x + k * inner;
        float *o = gx ? gx + k * inner : NULL, *gro = gr ? gr + k * inner : NULL;
        const float k0 = cf->k0[c];
        if (!o) {
            if (gro)
                for (int64_t i = 0; i < inner; i++) {
                    float gi = gg[i];
                    gro[i] = yr ? (yr[i] > 0 ? gi : 0.0f) : gi;
                }
            continue;
        }
        if (training) {
            const float m = cf->m[c], s = cf->s[c], mg = cf->mg[c], mgx = cf->mgx[c];
            if (yr)
                for (int64_t i = 0; i < inner; i++) {
                    float gi = gg[i], gm = yr[i] > 0 ? gi : 0.0f;
                    o[i] = k0 * (gm - mg - (xr[i] - m) * s * mgx);
                }
            else
                for (int64_t i = 0; i < inner; i++) o[i] = k0 * (gg[i] - mg - (xr[i] - m) * s * mgx);
        } else if (yr && gro)
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

/* Rows per work item: whole rows, at least ~4096 floats. */
static int64_t bn_block(int64_t inner) { return inner >= 4096 ? 1 : 4096 / (inner ? inner : 1); }

/* Per-slice lane sums: slices x 2 x [C][BN_LANES] doubles, zeroed. The rows
 * are cut into fixed slices, one per thread, and the slices' sums are added
 * in slice order (parallel.h), so the statistics do not depend on timing. */
static double *bn_partials(int slices, int64_t C, size_t *bytes) {
    *bytes = sizeof(double) * 2 * (size_t)slices * (size_t)C * BN_LANES;
    double *p = ml_alloc(*bytes);
    if (p) memset(p, 0, *bytes);
    return p;
}

/* The totals per channel of the per-slice lane sums, in slice order. */
static void bn_totals(const double *p, int slices, int64_t C, double *t1, double *t2) {
    for (int64_t c = 0; c < C; c++) {
        double s1 = 0, s2 = 0;
        for (int t = 0; t < slices; t++) {
            const double *a1 = p + ((size_t)t * 2 * (size_t)C + (size_t)c) * BN_LANES;
            const double *a2 = a1 + (size_t)C * BN_LANES;
            for (int l = 0; l < BN_LANES; l++) {
                s1 += a1[l];
                s2 += a2[l];
            }
        }
        t1[c] = s1;
        t2[c] = s2;
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
    int64_t N = x->shape[0], C = x->shape[1], inner = n->i[1], M = N * inner, rows = N * C;
    const float *xx = ml_f32(x), *gg = ml_f32(g), *mu = ml_f32(mean), *is = ml_f32(invstd);
    const float *yy = yo ? ml_f32(yo) : NULL;
    bool want_r = n->n_in > 3 && n->needs[3];
    ml_tensor *gx = n->needs[0] ? ml_empty(ML_F32, x->ndim, x->shape) : NULL;
    ml_tensor *gw = n->n_in > 1 && n->needs[1] ? ml_empty(ML_F32, 1, &C) : NULL;
    ml_tensor *gb = n->n_in > 2 && n->needs[2] ? ml_empty(ML_F32, 1, &C) : NULL;
    ml_tensor *gr = want_r ? ml_empty(ML_F32, x->ndim, x->shape) : NULL;
    size_t cbytes = sizeof(float) * 4 * (size_t)C, pbytes = 0;
    float *coef = ml_alloc(cbytes);
    double *tot = ml_alloc(sizeof(double) * 2 * (size_t)C);
    if ((n->needs[0] && !gx) || (n->n_in > 1 && n->needs[1] && !gw) || (n->n_in > 2 && n->needs[2] && !gb) ||
        (want_r && !gr) || !coef || !tot) {
        ml_release(gx);
        ml_release(gw);
        ml_release(gb);
        ml_release(gr);
        ml_free(coef, cbytes);
        ml_free(tot, sizeof(double) * 2 * (size_t)C);
        return -1;
    }
    float *gxp = gx ? ml_f32(gx) : NULL, *grp = gr ? ml_f32(gr) : NULL;
    float *k0 = coef, *mg = coef + C, *mgx = coef + 2 * C, *ss = coef + 3 * C;
    for (int64_t c = 0; c < C; c++) {
        k0[c] = (w ? ml_f32(w)[c] : 1.0f) * is[c];
        ss[c] = is[c];
    }
    bool par = M * C >= 65536;
    int threads = par ? omp_get_max_threads() : 1;
    int64_t blk = bn_block(inner);
    /* the sums are needed for the parameters' gradients and, in training, for
     * gx; an attack in eval mode with frozen parameters needs neither */
    bool sums = gw || gb || (gx && training);
    int rc = 0;
    if (sums) {
        double *part = bn_partials(threads, C, &pbytes);
        if (!part) {
            rc = -1;
        } else {
            #pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
            for (int sl = 0; sl < threads; sl++) {
                double *d1 = part + (size_t)sl * 2 * (size_t)C * BN_LANES, *d2 = d1 + C * BN_LANES;
                int64_t r0 = ml_slice_begin(rows, threads, sl), nr = ml_slice_begin(rows, threads, sl + 1) - r0;
                bn_rows_grad_sums(xx + r0 * inner, gg + r0 * inner, yy ? yy + r0 * inner : NULL,
                                  grp ? grp + r0 * inner : NULL, nr, r0, C, inner, mu, d1, d2);
            }
            bn_totals(part, threads, C, tot, tot + C);
            ml_free(part, pbytes);
            for (int64_t c = 0; c < C; c++) {
                double sg = tot[c], sgx = tot[C + c] * is[c];
                if (gw) ml_f32(gw)[c] = (float)sgx;
                if (gb) ml_f32(gb)[c] = (float)sg;
                mg[c] = M ? (float)(sg / (double)M) : 0.0f;
                mgx[c] = M ? (float)(sgx / (double)M) : 0.0f;
            }
        }
    }
    if (rc == 0 && (gx || (gr && !sums))) {
        /* gm was stored into gr by the sums: read it from there */
        const float *gsrc = sums && grp ? grp : gg, *ysrc = sums && grp ? NULL : yy;
        float *grout = sums ? NULL : grp;
        bn_gcoef cf = {k0, mu, ss, mg, mgx};
        #pragma omp parallel for schedule(static) if (par)
        for (int64_t r0 = 0; r0 < rows; r0 += blk) {
            int64_t nr = rows - r0 < blk ? rows - r0 : blk;
            bn_rows_grad_x(xx + r0 * inner, gsrc + r0 * inner, ysrc ? ysrc + r0 * inner : NULL,
                           gxp ? gxp + r0 * inner : NULL, grout ? grout + r0 * inner : NULL, nr, r0, C, inner, training,
                           &cf);
        }
    }
    ml_free(coef, cbytes);
    ml_free(tot, sizeof(double) * 2 * (size_t)C);
    if (rc) {
        ml_release(gx);
        ml_release(gw);
        ml_release(gb);
        ml_release(gr);
        return -1;
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
    if (training && N * inner == 1)
        return ml_fail("batch_norm: training needs more than one value per channel (input %s)", ML_SHAPE_STR(x));
    if (!(eps > 0)) return ml_fail("batch_norm: eps must be positive");
    if ((rm && rm->requires_grad) || (rv && rv->requires_grad))
        return ml_fail("batch_norm: running statistics must not require grad");
    ml_tensor *xc = ml_contiguous(x), *rc = residual ? ml_contiguous(residual) : NULL;
    ml_tensor *y = xc && (!residual || rc) ? ml_empty(ML_F32, x->ndim, x->shape) : NULL;
    ml_tensor *mean = ml_empty(ML_F32, 1, &C), *invstd = ml_empty(ML_F32, 1, &C);
    size_t cbytes = sizeof(float) * 3 * (size_t)C, pbytes = 0;
    float *coef = ml_alloc(cbytes); /* a, b (y = a x + b) and the shifts K */
    int64_t M = N * inner, rows = N * C, blk = bn_block(inner);
    bool par = M * C >= 65536;
    int threads = par ? omp_get_max_threads() : 1;
    double *part = training && coef ? bn_partials(threads, C, &pbytes) : NULL;
    double *tot = training && part ? ml_alloc(sizeof(double) * 2 * (size_t)C) : NULL;
    if (!y || !mean || !invstd || !coef || (training && (!part || !tot))) {
        ml_release(xc);
        ml_release(rc);
        ml_release(y);
        ml_release(mean);
        ml_release(invstd);
        ml_free(coef, cbytes);
        ml_free(part, pbytes);
        ml_free(tot, sizeof(double) * 2 * (size_t)C);
        return NULL;
    }
    const float *xx = ml_f32(xc), *rr = rc ? ml_f32(rc) : NULL;
    float *o = ml_f32(y), *a = coef, *bsh = coef + C, *K = coef + 2 * C;
    if (training && M > 0) {
        /* the shift of each channel: the mean of its first row */
        for (int64_t c = 0; c < C; c++) {
            double s = 0;
            for (int64_t i = 0; i < inner; i++) s += xx[c * inner + i];
            K[c] = (float)(s / (double)inner);
        }
        #pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int sl = 0; sl < threads; sl++) {
            double *d1 = part + (size_t)sl * 2 * (size_t)C * BN_LANES, *d2 = d1 + C * BN_LANES;
            int64_t r0 = ml_slice_begin(rows, threads, sl), nr = ml_slice_begin(rows, threads, sl + 1) - r0;
            bn_rows_stats(xx + r0 * inner, nr, r0, C, inner, K, d1, d2);
        }
        bn_totals(part, threads, C, tot, tot + C);
    }
    for (int64_t c = 0; c < C; c++) {
        double m, var;
        if (training && M == 0) {
            /* an empty batch: no statistics, the running ones stay as they are */
            m = 0;
            var = 1;
        } else if (training) {
            double e1 = tot[c] / (double)M, e2 = tot[C + c] / (double)M, v = e2 - e1 * e1;
            m = (double)K[c] + e1;
            var = v > 0 ? v : 0;
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
    }
    #pragma omp parallel for schedule(static) if (par)
    for (int64_t r0 = 0; r0 < rows; r0 += blk) {
        int64_t nr = rows - r0 < blk ? rows - r0 : blk;
        bn_apply(xx + r0 * inner, rr ? rr + r0 * inner : NULL, o + r0 * inner, nr, r0, C, inner, a, bsh, relu);
    }
    ml_free(coef, cbytes);
    ml_free(part, pbytes);
    ml_free(tot, sizeof(double) * 2 * (size_t)C);
    if (training && M > 0) {
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
    /* rows in parallel, cut into one slice per thread; each slice sums its
     * rows' weight and bias gradients into its own buffers, added up in slice
     * order afterwards (parallel.h) */
    int threads = rows * D >= 65536 ? ml_slices(rows, 1) : 1;
    size_t part = (size_t)D * 2;
    float *parts = (gw || gb) ? ml_alloc(sizeof(float) * part * (size_t)threads) : NULL;
    if ((gw || gb) && !parts) {
        ml_release(gx);
        ml_release(gw);
        ml_release(gb);
        return -1;
    }
    if (parts) memset(parts, 0, sizeof(float) * part * (size_t)threads);
    #pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int sl = 0; sl < threads; sl++) {
        float *pw = parts ? parts + part * (size_t)sl : NULL;
        for (int64_t r = ml_slice_begin(rows, threads, sl); r < ml_slice_begin(rows, threads, sl + 1); r++)
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
