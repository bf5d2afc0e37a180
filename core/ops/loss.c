/* loss.c -- cross-entropy (fused), NLL, KL (TRADES), MSE, sigmoid cross-entropy. */
#include "loss.h"

#include <inttypes.h>
#include <math.h>

#include "../autograd.h"
#include "elementwise.h"
#include "reduce.h"
#include "shape.h"
#include "softmax.h"

static int check_labels(const char *fn, const ml_tensor *x, const ml_tensor *labels) {
    if (x->dtype != ML_F32 || x->ndim != 2)
        return ml_failc("%s: expects float32 scores [N, classes], got %s %s", fn, ml_dtype_name(x->dtype), ML_SHAPE_STR(x));
    if (labels->dtype != ML_I64)
        return ml_failc("%s: labels must be int64 (use :long()), got %s", fn, ml_dtype_name(labels->dtype));
    if (labels->ndim != 1 || labels->shape[0] != x->shape[0])
        return ml_failc("%s: %" PRId64 " examples but labels of shape %s", fn, x->shape[0], ML_SHAPE_STR(labels));
    int64_t K = x->shape[1];
    for (int64_t i = 0; i < labels->shape[0]; i++) {
        int64_t v = ml_i64(labels)[i * labels->stride[0]];
        if (v < 0 || v >= K)
            return ml_failc("%s: label %" PRId64 " of example %" PRId64 " is out of range for %" PRId64 " classes "
                            "(labels are 1..%" PRId64 ")", fn, (int64_t)((uint64_t)v + 1u), i + 1, K, K);
    }
    return 0;
}

/* ------------------------------------------------------------ cross-entropy */
static int ce_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *lp = ml_saved(n, 0), *lab = ml_saved(n, 1);
    if (!lp || !lab) return -1;
    ml_reduction red = (ml_reduction)n->i[0];
    double eps = n->f[0];
    int64_t N = lp->shape[0], K = lp->shape[1];
    ml_tensor *gx = ml_empty(ML_F32, 2, lp->shape);
    if (!gx) return -1;
    const float *L = ml_f32(lp), *gg = ml_f32(g);
    const int64_t *y = ml_i64(lab);
    float *o = ml_f32(gx);
    for (int64_t i = 0; i < N; i++) {
        float gi = red == ML_NONE ? gg[i] : red == ML_MEAN ? gg[0] / (float)N : gg[0];
        for (int64_t k = 0; k < K; k++) {
            float target = (float)(eps / (double)K) + (k == y[i] ? (float)(1.0 - eps) : 0.0f);
            o[i * K + k] = gi * (expf(L[i * K + k]) - target);
        }
    }
    gin[0] = gx;
    return 0;
}

ml_tensor *ml_cross_entropy(ml_tensor *logits, const ml_tensor *labels_in, ml_reduction red, double eps) {
    if (check_labels("cross_entropy", logits, labels_in)) return NULL;
    if (!(eps >= 0 && eps < 1)) return ml_fail("cross_entropy: label_smoothing must be in [0, 1), got %g", eps);
    int64_t N = logits->shape[0], K = logits->shape[1];
    if (red != ML_NONE && N == 0) return ml_fail("cross_entropy: no examples");
    ml_tensor *lp, *labels = ml_contiguous((ml_tensor *)labels_in);
    bool gm = ml_grad_set(false);
    lp = ml_log_softmax(logits, 1);
    ml_grad_set(gm);
    if (!lp || !labels) {
        ml_release(lp);
        ml_release(labels);
        return NULL;
    }
    ml_tensor *out = red == ML_NONE ? ml_empty(ML_F32, 1, &N) : ml_empty(ML_F32, 0, NULL);
    if (out) {
        const float *L = ml_f32(lp);
        const int64_t *y = ml_i64(labels);
        double total = 0;
        for (int64_t i = 0; i < N; i++) {
            double li = -(1.0 - eps) * L[i * K + y[i]];
            if (eps > 0) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) s += L[i * K + k];
                li -= eps * s / (double)K;
            }
            if (red == ML_NONE) ml_f32(out)[i] = (float)li;
            total += li;
        }
        if (red != ML_NONE) ml_f32(out)[0] = (float)(red == ML_MEAN ? total / (double)N : total);
        ml_node *n = ml_record("cross_entropy", out, 1, &logits, ce_backward);
        if (n) {
            n->i[0] = red;
            n->f[0] = eps;
            ml_save(n, lp);
            ml_save(n, labels);
        }
    }
    ml_release(lp);
    ml_release(labels);
    return out;
}

