/* mlp.c -- the fused block MLP (mlp.h): GEMM tiles with a bias + activation
 * epilogue, one autograd node for all blocks. */
#include "mlp.h"

#include <inttypes.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "../memory.h"
#include "../parallel.h"
#include "act.h"
#include "linalg.h"

bool ml_mlp_act_supported(ml_unary_op act) { return act == ML_GELU || act == ML_RELU; }

/* Rows per tile: the tile's pre-activation and activation (2 x rows x H
 * floats) stay within ~256 KB of L2. */
static int64_t tile_rows(int64_t H) {
    int64_t r = 32768 / (H > 0 ? H : 1);
    r = r < 16 ? 16 : r > 512 ? 512 : r;
    return r;
}

/* pre[r] += b; out[r] = act(pre[r]) for n rows of width H. */
ML_SIMD_CLONES
static void bias_act(ml_unary_op act, int64_t n, int64_t H, float *pre, const float *b, float *out) {
    for (int64_t r = 0; r < n; r++) {
        float *p = pre + r * H, *o = out + r * H;
        if (act == ML_GELU)
            for (int64_t j = 0; j < H; j++) {
                float v = p[j] + b[j];
                p[j] = v;
                o[j] = ml_gelu_from_erf(v, ml_gelu_erf(v));
            }
        else
            for (int64_t j = 0; j < H; j++) {
                float v = p[j] + b[j];
                p[j] = v;
                o[j] = v > 0 ? v : 0.0f;
            }
    }
}

/* out = act(pre), der = act'(pre), n elements. */
ML_SIMD_CLONES
static void act_and_grad(ml_unary_op act, int64_t n, const float *pre, float *out, float *der) {
    if (act == ML_GELU)
        for (int64_t i = 0; i < n; i++) {
            float x = pre[i], e;
            der[i] = ml_gelu_grad(x, &e);
            out[i] = ml_gelu_from_erf(x, e);
        }
    else
        for (int64_t i = 0; i < n; i++) {
            float x = pre[i];
            out[i] = x > 0 ? x : 0.0f;
            der[i] = x > 0 ? 1.0f : 0.0f;
        }
}

ML_SIMD_CLONES
static void mul_inplace(int64_t n, float *a, const float *b) {
    for (int64_t i = 0; i < n; i++) a[i] *= b[i];
}

/* acc[j] (+)= sum over n rows of g[r, j] (rows added in order) */
ML_SIMD_CLONES
static void col_sums(int64_t n, int64_t w, const float *g, float *acc, bool first) {
    if (first) memset(acc, 0, sizeof(float) * (size_t)w);
    for (int64_t r = 0; r < n; r++)
        for (int64_t j = 0; j < w; j++) acc[j] += g[r * w + j];
}

ML_SIMD_CLONES
static void add_inplace(int64_t n, float *a, const float *b) {
    for (int64_t i = 0; i < n; i++) a[i] += b[i];
}

