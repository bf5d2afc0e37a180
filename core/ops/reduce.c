/* reduce.c -- sum, mean, var, max/min, norms, logsumexp, with backward.
 *
 * Every reduction sees its (contiguous) input as [outer, R, inner] and reduces
 * the middle axis; reducing everything is outer = inner = 1. Sums accumulate
 * in double so that long reductions stay accurate in float32. */
#include "reduce.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <string.h>

#include "../autograd.h"
#include "elementwise.h"

typedef struct {
    int64_t outer, R, inner;
    int dim; /* -1 when reducing all */
    int out_nd;
    int64_t out_shape[ML_MAX_DIMS];
} rplan;

static int plan(const char *fn, const ml_tensor *t, int dim, bool keepdim, rplan *p) {
    memset(p, 0, sizeof *p);
    if (dim == ML_ALL_DIMS || t->ndim == 0) {
        p->outer = 1;
        p->R = ml_numel(t);
        p->inner = 1;
        p->dim = -1;
        p->out_nd = keepdim ? t->ndim : 0;
        for (int d = 0; d < p->out_nd; d++) p->out_shape[d] = 1;
        return 0;
    }
    int d;
    if (ml_dim_check(fn, t, dim, &d)) return -1;
    p->dim = d;
    p->outer = 1;
    p->inner = 1;
    for (int k = 0; k < d; k++) p->outer *= t->shape[k];
    for (int k = d + 1; k < t->ndim; k++) p->inner *= t->shape[k];
    p->R = t->shape[d];
    for (int k = 0; k < t->ndim; k++) {
        if (k == d && !keepdim) continue;
        p->out_shape[p->out_nd++] = k == d ? 1 : t->shape[k];
    }
    return 0;
}

/* g (shape of the output) broadcast back to x's [outer, R, inner] layout. */
static ml_tensor *expand_grad(const ml_tensor *g, const ml_tensor *x, const rplan *p) {
    ml_tensor *gc = ml_contiguous((ml_tensor *)g);
    if (!gc) return NULL;
    ml_tensor *out = ml_empty(ML_F32, x->ndim, x->shape);
    if (out) {
        const float *gs = ml_f32(gc);
        float *o = ml_f32(out);
        for (int64_t a = 0; a < p->outer; a++)
            for (int64_t r = 0; r < p->R; r++)
                memcpy(o + (a * p->R + r) * p->inner, gs + a * p->inner, sizeof(float) * (size_t)p->inner);
    }
    ml_release(gc);
    return out;
}

static ml_tensor *as_float(ml_tensor *t) {
    return t->dtype == ML_F32 ? ml_contiguous(t) : ml_to_dtype(t, ML_F32);
}

/* ------------------------------------------------------------ sum, mean */
static void sum_kernel(const float *x, float *o, const rplan *p, double scale) {
    int64_t R = p->R, inner = p->inner;
    if (inner == 1) {
        #pragma omp parallel for schedule(static) if (p->outer * R >= 65536 && p->outer > 1)
        for (int64_t a = 0; a < p->outer; a++) {
            const float *row = x + a * R;
            double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
            int64_t r = 0;
            for (; r + 4 <= R; r += 4) {
                s0 += row[r];
                s1 += row[r + 1];
                s2 += row[r + 2];
                s3 += row[r + 3];
            }
            for (; r < R; r++) s0 += row[r];
            o[a] = (float)((s0 + s1 + s2 + s3) * scale);
        }
        return;
    }
    #pragma omp parallel for schedule(static) if (p->outer * R * inner >= 65536 && p->outer > 1)
    for (int64_t a = 0; a < p->outer; a++) {
        float *oa = o + a * inner;
        const float *xa = x + a * R * inner;
        for (int64_t i = 0; i < inner; i++) oa[i] = 0;
        for (int64_t r = 0; r < R; r++)
            for (int64_t i = 0; i < inner; i++) oa[i] += xa[r * inner + i];
        if (scale != 1.0)
            for (int64_t i = 0; i < inner; i++) oa[i] = (float)(oa[i] * scale);
    }
}

static int sum_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    rplan p;
    plan("sum", n->in[0], n->i[0], n->i[1], &p);
    ml_tensor *e = expand_grad(g, n->in[0], &p);
    if (!e) return -1;
    if (n->f[0] != 1.0) {
        float s = (float)n->f[0], *q = ml_f32(e);
        for (int64_t k = 0, N = ml_numel(e); k < N; k++) q[k] *= s;
    }
    gin[0] = e;
    return 0;
}

