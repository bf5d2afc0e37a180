/* accuracy.c -- correct predictions and precision@1 (accuracy.h). */
#include "accuracy.h"

#include <inttypes.h>

static int check_logits(const char *fn, const ml_tensor *logits) {
    if (logits->dtype != ML_F32 || logits->ndim != 2 || logits->shape[1] < 1)
        return ml_failc("%s: the model must return float logits [batch, classes], got %s %s", fn,
                        ml_dtype_name(logits->dtype), ML_SHAPE_STR(logits));
    return 0;
}

static int64_t argmax_row(const float *row, int64_t C) {
    int64_t best = 0;
    for (int64_t c = 1; c < C; c++)
        if (row[c] > row[best]) best = c;
    return best;
}

int ml_accuracy_count(const char *fn, const ml_tensor *logits, const ml_tensor *y, int64_t *correct, ml_tensor **pred) {
    if (pred) *pred = NULL;
    if (check_logits(fn, logits)) return -1;
    int64_t B = logits->shape[0], C = logits->shape[1];
    if (y->dtype != ML_I64 || y->ndim != 1 || y->shape[0] != B)
        return ml_failc("%s: labels must be int64 [%" PRId64 "] (one per sample), got %s %s", fn, B,
                        ml_dtype_name(y->dtype), ML_SHAPE_STR(y));
    ml_tensor *lc = ml_contiguous((ml_tensor *)logits), *yc = ml_contiguous((ml_tensor *)y);
    ml_tensor *p = lc && yc ? ml_empty(ML_I64, 1, &B) : NULL;
    int rc = p ? 0 : -1;
    int64_t n = 0;
    for (int64_t b = 0; p && b < B && !rc; b++) {
        int64_t label = ml_i64(yc)[b];
        if (label < 0 || label >= C) {
            rc = ml_failc("%s: label %" PRId64 " of sample %" PRId64 " is outside 1..%" PRId64 " (the model has %" PRId64
                          " classes)", fn, label + 1, b + 1, C, C);
            break;
        }
        ml_i64(p)[b] = argmax_row(ml_f32(lc) + b * C, C);
        n += ml_i64(p)[b] == label;
    }
    ml_release(lc);
    ml_release(yc);
    if (rc) {
        ml_release(p);
        return -1;
    }
    *correct = n;
    if (pred) *pred = p;
    else ml_release(p);
    return 0;
}

int ml_precision_at_1(const char *fn, const ml_tensor *logits, const ml_tensor *targets, int64_t *hits) {
    if (check_logits(fn, logits)) return -1;
    if (targets->dtype != ML_F32 || !ml_same_shape(targets, logits))
        return ml_failc("%s: multi-label targets must be float %s of 0/1 like the logits, got %s %s", fn,
                        ML_SHAPE_STR(logits), ml_dtype_name(targets->dtype), ML_SHAPE_STR(targets));
    int64_t B = logits->shape[0], C = logits->shape[1], n = 0;
    ml_tensor *lc = ml_contiguous((ml_tensor *)logits), *tc = ml_contiguous((ml_tensor *)targets);
    int rc = lc && tc ? 0 : -1;
    for (int64_t i = 0; !rc && i < B * C; i++)
        if (ml_f32(tc)[i] != 0.0f && ml_f32(tc)[i] != 1.0f)
            rc = ml_failc("%s: multi-label targets must be 0 or 1, got %g", fn, (double)ml_f32(tc)[i]);
    for (int64_t b = 0; !rc && b < B; b++) n += ml_f32(tc)[b * C + argmax_row(ml_f32(lc) + b * C, C)] != 0.0f;
    ml_release(lc);
    ml_release(tc);
    if (rc) return -1;
    *hits = n;
    return 0;
}
