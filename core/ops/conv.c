/* conv.c -- conv2d forward and backward: the API, the checks, the autograd
 * nodes and the portable path (im2col + sgemm per sample); on a CPU with
 * AVX-512 the three passes go to the direct kernels of conv_avx512_*.c
 * (use_direct; docs/PERFORMANCE.md describes them).
 *
 * For sample n and group g, with K = (C/groups) kh kw and P = Ho Wo:
 *   forward       out[n, g] [O/g, P]  = W_g [O/g, K] x col(x[n, g]) [K, P]
 *   input grad    col(gx[n, g]) [K, P] = W_g^T x gout[n, g]; col2im adds it back
 *   weight grad   gW_g [O/g, K]       += gout[n, g] [O/g, P] x col^T
 * Samples run in parallel (OpenMP), each GEMM on one BLAS thread; each thread
 * owns its column buffer, and for the weight gradient fixed slices of samples
 * own a partial sum each (added in slice order: the same bits on any run). A 1x1
 * stride-1 unpadded convolution needs no im2col: col(x[n]) is x[n] itself.
 * ml_conv2d_affine (a convolution with a per-channel affine map and ReLU, for
 * an eval-mode BatchNorm folded in) is at the end. */
#include "conv.h"

#include <inttypes.h>
#include <omp.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "../parallel.h"
#include "conv_env.h"
#include "conv_internal.h"
#include "linalg.h"
#include "../memory.h"

typedef ml_conv_geom geom;

/* ------------------------------------------------------------ choosing the implementation */
static _Atomic int impl_mode = -1; /* ml_conv_impl, -1 until read from the environment */
static _Atomic int64_t path_counts[6];

static int conv_mode(void) {
    int m = atomic_load(&impl_mode);
    if (m < 0) {
        const char *e = ml_conv_env(ML_ENV_CONV);
        m = !e                       ? ML_CONV_AUTO
            : !strcmp(e, "im2col")   ? ML_CONV_IM2COL
            : !strcmp(e, "direct")   ? ML_CONV_DIRECT
            : !strcmp(e, "winograd") ? ML_CONV_WINOGRAD
                                     : ML_CONV_AUTO;
        atomic_store(&impl_mode, m);
    }
    return m;
}

void ml_conv_set_impl(ml_conv_impl impl) { atomic_store(&impl_mode, (int)impl); }
ml_conv_impl ml_conv_get_impl(void) { return (ml_conv_impl)conv_mode(); }

bool ml_conv_direct_available(void) {
#if defined(MOELAB_HAVE_AVX512_KERNELS) && (defined(__x86_64__) || defined(__i386__))
    static int ok = -1;
    if (ok < 0) {
        __builtin_cpu_init();
        const char *e = ml_conv_env(ML_ENV_CONV); /* "noavx512": behave as on a CPU without it */
        ok = __builtin_cpu_supports("avx512f") && !(e && !strcmp(e, "noavx512")) ? 1 : 0;
    }
    return ok == 1;
#else
    return false;
#endif
}

bool ml_conv_winograd_available(void) {
#if defined(MOELAB_HAVE_AVX2_KERNELS) && (defined(__x86_64__) || defined(__i386__))
    static int ok = -1;
    if (ok < 0) {
        __builtin_cpu_init();
        ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
    }
    return ok == 1;
#else
    return false;
#endif
}

void ml_conv_path_counts(int64_t counts[6]) {
    for (int i = 0; i < 6; i++) counts[i] = atomic_load(&path_counts[i]);
}

/* which: 0 forward, 1 input gradient, 2 weight gradient */
static bool use_direct(const geom *g, int which) {
    int m = conv_mode();
    bool d = m != ML_CONV_IM2COL && ml_conv_direct_available() && ml_conv_avx512_handles(g, which);
    atomic_fetch_add(&path_counts[(d ? 0 : 3) + which], 1);
    return d;
}

