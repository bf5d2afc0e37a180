/* traces.c -- the attacks' adapter to the routing traces of a forward (see
 * traces.h): the only file of core/attack that reads ml_ctx's trace fields. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/index.h"
#include "traces.h"

void ml_attack_routing_reset(ml_attack_routing *r, const ml_attack_forward *f) {
    ml_ctx_clear(&r->ctx);
    memset(&r->ctx, 0, sizeof r->ctx);
    r->ctx.trace = f->trace || f->trace_grad;
    r->ctx.trace_grad = f->trace_grad;
    r->ctx.want_aux = f->aux;
    r->ctx.selection_ste = f->selection_ste;
    r->ctx.router_noise = f->router_noise;
    r->ctx.routing = f->routing;
    r->ctx.overrides = f->force;
    r->ctx.n_overrides = f->n_force;
}

ml_ctx *ml_attack_routing_ctx(ml_attack_routing *r) { return &r->ctx; }

ml_tensor *ml_attack_routing_aux(const ml_attack_routing *r) { return r->ctx.aux; }

int ml_attack_routing_layers(const ml_attack_routing *r) { return r->ctx.traces ? r->ctx.traces->n : 0; }

const ml_trace *ml_attack_routing_trace(const ml_attack_routing *r) { return r->ctx.traces; }

void ml_attack_routing_free(ml_attack_routing *r) {
    ml_ctx_clear(&r->ctx);
    memset(&r->ctx, 0, sizeof r->ctx);
}

/* ------------------------------------------------------------ rows of a trace */
ml_tensor *ml_attack_item_rows(const ml_tensor *index, int64_t b, int64_t n) {
    int64_t total = b * n;
    ml_tensor *rows = ml_empty(ML_I64, 1, &total);
    if (!rows) return NULL;
    int64_t *r = ml_i64(rows);
    for (int64_t i = 0; i < b; i++) {
        int64_t ex = index ? ml_i64(index)[i] : i;
        for (int64_t j = 0; j < n; j++) r[i * n + j] = ex * n + j;
    }
    return rows;
}

static ml_tensor *rows_of(ml_tensor *t, const ml_tensor *rows) { return t ? ml_index_select(t, 0, rows) : NULL; }

ml_trace *ml_attack_trace_rows(const char *fn, const ml_trace *t, int64_t B, const ml_tensor *index) {
    ml_trace *out = ml_trace_new();
    int64_t b = index ? index->shape[0] : B;
    for (int i = 0; out && i < t->n; i++) {
        const ml_trace_layer *l = &t->layers[i];
        int64_t n = ml_trace_items_per_sample(fn, l, B);
        ml_tensor *rows = n < 0 ? NULL : ml_attack_item_rows(index, b, n);
        ml_tensor *experts = rows_of(l->experts, rows), *gates = rows_of(l->gates, rows);
        ml_tensor *probs = rows_of(l->probs, rows), *logits = rows_of(l->logits, rows), *kept = rows_of(l->kept, rows);
        int rc = -1;
        if (rows && experts && gates && kept && (!l->probs || probs) && (!l->logits || logits)) {
            ml_trace_entry e = {l->name, l->kind, l->E, experts, gates, probs, logits, kept, l->aux};
            rc = ml_trace_add(out, &e, false);
        }
        ml_release(rows), ml_release(experts), ml_release(gates), ml_release(probs), ml_release(logits);
        ml_release(kept);
        if (rc) {
            ml_trace_free(out);
            out = NULL;
        }
    }
    return out;
}

/* ------------------------------------------------------------ routing change */
/* Whether item a of layer x and item b of layer y are kept by different sets of experts. */
static bool item_changed(const ml_trace_layer *x, int64_t a, const ml_trace_layer *y, int64_t b) {
    int K = x->K;
    return ml_trace_selection_iou(ml_i64(x->experts) + a * K, ml_i64(x->kept) + a * K, ml_i64(y->experts) + b * K,
                                  ml_i64(y->kept) + b * K, K) < 1;
}

int64_t ml_attack_routing_change(const char *fn, const ml_trace *clean, int64_t B, const ml_trace *cur,
                                 double *rate, float *changed) {
    if (clean->n != cur->n)
        return ml_failc("%s: the traces have %d and %d MoE layers (traces of different models?)", fn, clean->n, cur->n);
    if (changed) memset(changed, 0, sizeof(float) * (size_t)B);
    for (int i = 0; i < clean->n; i++) {
        const ml_trace_layer *x = &clean->layers[i], *y = &cur->layers[i];
        int64_t n = ml_trace_items_per_sample(fn, x, B);
        if (n < 0) return -1;
        if (strcmp(x->name, y->name) || x->E != y->E || x->K != y->K || y->T != B * n)
            return ml_failc("%s: layer %d is '%s' (%d experts, k = %d, %" PRId64 " items) in one trace and '%s' (%d "
                            "experts, k = %d, %" PRId64 " items) in the other", fn, i + 1, x->name, x->E, x->K, B * n,
                            y->name, y->E, y->K, y->T);
        int64_t count = 0;
        for (int64_t e = 0; e < B; e++) {
            for (int64_t j = 0; j < n; j++)
                if (item_changed(x, e * n + j, y, e * n + j)) {
                    count++;
                    if (changed) changed[e] = 1;
                }
        }
        if (rate) rate[i] = y->T ? (double)count / (double)y->T : 0;
    }
    if (!changed) return 0;
    int64_t total = 0;
    for (int64_t e = 0; e < B; e++) total += changed[e] != 0;
    return total;
}
