/* softmax.c -- softmax / log-softmax over [outer, R, inner] views. */
#include "softmax.h"

#include <math.h>

#include "../autograd.h"
#include "vmath.h"

typedef struct {
    int64_t outer, R, inner;
} layout;

static int make_layout(const char *fn, const ml_tensor *x, int dim, layout *l, int *d) {
    if (x->dtype != ML_F32) return ml_failc("%s: expects a float32 tensor", fn);
    if (x->ndim == 0) return ml_failc("%s: expects at least one dimension", fn);
    if (ml_dim_check(fn, x, dim, d)) return -1;
    l->outer = l->inner = 1;
    for (int k = 0; k < *d; k++) l->outer *= x->shape[k];
    for (int k = *d + 1; k < x->ndim; k++) l->inner *= x->shape[k];
    l->R = x->shape[*d];
    return 0;
}

/* One contiguous row (the common case: softmax over the last dimension). Lane
 * arrays instead of scalar accumulators, so that max, exp and sum vectorise. */
#define LANES 16
ML_SIMD_CLONES
void ml_softmax_row(const float *x, float *y, int64_t R, bool log_out) {
    float mx[LANES];
    for (int l = 0; l < LANES; l++) mx[l] = -INFINITY;
    int64_t r = 0;
    for (; r + LANES <= R; r += LANES)
        for (int l = 0; l < LANES; l++) mx[l] = x[r + l] > mx[l] ? x[r + l] : mx[l];
    float m = -INFINITY;
    for (int l = 0; l < LANES; l++) m = mx[l] > m ? mx[l] : m;
    for (; r < R; r++) m = x[r] > m ? x[r] : m;
    if (isinf(m) && m < 0) m = 0; /* an all -inf row stays finite where it can */
    float sum[LANES] = {0};
    r = 0;
    if (log_out) {
        for (; r + LANES <= R; r += LANES)
            for (int l = 0; l < LANES; l++) sum[l] += ml_vexpf(x[r + l] - m);
    } else {
        for (; r + LANES <= R; r += LANES)
            for (int l = 0; l < LANES; l++) {
                float e = ml_vexpf(x[r + l] - m);
                y[r + l] = e;
                sum[l] += e;
            }
    }
    double s = 0;
    for (int l = 0; l < LANES; l++) s += sum[l];
    for (; r < R; r++) {
        float e = ml_vexpf(x[r] - m);
        if (!log_out) y[r] = e;
        s += e;
    }
    if (log_out) {
        float ls = (float)log(s) + m;
        for (r = 0; r < R; r++) y[r] = x[r] - ls;
    } else {
        float inv = (float)(1.0 / s);
        for (r = 0; r < R; r++) y[r] *= inv;
    }
}

static void forward_kernel(const float *x, float *y, const layout *l, bool log_out) {
    int64_t R = l->R, inner = l->inner;
    if (inner == 1) {
        #pragma omp parallel for schedule(static) if (l->outer * R >= 32768 && l->outer > 1)
        for (int64_t a = 0; a < l->outer; a++) ml_softmax_row(x + a * R, y + a * R, R, log_out);
        return;
    }
    #pragma omp parallel for schedule(static) if (l->outer * R * inner >= 65536 && l->outer > 1)
    for (int64_t a = 0; a < l->outer; a++)
        for (int64_t i = 0; i < inner; i++) {
            const float *xr = x + a * R * inner + i;
            float *yr = y + a * R * inner + i;
            float m = -INFINITY;
            for (int64_t r = 0; r < R; r++) m = xr[r * inner] > m ? xr[r * inner] : m;
            if (isinf(m) && m < 0) m = 0;
            double s = 0;
            for (int64_t r = 0; r < R; r++) {
                float e = ml_vexpf(xr[r * inner] - m);
                if (!log_out) yr[r * inner] = e;
                s += e;
            }
            if (log_out) {
                float ls = (float)log(s) + m;
                for (int64_t r = 0; r < R; r++) yr[r * inner] = xr[r * inner] - ls;
            } else {
                float inv = (float)(1.0 / s);
                for (int64_t r = 0; r < R; r++) yr[r * inner] *= inv;
            }
        }
}

