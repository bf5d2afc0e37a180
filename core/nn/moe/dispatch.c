/* dispatch.c -- gather / combine / place-channels, the data movement of MoE layers. */
#include "dispatch.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../../autograd.h"
#include "../../iter.h"
#include "../../ops/vmath.h"

static int check_ids(const char *fn, const ml_tensor *ids, int64_t limit) {
    if (ids->dtype != ML_I64 || ids->ndim != 1)
        return ml_failc("%s: ids must be a 1-d int64 tensor, got %s %s", fn, ml_dtype_name(ids->dtype), ML_SHAPE_STR(ids));
    const int64_t *p = ml_i64(ids);
    for (int64_t a = 0; a < ids->shape[0]; a++) {
        int64_t v = p[a * ids->stride[0]];
        if (v < 0 || v >= limit)
            return ml_failc("%s: id %" PRId64 " at position %" PRId64 " is out of range [0, %" PRId64 ")", fn, v, a, limit);
    }
    return 0;
}

static int64_t row_size(const ml_tensor *x) {
    int64_t r = 1;
    for (int d = 1; d < x->ndim; d++) r *= x->shape[d];
    return r;
}

/* ------------------------------------------------------------ gather */
static int gather_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *ids = ml_saved(n, 0);
    if (!ids) return -1;
    ml_tensor *x = n->in[0];
    int64_t D = row_size(x), A = ids->shape[0], N = x->shape[0];
    const int64_t *id = ml_i64(ids);
    const float *gg = ml_f32(g);
    /* ids in increasing order (an expert's samples, as the sparse MoE
     * convolution gathers them): each row of gx is written once, in parallel,
     * and only the rows no sample came from are zeroed */
    bool increasing = true;
    for (int64_t a = 1; a < A && increasing; a++) increasing = id[a] > id[a - 1];
    ml_tensor *gx = increasing ? ml_empty(ML_F32, x->ndim, x->shape) : ml_zeros(ML_F32, x->ndim, x->shape);
    if (!gx) return -1;
    float *o = ml_f32(gx);
    if (increasing) {
        /* sample a writes its row and zeroes the rows between the previous id and its own */
        #pragma omp parallel for schedule(static) if (N * D >= 65536)
        for (int64_t a = 0; a <= A; a++) {
            int64_t from = a > 0 ? id[a - 1] + 1 : 0, to = a < A ? id[a] : N;
            memset(o + from * D, 0, sizeof(float) * (size_t)((to - from) * D));
            if (a < A) memcpy(o + id[a] * D, gg + a * D, sizeof(float) * (size_t)D);
        }
    } else {
        for (int64_t a = 0; a < A; a++) { /* serial: repeated ids must not race */
            float *dst = o + id[a] * D;
            const float *src = gg + a * D;
            for (int64_t j = 0; j < D; j++) dst[j] += src[j];
        }
    }
    gin[0] = gx;
    return 0;
}

