/* attention.c -- fused multi-head self-attention with its backward (attention.h). */
#include "attention.h"

#include <inttypes.h>
#include <math.h>
#include <omp.h>

#include "../autograd.h"
#include "../parallel.h"
#include "linalg.h"
#include "softmax.h"
#include "../memory.h"

typedef struct {
    int64_t B, T, D, H, hd;
} attn_geom;

/* Pointers of head h of batch element b: q, k, v rows have stride 3 D. */
static inline const float *slice(const float *qkv, const attn_geom *g, int64_t b, int part, int64_t h) {
    return qkv + b * g->T * 3 * g->D + part * g->D + h * g->hd;
}

static int attention_backward(ml_node *n, ml_tensor *gout, ml_tensor **gin) {
    ml_tensor *qkv = ml_saved(n, 0), *probs = ml_saved(n, 1);
    if (!qkv || !probs) return -1;
    attn_geom g = {n->i[0], n->i[1], n->i[2], n->i[3], n->i[4]};
    int64_t T = g.T, D = g.D, ld = 3 * D, pairs = g.B * g.H;
    float scale = (float)n->f[0];
    ml_tensor *gqkv = ml_empty(ML_F32, 3, qkv->shape);
    if (!gqkv) return -1;
    int threads = pairs > 1 ? omp_get_max_threads() : 1;
    size_t scratch = (size_t)(2 * T * T);
    float *buf = ml_alloc(sizeof(float) * scratch * (size_t)threads);
    if (!buf) {
        ml_release(gqkv);
        return -1;
    }
    const float *x = ml_f32(qkv), *P = ml_f32(probs), *go = ml_f32(gout);
    float *gx = ml_f32(gqkv);
    int saved = ml_blas_single_begin();
    #pragma omp parallel num_threads(threads)
    {
        float *dP = buf + scratch * (size_t)omp_get_thread_num(), *dS = dP + T * T;
        #pragma omp for schedule(static)
        for (int64_t p = 0; p < pairs; p++) {
            if (ml_interrupt_pending()) continue;
            int64_t b = p / g.H, h = p % g.H;
            const float *q = slice(x, &g, b, 0, h), *k = slice(x, &g, b, 1, h), *v = slice(x, &g, b, 2, h);
            const float *Pp = P + p * T * T, *dO = go + b * T * D + h * g.hd;
            float *dq = (float *)slice(gx, &g, b, 0, h), *dk = (float *)slice(gx, &g, b, 1, h);
            float *dv = (float *)slice(gx, &g, b, 2, h);
            /* dV = P^T dO;  dP = dO V^T;  dS = softmax backward;  dQ = s dS K;  dK = s dS^T Q */
            ml_sgemm(true, false, T, g.hd, T, 1.0f, Pp, T, dO, D, 0.0f, dv, ld);
            ml_sgemm(false, true, T, T, g.hd, 1.0f, dO, D, v, ld, 0.0f, dP, T);
            for (int64_t r = 0; r < T; r++) ml_softmax_row_backward(dP + r * T, Pp + r * T, dS + r * T, T, false);
            ml_sgemm(false, false, T, g.hd, T, scale, dS, T, k, ld, 0.0f, dq, ld);
            ml_sgemm(true, false, T, g.hd, T, scale, dS, T, q, ld, 0.0f, dk, ld);
        }
    }
    ml_blas_single_end(saved);
    ml_free(buf, sizeof(float) * scratch * (size_t)threads);
    if (ml_interrupted()) {
        ml_release(gqkv);
        return -1;
    }
    gin[0] = gqkv;
    return 0;
}

ml_tensor *ml_attention(ml_tensor *qkv, int heads) {
    if (qkv->dtype != ML_F32) return ml_fail("attention: expects a float32 tensor");
    if (qkv->ndim != 3 || qkv->shape[2] % 3)
        return ml_fail("attention: expects qkv [B, T, 3 D] (the fused q/k/v projection), got %s", ML_SHAPE_STR(qkv));
    int64_t D = qkv->shape[2] / 3;
    if (heads < 1 || D % heads)
        return ml_fail("attention: %d heads do not divide the model width %" PRId64, heads, D);
    attn_geom g = {qkv->shape[0], qkv->shape[1], D, heads, D / heads};
    int64_t T = g.T, ld = 3 * D, pairs = g.B * g.H;
    ml_tensor *xc = ml_contiguous(qkv);
    if (!xc) return NULL;
    int64_t os[3] = {g.B, T, D}, ps[4] = {g.B, g.H, T, T};
    ml_tensor *out = ml_empty(ML_F32, 3, os), *probs = out ? ml_empty(ML_F32, 4, ps) : NULL;
    if (!probs) {
        ml_release(out);
        ml_release(xc);
        return NULL;
    }
    float scale = (float)(1.0 / sqrt((double)g.hd));
    const float *x = ml_f32(xc);
    float *P = ml_f32(probs), *o = ml_f32(out);
    int saved = ml_blas_single_begin();
    #pragma omp parallel for schedule(static) if (pairs > 1)
    for (int64_t p = 0; p < pairs; p++) {
        if (ml_interrupt_pending()) continue;
        int64_t b = p / g.H, h = p % g.H;
        float *Pp = P + p * T * T;
        /* S = s Q K^T, P = softmax(S) row by row, out[b, :, h] = P V */
        ml_sgemm(false, true, T, T, g.hd, scale, slice(x, &g, b, 0, h), ld, slice(x, &g, b, 1, h), ld, 0.0f, Pp, T);
        for (int64_t r = 0; r < T; r++) ml_softmax_row(Pp + r * T, Pp + r * T, T, false);
        ml_sgemm(false, false, T, g.hd, T, 1.0f, Pp, T, slice(x, &g, b, 2, h), ld, 0.0f, o + b * T * D + h * g.hd, D);
    }
    ml_blas_single_end(saved);
    if (ml_interrupted()) {
        ml_release(out);
        ml_release(probs);
        ml_release(xc);
        return NULL;
    }
    ml_node *n = ml_record("attention", out, 1, &qkv, attention_backward);
    if (n) {
        int64_t v[5] = {g.B, g.T, g.D, g.H, g.hd};
        for (int i = 0; i < 5; i++) n->i[i] = v[i];
        n->f[0] = scale;
        ml_save(n, xc);
        ml_save(n, probs);
    }
    ml_release(probs);
    ml_release(xc);
    return out;
}