/* Where the direct AVX-512 kernels run, Winograd F(4x4,3x3) is worth it only
 * where it was measured faster (bench_ops, Zen 4, docs/PERFORMANCE.md): not on
 * images under 8x8 (one or two tiles per image: the transforms dominate), and
 * for the weight gradient only on wide layers over large images (64->64 at
 * 16x16 gains 1.15x; every W1/W2 weight gradient below that runs faster direct). */
static bool winograd_beats_direct(const geom *g, int which) {
    if (g->Ho * g->Wo < 64) return false;
    if (which == 2) return g->C >= 64 && g->O >= 64 && g->Ho * g->Wo >= 256;
    return true;
}

/* Winograd for 3x3 stride-1 convolutions, before the direct kernels are asked. */
static _Atomic int64_t winograd_counts[3];
static bool use_winograd(const geom *g, int which) {
    int m = conv_mode();
    bool w = (m == ML_CONV_AUTO || m == ML_CONV_WINOGRAD) && ml_conv_winograd_available() &&
             ml_conv_winograd_handles(g, which) &&
             (m == ML_CONV_WINOGRAD || !ml_conv_direct_available() || winograd_beats_direct(g, which));
    if (w) atomic_fetch_add(&winograd_counts[which], 1);
    return w;
}

void ml_conv_winograd_counts(int64_t counts[3]) {
    for (int i = 0; i < 3; i++) counts[i] = atomic_load(&winograd_counts[i]);
}

static int make_geom(const ml_tensor *x, const ml_tensor *w, const ml_conv_opts *o, geom *g) {
    if (x->dtype != ML_F32 || w->dtype != ML_F32) return ml_failc("conv2d: expects float32 tensors");
    if (x->ndim != 4) return ml_failc("conv2d: expected a 4-d input [N, C, H, W], got %s", ML_SHAPE_STR(x));
    if (w->ndim != 4) return ml_failc("conv2d: expected a 4-d weight [O, C/groups, kh, kw], got %s", ML_SHAPE_STR(w));
    g->sh = o && o->stride_h ? o->stride_h : 1;
    g->sw = o && o->stride_w ? o->stride_w : 1;
    g->ph = o ? o->pad_h : 0;
    g->pw = o ? o->pad_w : 0;
    g->dh = o && o->dil_h ? o->dil_h : 1;
    g->dw = o && o->dil_w ? o->dil_w : 1;
    g->groups = o && o->groups ? o->groups : 1;
    if (g->sh < 1 || g->sw < 1 || g->ph < 0 || g->pw < 0 || g->dh < 1 || g->dw < 1 || g->groups < 1)
        return ml_failc("conv2d: invalid stride %dx%d, padding %dx%d, dilation %dx%d or groups %d", g->sh, g->sw, g->ph,
                        g->pw, g->dh, g->dw, g->groups);
    g->N = x->shape[0];
    g->C = x->shape[1];
    g->H = x->shape[2];
    g->W = x->shape[3];
    g->O = w->shape[0];
    g->kh = w->shape[2];
    g->kw = w->shape[3];
    if (g->C % g->groups || g->O % g->groups)
        return ml_failc("conv2d: groups = %d must divide the input channels (%" PRId64 ") and the output channels (%" PRId64 ")",
                        g->groups, g->C, g->O);
    g->Cg = g->C / g->groups;
    g->Og = g->O / g->groups;
    if (w->shape[1] != g->Cg) {
        if (g->groups == 1)
            return ml_failc("conv2d: input has %" PRId64 " channels, weight expects %" PRId64, g->C, w->shape[1]);
        return ml_failc("conv2d: input has %" PRId64 " channels in %d groups (%" PRId64 " each), weight expects %" PRId64,
                        g->C, g->groups, g->Cg, w->shape[1]);
    }
    int64_t eh = g->dh * (g->kh - 1) + 1, ew = g->dw * (g->kw - 1) + 1;
    if (g->H + 2 * g->ph < eh || g->W + 2 * g->pw < ew)
        return ml_failc("conv2d: output would be empty (input %" PRId64 "x%" PRId64 ", kernel %" PRId64 "x%" PRId64
                        ", padding %dx%d)", g->H, g->W, g->kh, g->kw, g->ph, g->pw);
    g->Ho = (g->H + 2 * g->ph - eh) / g->sh + 1;
    g->Wo = (g->W + 2 * g->pw - ew) / g->sw + 1;
    g->K = g->Cg * g->kh * g->kw;
    g->P = g->Ho * g->Wo;
    g->direct = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 && g->pw == 0;
    return 0;
}