ml_tensor *ml_moe_gather(ml_tensor *x, const ml_tensor *ids_in) {
    if (x->ndim < 1) return ml_fail("moe_gather: input must have at least one dimension");
    if (check_ids("moe_gather", ids_in, x->shape[0])) return NULL;
    ml_tensor *xc = ml_contiguous(x), *ids = ml_contiguous((ml_tensor *)ids_in);
    int64_t shape[ML_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = ids_in->shape[0];
    ml_tensor *out = xc && ids ? ml_empty(x->dtype, x->ndim, shape) : NULL;
    if (out) {
        int64_t D = row_size(x), A = shape[0];
        size_t es = ml_dtype_size(x->dtype);
        const int64_t *id = ml_i64(ids);
        const char *src = (const char *)xc->storage->data + xc->offset * (int64_t)es;
        char *dst = out->storage->data;
        #pragma omp parallel for schedule(static) if (A * D >= 65536)
        for (int64_t a = 0; a < A; a++) memcpy(dst + (size_t)(a * D) * es, src + (size_t)(id[a] * D) * es, (size_t)D * es);
        if (x->dtype == ML_F32) {
            ml_node *n = ml_record("moe_gather", out, 1, &x, gather_backward);
            if (n) ml_save(n, ids);
        }
    }
    ml_release(xc);
    ml_release(ids);
    return out;
}

/* ------------------------------------------------------------ combine */
static int combine_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *y = ml_saved(n, 0), *w = ml_saved(n, 1), *ids = ml_saved(n, 2);
    if (!y || !w || !ids) return -1;
    int64_t A = y->shape[0], D = row_size(y);
    const int64_t *id = ml_i64(ids);
    const float *gg = ml_f32(g), *yy = ml_f32(y), *ww = ml_f32(w);
    if (n->needs[0]) {
        ml_tensor *gy = ml_empty(ML_F32, y->ndim, y->shape);
        if (!gy) return -1;
        float *o = ml_f32(gy);
        #pragma omp parallel for schedule(static) if (A * D >= 65536)
        for (int64_t a = 0; a < A; a++) {
            const float *src = gg + id[a] * D;
            float s = ww[a];
            for (int64_t j = 0; j < D; j++) o[a * D + j] = s * src[j];
        }
        gin[0] = gy;
    }
    if (n->needs[1]) {
        ml_tensor *gw = ml_empty(ML_F32, 1, &A);
        if (!gw) return -1;
        float *o = ml_f32(gw);
        #pragma omp parallel for schedule(static) if (A * D >= 65536)
        for (int64_t a = 0; a < A; a++) {
            const float *src = gg + id[a] * D, *row = yy + a * D;
            double s = 0;
            for (int64_t j = 0; j < D; j++) s += (double)row[j] * src[j];
            o[a] = (float)s;
        }
        gin[1] = gw;
    }
    return 0;
}

ml_tensor *ml_moe_combine(ml_tensor *y, ml_tensor *w, const ml_tensor *ids_in, int64_t T) {
    if (y->dtype != ML_F32 || w->dtype != ML_F32) return ml_fail("moe_combine: expects float32 tensors");
    if (y->ndim < 1 || w->ndim != 1 || w->shape[0] != y->shape[0] || ids_in->ndim != 1 || ids_in->shape[0] != y->shape[0])
        return ml_fail("moe_combine: expert outputs %s, weights %s and ids %s do not match", ML_SHAPE_STR(y),
                       ML_SHAPE_STR(w), ML_SHAPE_STR(ids_in));
    if (check_ids("moe_combine", ids_in, T)) return NULL;
    ml_tensor *yc = ml_contiguous(y), *wc = ml_contiguous(w), *ids = ml_contiguous((ml_tensor *)ids_in);
    int64_t shape[ML_MAX_DIMS];
    memcpy(shape, y->shape, sizeof shape);
    shape[0] = T;
    ml_tensor *out = yc && wc && ids ? ml_zeros(ML_F32, y->ndim, shape) : NULL;
    if (out) {
        int64_t A = y->shape[0], D = row_size(y);
        const int64_t *id = ml_i64(ids);
        const float *yy = ml_f32(yc), *ww = ml_f32(wc);
        float *o = ml_f32(out);
        for (int64_t a = 0; a < A; a++) { /* serial: a token may receive several experts */
            float s = ww[a];
            float *dst = o + id[a] * D;
            const float *src = yy + a * D;
            for (int64_t j = 0; j < D; j++) dst[j] += s * src[j];
        }
        ml_node *n = ml_record("moe_combine", out, 2, (ml_tensor *[]){y, w}, combine_backward);
        if (n) {
            ml_save(n, yc);
            ml_save(n, wc);
            ml_save(n, ids);
        }
    }
    ml_release(yc);
    ml_release(wc);
    ml_release(ids);
    return out;
}