static ml_tensor *sum_scaled(const char *fn, ml_tensor *t, int dim, bool keepdim, bool mean) {
    rplan p;
    if (plan(fn, t, dim, keepdim, &p)) return NULL;
    if (t->dtype == ML_I64 && !mean) {
        ml_tensor *c = ml_contiguous(t), *out = c ? ml_empty(ML_I64, p.out_nd, p.out_shape) : NULL;
        if (out) {
            const int64_t *x = ml_i64(c);
            int64_t *o = ml_i64(out);
            for (int64_t a = 0; a < p.outer; a++)
                for (int64_t i = 0; i < p.inner; i++) {
                    uint64_t s = 0; /* wraps on overflow, as int64 sums do in PyTorch; signed would be undefined */
                    for (int64_t r = 0; r < p.R; r++) s += (uint64_t)x[(a * p.R + r) * p.inner + i];
                    o[a * p.inner + i] = (int64_t)s;
                }
        }
        ml_release(c);
        return out;
    }
    if (mean && p.R == 0) return ml_fail("%s: cannot average over an empty dimension", fn);
    ml_tensor *c = as_float(t);
    if (!c) return NULL;
    ml_tensor *out = ml_empty(ML_F32, p.out_nd, p.out_shape);
    double scale = mean ? 1.0 / (double)p.R : 1.0;
    if (out) {
        sum_kernel(ml_f32(c), ml_f32(out), &p, scale);
        ml_node *n = ml_record(fn, out, 1, &t, sum_backward);
        if (n) {
            n->i[0] = dim;
            n->i[1] = keepdim;
            n->f[0] = scale;
        }
    }
    ml_release(c);
    return out;
}

ml_tensor *ml_sum(ml_tensor *t, int dim, bool keepdim) { return sum_scaled("sum", t, dim, keepdim, false); }
ml_tensor *ml_mean(ml_tensor *t, int dim, bool keepdim) { return sum_scaled("mean", t, dim, keepdim, true); }

/* ------------------------------------------------------------ var, std */
static int var_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *x = ml_saved(n, 0), *m = ml_saved(n, 1);
    if (!x || !m) return -1;
    rplan p;
    plan("var", n->in[0], n->i[0], n->i[1], &p);
    ml_tensor *e = expand_grad(g, x, &p);
    if (!e) return -1;
    double denom = (double)p.R - (double)n->i[2];
    const float *xs = ml_f32(x), *ms = ml_f32(m);
    float *q = ml_f32(e);
    for (int64_t a = 0; a < p.outer; a++)
        for (int64_t r = 0; r < p.R; r++)
            for (int64_t i = 0; i < p.inner; i++) {
                int64_t k = (a * p.R + r) * p.inner + i;
                q[k] = (float)(q[k] * 2.0 * (xs[k] - ms[a * p.inner + i]) / denom);
            }
    gin[0] = e;
    return 0;
}

ml_tensor *ml_var(ml_tensor *t, int dim, bool unbiased, bool keepdim) {
    rplan p;
    if (plan("var", t, dim, keepdim, &p)) return NULL;
    if (p.R - (unbiased ? 1 : 0) <= 0)
        return ml_fail("var: %" PRId64 " element(s) along the dimension is too few%s", p.R,
                       unbiased ? " for the unbiased estimate (pass unbiased = false)" : "");
    ml_tensor *c = as_float(t);
    if (!c) return NULL;
    ml_tensor *out = ml_empty(ML_F32, p.out_nd, p.out_shape);
    int64_t mshape[2] = {p.outer, p.inner};
    ml_tensor *mean = ml_empty(ML_F32, 2, mshape);
    if (out && mean) {
        const float *x = ml_f32(c);
        float *o = ml_f32(out), *mu = ml_f32(mean);
        for (int64_t a = 0; a < p.outer; a++)
            for (int64_t i = 0; i < p.inner; i++) {
                double s = 0, ss = 0;
                for (int64_t r = 0; r < p.R; r++) s += x[(a * p.R + r) * p.inner + i];
                double m = s / (double)p.R;
                for (int64_t r = 0; r < p.R; r++) {
                    double dlt = x[(a * p.R + r) * p.inner + i] - m;
                    ss += dlt * dlt;
                }
                mu[a * p.inner + i] = (float)m;
                o[a * p.inner + i] = (float)(ss / ((double)p.R - (unbiased ? 1 : 0)));
            }
        ml_node *n = ml_record("var", out, 1, &t, var_backward);
        if (n) {
            n->i[0] = dim;
            n->i[1] = keepdim;
            n->i[2] = unbiased;
            ml_save(n, c);
            ml_save(n, mean);
        }
    } else {
        ml_release(out);
        out = NULL;
    }
    ml_release(mean);
    ml_release(c);
    return out;
}

ml_tensor *ml_std(ml_tensor *t, int dim, bool unbiased, bool keepdim) {
    ml_tensor *v = ml_var(t, dim, unbiased, keepdim);
    if (!v) return NULL;
    ml_tensor *s = ml_unary(ML_SQRT, v);
    ml_release(v);
    return s;
}