/* col [K, P] from one sample's group of channels x [Cg, H, W]. */
static void im2col(const geom *g, const float *x, float *col) {
    for (int64_t c = 0; c < g->Cg; c++)
        for (int64_t ki = 0; ki < g->kh; ki++)
            for (int64_t kj = 0; kj < g->kw; kj++) {
                float *row = col + ((c * g->kh + ki) * g->kw + kj) * g->P;
                const float *xc = x + c * g->H * g->W;
                for (int64_t oy = 0; oy < g->Ho; oy++) {
                    int64_t iy = oy * g->sh - g->ph + ki * g->dh;
                    float *dst = row + oy * g->Wo;
                    if (iy < 0 || iy >= g->H) {
                        memset(dst, 0, sizeof *dst * (size_t)g->Wo);
                        continue;
                    }
                    const float *src = xc + iy * g->W;
                    int64_t x0 = kj * g->dw - g->pw;
                    if (g->sw == 1) {
                        /* contiguous run with zero borders */
                        int64_t lo = x0 < 0 ? -x0 : 0, hi = g->W - x0;
                        if (hi > g->Wo) hi = g->Wo;
                        if (lo > g->Wo) lo = g->Wo;
                        for (int64_t ox = 0; ox < lo; ox++) dst[ox] = 0;
                        if (hi > lo) memcpy(dst + lo, src + x0 + lo, sizeof *dst * (size_t)(hi - lo));
                        for (int64_t ox = hi > lo ? hi : lo; ox < g->Wo; ox++) dst[ox] = 0;
                    } else {
                        for (int64_t ox = 0; ox < g->Wo; ox++) {
                            int64_t ix = ox * g->sw + x0;
                            dst[ox] = (ix >= 0 && ix < g->W) ? src[ix] : 0.0f;
                        }
                    }
                }
            }
}

/* x [Cg, H, W] += col2im(col [K, P]) */
static void col2im(const geom *g, const float *col, float *x) {
    for (int64_t c = 0; c < g->Cg; c++)
        for (int64_t ki = 0; ki < g->kh; ki++)
            for (int64_t kj = 0; kj < g->kw; kj++) {
                const float *row = col + ((c * g->kh + ki) * g->kw + kj) * g->P;
                float *xc = x + c * g->H * g->W;
                for (int64_t oy = 0; oy < g->Ho; oy++) {
                    int64_t iy = oy * g->sh - g->ph + ki * g->dh;
                    if (iy < 0 || iy >= g->H) continue;
                    const float *src = row + oy * g->Wo;
                    float *dst = xc + iy * g->W;
                    int64_t x0 = kj * g->dw - g->pw;
                    if (g->sw == 1) {
                        int64_t lo = x0 < 0 ? -x0 : 0, hi = g->W - x0;
                        if (hi > g->Wo) hi = g->Wo;
                        for (int64_t ox = lo; ox < hi; ox++) dst[ox + x0] += src[ox];
                    } else {
                        for (int64_t ox = 0; ox < g->Wo; ox++) {
                            int64_t ix = ox * g->sw + x0;
                            if (ix >= 0 && ix < g->W) dst[ix] += src[ox];
                        }
                    }
                }
            }
}