/* ------------------------------------------------------------ place channels */
typedef struct {
    int E;
    int64_t N, c, C, inner; /* channels per expert, total channels, elements per channel */
    int64_t *start;         /* first channel of each expert */
    ml_tensor **ids;        /* retained, contiguous */
} place_ctx;

static void place_ctx_free(void *p) {
    place_ctx *c = p;
    for (int e = 0; e < c->E; e++) ml_release(c->ids[e]);
    free(c->ids);
    free(c->start);
    free(c);
}

/* inputs: parts[0..E-1] (absent parts replaced by a 0-row tensor), then gates (optional) */
/* Moves an expert's blocks between its packed part [ne, blk] and their rows of
 * the placed tensor [N, row] (at offset off within a row), scaled by each
 * sample's gate: from part to placed tensor (place, the forward) or back (the
 * backward). A sample is in one expert only (the forward checks), so rows
 * never collide and each element is written by one thread. */
static void move_blocks(bool place, int64_t ne, int64_t blk, const int64_t *id, const float *gates, int64_t row,
                        int64_t off, const float *src, float *dst) {
    #pragma omp parallel for schedule(static) if (ne * blk >= 65536)
    for (int64_t i = 0; i < ne; i++) {
        float s = gates ? gates[id[i]] : 1.0f;
        int64_t placed = id[i] * row + off, packed = i * blk;
        const float *a = src + (place ? packed : placed);
        float *b = dst + (place ? placed : packed);
        for (int64_t j = 0; j < blk; j++) b[j] = s * a[j];
    }
}

static int place_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    place_ctx *c = n->ctx;
    int E = c->E;
    bool has_gates = n->n_in > E;
    ml_tensor *gates = has_gates ? ml_saved(n, 0) : NULL;
    if (has_gates && !gates) return -1;
    int64_t blk = c->c * c->inner, row = c->C * c->inner;
    const float *gg = ml_f32(g);
    ml_tensor *ggate = NULL;
    if (has_gates && n->needs[E]) {
        ggate = ml_zeros(ML_F32, 1, &c->N);
        if (!ggate) return -1;
    }
    for (int e = 0; e < E; e++) {
        ml_tensor *ids = c->ids[e];
        int64_t ne = ids->shape[0];
        if (ne == 0) continue;
        const int64_t *id = ml_i64(ids);
        int64_t off = c->start[e] * c->inner;
        ml_tensor *part = n->saved[1 + e] ? ml_saved(n, 1 + e) : NULL;
        if (n->needs[e]) {
            ml_tensor *gp = ml_empty(ML_F32, n->in[e]->ndim, n->in[e]->shape);
            if (!gp) {
                ml_release(ggate);
                return -1;
            }
            move_blocks(false, ne, blk, id, has_gates ? ml_f32(gates) : NULL, row, off, gg, ml_f32(gp));
            gin[e] = gp;
        }
        if (ggate) {
            if (!part) {
                ml_release(ggate);
                return -1;
            }
            /* the forward checked that no sample is in two experts: each
             * gate's gradient is written by one row, whatever the thread */
            float *gate_grad = ml_f32(ggate);
            const float *pv = ml_f32(part);
            #pragma omp parallel for schedule(static) if (ne * blk >= 65536)
            for (int64_t i = 0; i < ne; i++) {
                const float *src = gg + id[i] * row + off, *p = pv + i * blk;
                double s = 0;
                for (int64_t j = 0; j < blk; j++) s += (double)p[j] * src[j];
                gate_grad[id[i]] += (float)s;
            }
        }
    }
    if (ggate) gin[E] = ggate;
    return 0;
}