/* ------------------------------------------------------------ max, min */
static int select_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    /* gradient to the selected element: saved index (0-based along R) */
    ml_tensor *idx = ml_saved(n, 0);
    if (!idx) return -1;
    rplan p;
    plan("max", n->in[0], n->i[0], n->i[1], &p);
    ml_tensor *gc = ml_contiguous(g), *out = ml_zeros(ML_F32, n->in[0]->ndim, n->in[0]->shape);
    if (!gc || !out) {
        ml_release(gc);
        ml_release(out);
        return -1;
    }
    const float *gs = ml_f32(gc);
    const int64_t *ix = ml_i64(idx);
    float *o = ml_f32(out);
    for (int64_t a = 0; a < p.outer; a++)
        for (int64_t i = 0; i < p.inner; i++) {
            int64_t r = ix[a * p.inner + i];
            o[(a * p.R + r) * p.inner + i] += gs[a * p.inner + i];
        }
    ml_release(gc);
    gin[0] = out;
    return 0;
}

static int extreme(const char *fn, ml_tensor *t, int dim, bool keepdim, bool is_max, ml_tensor **values,
                   ml_tensor **indices) {
    if (values) *values = NULL;
    if (indices) *indices = NULL;
    rplan p;
    if (plan(fn, t, dim, keepdim, &p)) return -1;
    if (p.R == 0) return ml_failc("%s: cannot reduce an empty dimension", fn);
    ml_tensor *c = ml_contiguous(t);
    if (!c) return -1;
    ml_tensor *val = ml_empty(t->dtype, p.out_nd, p.out_shape);
    ml_tensor *idx = ml_empty(ML_I64, p.out_nd, p.out_shape);
    if (!val || !idx) {
        ml_release(c);
        ml_release(val);
        ml_release(idx);
        return -1;
    }
    int64_t *ix = ml_i64(idx);
    for (int64_t a = 0; a < p.outer; a++)
        for (int64_t i = 0; i < p.inner; i++) {
            int64_t best = 0;
            if (t->dtype == ML_F32) {
                const float *x = ml_f32(c) + a * p.R * p.inner + i;
                float bv = x[0];
                for (int64_t r = 1; r < p.R && !isnan(bv); r++) {
                    float v = x[r * p.inner];
                    if (isnan(v) || (is_max ? v > bv : v < bv)) {
                        bv = v;
                        best = r;
                    }
                }
                ml_f32(val)[a * p.inner + i] = bv;
            } else {
                const int64_t *x = ml_i64(c) + a * p.R * p.inner + i;
                int64_t bv = x[0];
                for (int64_t r = 1; r < p.R; r++) {
                    int64_t v = x[r * p.inner];
                    if (is_max ? v > bv : v < bv) {
                        bv = v;
                        best = r;
                    }
                }
                ml_i64(val)[a * p.inner + i] = bv;
            }
            ix[a * p.inner + i] = best;
        }
    if (t->dtype == ML_F32) {
        ml_node *n = ml_record(fn, val, 1, &t, select_backward);
        if (n) {
            n->i[0] = dim;
            n->i[1] = keepdim;
            ml_save(n, idx);
        }
    }
    ml_release(c);
    if (values) *values = val;
    else ml_release(val);
    if (indices) *indices = idx;
    else ml_release(idx);
    return 0;
}

int ml_max(ml_tensor *t, int dim, bool keepdim, ml_tensor **values, ml_tensor **indices) {
    return extreme("max", t, dim, keepdim, true, values, indices);
}
int ml_min(ml_tensor *t, int dim, bool keepdim, ml_tensor **values, ml_tensor **indices) {
    return extreme("min", t, dim, keepdim, false, values, indices);
}
ml_tensor *ml_argmax(ml_tensor *t, int dim, bool keepdim) {
    ml_tensor *idx;
    bool gm = ml_grad_set(false);
    int rc = extreme("argmax", t, dim, keepdim, true, NULL, &idx);
    ml_grad_set(gm);
    return rc ? NULL : idx;
}
ml_tensor *ml_argmin(ml_tensor *t, int dim, bool keepdim) {
    ml_tensor *idx;
    bool gm = ml_grad_set(false);
    int rc = extreme("argmin", t, dim, keepdim, false, NULL, &idx);
    ml_grad_set(gm);
    return rc ? NULL : idx;
}

