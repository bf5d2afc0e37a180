/* trace.c -- the routing-trace type: one constructor, lookups, comparisons. */
#include "trace.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "../ops/index.h"

static const char *const kind_names[ML_TRACE_KINDS] = {"token", "smooth", "channel", "global"};
const char *const ml_aux_names[ML_AUX_COUNT] = {"importance", "load", "switch", "z"};

const char *ml_trace_kind_name(ml_trace_kind kind) {
    return kind >= 0 && kind < ML_TRACE_KINDS ? kind_names[kind] : "unknown";
}

int ml_trace_kind_parse(const char *fn, const char *s, ml_trace_kind *out) {
    for (int k = 0; k < ML_TRACE_KINDS; k++)
        if (s && !strcmp(s, kind_names[k])) {
            *out = (ml_trace_kind)k;
            return 0;
        }
    return ml_failc("%s: unknown layer kind '%s' (use token, smooth, channel or global)", fn, s ? s : "(none)");
}

ml_trace *ml_trace_new(void) {
    ml_trace *t = calloc(1, sizeof *t);
    return t ? t : ml_fail_oom(__func__);
}

static void layer_release(ml_trace_layer *l) {
    free(l->name);
    ml_release(l->experts);
    ml_release(l->gates);
    ml_release(l->probs);
    ml_release(l->logits);
    ml_release(l->kept);
    ml_release(l->load);
}

void ml_trace_free(ml_trace *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) layer_release(&t->layers[i]);
    free(t->layers);
    free(t);
}

/* ------------------------------------------------------------ the constructor */
static int check_2d(const char *what, const ml_tensor *x, ml_dtype dt, int64_t rows, int64_t cols, const char *name) {
    if (!x) return 0;
    if (x->dtype != dt || x->ndim != 2 || x->shape[0] != rows || (cols >= 0 && x->shape[1] != cols))
        return ml_failc("trace of layer '%s': %s must be %s [%" PRId64 ", %" PRId64 "], got %s %s", name, what,
                        ml_dtype_name(dt), rows, cols, ml_dtype_name(x->dtype), ML_SHAPE_STR(x));
    return 0;
}

/* Expert ids in [0, E), distinct within each row; kept flags 0 or 1. */
static int check_selection(const char *name, const ml_tensor *experts, const ml_tensor *kept, int E) {
    int64_t T = experts->shape[0], K = experts->shape[1];
    ml_tensor *ec = ml_contiguous((ml_tensor *)experts), *kc = kept ? ml_contiguous((ml_tensor *)kept) : NULL;
    int rc = 0;
    const int64_t *ex = ml_i64(ec), *kp = kc ? ml_i64(kc) : NULL;
    for (int64_t t = 0; t < T && !rc; t++)
        for (int64_t k = 0; k < K && !rc; k++) {
            int64_t e = ex[t * K + k];
            if (e < 0 || e >= E)
                rc = ml_failc("trace of layer '%s': item %" PRId64 " selects expert %" PRId64 " of %d (ids are 0-based "
                              "in C, 1-based in Lua)", name, t + 1, e, E);
            for (int64_t j = 0; j < k && !rc; j++)
                if (ex[t * K + j] == e)
                    rc = ml_failc("trace of layer '%s': item %" PRId64 " selects expert %" PRId64 " twice", name, t + 1, e);
            if (!rc && kp && kp[t * K + k] != 0 && kp[t * K + k] != 1)
                rc = ml_failc("trace of layer '%s': kept flags must be 0 or 1, got %" PRId64, name, kp[t * K + k]);
        }
    ml_release(ec);
    ml_release(kc);
    return rc;
}

/* A contiguous version of x, with its autograd history when keep_grad, else
 * a history-free alias. */
static ml_tensor *keep(ml_tensor *x, bool keep_grad) {
    if (!x) return NULL;
    ml_tensor *c = ml_contiguous(x);
    if (!c || keep_grad) return c;
    ml_tensor *d = ml_detach(c);
    ml_release(c);
    return d;
}

int ml_trace_add(ml_trace *t, const ml_trace_entry *e, bool keep_grad) {
    const char *name = e->name ? e->name : "";
    const ml_tensor *ex = e->experts;
    if (!ex || ex->dtype != ML_I64 || ex->ndim != 2)
        return ml_failc("trace of layer '%s': experts must be an int64 [items, choices] tensor, got %s", name,
                        ex ? ML_SHAPE_STR(ex) : "nothing");
    int64_t T = ex->shape[0], K = ex->shape[1];
    int64_t E = e->E > 0 ? e->E : e->probs ? e->probs->shape[e->probs->ndim - 1]
                                 : e->logits ? e->logits->shape[e->logits->ndim - 1] : 0;
    if (E < 1 || E > 1 << 20) return ml_failc("trace of layer '%s': the number of experts is unknown or invalid", name);
    if (K < 1 || K > E)
        return ml_failc("trace of layer '%s': %" PRId64 " choices per item for %" PRId64 " experts", name, K, E);
    if (check_2d("probs", e->probs, ML_F32, T, E, name) || check_2d("logits", e->logits, ML_F32, T, E, name) ||
        check_2d("gates", e->gates, ML_F32, T, K, name) || check_2d("kept", e->kept, ML_I64, T, K, name) ||
        check_selection(name, ex, e->kept, (int)E))
        return -1;
    if (t->n == t->cap) {
        int cap = t->cap ? 2 * t->cap : 8;
        ml_trace_layer *p = realloc(t->layers, sizeof *p * (size_t)cap);
        if (!p) return ml_failc_oom(__func__);
        t->layers = p;
        t->cap = cap;
    }
    ml_trace_layer l = {.kind = e->kind, .T = T, .E = (int)E, .K = (int)K};
    for (int k = 0; k < ML_AUX_COUNT; k++) l.aux[k] = e->aux ? e->aux[k] : NAN;
    l.name = strdup(name);
    /* own copies of the selection: the caller may change its tensors later */
    l.experts = ml_clone((ml_tensor *)ex);
    l.kept = e->kept ? ml_clone((ml_tensor *)e->kept) : ml_full(ML_I64, 2, ex->shape, 1.0);
    l.probs = keep(e->probs, keep_grad);
    l.logits = keep(e->logits, keep_grad);
    if (e->gates) {
        l.gates = keep(e->gates, keep_grad);
    } else if (e->probs) {
        ml_tensor *g = ml_gather(e->probs, 1, l.experts);
        l.gates = keep(g, keep_grad);
        ml_release(g);
    } else {
        l.gates = ml_full(ML_F32, 2, ex->shape, 1.0);
    }
    l.load = ml_zeros(ML_F32, 1, &E);
    if (!l.name || !l.experts || !l.kept || !l.gates || !l.load || (e->probs && !l.probs) || (e->logits && !l.logits)) {
        layer_release(&l);
        return ml_failc_oom(__func__);
    }
    const int64_t *sel = ml_i64(l.experts), *kept = ml_i64(l.kept);
    float *load = ml_f32(l.load);
    for (int64_t i = 0; i < T * K; i++)
        if (kept[i]) load[sel[i]] += 1.0f;
    t->layers[t->n++] = l;
    return 0;
}