/* ------------------------------------------------------------ forward */
static int conv_forward_im2col(const geom *g, const float *x, const float *w, const float *b, float *y);

/* The forward pass on the path use_direct() chooses. */
static int conv_forward(const geom *g, const float *x, const float *w, const float *b, float *y) {
    if (use_winograd(g, 0)) {
        ml_flops_add(2 * g->N * g->O * g->K * g->P);
        return ml_conv_winograd_forward(g, x, w, b, NULL, NULL, NULL, false, y);
    }
    if (use_direct(g, 0)) {
        ml_flops_add(2 * g->N * g->O * g->K * g->P);
        return ml_conv_avx512_forward(g, x, w, b, y);
    }
    return conv_forward_im2col(g, x, w, b, y);
}

static int conv_forward_im2col(const geom *g, const float *x, const float *w, const float *b, float *y) {
    int threads = omp_get_max_threads();
    if (threads > g->N) threads = (int)(g->N > 0 ? g->N : 1);
    size_t colsz = g->direct ? 1 : sizeof(float) * (size_t)(g->K * g->P);
    float *cols = ml_alloc(colsz * (size_t)threads);
    if (!cols) return -1;
    int saved = ml_blas_single_begin();
    #pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (int64_t n = 0; n < g->N; n++) {
        if (ml_interrupt_pending()) continue;
        float *col = (float *)((char *)cols + colsz * (size_t)omp_get_thread_num());
        for (int grp = 0; grp < g->groups; grp++) {
            const float *xs = x + (n * g->C + grp * g->Cg) * g->H * g->W;
            float *ys = y + (n * g->O + grp * g->Og) * g->P;
            const float *src = xs;
            if (!g->direct) {
                im2col(g, xs, col);
                src = col;
            }
            float beta = 0.0f;
            if (b) {
                for (int64_t o = 0; o < g->Og; o++) {
                    float bv = b[grp * g->Og + o];
                    for (int64_t p = 0; p < g->P; p++) ys[o * g->P + p] = bv;
                }
                beta = 1.0f;
            }
            ml_sgemm(false, false, g->Og, g->P, g->K, 1.0f, w + grp * g->Og * g->K, g->K, src, g->P, beta, ys, g->P);
        }
    }
    ml_blas_single_end(saved);
    ml_free(cols, colsz * (size_t)threads);
    return ml_interrupted() ? -1 : 0;
}

/* ------------------------------------------------------------ backward */
/* Gradients of a convolution w.r.t. x and w for the output gradient gy
 * (contiguous [N, O, Ho, Wo]): *gxp and *gwp get new tensors (or stay NULL
 * when not needed). Returns 0 or -1 with the error set. */