/* Backward of one contiguous row: softmax gx = y (g - sum(g y)), log-softmax
 * gx = g - exp(y) sum(g). */
ML_SIMD_CLONES
void ml_softmax_row_backward(const float *g, const float *y, float *o, int64_t R, bool log_out) {
    float acc[LANES] = {0};
    int64_t r = 0;
    if (log_out)
        for (; r + LANES <= R; r += LANES)
            for (int l = 0; l < LANES; l++) acc[l] += g[r + l];
    else
        for (; r + LANES <= R; r += LANES)
            for (int l = 0; l < LANES; l++) acc[l] += g[r + l] * y[r + l];
    double s = 0;
    for (int l = 0; l < LANES; l++) s += acc[l];
    for (; r < R; r++) s += log_out ? (double)g[r] : (double)g[r] * y[r];
    float sf = (float)s;
    if (log_out)
        for (r = 0; r < R; r++) o[r] = g[r] - ml_vexpf(y[r]) * sf;
    else
        for (r = 0; r < R; r++) o[r] = y[r] * (g[r] - sf);
}

/* softmax: gx = y * (g - sum(g y));  log_softmax: gx = g - softmax * sum(g) */
static int backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *y = ml_saved(n, 0);
    if (!y) return -1;
    bool log_out = n->i[0];
    layout l = {n->i[1], n->i[2], n->i[3]};
    ml_tensor *gx = ml_empty(ML_F32, g->ndim, g->shape);
    if (!gx) return -1;
    const float *gg = ml_f32(g), *yy = ml_f32(y);
    float *o = ml_f32(gx);
    int64_t R = l.R, inner = l.inner;
    if (inner == 1) {
        #pragma omp parallel for schedule(static) if (l.outer * R >= 32768 && l.outer > 1)
        for (int64_t a = 0; a < l.outer; a++) ml_softmax_row_backward(gg + a * R, yy + a * R, o + a * R, R, log_out);
        gin[0] = gx;
        return 0;
    }
    #pragma omp parallel for schedule(static) if (l.outer * R * inner >= 65536 && l.outer > 1)
    for (int64_t a = 0; a < l.outer; a++)
        for (int64_t i = 0; i < inner; i++) {
            int64_t base = a * R * inner + i;
            double s = 0;
            if (log_out) {
                for (int64_t r = 0; r < R; r++) s += gg[base + r * inner];
                for (int64_t r = 0; r < R; r++)
                    o[base + r * inner] = gg[base + r * inner] - ml_vexpf(yy[base + r * inner]) * (float)s;
            } else {
                for (int64_t r = 0; r < R; r++) s += (double)gg[base + r * inner] * yy[base + r * inner];
                for (int64_t r = 0; r < R; r++)
                    o[base + r * inner] = yy[base + r * inner] * (gg[base + r * inner] - (float)s);
            }
        }
    gin[0] = gx;
    return 0;
}

static ml_tensor *softmax_impl(const char *fn, ml_tensor *x, int dim, bool log_out) {
    layout l;
    int d;
    if (make_layout(fn, x, dim, &l, &d)) return NULL;
    ml_tensor *xc = ml_contiguous(x);
    if (!xc) return NULL;
    ml_tensor *y = ml_empty(ML_F32, x->ndim, x->shape);
    if (y) {
        forward_kernel(ml_f32(xc), ml_f32(y), &l, log_out);
        ml_node *n = ml_record(fn, y, 1, &x, backward);
        if (n) {
            n->i[0] = log_out;
            n->i[1] = l.outer;
            n->i[2] = l.R;
            n->i[3] = l.inner;
            ml_save(n, y);
        }
    }
    ml_release(xc);
    return y;
}

ml_tensor *ml_softmax(ml_tensor *x, int dim) { return softmax_impl("softmax", x, dim, false); }
ml_tensor *ml_log_softmax(ml_tensor *x, int dim) { return softmax_impl("log_softmax", x, dim, true); }