ml_trace *ml_trace_copy(const ml_trace *t, bool keep_grad) {
    ml_trace *c = ml_trace_new();
    for (int i = 0; c && i < t->n; i++) {
        const ml_trace_layer *l = &t->layers[i];
        ml_trace_entry e = {l->name, l->kind, l->E, l->experts, l->gates, l->probs, l->logits, l->kept, l->aux};
        if (ml_trace_add(c, &e, keep_grad)) {
            ml_trace_free(c);
            return NULL;
        }
    }
    return c;
}

/* ------------------------------------------------------------ reading */
int ml_trace_index(const ml_trace *t, const char *name) {
    for (int i = 0; t && i < t->n; i++)
        if (!strcmp(t->layers[i].name, name)) return i;
    return -1;
}

const ml_trace_layer *ml_trace_find(const ml_trace *t, const char *name) {
    int i = ml_trace_index(t, name);
    return i < 0 ? NULL : &t->layers[i];
}

int64_t ml_trace_dropped(const ml_trace_layer *l) {
    int64_t kept = 0;
    const int64_t *k = ml_i64(l->kept);
    for (int64_t i = 0; i < l->T * l->K; i++) kept += k[i] != 0;
    return l->T * l->K - kept;
}

int ml_trace_check_compatible(const char *fn, const ml_trace *a, const ml_trace *b) {
    if (a->n != b->n)
        return ml_failc("%s: the traces have %d and %d MoE layers (traces of different models?)", fn, a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        const ml_trace_layer *x = &a->layers[i], *y = &b->layers[i];
        if (strcmp(x->name, y->name))
            return ml_failc("%s: layer %d is '%s' in one trace and '%s' in the other (traces of different models?)", fn,
                            i + 1, x->name, y->name);
        if (x->kind != y->kind || x->E != y->E || x->K != y->K)
            return ml_failc("%s: layer '%s' is %s with %d experts, k = %d in one trace and %s with %d experts, k = %d "
                            "in the other", fn, x->name, ml_trace_kind_name(x->kind), x->E, x->K,
                            ml_trace_kind_name(y->kind), y->E, y->K);
        if (x->T != y->T)
            return ml_failc("%s: layer '%s' routed %" PRId64 " items in one trace and %" PRId64
                            " in the other (different batch sizes?)", fn, x->name, x->T, y->T);
    }
    return 0;
}

bool ml_trace_same_routing(const ml_trace *a, const ml_trace *b) {
    if (ml_trace_check_compatible("compare", a, b)) {
        ml_error_clear();
        return false;
    }
    for (int i = 0; i < a->n; i++) {
        const ml_trace_layer *x = &a->layers[i], *y = &b->layers[i];
        size_t bytes = sizeof(int64_t) * (size_t)(x->T * x->K);
        if (memcmp(ml_i64(x->experts), ml_i64(y->experts), bytes) || memcmp(ml_i64(x->kept), ml_i64(y->kept), bytes))
            return false;
    }
    return true;
}

int64_t ml_trace_items_per_sample(const char *fn, const ml_trace_layer *l, int64_t batch) {
    if (batch < 1) return ml_failc("%s: the batch size must be at least 1, got %" PRId64, fn, batch);
    if (l->T % batch)
        return ml_failc("%s: layer '%s' routed %" PRId64 " items, not a multiple of the batch size %" PRId64, fn,
                        l->name, l->T, batch);
    return l->T / batch;
}

double ml_trace_selection_iou(const int64_t *ea, const int64_t *ka, const int64_t *eb, const int64_t *kb, int K) {
    /* the selections are distinct within a row (trace.h): count by membership */
    int inter = 0, na = 0, nb = 0;
    for (int i = 0; i < K; i++) {
        if (!ka[i]) continue;
        na++;
        for (int j = 0; j < K; j++)
            if (kb[j] && eb[j] == ea[i]) inter++;
    }
    for (int j = 0; j < K; j++) nb += kb[j] != 0;
    int uni = na + nb - inter;
    return uni == 0 ? 1.0 : (double)inter / (double)uni;
}