/* ------------------------------------------------------------ norm */
static int norm_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *x = ml_saved(n, 0), *nv = ml_saved(n, 1);
    if (!x || !nv) return -1;
    double pp = n->f[0];
    rplan p;
    plan("norm", n->in[0], n->i[0], n->i[1], &p);
    ml_tensor *e = expand_grad(g, x, &p);
    if (!e) return -1;
    const float *xs = ml_f32(x), *ns = ml_f32(nv);
    float *q = ml_f32(e);
    for (int64_t a = 0; a < p.outer; a++)
        for (int64_t i = 0; i < p.inner; i++) {
            double nr = ns[a * p.inner + i];
            int64_t ties = 0;
            if (isinf(pp))
                for (int64_t r = 0; r < p.R; r++) ties += fabsf(xs[(a * p.R + r) * p.inner + i]) == (float)nr;
            for (int64_t r = 0; r < p.R; r++) {
                int64_t k = (a * p.R + r) * p.inner + i;
                double xv = xs[k], d;
                if (pp == 1.0) d = (xv > 0) - (xv < 0);
                else if (isinf(pp)) d = (fabs(xv) == nr && nr > 0) ? ((xv > 0) - (xv < 0)) / (double)ties : 0.0;
                else if (nr == 0) d = 0.0;
                else if (pp == 2.0) d = xv / nr;
                else d = xv * pow(fabs(xv), pp - 2.0) / pow(nr, pp - 1.0);
                q[k] = (float)(q[k] * d);
            }
        }
    gin[0] = e;
    return 0;
}

ml_tensor *ml_norm(ml_tensor *t, double pp, int dim, bool keepdim) {
    if (!(pp > 0)) return ml_fail("norm: p must be positive (1, 2, math.huge, ...), got %g", pp);
    rplan p;
    if (plan("norm", t, dim, keepdim, &p)) return NULL;
    ml_tensor *c = as_float(t);
    if (!c) return NULL;
    ml_tensor *out = ml_empty(ML_F32, p.out_nd, p.out_shape);
    if (out) {
        const float *x = ml_f32(c);
        float *o = ml_f32(out);
        for (int64_t a = 0; a < p.outer; a++)
            for (int64_t i = 0; i < p.inner; i++) {
                double s = 0;
                for (int64_t r = 0; r < p.R; r++) {
                    double v = fabs(x[(a * p.R + r) * p.inner + i]);
                    if (isinf(pp)) s = v > s ? v : s;
                    else if (pp == 1.0) s += v;
                    else if (pp == 2.0) s += v * v;
                    else s += pow(v, pp);
                }
                if (!isinf(pp) && pp != 1.0) s = pp == 2.0 ? sqrt(s) : pow(s, 1.0 / pp);
                o[a * p.inner + i] = (float)s;
            }
        ml_node *n = ml_record("norm", out, 1, &t, norm_backward);
        if (n) {
            n->f[0] = pp;
            n->i[0] = dim;
            n->i[1] = keepdim;
            ml_save(n, c);
            ml_save(n, out);
        }
    }
    ml_release(c);
    return out;
}

/* ------------------------------------------------------------ logsumexp */
static int lse_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *x = ml_saved(n, 0), *y = ml_saved(n, 1);
    if (!x || !y) return -1;
    rplan p;
    plan("logsumexp", n->in[0], n->i[0], n->i[1], &p);
    ml_tensor *e = expand_grad(g, x, &p);
    if (!e) return -1;
    const float *xs = ml_f32(x), *ys = ml_f32(y);
    float *q = ml_f32(e);
    for (int64_t a = 0; a < p.outer; a++)
        for (int64_t r = 0; r < p.R; r++)
            for (int64_t i = 0; i < p.inner; i++) {
                int64_t k = (a * p.R + r) * p.inner + i;
                q[k] *= expf(xs[k] - ys[a * p.inner + i]);
            }
    gin[0] = e;
    return 0;
}

ml_tensor *ml_logsumexp(ml_tensor *t, int dim, bool keepdim) {
    rplan p;
    if (plan("logsumexp", t, dim, keepdim, &p)) return NULL;
    ml_tensor *c = as_float(t);
    if (!c) return NULL;
    ml_tensor *out = ml_empty(ML_F32, p.out_nd, p.out_shape);
    if (out) {
        const float *x = ml_f32(c);
        float *o = ml_f32(out);
        for (int64_t a = 0; a < p.outer; a++)
            for (int64_t i = 0; i < p.inner; i++) {
                float m = -INFINITY;
                for (int64_t r = 0; r < p.R; r++) {
                    float v = x[(a * p.R + r) * p.inner + i];
                    if (v > m) m = v;
                }
                double s = 0;
                if (isinf(m)) {
                    o[a * p.inner + i] = m;
                    continue;
                }
                for (int64_t r = 0; r < p.R; r++) s += exp((double)x[(a * p.R + r) * p.inner + i] - m);
                o[a * p.inner + i] = (float)(m + log(s));
            }
        ml_node *n = ml_record("logsumexp", out, 1, &t, lse_backward);
        if (n) {
            n->i[0] = dim;
            n->i[1] = keepdim;
            ml_save(n, c);
            ml_save(n, out);
        }
    }
    ml_release(c);
    return out;
}
