/* pool.c -- max / average / global average pooling, parallel over N*C planes. */
#include "pool.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "../autograd.h"
#include "vmath.h"

typedef struct {
    int64_t N, C, H, W, Ho, Wo;
    int kh, kw, sh, sw, ph, pw;
} pgeom;

static int pool_geom(const char *fn, const ml_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw, pgeom *g) {
    if (x->dtype != ML_F32 || x->ndim != 4)
        return ml_failc("%s: expected a float32 input [N, C, H, W], got %s", fn, ML_SHAPE_STR(x));
    if (kh < 1 || kw < 1 || sh < 1 || sw < 1 || ph < 0 || pw < 0)
        return ml_failc("%s: invalid kernel %dx%d, stride %dx%d or padding %dx%d", fn, kh, kw, sh, sw, ph, pw);
    if (2 * ph > kh || 2 * pw > kw)
        return ml_failc("%s: padding %dx%d must be at most half the kernel %dx%d", fn, ph, pw, kh, kw);
    *g = (pgeom){x->shape[0], x->shape[1], x->shape[2], x->shape[3], 0, 0, kh, kw, sh, sw, ph, pw};
    if (g->H + 2 * ph < kh || g->W + 2 * pw < kw)
        return ml_failc("%s: kernel %dx%d is larger than the padded input %" PRId64 "x%" PRId64, fn, kh, kw,
                        g->H + 2 * ph, g->W + 2 * pw);
    g->Ho = (g->H + 2 * ph - kh) / sh + 1;
    g->Wo = (g->W + 2 * pw - kw) / sw + 1;
    return 0;
}

/* ------------------------------------------------------------ max */
static int max_backward(ml_node *n, ml_tensor *gout, ml_tensor **gin) {
    ml_tensor *arg = ml_saved(n, 0);
    if (!arg) return -1;
    ml_tensor *x = n->in[0];
    ml_tensor *gx = ml_zeros(ML_F32, 4, x->shape);
    if (!gx) return -1;
    int64_t planes = x->shape[0] * x->shape[1], HW = x->shape[2] * x->shape[3], P = ml_numel(arg) / (planes ? planes : 1);
    const int64_t *a = ml_i64(arg);
    const float *g = ml_f32(gout);
    #pragma omp parallel for schedule(static) if (planes * HW >= 65536)
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t p = 0; p < P; p++) ml_f32(gx)[pl * HW + a[pl * P + p]] += g[pl * P + p];
    gin[0] = gx;
    return 0;
}

ml_tensor *ml_max_pool2d(ml_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw) {
    pgeom g;
    if (pool_geom("max_pool2d", x, kh, kw, sh, sw, ph, pw, &g)) return NULL;
    ml_tensor *xc = ml_contiguous(x);
    int64_t shape[4] = {g.N, g.C, g.Ho, g.Wo};
    ml_tensor *y = xc ? ml_empty(ML_F32, 4, shape) : NULL, *arg = y ? ml_empty(ML_I64, 4, shape) : NULL;
    if (!arg) {
        ml_release(xc);
        ml_release(y);
        return NULL;
    }
    int64_t planes = g.N * g.C;
    #pragma omp parallel for schedule(static) if (planes * g.H * g.W >= 65536)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = ml_f32(xc) + pl * g.H * g.W;
        float *yp = ml_f32(y) + pl * g.Ho * g.Wo;
        int64_t *ap = ml_i64(arg) + pl * g.Ho * g.Wo;
        for (int64_t oy = 0; oy < g.Ho; oy++)
            for (int64_t ox = 0; ox < g.Wo; ox++) {
                float best = -INFINITY;
                int64_t bi = -1;
                for (int ki = 0; ki < g.kh; ki++) {
                    int64_t iy = oy * g.sh - g.ph + ki;
                    if (iy < 0 || iy >= g.H) continue;
                    for (int kj = 0; kj < g.kw; kj++) {
                        int64_t ix = ox * g.sw - g.pw + kj;
                        if (ix < 0 || ix >= g.W) continue;
                        float v = xp[iy * g.W + ix];
                        if (bi < 0 || v > best || isnan(v)) {
                            best = v;
                            bi = iy * g.W + ix;
                        }
                    }
                }
                yp[oy * g.Wo + ox] = best;
                ap[oy * g.Wo + ox] = bi;
            }
    }
    ml_node *n = ml_record("max_pool2d", y, 1, &x, max_backward);
    if (n) ml_save(n, arg);
    ml_release(arg);
    ml_release(xc);
    return y;
}

/* ------------------------------------------------------------ average */
/* The divisor counts padded positions but not those past the padded border. */
static int64_t avg_count(const pgeom *g, int64_t oy, int64_t ox) {
    int64_t y0 = oy * g->sh - g->ph, x0 = ox * g->sw - g->pw;
    int64_t y1 = y0 + g->kh, x1 = x0 + g->kw;
    if (y1 > g->H + g->ph) y1 = g->H + g->ph;
    if (x1 > g->W + g->pw) x1 = g->W + g->pw;
    return (y1 - y0) * (x1 - x0);
}

