/* load.c -- expert load, shares, collapse and the expert x class matrix (load.h). */
#include "load.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "routing.h"

int ml_expert_load_compute(const ml_trace_layer *l, double threshold, ml_expert_load *out) {
    memset(out, 0, sizeof *out);
    int64_t E = l->E, T = l->T, K = l->K;
    out->E = l->E;
    out->items = T;
    out->load = ml_clone(l->load);
    out->share = ml_zeros(ML_F32, 1, &E);
    if (!out->load || !out->share) {
        ml_expert_load_free(out);
        return -1;
    }
    int64_t *count = calloc((size_t)E, sizeof *count);
    if (!count) {
        ml_expert_load_free(out);
        return ml_failc("out of memory");
    }
    const int64_t *ex = ml_i64(l->experts), *kept = ml_i64(l->kept);
    for (int64_t i = 0; i < T * K; i++)
        if (kept[i]) count[ex[i]]++; /* distinct within an item: one count per item */
    for (int64_t e = 0; e < E; e++) {
        ml_f32(out->share)[e] = T ? (float)((double)count[e] / (double)T) : 0.0f;
        if (count[e] > count[out->top]) out->top = (int)e;
    }
    out->top_share = T ? (double)count[out->top] / (double)T : 0;
    out->collapsed = E > 1 && out->top_share >= threshold;
    free(count);
    return 0;
}

void ml_expert_load_free(ml_expert_load *x) {
    ml_release(x->load);
    ml_release(x->share);
    memset(x, 0, sizeof *x);
}

ml_tensor *ml_expert_class_matrix(const char *fn, const ml_trace_layer *l, const ml_tensor *y, int64_t classes) {
    if (y->dtype != ML_I64 || y->ndim != 1 || y->shape[0] < 1)
        return ml_fail("%s: labels must be a non-empty int64 [batch] tensor, got %s %s", fn, ml_dtype_name(y->dtype),
                       ML_SHAPE_STR(y));
    if (classes < 1 || classes > (1 << 20)) return ml_fail("%s: %" PRId64 " classes is out of range", fn, classes);
    int64_t per = ml_trace_items_per_sample(fn, l, y->shape[0]);
    if (per < 0) return NULL;
    ml_tensor *yc = ml_contiguous((ml_tensor *)y);
    if (!yc) return NULL;
    const int64_t *lab = ml_i64(yc);
    for (int64_t s = 0; s < y->shape[0]; s++)
        if (lab[s] < 0 || lab[s] >= classes) {
            ml_release(yc);
            return ml_fail("%s: label %" PRId64 " of sample %" PRId64 " is outside 1..%" PRId64, fn, lab[s] + 1, s + 1,
                           classes);
        }
    int64_t shape[2] = {l->E, classes}, K = l->K;
    ml_tensor *m = ml_zeros(ML_F32, 2, shape);
    if (m) {
        const int64_t *ex = ml_i64(l->experts), *kept = ml_i64(l->kept);
        float *mv = ml_f32(m);
        for (int64_t t = 0; t < l->T; t++)
            for (int64_t k = 0; k < K; k++)
                if (kept[t * K + k]) mv[ex[t * K + k] * classes + lab[t / per]] += 1.0f;
    }
    ml_release(yc);
    return m;
}