static int conv_grads(const geom *gp, ml_tensor *x, ml_tensor *w, const float *gy, bool need_x, bool need_w,
                      ml_tensor **gxp, ml_tensor **gwp) {
    geom g = *gp;
    const float *xx = ml_f32(x), *ww = ml_f32(w);
    /* Winograd or the direct kernels write every element; col2im and the
     * partial sums of im2col + sgemm accumulate */
    bool wx = need_x && use_winograd(&g, 1), ww_ = need_w && use_winograd(&g, 2);
    bool dx = need_x && !wx && use_direct(&g, 1), dw = need_w && !ww_ && use_direct(&g, 2);
    bool ix = need_x && !wx && !dx, iw = need_w && !ww_ && !dw; /* left to im2col + sgemm */
    ml_tensor *gx = need_x ? (ix ? ml_zeros(ML_F32, 4, x->shape) : ml_empty(ML_F32, 4, x->shape)) : NULL;
    ml_tensor *gw = need_w ? (iw ? ml_zeros(ML_F32, 4, w->shape) : ml_empty(ML_F32, 4, w->shape)) : NULL;
    if ((need_x && !gx) || (need_w && !gw)) {
        ml_release(gx);
        ml_release(gw);
        return -1;
    }
    if (wx || dx || ww_ || dw) {
        int rc = 0;
        if (wx || dx) {
            ml_flops_add(2 * g.N * g.O * g.K * g.P);
            rc = wx ? ml_conv_winograd_input_grad(&g, gy, ww, ml_f32(gx)) : ml_conv_avx512_input_grad(&g, gy, ww, ml_f32(gx));
        }
        if ((ww_ || dw) && rc == 0) {
            ml_flops_add(2 * g.N * g.O * g.K * g.P);
            rc = ww_ ? ml_conv_winograd_weight_grad(&g, xx, gy, ml_f32(gw)) : ml_conv_avx512_weight_grad(&g, xx, gy, ml_f32(gw));
        }
        if (rc) {
            ml_release(gx);
            ml_release(gw);
            return -1;
        }
    }
    if (ix || iw) {
        /* samples in slices, each with its own partial weight gradient,
         * added up in slice order (parallel.h): the same sums whatever
         * thread takes which slice */
        int64_t slices = ml_slices(g.N, 4);
        int threads = omp_get_max_threads();
        if (threads > slices) threads = (int)slices;
        size_t colsz = sizeof(float) * (size_t)(g.K * g.P), wsz = sizeof(float) * (size_t)ml_numel(w);
        float *cols = ml_alloc(colsz * (size_t)threads);
        float *wpart = iw ? ml_alloc(wsz * (size_t)slices) : NULL;
        if (!cols || (iw && !wpart)) {
            ml_free(cols, colsz * (size_t)threads);
            ml_free(wpart, wsz * (size_t)slices);
            ml_release(gx);
            ml_release(gw);
            return -1;
        }
        if (iw) memset(wpart, 0, wsz * (size_t)slices);
        int saved = ml_blas_single_begin();
        #pragma omp parallel num_threads(threads)
        {
            float *col = (float *)((char *)cols + colsz * (size_t)omp_get_thread_num());
            #pragma omp for schedule(dynamic, 1)
            for (int64_t sl = 0; sl < slices; sl++) {
                float *gwt = iw ? (float *)((char *)wpart + wsz * (size_t)sl) : NULL;
                for (int64_t n = ml_slice_begin(g.N, slices, sl); n < ml_slice_begin(g.N, slices, sl + 1); n++) {
                    if (ml_interrupt_pending()) break;
                    for (int grp = 0; grp < g.groups; grp++) {
                        const float *gys = gy + (n * g.O + grp * g.Og) * g.P;
                        const float *wg = ww + grp * g.Og * g.K;
                        if (iw) {
                            const float *src = xx + (n * g.C + grp * g.Cg) * g.H * g.W;
                            if (!g.direct) {
                                im2col(&g, src, col);
                                src = col;
                            }
                            ml_sgemm(false, true, g.Og, g.K, g.P, 1.0f, gys, g.P, src, g.P, 1.0f, gwt + grp * g.Og * g.K,
                                     g.K);
                        }
                        if (ix) {
                            float *gxs = ml_f32(gx) + (n * g.C + grp * g.Cg) * g.H * g.W;
                            if (g.direct) {
                                ml_sgemm(true, false, g.K, g.P, g.Og, 1.0f, wg, g.K, gys, g.P, 0.0f, gxs, g.P);
                            } else {
                                ml_sgemm(true, false, g.K, g.P, g.Og, 1.0f, wg, g.K, gys, g.P, 0.0f, col, g.P);
                                col2im(&g, col, gxs);
                            }
                        }
                    }
                }
            }
        }
        ml_blas_single_end(saved);
        if (iw) {
            float *dst = ml_f32(gw);
            int64_t nw = ml_numel(w);
            for (int64_t sl = 0; sl < slices; sl++) {
                const float *src = (const float *)((char *)wpart + wsz * (size_t)sl);
                for (int64_t i = 0; i < nw; i++) dst[i] += src[i];
            }
            ml_free(wpart, wsz * (size_t)slices);
        }
        ml_free(cols, colsz * (size_t)threads);
        if (ml_interrupted()) {
            ml_release(gx);
            ml_release(gw);
            return -1;
        }
    }
    *gxp = gx;
    *gwp = gw;
    return 0;
}