/* a . b + c . d over n and m elements, in float lanes added up in double */
ML_SIMD_CLONES
static double dot2(const float *a, const float *b, int64_t n, const float *c, const float *d, int64_t m) {
    float acc[8] = {0};
    double s = 0;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    for (; i < n; i++) s += (double)a[i] * b[i];
    for (i = 0; i + 8 <= m; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += c[i + l] * d[i + l];
    for (; i < m; i++) s += (double)c[i] * d[i];
    for (int l = 0; l < 8; l++) s += acc[l];
    return s;
}

/* rows[i] = src[ids[i]] for m rows of width w */
static void gather_rows(int64_t m, int64_t w, const float *src, const int64_t *ids, float *rows) {
    for (int64_t i = 0; i < m; i++) memcpy(rows + i * w, src + ids[i] * w, sizeof(float) * (size_t)w);
}

typedef struct {
    int E;
    int64_t A, T, D, H, O; /* assignments (rows of the blocks), rows of x, sizes */
    ml_unary_op act;
    int64_t *offset;   /* [E + 1] */
    ml_tensor **w;     /* [4 E]: contiguous w1, b1, w2, b2 of each block (retained) */
    uint32_t *version; /* [4 E]: the parameters' storage versions at the forward */
    ml_tensor *ids;    /* routed: contiguous int64 [A] (retained); NULL for plain blocks */
    int pbase;         /* the node's input index of block 0's W1: 1 (x), or 2 (x, gates) */
} mlp_ctx;

static void mlp_ctx_free(void *p) {
    mlp_ctx *c = p;
    if (!c) return;
    for (int i = 0; c->w && i < 4 * c->E; i++) ml_release(c->w[i]);
    ml_release(c->ids);
    free(c->w);
    free(c->version);
    free(c->offset);
    free(c);
}

/* Work items: tiles of rows (forward), or slices of a block (backward). */
typedef struct {
    int e;
    int64_t r0, r1; /* rows */
    float *partial; /* backward, a block's second and later slices: dW1, db1, dW2, db2 partials */
} work;

/* rows of the blocks, in tiles of `rows` (forward) */
static int64_t count_tiles(const mlp_ctx *c, int64_t rows) {
    int64_t n = 0;
    for (int e = 0; e < c->E; e++) n += (c->offset[e + 1] - c->offset[e] + rows - 1) / rows;
    return n;
}

static void release_grads(ml_tensor **gin, int n) {
    for (int i = 0; i < n; i++) {
        ml_release(gin[i]);
        gin[i] = NULL;
    }
}

static int mlp_backward(ml_node *n, ml_tensor *gout, ml_tensor **gin) {
    mlp_ctx *c = n->ctx;
    bool routed = c->ids != NULL;
    ml_tensor *x = ml_saved(n, 0), *pre_t = ml_saved(n, 1), *gates_t = routed ? ml_saved(n, 2) : NULL;
    if (!x || !pre_t || (routed && !gates_t)) return -1;
    int E = c->E, pb = c->pbase;
    for (int i = 0; i < 4 * E; i++)
        if (n->in[pb + i]->storage->version != c->version[i])
            return ml_failc("backward: a parameter used by %s was modified in place after the forward", n->op);
    int64_t A = c->A, D = c->D, H = c->H, O = c->O, rows = tile_rows(H);
    int threads = omp_get_max_threads();
    int active = 0;
    for (int e = 0; e < E; e++) active += c->offset[e + 1] > c->offset[e];
    /* slices per block: one each when there are enough blocks to share the
     * threads, else a block's tiles are cut into fixed slices (sizes and the
     * thread count only) whose weight-gradient partials add in slice order */
    int want = active >= 2 * threads ? 1 : (2 * threads + active - 1) / (active ? active : 1);
    int64_t nitems = 0, npartial = 0;
    for (int e = 0; e < E; e++) {
        int64_t t = (c->offset[e + 1] - c->offset[e] + rows - 1) / rows;
        int64_t s = t < want ? t : want;
        nitems += s;
        npartial += s > 1 ? s - 1 : 0;
    }
    bool need_x = n->needs[0], need_gate = routed && n->needs[1];
    int64_t psize = H * D + H + O * H + O;
    /* per thread: act, act', (g W2) tiles; routed: the tile's rows of x and of the gradient */
    size_t scratch = (size_t)(3 * rows * H + (routed ? rows * (D + O) : 0));
    size_t dxd_bytes = sizeof(float) * (size_t)(routed && need_x ? A * D : 0);
    work *items = malloc(sizeof *items * (size_t)(nitems ? nitems : 1));
    float *part = npartial ? ml_alloc(sizeof(float) * (size_t)(npartial * psize)) : NULL;
    float *buf = ml_alloc(sizeof(float) * scratch * (size_t)threads);
    float *dxd = dxd_bytes ? ml_alloc(dxd_bytes) : NULL; /* routed: d x[ids[a]] per assignment */
    ml_tensor *gx = need_x ? (routed ? ml_zeros : ml_empty)(ML_F32, n->in[0]->ndim, n->in[0]->shape) : NULL;
    ml_tensor *gg = need_gate ? ml_empty(ML_F32, 1, &A) : NULL;
    bool fail = !items || (npartial && !part) || !buf || (dxd_bytes && !dxd) || (need_x && !gx) || (need_gate && !gg);
    /* gradient tensors of every non-empty block's parameters that need one */
    for (int e = 0; e < E && !fail; e++) {
        if (c->offset[e + 1] == c->offset[e]) continue;
        for (int k = 0; k < 4; k++) {
            int i = pb + 4 * e + k;
            if (!n->needs[i]) continue;
            gin[i] = ml_empty(ML_F32, n->in[i]->ndim, n->in[i]->shape);
            if (!gin[i]) fail = true;
        }
    }
    int64_t k = 0, pk = 0;
    for (int e = 0; e < E && !fail; e++) {
        int64_t r0 = c->offset[e], ne = c->offset[e + 1] - r0, t = (ne + rows - 1) / rows;
        int64_t s = t < want ? t : want;
        for (int64_t j = 0; j < s; j++) {
            int64_t a = ml_slice_begin(t, s, j) * rows, b = ml_slice_begin(t, s, j + 1) * rows;
            items[k++] = (work){e, r0 + a, r0 + (b < ne ? b : ne), j > 0 ? part + (pk++) * psize : NULL};
        }
    }
    if (!fail) {
        const float *xp = ml_f32(x), *pre = ml_f32(pre_t), *g = ml_f32(gout), *gate = routed ? ml_f32(gates_t) : NULL;
        const int64_t *ids = routed ? ml_i64(c->ids) : NULL;
        float *gxp = gx ? ml_f32(gx) : NULL, *ggp = gg ? ml_f32(gg) : NULL;
        int saved = ml_blas_single_begin();
        #pragma omp parallel num_threads(threads) if (nitems > 1)
        {
            float *actb = buf + scratch * (size_t)omp_get_thread_num(), *der = actb + rows * H, *u = der + rows * H;
            float *xt = u + rows * H, *gt = xt + rows * D;
            #pragma omp for schedule(dynamic, 1)
            for (int64_t it = 0; it < nitems; it++) {
                if (ml_interrupt_pending()) continue;
                const work *wk = &items[it];
                int e = wk->e;
                const bool *need = n->needs + pb + 4 * e;
                const float *W1 = ml_f32(c->w[4 * e]), *b2 = ml_f32(c->w[4 * e + 3]), *W2 = ml_f32(c->w[4 * e + 2]);
                float *dW1 = NULL, *db1 = NULL, *dW2 = NULL, *db2 = NULL;
                if (wk->partial) {
                    dW1 = wk->partial;
                    db1 = dW1 + H * D;
                    dW2 = db1 + H;
                    db2 = dW2 + O * H;
                } else {
                    if (need[0]) dW1 = ml_f32(gin[pb + 4 * e]);
                    if (need[1]) db1 = ml_f32(gin[pb + 1 + 4 * e]);
                    if (need[2]) dW2 = ml_f32(gin[pb + 2 + 4 * e]);
                    if (need[3]) db2 = ml_f32(gin[pb + 3 + 4 * e]);
                }
                bool want_dpre = need_x || need[0] || need[1];
                for (int64_t r = wk->r0; r < wk->r1; r += rows) {
                    int64_t m = wk->r1 - r < rows ? wk->r1 - r : rows;
                    float beta = r == wk->r0 ? 0.0f : 1.0f;
                    bool first = r == wk->r0;
                    const float *gy = g + r * O, *xr = xp + r * D;
                    act_and_grad(c->act, m * H, pre + r * H, actb, der);
                    if (routed) {
                        /* the tile's output gradient: gates[a] g[ids[a]]; u = g[ids] W2 before the gates */
                        gather_rows(m, O, g, ids + r, gt);
                        gather_rows(m, D, xp, ids + r, xt);
                        xr = xt;
                        if (want_dpre || need_gate) ml_sgemm(false, false, m, H, O, 1.0f, gt, O, W2, H, 0.0f, u, H);
                        for (int64_t i = 0; i < m; i++) {
                            if (need_gate) ggp[r + i] = (float)dot2(actb + i * H, u + i * H, H, b2, gt + i * O, O);
                            float s = gate[r + i];
                            for (int64_t j = 0; j < O; j++) gt[i * O + j] *= s;
                            if (want_dpre)
                                for (int64_t j = 0; j < H; j++) u[i * H + j] *= s;
                        }
                        gy = gt;
                    } else if (want_dpre) {
                        ml_sgemm(false, false, m, H, O, 1.0f, gy, O, W2, H, 0.0f, u, H);
                    }
                    if (need[2]) ml_sgemm(true, false, O, H, m, 1.0f, gy, O, actb, H, beta, dW2, H);
                    if (need[3]) col_sums(m, O, gy, db2, first);
                    if (!want_dpre) continue;
                    mul_inplace(m * H, u, der); /* d pre */
                    if (need[0]) ml_sgemm(true, false, H, D, m, 1.0f, u, H, xr, D, beta, dW1, D);
                    if (need[1]) col_sums(m, H, u, db1, first);
                    if (need_x)
                        ml_sgemm(false, false, m, D, H, 1.0f, u, H, W1, D, 0.0f, routed ? dxd + r * D : gxp + r * D, D);
                }
            }
        }
        ml_blas_single_end(saved);
        /* slice partials, added to the first slice's gradient in slice order */
        for (int64_t it = 0; it < nitems; it++) {
            const work *wk = &items[it];
            if (!wk->partial) continue;
            int64_t len[4] = {H * D, H, O * H, O}, off = 0;
            for (int q = 0; q < 4; q++) {
                int i = pb + 4 * wk->e + q;
                if (n->needs[i]) add_inplace(len[q], ml_f32(gin[i]), wk->partial + off);
                off += len[q];
            }
        }
        /* routed: each assignment's row gradient back to its token, in assignment order */
        if (routed && gxp)
            for (int64_t a = 0; a < A; a++) add_inplace(D, gxp + ids[a] * D, dxd + a * D);
    }
    free(items);
    if (part) ml_free(part, sizeof(float) * (size_t)(npartial * psize));
    if (buf) ml_free(buf, sizeof(float) * scratch * (size_t)threads);
    if (dxd) ml_free(dxd, dxd_bytes);
    if (fail || ml_interrupted()) {
        ml_release(gx);
        ml_release(gg);
        release_grads(gin + pb, 4 * E);
        return -1;
    }
    gin[0] = gx;
    if (routed) gin[1] = gg;
    return 0;
}

static int check_param(const char *fn, const char *what, int e, const ml_tensor *t, int64_t d0, int64_t d1) {
    bool ok = t && t->dtype == ML_F32 && t->ndim == (d1 ? 2 : 1) && t->shape[0] == d0 && (!d1 || t->shape[1] == d1);
    if (ok) return 0;
    if (!t) return ml_failc("%s: %s of block %d is missing", fn, what, e + 1);
    if (d1)
        return ml_failc("%s: %s of block %d has shape %s, expected [%" PRId64 ", %" PRId64 "]", fn, what, e + 1,
                        ML_SHAPE_STR(t), d0, d1);
    return ml_failc("%s: %s of block %d has shape %s, expected [%" PRId64 "]", fn, what, e + 1, ML_SHAPE_STR(t), d0);
}

/* Gives back what a forward that stops early holds; returns NULL. */
static ml_tensor *forward_abandon(mlp_ctx *c, ml_tensor **ins, ml_tensor *xc, ml_tensor *gc, ml_tensor *y,
                                  ml_tensor *pre_t) {
    ml_release(y);
    ml_release(pre_t);
    ml_release(xc);
    ml_release(gc);
    free(ins);
    mlp_ctx_free(c);
    return NULL;
}

/* Both ops: x [T, D] (T = A for plain blocks); ids / gates for the routed one. */
static ml_tensor *run(const char *fn, ml_tensor *x, const ml_tensor *ids_in, ml_tensor *gates, int E,
                      const int64_t *offset, ml_tensor *const *w1, ml_tensor *const *b1, ml_tensor *const *w2,
                      ml_tensor *const *b2, ml_unary_op act) {
    bool routed = ids_in != NULL;
    if (!ml_mlp_act_supported(act))
        return ml_fail("%s: activation %s has no fused kernel (GELU and ReLU do)", fn, ml_unary_name(act));
    if (x->dtype != ML_F32 || x->ndim != 2)
        return ml_fail("%s: x must be a float32 [rows, features] tensor, got %s", fn, ML_SHAPE_STR(x));
    if (E < 1) return ml_fail("%s: %d blocks", fn, E);
    int64_t T = x->shape[0], D = x->shape[1], A = routed ? ids_in->shape[0] : T;
    if (routed) {
        if (ids_in->dtype != ML_I64 || ids_in->ndim != 1)
            return ml_fail("%s: ids must be a 1-d int64 tensor, got %s %s", fn, ml_dtype_name(ids_in->dtype),
                           ML_SHAPE_STR(ids_in));
        if (gates->dtype != ML_F32 || gates->ndim != 1 || gates->shape[0] != A)
            return ml_fail("%s: gates must be float32 [%" PRId64 "], got %s", fn, A, ML_SHAPE_STR(gates));
    }
    if (offset[0] != 0 || offset[E] != A)
        return ml_fail("%s: block offsets run from %" PRId64 " to %" PRId64 ", expected 0 to %" PRId64, fn, offset[0],
                       offset[E], A);
    for (int e = 0; e < E; e++)
        if (offset[e + 1] < offset[e])
            return ml_fail("%s: block %d ends (%" PRId64 ") before it starts (%" PRId64 ")", fn, e + 1, offset[e + 1],
                           offset[e]);
    if (!w1[0] || w1[0]->ndim != 2 || !w2[0] || w2[0]->ndim != 2)
        return ml_fail("%s: the weights of block 1 must be 2-d", fn);
    int64_t H = w1[0]->shape[0], O = w2[0]->shape[0];
    for (int e = 0; e < E; e++)
        if (check_param(fn, "W1", e, w1[e], H, D) || check_param(fn, "b1", e, b1[e], H, 0) ||
            check_param(fn, "W2", e, w2[e], O, H) || check_param(fn, "b2", e, b2[e], O, 0))
            return NULL;
    int64_t size;
    if (__builtin_mul_overflow(A, H, &size) || __builtin_mul_overflow(A, O, &size) || __builtin_mul_overflow(T, O, &size))
        return ml_fail("%s: %" PRId64 " rows of %" PRId64 " hidden features overflow", fn, A, H);
    ml_tensor *ids = routed ? ml_contiguous((ml_tensor *)ids_in) : NULL;
    if (routed && !ids) return NULL;
    if (routed) {
        const int64_t *id = ml_i64(ids);
        for (int64_t a = 0; a < A; a++)
            if (id[a] < 0 || id[a] >= T) {
                ml_release(ids);
                return ml_fail("%s: id %" PRId64 " at position %" PRId64 " is out of range [0, %" PRId64 ")", fn, id[a],
                               a, T);
            }
    }
    mlp_ctx *c = calloc(1, sizeof *c);
    ml_tensor *xc = ml_contiguous(x), *gc = routed ? ml_contiguous(gates) : NULL;
    int pb = routed ? 2 : 1;
    ml_tensor **ins = calloc((size_t)(pb + 4 * E), sizeof *ins);
    bool ok = c && xc && (!routed || gc) && ins;
    if (c) {
        *c = (mlp_ctx){.E = E, .A = A, .T = T, .D = D, .H = H, .O = O, .act = act, .ids = ids, .pbase = pb};
        ids = NULL;
        c->offset = malloc(sizeof *c->offset * (size_t)(E + 1));
        c->w = calloc((size_t)(4 * E), sizeof *c->w);
        c->version = calloc((size_t)(4 * E), sizeof *c->version);
        ok = ok && c->offset && c->w && c->version;
    }
    ml_release(ids);
    if (ok) memcpy(c->offset, offset, sizeof *c->offset * (size_t)(E + 1));
    for (int e = 0; ok && e < E; e++) {
        ml_tensor *const *src[4] = {w1, b1, w2, b2};
        for (int q = 0; q < 4; q++) {
            ml_tensor *t = src[q][e];
            ins[pb + 4 * e + q] = t;
            c->version[4 * e + q] = t->storage->version;
            c->w[4 * e + q] = ml_contiguous(t);
            if (!c->w[4 * e + q]) ok = false;
        }
    }
    bool record = false;
    if (ok) {
        ins[0] = x;
        if (routed) ins[1] = gates;
        for (int i = 0; i < pb + 4 * E; i++) record |= ins[i]->requires_grad;
        record = record && ml_grad_enabled();
    }
    int64_t ys[2] = {routed ? T : A, O}, ps[2] = {A, H};
    ml_tensor *y = ok ? (routed ? ml_zeros : ml_empty)(ML_F32, 2, ys) : NULL;
    ml_tensor *pre_t = y && record ? ml_empty(ML_F32, 2, ps) : NULL;
    int64_t rows = tile_rows(H);
    int threads = omp_get_max_threads();
    /* per thread: the activation tile, the pre-activation tile when not kept, the gathered rows */
    size_t scratch = (size_t)((record ? 1 : 2) * rows * H + (routed ? rows * D : 0));
    size_t yd_bytes = sizeof(float) * (size_t)(routed ? A * O : 0);
    float *buf = y && (!record || pre_t) ? ml_alloc(sizeof(float) * scratch * (size_t)threads) : NULL;
    float *yd = buf && yd_bytes ? ml_alloc(yd_bytes) : NULL; /* routed: each assignment's expert output */
    if (!buf || (yd_bytes && !yd)) {
        if (buf) ml_free(buf, sizeof(float) * scratch * (size_t)threads);
        if (ok) ml_fail("out of memory");
        return forward_abandon(c, ins, xc, gc, y, pre_t);
    }
    int64_t ntiles = count_tiles(c, rows);
    const float *xp = ml_f32(xc);
    const int64_t *id = routed ? ml_i64(c->ids) : NULL;
    float *yp = routed ? yd : ml_f32(y), *prep = pre_t ? ml_f32(pre_t) : NULL;
    int saved = ml_blas_single_begin();
    #pragma omp parallel num_threads(threads) if (ntiles > 1)
    {
        float *actb = buf + scratch * (size_t)omp_get_thread_num(), *xt = actb + rows * H;
        float *tmp = xt + (routed ? rows * D : 0);
        #pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < ntiles; it++) {
            if (ml_interrupt_pending()) continue;
            /* tile it -> (block, first row) */
            int64_t rest = it, r = 0;
            int e = 0;
            for (; e < E; e++) {
                int64_t t = (offset[e + 1] - offset[e] + rows - 1) / rows;
                if (rest < t) {
                    r = offset[e] + rest * rows;
                    break;
                }
                rest -= t;
            }
            int64_t m = offset[e + 1] - r < rows ? offset[e + 1] - r : rows;
            float *p = prep ? prep + r * H : tmp;
            const float *xr = xp + r * D;
            if (routed) {
                gather_rows(m, D, xp, id + r, xt);
                xr = xt;
            }
            ml_sgemm(false, true, m, H, D, 1.0f, xr, D, ml_f32(c->w[4 * e]), D, 0.0f, p, H);
            bias_act(act, m, H, p, ml_f32(c->w[4 * e + 1]), actb);
            const float *b2p = ml_f32(c->w[4 * e + 3]);
            for (int64_t i = 0; i < m; i++) memcpy(yp + (r + i) * O, b2p, sizeof(float) * (size_t)O);
            ml_sgemm(false, true, m, O, H, 1.0f, actb, H, ml_f32(c->w[4 * e + 2]), H, 1.0f, yp + r * O, O);
        }
    }
    ml_blas_single_end(saved);
    ml_free(buf, sizeof(float) * scratch * (size_t)threads);
    if (routed) {
        /* the weighted combine, in assignment order (a token may get several experts) */
        const float *gw = ml_f32(gc);
        float *o = ml_f32(y);
        for (int64_t a = 0; a < A; a++) {
            float s = gw[a], *dst = o + id[a] * O;
            const float *src = yd + a * O;
            for (int64_t j = 0; j < O; j++) dst[j] += s * src[j];
        }
        ml_free(yd, yd_bytes);
    }
    if (ml_interrupted()) return forward_abandon(c, ins, xc, gc, y, pre_t);
    ml_node *n = record ? ml_record(fn, y, pb + 4 * E, ins, mlp_backward) : NULL;
    if (n) {
        ml_save(n, xc);
        ml_save(n, pre_t);
        if (routed) ml_save(n, gc);
        n->ctx = c;
        n->ctx_free = mlp_ctx_free;
        c = NULL;
    }
    mlp_ctx_free(c);
    ml_release(pre_t);
    ml_release(xc);
    ml_release(gc);
    free(ins);
    return y;
}

ml_tensor *ml_mlp_blocks(ml_tensor *x, int E, const int64_t *offset, ml_tensor *const *w1, ml_tensor *const *b1,
                         ml_tensor *const *w2, ml_tensor *const *b2, ml_unary_op act) {
    return run("mlp_blocks", x, NULL, NULL, E, offset, w1, b1, w2, b2, act);
}

ml_tensor *ml_mlp_routed(ml_tensor *x, const ml_tensor *ids, ml_tensor *gates, int E, const int64_t *offset,
                         ml_tensor *const *w1, ml_tensor *const *b1, ml_tensor *const *w2, ml_tensor *const *b2,
                         ml_unary_op act) {
    return run("mlp_routed", x, ids, gates, E, offset, w1, b1, w2, b2, act);
}
