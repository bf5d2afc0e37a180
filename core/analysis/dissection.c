/* dissection.c -- the four-way dissection of an attack (dissection.h). */
#include "dissection.h"

#include <inttypes.h>
#include <string.h>

static int check_labels(const char *fn, const char *what, const ml_tensor *t, int64_t n) {
    if (t->dtype != ML_I64 || t->ndim != 1 || t->shape[0] != n)
        return ml_failc("%s: %s must be int64 [%" PRId64 "] (one per sample), got %s %s", fn, what, n,
                        ml_dtype_name(t->dtype), ML_SHAPE_STR(t));
    return 0;
}

int ml_dissect(const char *fn, const ml_route_change *rc, const ml_tensor *y, const ml_tensor *pred, ml_dissection *out) {
    memset(out, 0, sizeof *out);
    int64_t n = rc->batch;
    if (check_labels(fn, "the labels", y, n) || check_labels(fn, "the predictions", pred, n)) return -1;
    ml_tensor *yc = ml_contiguous((ml_tensor *)y), *pc = ml_contiguous((ml_tensor *)pred);
    out->cases = yc && pc ? ml_empty(ML_I64, 1, &n) : NULL;
    if (out->cases) {
        out->n = n;
        for (int64_t s = 0; s < n; s++) {
            bool fooled = ml_i64(pc)[s] != ml_i64(yc)[s], routed = rc->sample_changed[s] != 0;
            int c = fooled ? (routed ? 4 : 3) : (routed ? 2 : 1);
            ml_i64(out->cases)[s] = c;
            out->count[c]++;
        }
        out->router_robustness = n ? (double)(out->count[1] + out->count[3]) / (double)n : 0;
        out->moe_robustness = n ? (double)(out->count[1] + out->count[2]) / (double)n : 0;
    }
    ml_release(yc);
    ml_release(pc);
    return out->cases ? 0 : -1;
}

void ml_dissection_free(ml_dissection *d) {
    ml_release(d->cases);
    memset(d, 0, sizeof *d);
}