static int conv_backward(ml_node *nd, ml_tensor *gout, ml_tensor **gin) {
    ml_tensor *x = ml_saved(nd, 0), *w = ml_saved(nd, 1);
    if (!x || !w) return -1;
    geom g = *(const geom *)nd->ctx;
    bool need_b = nd->n_in > 2 && nd->needs[2];
    const float *gy = ml_f32(gout);
    if (conv_grads(&g, x, w, gy, nd->needs[0], nd->needs[1], &gin[0], &gin[1])) return -1;
    if (need_b) {
        ml_tensor *gb = ml_zeros(ML_F32, 1, &g.O);
        if (!gb) return -1;
        for (int64_t n = 0; n < g.N; n++)
            for (int64_t o = 0; o < g.O; o++) {
                const float *r = gy + (n * g.O + o) * g.P;
                double s = 0;
                for (int64_t p = 0; p < g.P; p++) s += r[p];
                ml_f32(gb)[o] += (float)s;
            }
        gin[2] = gb;
    }
    return 0;
}

ml_tensor *ml_conv2d(ml_tensor *x, ml_tensor *w, ml_tensor *b, const ml_conv_opts *o) {
    geom g;
    if (make_geom(x, w, o, &g)) return NULL;
    if (b && (b->dtype != ML_F32 || b->ndim != 1 || b->shape[0] != g.O))
        return ml_fail("conv2d: bias has shape %s, expected [%" PRId64 "]", ML_SHAPE_STR(b), g.O);
    ml_tensor *xc = ml_contiguous(x), *wc = xc ? ml_contiguous(w) : NULL, *bc = b && wc ? ml_contiguous(b) : NULL;
    int64_t shape[4] = {g.N, g.O, g.Ho, g.Wo};
    ml_tensor *y = wc && (!b || bc) ? ml_empty(ML_F32, 4, shape) : NULL;
    if (y && conv_forward(&g, ml_f32(xc), ml_f32(wc), bc ? ml_f32(bc) : NULL, ml_f32(y))) {
        ml_release(y);
        y = NULL;
    }
    if (y) {
        ml_tensor *ins[3] = {x, w, b};
        ml_node *n = ml_record("conv2d", y, b ? 3 : 2, ins, conv_backward);
        if (n) {
            geom *gc = malloc(sizeof *gc);
            *gc = g;
            n->ctx = gc;
            n->ctx_free = free;
            ml_save(n, xc);
            ml_save(n, wc);
        }
    }
    ml_release(xc);
    ml_release(wc);
    ml_release(bc);
    return y;
}

/* ------------------------------------------------------------ conv2d + per-channel affine map (+ ReLU) */
/* y = act(z scale[o] + shift[o] [+ r]) with z = conv2d(x, w). Backward: with
 * m = (y > 0) for ReLU (1 otherwise), gz = gy m scale[o] goes through the
 * convolution's gradients; gr = gy m; gshift[o] = sum gy m, and gscale[o] =
 * sum gy m z (z recomputed, only when the scale needs a gradient). */