ml_tensor *ml_moe_place_channels(int E, ml_tensor *const *parts, ml_tensor *const *ids, ml_tensor *gates, int64_t N,
                                 int64_t C, const int64_t *start) {
    if (E < 1 || E > ML_NODE_MAX_SAVED - 1)
        return ml_fail("moe_place_channels: %d experts (at most %d supported)", E, ML_NODE_MAX_SAVED - 1);
    /* the shape of an expert's block from the first non-empty part */
    const ml_tensor *ref = NULL;
    for (int e = 0; e < E; e++)
        if (parts[e] && parts[e]->shape[0] > 0) ref = parts[e];
    if (!ref) return ml_fail("moe_place_channels: no expert received any sample");
    if (ref->ndim < 2) return ml_fail("moe_place_channels: parts must be [n, channels, ...]");
    int64_t c = ref->shape[1], inner = 1;
    for (int d = 2; d < ref->ndim; d++) inner *= ref->shape[d];
    int64_t total = 0;
    for (int e = 0; e < E; e++) {
        int64_t ne = parts[e] ? parts[e]->shape[0] : 0;
        if (parts[e] && ne > 0) {
            if (parts[e]->ndim != ref->ndim || parts[e]->shape[1] != c || row_size(parts[e]) != c * inner)
                return ml_fail("moe_place_channels: expert %d output %s does not match %s", e + 1,
                               ML_SHAPE_STR(parts[e]), ML_SHAPE_STR(ref));
        }
        if (!ids[e] || ids[e]->shape[0] != ne)
            return ml_fail("moe_place_channels: expert %d has %" PRId64 " outputs but %" PRId64 " sample ids", e + 1,
                           ne, ids[e] ? ids[e]->shape[0] : 0);
        if (check_ids("moe_place_channels", ids[e], N)) return NULL;
        total += ne;
    }
    if (gates && (gates->ndim != 1 || gates->shape[0] != N))
        return ml_fail("moe_place_channels: gates must be [%" PRId64 "], got %s", N, ML_SHAPE_STR(gates));
    if (!start) C = c * E;
    for (int e = 0; e < E; e++) {
        int64_t s0 = start ? start[e] : e * c;
        if (s0 < 0 || s0 + c > C)
            return ml_fail("moe_place_channels: expert %d's channels [%" PRId64 ", %" PRId64 ") fall outside %" PRId64,
                           e + 1, s0, s0 + c, C);
    }
    int64_t shape[ML_MAX_DIMS];
    memcpy(shape, ref->shape, sizeof shape);
    shape[0] = N;
    shape[1] = C;
    ml_tensor *out = ml_zeros(ML_F32, ref->ndim, shape);
    if (!out) return NULL;
    ml_tensor *gc = gates ? ml_contiguous(gates) : NULL;
    int64_t blk = c * inner, row = C * inner;
    place_ctx *ctx = calloc(1, sizeof *ctx);
    ml_tensor **pc = calloc((size_t)E, sizeof *pc);
    ml_tensor *empty = NULL;
    ctx->E = E;
    ctx->N = N;
    ctx->c = c;
    ctx->inner = inner;
    ctx->C = C;
    ctx->start = malloc(sizeof *ctx->start * (size_t)E);
    for (int e = 0; e < E; e++) ctx->start[e] = start ? start[e] : e * c;
    ctx->ids = calloc((size_t)E, sizeof *ctx->ids);
    char *seen = calloc((size_t)N, 1);
    int rc = 0;
    for (int e = 0; e < E && rc == 0; e++) {
        ctx->ids[e] = ml_contiguous(ids[e]);
        int64_t ne = ids[e]->shape[0];
        if (ne == 0) continue;
        pc[e] = ml_contiguous(parts[e]);
        const int64_t *id = ml_i64(ctx->ids[e]);
        for (int64_t i = 0; i < ne && rc == 0; i++)
            if (seen[id[i]]++)
                rc = ml_failc("moe_place_channels: sample %" PRId64 " is routed to more than one expert", id[i]);
        if (rc) break;
        move_blocks(true, ne, blk, id, gc ? ml_f32(gc) : NULL, row, ctx->start[e] * inner, ml_f32(pc[e]), ml_f32(out));
    }
    free(seen);
    if (rc == 0) {
        /* absent parts are represented by empty tensors so input positions stay fixed */
        ml_tensor **inputs = calloc((size_t)E + 1, sizeof *inputs);
        int64_t zshape[ML_MAX_DIMS];
        memcpy(zshape, ref->shape, sizeof zshape);
        zshape[0] = 0;
        empty = ml_empty(ML_F32, ref->ndim, zshape);
        for (int e = 0; e < E; e++) inputs[e] = parts[e] && parts[e]->shape[0] > 0 ? parts[e] : empty;
        inputs[E] = gates;
        ml_node *n = ml_record("moe_place_channels", out, gates ? E + 1 : E, inputs, place_backward);
        free(inputs);
        if (n) {
            ml_save(n, gc ? gc : out); /* slot 0: gates (slot kept even without gates) */
            for (int e = 0; e < E; e++) {
                if (pc[e]) ml_save(n, pc[e]);
                else n->saved[n->n_saved++] = NULL;
            }
            n->ctx = ctx;
            n->ctx_free = place_ctx_free;
            ctx = NULL;
        }
    }
    if (ctx) place_ctx_free(ctx);
    for (int e = 0; e < E; e++) ml_release(pc[e]);
    free(pc);
    ml_release(empty);
    ml_release(gc);
    if (rc) {
        ml_release(out);
        return NULL;
    }
    return out;
}

