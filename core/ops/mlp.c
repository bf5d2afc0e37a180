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

typedef struct {
    int E;
    int64_t A, D, H, O;
    ml_unary_op act;
    int64_t *offset;   /* [E + 1] */
    ml_tensor **w;     /* [4 E]: contiguous w1, b1, w2, b2 of each block (retained) */
    uint32_t *version; /* [4 E]: the parameters' storage versions at the forward */
} mlp_ctx;

static void mlp_ctx_free(void *p) {
    mlp_ctx *c = p;
    if (!c) return;
    for (int i = 0; c->w && i < 4 * c->E; i++) ml_release(c->w[i]);
    free(c->w);
    free(c->version);
    free(c->offset);
    free(c);
}

/* Work items: tiles of rows (forward), or slices of a block (backward). */
typedef struct {
    int e;
    int64_t r0, r1; /* rows */
    int slice;      /* backward: slice index within its block (0 writes the gradient itself) */
    float *partial; /* backward, slice > 0: dW1, db1, dW2, db2 partials */
} work;

static int64_t count_tiles(const mlp_ctx *c, int64_t rows) {
    int64_t n = 0;
    for (int e = 0; e < c->E; e++) n += (c->offset[e + 1] - c->offset[e] + rows - 1) / rows;
    return n;
}

static int mlp_backward(ml_node *n, ml_tensor *gout, ml_tensor **gin) {
    mlp_ctx *c = n->ctx;
    ml_tensor *x = ml_saved(n, 0), *pre_t = ml_saved(n, 1);
    if (!x || !pre_t) return -1;
    for (int i = 0; i < 4 * c->E; i++)
        if (n->in[1 + i]->storage->version != c->version[i])
            return ml_failc("backward: a parameter used by mlp_blocks was modified in place after the forward");
    int E = c->E;
    int64_t D = c->D, H = c->H, O = c->O, rows = tile_rows(H);
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
    int64_t psize = H * D + H + O * H + O;
    size_t scratch = (size_t)(2 * rows * H);
    work *items = malloc(sizeof *items * (size_t)(nitems ? nitems : 1));
    float *part = npartial ? ml_alloc(sizeof(float) * (size_t)(npartial * psize)) : NULL;
    float *buf = ml_alloc(sizeof(float) * scratch * (size_t)threads);
    ml_tensor *gx = n->needs[0] ? ml_empty(ML_F32, n->in[0]->ndim, n->in[0]->shape) : NULL;
    bool fail = !items || (npartial && !part) || !buf || (n->needs[0] && !gx);
    /* gradient tensors of every non-empty block's parameters that need one */
    for (int e = 0; e < E && !fail; e++) {
        if (c->offset[e + 1] == c->offset[e]) continue;
        for (int k = 0; k < 4; k++) {
            int i = 1 + 4 * e + k;
            if (!n->needs[i]) continue;
            gin[i] = ml_empty(ML_F32, n->in[i]->ndim, n->in[i]->shape);
            if (!gin[i]) fail = true;
        }
    }
    if (fail) {
        free(items);
        if (part) ml_free(part, sizeof(float) * (size_t)(npartial * psize));
        if (buf) ml_free(buf, sizeof(float) * scratch * (size_t)threads);
        ml_release(gx);
        for (int i = 1; i <= 4 * E; i++) {
            ml_release(gin[i]);
            gin[i] = NULL;
        }
        return -1;
    }
    int64_t k = 0, pk = 0;
    for (int e = 0; e < E; e++) {
        int64_t r0 = c->offset[e], ne = c->offset[e + 1] - r0, t = (ne + rows - 1) / rows;
        int64_t s = t < want ? t : want;
        for (int64_t j = 0; j < s; j++) {
            int64_t a = ml_slice_begin(t, s, j) * rows, b = ml_slice_begin(t, s, j + 1) * rows;
            items[k++] = (work){e, r0 + a, r0 + (b < ne ? b : ne), (int)j, j > 0 ? part + (pk++) * psize : NULL};
        }
    }
    const float *xp = ml_f32(x), *pre = ml_f32(pre_t), *g = ml_f32(gout);
    float *gxp = gx ? ml_f32(gx) : NULL;
    int saved = ml_blas_single_begin();
    #pragma omp parallel num_threads(threads) if (nitems > 1)
    {
        float *actb = buf + scratch * (size_t)omp_get_thread_num(), *der = actb + rows * H;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < nitems; it++) {
            if (ml_interrupt_pending()) continue;
            const work *wk = &items[it];
            int e = wk->e;
            const bool *need = n->needs + 1 + 4 * e;
            const float *W1 = ml_f32(c->w[4 * e]), *W2 = ml_f32(c->w[4 * e + 2]);
            float *dW1 = NULL, *db1 = NULL, *dW2 = NULL, *db2 = NULL;
            if (wk->partial) {
                dW1 = wk->partial;
                db1 = dW1 + H * D;
                dW2 = db1 + H;
                db2 = dW2 + O * H;
            } else {
                if (need[0]) dW1 = ml_f32(gin[1 + 4 * e]);
                if (need[1]) db1 = ml_f32(gin[2 + 4 * e]);
                if (need[2]) dW2 = ml_f32(gin[3 + 4 * e]);
                if (need[3]) db2 = ml_f32(gin[4 + 4 * e]);
            }
            bool want_dpre = gxp || need[0] || need[1];
            for (int64_t r = wk->r0; r < wk->r1; r += rows) {
                int64_t m = wk->r1 - r < rows ? wk->r1 - r : rows;
                bool first = r == wk->r0;
                const float *gy = g + r * O;
                act_and_grad(c->act, m * H, pre + r * H, actb, der);
                if (need[2]) ml_sgemm(true, false, O, H, m, 1.0f, gy, O, actb, H, first ? 0.0f : 1.0f, dW2, H);
                if (need[3]) col_sums(m, O, gy, db2, first);
                if (!want_dpre) continue;
                /* d pre = (g W2) * act'(pre), in the activation's tile */
                ml_sgemm(false, false, m, H, O, 1.0f, gy, O, W2, H, 0.0f, actb, H);
                mul_inplace(m * H, actb, der);
                if (need[0]) ml_sgemm(true, false, H, D, m, 1.0f, actb, H, xp + r * D, D, first ? 0.0f : 1.0f, dW1, D);
                if (need[1]) col_sums(m, H, actb, db1, first);
                if (gxp) ml_sgemm(false, false, m, D, H, 1.0f, actb, H, W1, D, 0.0f, gxp + r * D, D);
            }
        }
    }
    ml_blas_single_end(saved);
    /* slice partials, added to the first slice's gradient in slice order */
    for (int64_t it = 0; it < nitems; it++) {
        const work *wk = &items[it];
        if (!wk->partial) continue;
        int e = wk->e;
        const float *p = wk->partial;
        int64_t len[4] = {H * D, H, O * H, O}, off = 0;
        for (int q = 0; q < 4; q++) {
            if (n->needs[1 + 4 * e + q]) add_inplace(len[q], ml_f32(gin[1 + 4 * e + q]), p + off);
            off += len[q];
        }
    }
    free(items);
    if (part) ml_free(part, sizeof(float) * (size_t)(npartial * psize));
    ml_free(buf, sizeof(float) * scratch * (size_t)threads);
    if (ml_interrupted()) {
        ml_release(gx);
        for (int i = 1; i <= 4 * E; i++) {
            ml_release(gin[i]);
            gin[i] = NULL;
        }
        return -1;
    }
    gin[0] = gx;
    return 0;
}