static int conv_affine_backward(ml_node *nd, ml_tensor *gout, ml_tensor **gin) {
    ml_tensor *x = ml_saved(nd, 0), *w = ml_saved(nd, 1), *y = ml_saved(nd, 2), *sc = ml_saved(nd, 3);
    if (!x || !w || !y || !sc) return -1;
    geom g = *(const geom *)nd->ctx;
    bool relu = nd->i[0], need_s = nd->needs[2], need_t = nd->needs[3];
    const float *gy = ml_f32(gout), *yy = ml_f32(y), *scale = ml_f32(sc);
    bool need_r = nd->n_in > 4 && nd->needs[4];
    ml_tensor *gz = ml_empty(ML_F32, 4, gout->shape), *gres = need_r ? ml_empty(ML_F32, 4, gout->shape) : NULL;
    float *z = NULL, *grp = gres ? ml_f32(gres) : NULL;
    size_t zsz = sizeof(float) * (size_t)ml_numel(y);
    if (!gz || (need_r && !gres)) {
        ml_release(gz);
        ml_release(gres);
        return -1;
    }
    if (need_s) {
        /* the convolution alone, again: z is not kept by the forward */
        z = ml_alloc(zsz);
        if (!z || conv_forward(&g, ml_f32(x), ml_f32(w), NULL, z)) {
            ml_free(z, zsz);
            ml_release(gz);
            ml_release(gres);
            return -1;
        }
    }
    ml_tensor *gs = need_s ? ml_zeros(ML_F32, 1, &g.O) : NULL, *gt = need_t ? ml_zeros(ML_F32, 1, &g.O) : NULL;
    float *gzp = ml_f32(gz);
    #pragma omp parallel for schedule(static) if (g.N * g.O * g.P >= 65536)
    for (int64_t no = 0; no < g.N * g.O; no++) {
        /* branch-free, so that it vectorises (the ReLU's sign is a coin flip) */
        const float *gr = gy + no * g.P, *yr = yy + no * g.P;
        float *o = gzp + no * g.P, s = scale[no % g.O], *ro = grp ? grp + no * g.P : NULL;
        if (relu && ro)
            for (int64_t p = 0; p < g.P; p++) {
                float gi = gr[p], gm = yr[p] > 0 ? gi : 0.0f;
                ro[p] = gm;
                o[p] = gm * s;
            }
        else if (relu)
            for (int64_t p = 0; p < g.P; p++) {
                float gi = gr[p];
                o[p] = (yr[p] > 0 ? gi : 0.0f) * s;
            }
        else {
            for (int64_t p = 0; p < g.P; p++) o[p] = gr[p] * s;
            if (ro) memcpy(ro, gr, sizeof(float) * (size_t)g.P);
        }
    }
    if (gs || gt) {
        /* the parameters' sums, only when they are needed (not in an attack) */
        #pragma omp parallel for schedule(static) if (g.N * g.O * g.P >= 65536)
        for (int64_t o = 0; o < g.O; o++) {
            double st = 0, ss = 0;
            for (int64_t n = 0; n < g.N; n++) {
                int64_t base = (n * g.O + o) * g.P;
                for (int64_t p = 0; p < g.P; p++) {
                    float gm = relu && !(yy[base + p] > 0) ? 0.0f : gy[base + p];
                    st += gm;
                    if (z) ss += (double)gm * z[base + p];
                }
            }
            if (gt) ml_f32(gt)[o] = (float)st;
            if (gs) ml_f32(gs)[o] = (float)ss;
        }
    }
    ml_free(z, zsz);
    int rc = conv_grads(&g, x, w, gzp, nd->needs[0], nd->needs[1], &gin[0], &gin[1]);
    ml_release(gz);
    if (rc) {
        ml_release(gs);
        ml_release(gt);
        ml_release(gres);
        return -1;
    }
    gin[2] = gs;
    gin[3] = gt;
    if (nd->n_in > 4) gin[4] = gres;
    return 0;
}

static int check_channel_vec(const char *what, const ml_tensor *t, int64_t O) {
    if (t->dtype != ML_F32 || t->ndim != 1 || t->shape[0] != O)
        return ml_failc("conv2d_affine: %s has shape %s, expected [%" PRId64 "] (one per output channel)", what,
                        ML_SHAPE_STR(t), O);
    return 0;
}