/* ------------------------------------------------------------ mask channels */
typedef struct {
    int64_t N, C, inner, c; /* samples, channels, elements per channel, channels per block */
    int64_t *first;         /* first channel of each sample's block */
} mask_ctx;

static void mask_ctx_free(void *p) {
    mask_ctx *m = p;
    free(m->first);
    free(m);
}

/* sum of a[i] b[i], in float lanes (vectorised) added up in double */
ML_SIMD_CLONES
static double dot_lanes(const float *a, const float *b, int64_t n) {
    float acc[16] = {0};
    double s = 0;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        for (int l = 0; l < 16; l++) acc[l] += a[i + l] * b[i + l];
        if ((i & 1023) == 1008) {
            for (int l = 0; l < 16; l++) {
                s += acc[l];
                acc[l] = 0;
            }
        }
    }
    for (int l = 0; l < 16; l++) s += acc[l];
    for (; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* saved: 0 full (when the gates need a gradient), 1 gates (when given) */
static int mask_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    mask_ctx *c = n->ctx;
    bool has_gates = n->n_in > 1;
    ml_tensor *full = n->saved[0] ? ml_saved(n, 0) : NULL, *gates = has_gates ? ml_saved(n, 1) : NULL;
    if ((n->saved[0] && !full) || (has_gates && !gates)) return -1;
    bool want_g = has_gates && n->needs[1];
    if (want_g && !full) return ml_failc("moe_mask_channels: the input was not saved for the gates' gradient");
    ml_tensor *gf = n->needs[0] ? ml_empty(ML_F32, n->in[0]->ndim, n->in[0]->shape) : NULL;
    ml_tensor *gg = want_g ? ml_empty(ML_F32, 1, &c->N) : NULL;
    if ((n->needs[0] && !gf) || (want_g && !gg)) {
        ml_release(gf);
        ml_release(gg);
        return -1;
    }
    int64_t row = c->C * c->inner, blk = c->c * c->inner;
    const float *gp = ml_f32(g), *fp = full ? ml_f32(full) : NULL, *gt = gates ? ml_f32(gates) : NULL;
    float *gfp = gf ? ml_f32(gf) : NULL, *ggp = gg ? ml_f32(gg) : NULL;
    #pragma omp parallel for schedule(static) if (c->N * row >= 65536)
    for (int64_t s = 0; s < c->N; s++) {
        int64_t lo = c->first[s] * c->inner;
        const float *gs = gp + s * row;
        if (gfp) {
            float *o = gfp + s * row, w = gt ? gt[s] : 1.0f;
            memset(o, 0, sizeof(float) * (size_t)lo);
            for (int64_t j = 0; j < blk; j++) o[lo + j] = w * gs[lo + j];
            memset(o + lo + blk, 0, sizeof(float) * (size_t)(row - lo - blk));
        }
        if (ggp) ggp[s] = (float)dot_lanes(gs + lo, fp + s * row + lo, blk);
    }
    gin[0] = gf;
    if (has_gates) gin[1] = gg;
    return 0;
}

