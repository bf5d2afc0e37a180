/* routing.c -- the routing objectives (routing.h): losses per example that
 * grow as the routing moves away from the clean one, or towards chosen
 * experts, built from differentiable ops on the router logits of the trace. */
#include <math.h>
#include <stdlib.h>

#include "../ops/elementwise.h"
#include "../ops/index.h"
#include "../ops/loss.h"
#include "../ops/reduce.h"
#include "../ops/shape.h"
#include "../ops/softmax.h"
#include "routing.h"

/* The per-item loss of one layer: cur is the current forward's layer (its
 * logits differentiable), clean_rows the clean layer's selection and logits
 * at the same items (rows already picked), k the layer's position. Returns a
 * float [items] tensor, or NULL with *skip set when the layer adds nothing. */
typedef ml_tensor *(*item_loss_fn)(ml_objective *o, int k, const ml_trace_layer *cur, ml_tensor *clean_experts,
                                   ml_tensor *clean_logits, bool *skip);

/* Sums item losses over the items of each example and over the layers. */
static ml_tensor *per_example(ml_objective *o, const ml_objective_input *in, item_loss_fn item, bool needs_logits) {
    const ml_trace *cur = in->routing ? ml_attack_routing_trace(in->routing) : NULL, *clean = o->clean_trace;
    int64_t b = in->logits->shape[0];
    if (!clean || !o->clean_logits)
        return ml_fail("%s: the objective has no clean routing (internal: not prepared)", o->name);
    if (!cur || cur->n == 0 || clean->n == 0)
        return ml_fail("%s: the model reports no routing (no MoE layer): nothing for a routing objective to change",
                       o->name);
    if (cur->n != clean->n)
        return ml_fail("%s: the forward traced %d MoE layers, the clean forward %d", o->name, cur->n, clean->n);
    int64_t B = o->clean_logits->shape[0];
    ml_tensor *total = NULL;
    for (int k = 0; k < cur->n; k++) {
        const ml_trace_layer *l = &cur->layers[k], *c = &clean->layers[k];
        int64_t n = ml_trace_items_per_sample(o->name, c, B);
        if (n < 0) goto fail;
        if (l->T != b * n || l->E != c->E || l->K != c->K) {
            ml_fail("%s: layer '%s' routes %lld items of %d experts, the clean forward %lld of %d for %lld examples",
                    o->name, l->name, (long long)l->T, l->E, (long long)c->T, c->E, (long long)B);
            goto fail;
        }
        if (needs_logits && (!l->logits || !c->logits)) {
            ml_fail("%s: layer '%s' reports no router logits", o->name, l->name);
            goto fail;
        }
        ml_tensor *rows = ml_attack_item_rows(in->index, b, n);
        ml_tensor *ce = rows ? ml_index_select(c->experts, 0, rows) : NULL;
        ml_tensor *cl = ce && c->logits ? ml_index_select(c->logits, 0, rows) : NULL;
        bool skip = false;
        ml_tensor *li = ce && (cl || !c->logits) ? item(o, k, l, ce, cl, &skip) : NULL;
        ml_release(rows);
        ml_release(ce);
        ml_release(cl);
        if (skip) continue;
        int64_t s2[2] = {b, n};
        ml_tensor *r = li ? ml_reshape(li, 2, s2) : NULL;
        ml_tensor *sum = r ? ml_sum(r, 1, false) : NULL;
        ml_release(li);
        ml_release(r);
        if (!sum) goto fail;
        if (!total) {
            total = sum;
            continue;
        }
        ml_tensor *t = ml_add(total, sum);
        ml_release(total);
        ml_release(sum);
        if (!(total = t)) return NULL;
    }
    return total ? total : ml_zeros(ML_F32, 1, &b);
fail:
    ml_release(total);
    return NULL;
}

/* ------------------------------------------------------------ KL */
static ml_tensor *item_kl(ml_objective *o, int k, const ml_trace_layer *cur, ml_tensor *clean_experts,
                          ml_tensor *clean_logits, bool *skip) {
    return ml_kl_div(clean_logits, cur->logits, ML_NONE);
}

ml_tensor *ml_loss_routing_kl(ml_objective *o, const ml_objective_input *in) {
    return per_example(o, in, item_kl, true);
}

/* ------------------------------------------------------------ top-K margin */
#define OUTSIDE 1e9 /* added to the logits of experts a min (max) must not pick */

static ml_tensor *item_margin(ml_objective *o, int k, const ml_trace_layer *cur, ml_tensor *clean_experts,
                              ml_tensor *clean_logits, bool *skip) {
    int64_t T = cur->T, E = cur->E, K = cur->K, shape[2] = {T, E};
    if (K >= E) {
        *skip = true;
        return NULL;
    }
    /* away_in: +OUTSIDE off the clean selection (for its min); away_out: -OUTSIDE on it (for the max of the rest) */
    ml_tensor *away_in = ml_full(ML_F32, 2, shape, OUTSIDE), *away_out = ml_zeros(ML_F32, 2, shape);
    if (!away_in || !away_out) {
        ml_release(away_in);
        ml_release(away_out);
        return NULL;
    }
    const int64_t *sel = ml_i64(clean_experts);
    for (int64_t t = 0; t < T; t++)
        for (int64_t j = 0; j < K; j++) {
            int64_t e = sel[t * K + j];
            ml_f32(away_in)[t * E + e] = 0;
            ml_f32(away_out)[t * E + e] = -OUTSIDE;
        }
    ml_tensor *zin = ml_add(cur->logits, away_in), *zout = zin ? ml_add(cur->logits, away_out) : NULL;
    ml_tensor *lo = NULL, *hi = NULL;
    int rc = zout ? ml_min(zin, 1, false, &lo, NULL) : -1;
    if (rc == 0) rc = ml_max(zout, 1, false, &hi, NULL);
    ml_tensor *v = rc == 0 ? ml_sub(hi, lo) : NULL;
    ml_tensor *out = v ? ml_clamp(v, -INFINITY, 0) : NULL;
    ml_release(away_in), ml_release(away_out), ml_release(zin), ml_release(zout);
    ml_release(lo), ml_release(hi), ml_release(v);
    return out;
}

ml_tensor *ml_loss_routing_margin(ml_objective *o, const ml_objective_input *in) {
    return per_example(o, in, item_margin, true);
}

/* ------------------------------------------------------------ steering */
static ml_tensor *item_steer(ml_objective *o, int k, const ml_trace_layer *cur, ml_tensor *clean_experts,
                             ml_tensor *clean_logits, bool *skip) {
    if (!o->steer || k >= o->n_steer)
        return ml_fail("%s: no expert to steer layer '%s' to (internal: targets not set)", o->name, cur->name);
    int e = o->steer[k];
    if (e < 0 || e >= cur->E)
        return ml_fail("%s: layer '%s' has %d experts, cannot steer to expert %d", o->name, cur->name, cur->E, e + 1);
    ml_tensor *ls = ml_log_softmax(cur->logits, 1);
    ml_tensor *col = ls ? ml_narrow(ls, 1, e, 1) : NULL;
    ml_tensor *out = col ? ml_reshape(col, 1, &cur->T) : NULL;
    ml_release(ls);
    ml_release(col);
    return out;
}

ml_tensor *ml_loss_routing_steer(ml_objective *o, const ml_objective_input *in) {
    return per_example(o, in, item_steer, true);
}
