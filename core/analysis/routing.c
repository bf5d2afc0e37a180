/* routing.c -- routing changes between two traces (routing.h). */
#include "routing.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void ml_route_change_free(ml_route_change *r) {
    for (int i = 0; r->layers && i < r->n; i++) {
        ml_release(r->layers[i].iou);
        ml_release(r->layers[i].tv);
    }
    free(r->layers);
    free(r->sample_changed);
    memset(r, 0, sizeof *r);
}

/* Total variation between the router distributions of every item. */
static ml_tensor *total_variation(const ml_trace_layer *a, const ml_trace_layer *b, double *mean) {
    int64_t T = a->T, E = a->E;
    ml_tensor *tv = ml_empty(ML_F32, 1, &T);
    if (!tv) return NULL;
    const float *pa = ml_f32(a->probs), *pb = ml_f32(b->probs);
    double sum = 0;
    for (int64_t t = 0; t < T; t++) {
        double d = 0;
        for (int64_t e = 0; e < E; e++) d += fabs((double)pa[t * E + e] - (double)pb[t * E + e]);
        d = fmin(0.5 * d, 1.0); /* rounding can push the sum of two distributions' gaps past 2 */
        ml_f32(tv)[t] = (float)d;
        sum += d;
    }
    *mean = T ? sum / (double)T : NAN;
    return tv;
}

static int compare_layer(const char *fn, const ml_trace_layer *a, const ml_trace_layer *b, int64_t batch,
                         ml_route_change_layer *out, unsigned char *sample_changed) {
    int64_t T = a->T, K = a->K;
    int64_t per = ml_trace_items_per_sample(fn, a, batch);
    if (per < 0) return -1;
    *out = (ml_route_change_layer){.layer = a->name, .kind = a->kind, .T = T, .per_sample = per, .mean_tv = NAN};
    out->iou = ml_empty(ML_F32, 1, &T);
    if (!out->iou) return -1;
    const int64_t *ea = ml_i64(a->experts), *ka = ml_i64(a->kept), *eb = ml_i64(b->experts), *kb = ml_i64(b->kept);
    unsigned char *mine = calloc((size_t)batch, 1);
    if (!mine) return ml_failc("out of memory");
    double sum = 0;
    for (int64_t t = 0; t < T; t++) {
        double iou = ml_trace_selection_iou(ea + t * K, ka + t * K, eb + t * K, kb + t * K, (int)K);
        ml_f32(out->iou)[t] = (float)iou;
        sum += iou;
        if (iou < 1) {
            out->changed++;
            mine[t / per] = 1;
        }
    }
    for (int64_t s = 0; s < batch; s++) {
        out->samples_changed += mine[s];
        sample_changed[s] |= mine[s];
    }
    free(mine);
    out->mean_iou = T ? sum / (double)T : 1.0;
    out->rate = 1.0 - out->mean_iou;
    if (a->probs && b->probs && !(out->tv = total_variation(a, b, &out->mean_tv))) return -1;
    return 0;
}

int ml_route_change_compute(const char *fn, const ml_trace *clean, const ml_trace *other, int64_t batch,
                            ml_route_change *out) {
    memset(out, 0, sizeof *out);
    if (ml_trace_check_compatible(fn, clean, other)) return -1;
    if (batch < 1) return ml_failc("%s: the batch size must be at least 1, got %" PRId64, fn, batch);
    out->batch = batch;
    out->layers = calloc((size_t)(clean->n ? clean->n : 1), sizeof *out->layers);
    out->sample_changed = calloc((size_t)batch, 1);
    if (!out->layers || !out->sample_changed) {
        ml_route_change_free(out);
        return ml_failc("out of memory");
    }
    for (int i = 0; i < clean->n; i++) {
        out->n = i + 1;
        if (compare_layer(fn, &clean->layers[i], &other->layers[i], batch, &out->layers[i], out->sample_changed)) {
            ml_route_change_free(out);
            return -1;
        }
    }
    return 0;
}