ml_tensor *ml_moe_mask_channels(ml_tensor *full, const int64_t *first, int64_t c, ml_tensor *gates) {
    if (full->dtype != ML_F32 || full->ndim < 2)
        return ml_fail("moe_mask_channels: expects a float32 input [N, C, ...], got %s", ML_SHAPE_STR(full));
    int64_t N = full->shape[0], C = full->shape[1], inner = row_size(full) / (C ? C : 1);
    if (c < 1 || c > C) return ml_fail("moe_mask_channels: block of %" PRId64 " channels out of %" PRId64, c, C);
    for (int64_t s = 0; s < N; s++)
        if (first[s] < 0 || first[s] + c > C)
            return ml_fail("moe_mask_channels: sample %" PRId64 "'s block [%" PRId64 ", %" PRId64 ") falls outside %" PRId64,
                           s, first[s], first[s] + c, C);
    if (gates && (gates->dtype != ML_F32 || gates->ndim != 1 || gates->shape[0] != N))
        return ml_fail("moe_mask_channels: gates must be [%" PRId64 "], got %s", N, ML_SHAPE_STR(gates));
    ml_tensor *fc = ml_contiguous(full), *gc = gates ? ml_contiguous(gates) : NULL;
    ml_tensor *out = fc && (!gates || gc) ? ml_empty(ML_F32, full->ndim, full->shape) : NULL;
    mask_ctx *ctx = out ? calloc(1, sizeof *ctx) : NULL;
    int64_t *fs = ctx ? malloc(sizeof *fs * (size_t)(N ? N : 1)) : NULL;
    if (!fs) {
        free(ctx);
        ml_release(out);
        ml_release(fc);
        ml_release(gc);
        return out ? ml_fail("out of memory") : NULL;
    }
    memcpy(fs, first, sizeof *fs * (size_t)N);
    *ctx = (mask_ctx){N, C, inner, c, fs};
    int64_t row = C * inner, blk = c * inner;
    const float *fp = ml_f32(fc), *gt = gc ? ml_f32(gc) : NULL;
    float *op = ml_f32(out);
    #pragma omp parallel for schedule(static) if (N * row >= 65536)
    for (int64_t s = 0; s < N; s++) {
        int64_t lo = first[s] * inner;
        float *o = op + s * row, w = gt ? gt[s] : 1.0f;
        const float *src = fp + s * row;
        memset(o, 0, sizeof(float) * (size_t)lo);
        for (int64_t j = 0; j < blk; j++) o[lo + j] = w * src[lo + j];
        memset(o + lo + blk, 0, sizeof(float) * (size_t)(row - lo - blk));
    }
    ml_tensor *ins[2] = {full, gates};
    ml_node *n = ml_record("moe_mask_channels", out, gates ? 2 : 1, ins, mask_backward);
    if (n) {
        /* the input only when the gates may need their gradient */
        if (gates && gates->requires_grad) ml_save(n, fc);
        else n->saved[n->n_saved++] = NULL;
        if (gc) ml_save(n, gc);
        n->ctx = ctx;
        n->ctx_free = mask_ctx_free;
    } else {
        mask_ctx_free(ctx);
    }
    ml_release(fc);
    ml_release(gc);
    return out;
}