ml_tensor *ml_conv2d_affine(ml_tensor *x, ml_tensor *w, ml_tensor *scale, ml_tensor *shift, bool relu,
                            const ml_conv_opts *o) {
    return ml_conv2d_affine_residual(x, w, scale, shift, NULL, relu, o);
}

ml_tensor *ml_conv2d_affine_residual(ml_tensor *x, ml_tensor *w, ml_tensor *scale, ml_tensor *shift,
                                     ml_tensor *residual, bool relu, const ml_conv_opts *o) {
    geom g;
    if (!scale || !shift) return ml_fail("conv2d_affine: scale and shift are required");
    if (make_geom(x, w, o, &g) || check_channel_vec("scale", scale, g.O) || check_channel_vec("shift", shift, g.O))
        return NULL;
    int64_t shape[4] = {g.N, g.O, g.Ho, g.Wo};
    if (residual) {
        bool same = residual->dtype == ML_F32 && residual->ndim == 4;
        for (int d = 0; same && d < 4; d++) same = residual->shape[d] == shape[d];
        if (!same)
            return ml_fail("conv2d_affine: the residual has shape %s, expected the output's [%" PRId64 ", %" PRId64
                           ", %" PRId64 ", %" PRId64 "]", ML_SHAPE_STR(residual), g.N, g.O, g.Ho, g.Wo);
    }
    ml_tensor *xc = ml_contiguous(x), *wc = xc ? ml_contiguous(w) : NULL;
    ml_tensor *sc = wc ? ml_contiguous(scale) : NULL, *tc = sc ? ml_contiguous(shift) : NULL;
    ml_tensor *rc_t = tc && residual ? ml_contiguous(residual) : NULL;
    ml_tensor *y = tc && (!residual || rc_t) ? ml_empty(ML_F32, 4, shape) : NULL;
    if (y) {
        int rc;
        const float *s = ml_f32(sc), *t = ml_f32(tc), *res = rc_t ? ml_f32(rc_t) : NULL;
        if (use_winograd(&g, 0)) {
            ml_flops_add(2 * g.N * g.O * g.K * g.P);
            rc = ml_conv_winograd_forward(&g, ml_f32(xc), ml_f32(wc), NULL, s, t, res, relu, ml_f32(y));
        } else if (use_direct(&g, 0)) {
            ml_flops_add(2 * g.N * g.O * g.K * g.P);
            rc = ml_conv_avx512_forward_affine(&g, ml_f32(xc), ml_f32(wc), NULL, s, t, res, relu, ml_f32(y));
        } else {
            rc = conv_forward_im2col(&g, ml_f32(xc), ml_f32(wc), NULL, ml_f32(y));
            float *yp = ml_f32(y);
            #pragma omp parallel for schedule(static) if (g.N * g.O * g.P >= 65536)
            for (int64_t no = 0; no < g.N * g.O; no++) {
                float a = s[no % g.O], b = t[no % g.O];
                float *r = yp + no * g.P;
                const float *rr = res ? res + no * g.P : NULL;
                for (int64_t p = 0; p < g.P; p++) {
                    float v = r[p] * a + b;
                    if (rr) v += rr[p];
                    r[p] = relu && !(v > 0) ? 0.0f : v;
                }
            }
        }
        if (rc) {
            ml_release(y);
            y = NULL;
        }
    }
    if (y) {
        ml_tensor *ins[5] = {x, w, scale, shift, residual};
        ml_node *n = ml_record("conv2d_affine", y, residual ? 5 : 4, ins, conv_affine_backward);
        if (n) {
            geom *gc = malloc(sizeof *gc);
            *gc = g;
            n->ctx = gc;
            n->ctx_free = free;
            n->i[0] = relu;
            ml_save(n, xc);
            ml_save(n, wc);
            ml_save(n, y);
            ml_save(n, sc);
        }
    }
    ml_release(xc);
    ml_release(wc);
    ml_release(sc);
    ml_release(tc);
    ml_release(rc_t);
    return y;
}