/* ------------------------------------------------------------ composed losses */
static ml_tensor *reduce(ml_tensor *per, ml_reduction red) {
    if (red == ML_NONE) return ml_retain(per);
    return red == ML_MEAN ? ml_mean(per, ML_ALL_DIMS, false) : ml_sum(per, ML_ALL_DIMS, false);
}

static int nll_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *lab = ml_saved(n, 0);
    if (!lab) return -1;
    ml_reduction red = (ml_reduction)n->i[0];
    int64_t N = n->in[0]->shape[0], K = n->in[0]->shape[1];
    ml_tensor *gx = ml_zeros(ML_F32, 2, n->in[0]->shape);
    if (!gx) return -1;
    const float *gg = ml_f32(g);
    for (int64_t i = 0; i < N; i++) {
        float gi = red == ML_NONE ? gg[i] : red == ML_MEAN ? gg[0] / (float)N : gg[0];
        ml_f32(gx)[i * K + ml_i64(lab)[i]] = -gi;
    }
    gin[0] = gx;
    return 0;
}

ml_tensor *ml_nll_loss(ml_tensor *lp, const ml_tensor *labels_in, ml_reduction red) {
    if (check_labels("nll_loss", lp, labels_in)) return NULL;
    int64_t N = lp->shape[0], K = lp->shape[1];
    ml_tensor *c = ml_contiguous(lp), *labels = ml_contiguous((ml_tensor *)labels_in);
    ml_tensor *out = red == ML_NONE ? ml_empty(ML_F32, 1, &N) : ml_empty(ML_F32, 0, NULL);
    if (c && labels && out) {
        double total = 0;
        for (int64_t i = 0; i < N; i++) {
            double li = -ml_f32(c)[i * K + ml_i64(labels)[i]];
            if (red == ML_NONE) ml_f32(out)[i] = (float)li;
            total += li;
        }
        if (red != ML_NONE) ml_f32(out)[0] = (float)(red == ML_MEAN ? total / (double)(N ? N : 1) : total);
        ml_node *n = ml_record("nll_loss", out, 1, &lp, nll_backward);
        if (n) {
            n->i[0] = red;
            ml_save(n, labels);
        }
    }
    ml_release(c);
    ml_release(labels);
    return out;
}

ml_tensor *ml_kl_div(ml_tensor *clean, ml_tensor *adv, ml_reduction red) {
    if (clean->ndim != 2 || !ml_same_shape(clean, adv))
        return ml_fail("kl_div: expects two logit tensors [N, classes] of the same shape, got %s and %s",
                       ML_SHAPE_STR(clean), ML_SHAPE_STR(adv));
    ml_tensor *lc = ml_log_softmax(clean, 1), *la = lc ? ml_log_softmax(adv, 1) : NULL;
    ml_tensor *p = la ? ml_exp(lc) : NULL, *d = p ? ml_sub(lc, la) : NULL, *pd = d ? ml_mul(p, d) : NULL;
    ml_tensor *per = pd ? ml_sum(pd, 1, false) : NULL, *out = per ? reduce(per, red) : NULL;
    ml_release(lc);
    ml_release(la);
    ml_release(p);
    ml_release(d);
    ml_release(pd);
    ml_release(per);
    return out;
}

ml_tensor *ml_mse(ml_tensor *a, ml_tensor *b, ml_reduction red) {
    if (!ml_same_shape(a, b)) return ml_fail("mse: shapes %s and %s differ", ML_SHAPE_STR(a), ML_SHAPE_STR(b));
    ml_tensor *d = ml_sub(a, b), *sq = d ? ml_mul(d, d) : NULL, *out = sq ? reduce(sq, red) : NULL;
    ml_release(d);
    ml_release(sq);
    return out;
}

ml_tensor *ml_bce_with_logits(ml_tensor *x, ml_tensor *t, ml_reduction red) {
    if (!ml_same_shape(x, t))
        return ml_fail("bce_with_logits: logits %s and targets %s differ in shape", ML_SHAPE_STR(x), ML_SHAPE_STR(t));
    ml_tensor *r = ml_relu(x), *xt = ml_mul(x, t), *ax = ml_abs(x);
    ml_tensor *nax = ax ? ml_neg(ax) : NULL, *e = nax ? ml_exp(nax) : NULL, *l1p = e ? ml_unary(ML_LOG1P, e) : NULL;
    ml_tensor *s1 = r && xt ? ml_sub(r, xt) : NULL, *per = s1 && l1p ? ml_add(s1, l1p) : NULL;
    ml_tensor *out = per ? reduce(per, red) : NULL;
    ml_release(r);
    ml_release(xt);
    ml_release(ax);
    ml_release(nax);
    ml_release(e);
    ml_release(l1p);
    ml_release(s1);
    ml_release(per);
    return out;
}