static int check_param(const char *what, int e, const ml_tensor *t, int64_t d0, int64_t d1) {
    bool ok = t && t->dtype == ML_F32 && t->ndim == (d1 ? 2 : 1) && t->shape[0] == d0 && (!d1 || t->shape[1] == d1);
    if (ok) return 0;
    if (!t) return ml_failc("mlp_blocks: %s of block %d is missing", what, e + 1);
    if (d1)
        return ml_failc("mlp_blocks: %s of block %d has shape %s, expected [%" PRId64 ", %" PRId64 "]", what, e + 1,
                        ML_SHAPE_STR(t), d0, d1);
    return ml_failc("mlp_blocks: %s of block %d has shape %s, expected [%" PRId64 "]", what, e + 1, ML_SHAPE_STR(t), d0);
}

ml_tensor *ml_mlp_blocks(ml_tensor *x, int E, const int64_t *offset, ml_tensor *const *w1, ml_tensor *const *b1,
                         ml_tensor *const *w2, ml_tensor *const *b2, ml_unary_op act) {
    if (!ml_mlp_act_supported(act))
        return ml_fail("mlp_blocks: activation %s has no fused kernel (GELU and ReLU do)", ml_unary_name(act));
    if (x->dtype != ML_F32 || x->ndim != 2) return ml_fail("mlp_blocks: x must be a float32 [rows, features] tensor, got %s", ML_SHAPE_STR(x));
    if (E < 1) return ml_fail("mlp_blocks: %d blocks", E);
    int64_t A = x->shape[0], D = x->shape[1];
    if (offset[0] != 0 || offset[E] != A)
        return ml_fail("mlp_blocks: block offsets run from %" PRId64 " to %" PRId64 ", expected 0 to %" PRId64, offset[0],
                       offset[E], A);
    for (int e = 0; e < E; e++)
        if (offset[e + 1] < offset[e])
            return ml_fail("mlp_blocks: block %d ends (%" PRId64 ") before it starts (%" PRId64 ")", e + 1, offset[e + 1],
                           offset[e]);
    if (!w1[0] || w1[0]->ndim != 2 || !w2[0] || w2[0]->ndim != 2)
        return ml_fail("mlp_blocks: the weights of block 1 must be 2-d");
    int64_t H = w1[0]->shape[0], O = w2[0]->shape[0];
    for (int e = 0; e < E; e++)
        if (check_param("W1", e, w1[e], H, D) || check_param("b1", e, b1[e], H, 0) || check_param("W2", e, w2[e], O, H) ||
            check_param("b2", e, b2[e], O, 0))
            return NULL;
    int64_t size;
    if (__builtin_mul_overflow(A, H, &size) || __builtin_mul_overflow(A, O, &size))
        return ml_fail("mlp_blocks: %" PRId64 " rows of %" PRId64 " hidden features overflow", A, H);
    mlp_ctx *c = calloc(1, sizeof *c);
    ml_tensor *xc = ml_contiguous(x);
    if (!c || !xc) {
        free(c);
        ml_release(xc);
        return c ? NULL : ml_fail("out of memory");
    }
    *c = (mlp_ctx){.E = E, .A = A, .D = D, .H = H, .O = O, .act = act};
    c->offset = malloc(sizeof *c->offset * (size_t)(E + 1));
    c->w = calloc((size_t)(4 * E), sizeof *c->w);
    c->version = calloc((size_t)(4 * E), sizeof *c->version);
    ml_tensor **ins = calloc((size_t)(1 + 4 * E), sizeof *ins);
    bool ok = c->offset && c->w && c->version && ins;
    if (ok) memcpy(c->offset, offset, sizeof *c->offset * (size_t)(E + 1));
    for (int e = 0; ok && e < E; e++) {
        ml_tensor *const *src[4] = {w1, b1, w2, b2};
        for (int q = 0; q < 4; q++) {
            ml_tensor *t = src[q][e];
            ins[1 + 4 * e + q] = t;
            c->version[4 * e + q] = t->storage->version;
            c->w[4 * e + q] = ml_contiguous(t);
            if (!c->w[4 * e + q]) ok = false;
        }
    }
    ins[0] = x;
    bool record = false;
    for (int i = 0; ok && i < 1 + 4 * E; i++) record |= ins[i]->requires_grad;
    record = record && ml_grad_enabled();
    int64_t ys[2] = {A, O}, ps[2] = {A, H};
    ml_tensor *y = ok ? ml_empty(ML_F32, 2, ys) : NULL;
    ml_tensor *pre_t = y && record ? ml_empty(ML_F32, 2, ps) : NULL;
    int64_t rows = tile_rows(H);
    int threads = omp_get_max_threads();
    size_t scratch = (size_t)((record ? 1 : 2) * rows * H);
    float *buf = y && (!record || pre_t) ? ml_alloc(sizeof(float) * scratch * (size_t)threads) : NULL;
    if (!buf) {
        if (ok && !y) ok = false;
        ml_release(y);
        ml_release(pre_t);
        ml_release(xc);
        free(ins);
        mlp_ctx_free(c);
        return ok ? ml_fail("out of memory") : NULL;
    }
    int64_t ntiles = count_tiles(c, rows);
    const float *xp = ml_f32(xc);
    float *yp = ml_f32(y), *prep = pre_t ? ml_f32(pre_t) : NULL;
    int saved = ml_blas_single_begin();
    #pragma omp parallel num_threads(threads) if (ntiles > 1)
    {
        float *actb = buf + scratch * (size_t)omp_get_thread_num(), *tmp = actb + rows * H;
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
            ml_sgemm(false, true, m, H, D, 1.0f, xp + r * D, D, ml_f32(c->w[4 * e]), D, 0.0f, p, H);
            bias_act(act, m, H, p, ml_f32(c->w[4 * e + 1]), actb);
            const float *b2p = ml_f32(c->w[4 * e + 3]);
            for (int64_t i = 0; i < m; i++) memcpy(yp + (r + i) * O, b2p, sizeof(float) * (size_t)O);
            ml_sgemm(false, true, m, O, H, 1.0f, actb, H, ml_f32(c->w[4 * e + 2]), H, 1.0f, yp + r * O, O);
        }
    }
    ml_blas_single_end(saved);
    ml_free(buf, sizeof(float) * scratch * (size_t)threads);
    if (ml_interrupted()) {
        ml_release(y);
        ml_release(pre_t);
        ml_release(xc);
        free(ins);
        mlp_ctx_free(c);
        return NULL;
    }
    ml_node *n = record ? ml_record("mlp_blocks", y, 1 + 4 * E, ins, mlp_backward) : NULL;
    if (n) {
        ml_save(n, xc);
        ml_save(n, pre_t);
        n->ctx = c;
        n->ctx_free = mlp_ctx_free;
        c = NULL;
    }
    mlp_ctx_free(c);
    ml_release(pre_t);
    ml_release(xc);
    free(ins);
    return y;
}