static int avg_backward(ml_node *n, ml_tensor *gout, ml_tensor **gin) {
    const pgeom *g = n->ctx;
    ml_tensor *gx = ml_zeros(ML_F32, 4, n->in[0]->shape);
    if (!gx) return -1;
    int64_t planes = g->N * g->C;
    const float *go = ml_f32(gout);
    #pragma omp parallel for schedule(static) if (planes * g->H * g->W >= 65536)
    for (int64_t pl = 0; pl < planes; pl++) {
        float *gp = ml_f32(gx) + pl * g->H * g->W;
        for (int64_t oy = 0; oy < g->Ho; oy++)
            for (int64_t ox = 0; ox < g->Wo; ox++) {
                float v = go[(pl * g->Ho + oy) * g->Wo + ox] / (float)avg_count(g, oy, ox);
                for (int ki = 0; ki < g->kh; ki++) {
                    int64_t iy = oy * g->sh - g->ph + ki;
                    if (iy < 0 || iy >= g->H) continue;
                    for (int kj = 0; kj < g->kw; kj++) {
                        int64_t ix = ox * g->sw - g->pw + kj;
                        if (ix >= 0 && ix < g->W) gp[iy * g->W + ix] += v;
                    }
                }
            }
    }
    gin[0] = gx;
    return 0;
}

ml_tensor *ml_avg_pool2d(ml_tensor *x, int kh, int kw, int sh, int sw, int ph, int pw) {
    pgeom g;
    if (pool_geom("avg_pool2d", x, kh, kw, sh, sw, ph, pw, &g)) return NULL;
    ml_tensor *xc = ml_contiguous(x);
    int64_t shape[4] = {g.N, g.C, g.Ho, g.Wo};
    ml_tensor *y = xc ? ml_empty(ML_F32, 4, shape) : NULL;
    if (!y) {
        ml_release(xc);
        return NULL;
    }
    int64_t planes = g.N * g.C;
    #pragma omp parallel for schedule(static) if (planes * g.H * g.W >= 65536)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = ml_f32(xc) + pl * g.H * g.W;
        float *yp = ml_f32(y) + pl * g.Ho * g.Wo;
        for (int64_t oy = 0; oy < g.Ho; oy++)
            for (int64_t ox = 0; ox < g.Wo; ox++) {
                double s = 0;
                for (int ki = 0; ki < g.kh; ki++) {
                    int64_t iy = oy * g.sh - g.ph + ki;
                    if (iy < 0 || iy >= g.H) continue;
                    for (int kj = 0; kj < g.kw; kj++) {
                        int64_t ix = ox * g.sw - g.pw + kj;
                        if (ix >= 0 && ix < g.W) s += xp[iy * g.W + ix];
                    }
                }
                yp[oy * g.Wo + ox] = (float)(s / (double)avg_count(&g, oy, ox));
            }
    }
    ml_node *n = ml_record("avg_pool2d", y, 1, &x, avg_backward);
    if (n) {
        pgeom *gc = malloc(sizeof *gc);
        *gc = g;
        n->ctx = gc;
        n->ctx_free = free;
    }
    ml_release(xc);
    return y;
}

/* ------------------------------------------------------------ global average */
/* The sum of a plane in 16 float lanes (vectorised; the MoE routers pool every
 * layer's input), added up in double every 1024 elements. */
ML_SIMD_CLONES
static double plane_sum(const float *r, int64_t n) {
    float acc[16] = {0};
    double s = 0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int l = 0; l < 16; l++) acc[l] += r[i + l];
        if ((i & 1023) == 1008)
            for (int l = 0; l < 16; l++) {
                s += acc[l];
                acc[l] = 0;
            }
    }
    for (int l = 0; l < 16; l++) s += acc[l];
    for (; i < n; i++) s += r[i];
    return s;
}

static int gap_backward(ml_node *n, ml_tensor *gout, ml_tensor **gin) {
    ml_tensor *x = n->in[0];
    ml_tensor *gx = ml_empty(ML_F32, 4, x->shape);
    if (!gx) return -1;
    int64_t planes = x->shape[0] * x->shape[1], HW = x->shape[2] * x->shape[3];
    const float *g = ml_f32(gout);
    float *gp = ml_f32(gx);
    #pragma omp parallel for schedule(static) if (planes * HW >= 65536)
    for (int64_t pl = 0; pl < planes; pl++) {
        float v = g[pl] / (float)HW, *d = gp + pl * HW;
        for (int64_t i = 0; i < HW; i++) d[i] = v;
    }
    gin[0] = gx;
    return 0;
}

ml_tensor *ml_global_avg_pool2d(ml_tensor *x) {
    if (x->dtype != ML_F32 || x->ndim != 4)
        return ml_fail("global_avg_pool: expected a float32 input [N, C, H, W], got %s", ML_SHAPE_STR(x));
    if (x->shape[2] * x->shape[3] == 0) return ml_fail("global_avg_pool: empty spatial size in %s", ML_SHAPE_STR(x));
    ml_tensor *xc = ml_contiguous(x);
    int64_t shape[2] = {x->shape[0], x->shape[1]}, HW = x->shape[2] * x->shape[3];
    ml_tensor *y = xc ? ml_empty(ML_F32, 2, shape) : NULL;
    if (y) {
        int64_t planes = shape[0] * shape[1];
        const float *xp = ml_f32(xc);
        #pragma omp parallel for schedule(static) if (planes * HW >= 65536)
        for (int64_t pl = 0; pl < planes; pl++) {
            ml_f32(y)[pl] = (float)(plane_sum(xp + pl * HW, HW) / (double)HW);
        }
        ml_record("global_avg_pool", y, 1, &x, gap_backward);
    }
    ml_release(xc);
    return y;
}
