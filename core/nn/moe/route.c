/* route.c -- see route.h. */
#include "route.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../ops/elementwise.h"
#include "../../ops/reduce.h"
#include "../../ops/shape.h"
#include "../../rng.h"

int64_t ml_route_capacity(int64_t T, int64_t E, int k, double factor, bool round4) {
    if (factor <= 0) return T * k; /* unlimited: every assignment fits */
    int64_t c = (int64_t)ceil((double)k * (double)T * factor / (double)E);
    if (round4) c = (c + 3) / 4 * 4;
    return c;
}

void ml_routing_free(ml_routing *r) {
    ml_release(r->experts);
    ml_release(r->kept);
    ml_release(r->load);
    ml_release(r->token);
    ml_release(r->flat);
    free(r->offset);
    memset(r, 0, sizeof *r);
}

typedef struct {
    float p;
    int64_t t;
} prio;

static int by_priority(const void *a, const void *b) {
    const prio *x = a, *y = b;
    if (x->p != y->p) return x->p > y->p ? -1 : 1;
    return x->t < y->t ? -1 : x->t > y->t; /* stable: token order among equals */
}

/* Step 1 for one token: its K most probable experts among those not taken
 * (or excluded), ties at random when asked, else by lowest index. */
static void top_k(const float *row, int64_t E, int64_t K, const ml_route_opts *o, bool *taken, int64_t *ex) {
    memset(taken, 0, (size_t)E);
    if (o->excluded)
        for (int64_t e = 0; e < E; e++) taken[e] = o->excluded[e];
    int64_t k = 0;
    if (o->force_first) {
        taken[o->first_expert] = true;
        ex[k++] = o->first_expert;
    }
    for (; k < K; k++) {
        int64_t best = -1, ties = 0;
        float bv = 0;
        for (int64_t e = 0; e < E; e++) {
            if (taken[e]) continue;
            float v = row[e];
            if (best < 0 || v > bv || (isnan(v) && !isnan(bv))) {
                best = e;
                bv = v;
                ties = 1;
            } else if (v == bv) {
                ties++;
                /* reservoir choice: the i-th tie replaces with probability 1/i */
                if (o->random_ties && ml_rng_uniform() * (double)ties < 1.0) best = e;
            }
        }
        taken[best] = true;
        ex[k] = best;
    }
}

static int check_opts(const ml_route_opts *o, int64_t T, int64_t E) {
    int64_t K = o->k, free_experts = E;
    if (K < 1 || K > E) return ml_failc("route: k = %" PRId64 " must be between 1 and the number of experts (%" PRId64 ")", K, E);
    for (int64_t e = 0; o->excluded && e < E; e++) free_experts -= o->excluded[e];
    if (K > free_experts)
        return ml_failc("route: k = %" PRId64 " but only %" PRId64 " of %" PRId64 " experts are not silenced", K,
                        free_experts, E);
    if (o->force_first && (o->first_expert < 0 || o->first_expert >= E || (o->excluded && o->excluded[o->first_expert])))
        return ml_failc("route: cannot force expert %d of %" PRId64 " (out of range or silenced)", o->first_expert + 1, E);
    const ml_tensor *ge = o->given_experts, *gk = o->given_kept;
    if (ge && (ge->dtype != ML_I64 || ge->ndim != 2 || ge->shape[0] != T || ge->shape[1] != K || !gk ||
               !ml_same_shape(ge, gk) || gk->dtype != ML_I64))
        return ml_failc("route: the given selection must be int64 [%" PRId64 ", %" PRId64 "] with kept flags of that shape",
                        T, K);
    return 0;
}

int ml_route(const ml_tensor *probs, const ml_route_opts *o, ml_routing *r) {
    memset(r, 0, sizeof *r);
    if (probs->ndim != 2 || probs->dtype != ML_F32)
        return ml_failc("route: probabilities must be a float32 [tokens, experts] tensor, got %s", ML_SHAPE_STR(probs));
    int64_t T = probs->shape[0], E = probs->shape[1], K = o->k;
    if (check_opts(o, T, E)) return -1;
    ml_tensor *pc = ml_contiguous((ml_tensor *)probs);
    if (!pc) return -1;
    const float *P = ml_f32(pc);
    int64_t ts[2] = {T, K};
    r->T = T;
    r->E = E;
    r->K = K;
    r->capacity = o->force_first ? T * K : ml_route_capacity(T, E, (int)K, o->capacity_factor, o->round_capacity);
    r->experts = o->given_experts ? ml_clone((ml_tensor *)o->given_experts) : ml_empty(ML_I64, 2, ts);
    r->kept = o->given_kept ? ml_clone((ml_tensor *)o->given_kept) : ml_zeros(ML_I64, 2, ts);
    r->load = ml_zeros(ML_F32, 1, &E);
    r->offset = calloc((size_t)E + 1, sizeof *r->offset);
    int64_t *count = calloc((size_t)E, sizeof *count), *slot = malloc(sizeof *slot * (size_t)(T > 0 ? T * K : 1));
    prio *order = malloc(sizeof *order * (size_t)(T ? T : 1));
    bool *taken = malloc((size_t)E);
    if (!r->experts || !r->kept || !r->load || !r->offset || !count || !slot || !order || !taken) {
        free(count);
        free(slot);
        free(order);
        free(taken);
        ml_release(pc);
        ml_routing_free(r);
        return ml_failc_oom(__func__);
    }
    int64_t *ex = ml_i64(r->experts), *kept = ml_i64(r->kept);

    /* 1. top-K per token (unless given) */
    for (int64_t t = 0; t < T; t++) {
        if (!o->given_experts) top_k(P + t * E, E, K, o, taken, ex + t * K);
        order[t] = (prio){P[t * E + ex[t * K]], t};
    }
    if (o->batch_priority) qsort(order, (size_t)T, sizeof *order, by_priority);

    /* 2. slots: rank by rank, tokens in (priority) order; a given selection
     * brings its own kept flags */
    for (int64_t k = 0; k < K; k++)
        for (int64_t i = 0; i < T; i++) {
            int64_t t = order[i].t, e = ex[t * K + k];
            bool fits = o->given_experts ? kept[t * K + k] != 0 : count[e] < r->capacity;
            if (fits) {
                kept[t * K + k] = 1;
                slot[t * K + k] = count[e]++;
            } else {
                slot[t * K + k] = -1;
            }
        }
    /* 3. list the kept assignments expert by expert */
    for (int64_t e = 0; e < E; e++) {
        r->offset[e + 1] = r->offset[e] + count[e];
        ml_f32(r->load)[e] = (float)count[e];
    }
    r->A = r->offset[E];
    r->token = ml_empty(ML_I64, 1, &r->A);
    r->flat = ml_empty(ML_I64, 1, &r->A);
    if (!r->token || !r->flat) {
        free(count);
        free(slot);
        free(order);
        free(taken);
        ml_release(pc);
        ml_routing_free(r);
        return -1;
    }
    int64_t *tok = ml_i64(r->token), *flat = ml_i64(r->flat);
    for (int64_t t = 0; t < T; t++)
        for (int64_t k = 0; k < K; k++) {
            if (!kept[t * K + k]) continue;
            int64_t e = ex[t * K + k], a = r->offset[e] + slot[t * K + k];
            tok[a] = t;
            flat[a] = t * E + e;
        }
    free(count);
    free(slot);
    free(order);
    free(taken);
    ml_release(pc);
    return 0;
}

/* ------------------------------------------------------------ auxiliary losses */
ml_tensor *ml_cv2(ml_tensor *v) {
    ml_tensor *m = ml_mean(v, ML_ALL_DIMS, false);
    ml_tensor *var = m ? ml_var(v, ML_ALL_DIMS, false, false) : NULL;
    ml_tensor *m2 = var ? ml_mul(m, m) : NULL;
    ml_tensor *out = m2 ? ml_div(var, m2) : NULL;
    ml_release(m);
    ml_release(var);
    ml_release(m2);
    return out;
}

ml_tensor *ml_aux_importance(ml_tensor *probs_clean) {
    ml_tensor *imp = ml_sum(probs_clean, 0, false);
    if (!imp) return NULL;
    ml_tensor *out = ml_cv2(imp);
    ml_release(imp);
    return out;
}

ml_tensor *ml_aux_load(ml_tensor *logits_clean, const ml_tensor *logits_noisy, int k, double sigma) {
    if (!(sigma > 0)) return ml_fail("load loss: the noise std must be positive (got %g)", sigma);
    int64_t T = logits_clean->shape[0], E = logits_clean->shape[1];
    if (k < 1 || k > E) return ml_fail("load loss: k = %d out of range for %" PRId64 " experts", k, E);
    ml_tensor *nc = ml_contiguous((ml_tensor *)logits_noisy);
    int64_t ts[2] = {T, 1};
    ml_tensor *thr = nc ? ml_empty(ML_F32, 2, ts) : NULL;
    if (!thr) {
        ml_release(nc);
        return NULL;
    }
    /* K-th largest noisy logit of each token (a constant for the gradient) */
    float *buf = malloc(sizeof *buf * (size_t)E);
    for (int64_t t = 0; t < T; t++) {
        memcpy(buf, ml_f32(nc) + t * E, sizeof *buf * (size_t)E);
        for (int j = 0; j < k; j++) { /* partial selection sort */
            int64_t best = j;
            for (int64_t e = j + 1; e < E; e++)
                if (buf[e] > buf[best]) best = e;
            float tmp = buf[j];
            buf[j] = buf[best];
            buf[best] = tmp;
        }
        ml_f32(thr)[t] = buf[k - 1];
    }
    free(buf);
    ml_release(nc);
    /* 1 - Phi((thr - l) / sigma) = 0.5 * (1 - erf((thr - l) / (sigma sqrt 2))) */
    ml_tensor *d = ml_sub(thr, logits_clean);
    ml_tensor *z = d ? ml_mul_scalar(d, 1.0 / (sigma * sqrt(2.0))) : NULL;
    ml_tensor *er = z ? ml_unary(ML_ERF, z) : NULL;
    ml_tensor *p = er ? ml_rsub_scalar(1.0, er) : NULL;
    ml_tensor *ph = p ? ml_mul_scalar(p, 0.5) : NULL;
    ml_tensor *load = ph ? ml_mean(ph, 0, false) : NULL;
    ml_tensor *out = load ? ml_cv2(load) : NULL;
    ml_release(thr);
    ml_release(d);
    ml_release(z);
    ml_release(er);
    ml_release(p);
    ml_release(ph);
    ml_release(load);
    return out;
}

ml_tensor *ml_aux_switch(ml_tensor *probs, const ml_tensor *top1) {
    int64_t T = probs->shape[0], E = probs->shape[1];
    ml_tensor *f = ml_zeros(ML_F32, 1, &E);
    if (!f) return NULL;
    ml_tensor *tc = ml_contiguous((ml_tensor *)top1);
    for (int64_t t = 0; t < T; t++) ml_f32(f)[ml_i64(tc)[t * tc->stride[0]]] += 1.0f / (float)T;
    ml_release(tc);
    ml_tensor *pm = ml_mean(probs, 0, false);
    ml_tensor *prod = pm ? ml_mul(pm, f) : NULL;
    ml_tensor *s = prod ? ml_sum(prod, ML_ALL_DIMS, false) : NULL;
    ml_tensor *out = s ? ml_mul_scalar(s, (double)E) : NULL;
    ml_release(f);
    ml_release(pm);
    ml_release(prod);
    ml_release(s);
    return out;
}

ml_tensor *ml_aux_zloss(ml_tensor *logits) {
    ml_tensor *lse = ml_logsumexp(logits, 1, false);
    ml_tensor *sq = lse ? ml_mul(lse, lse) : NULL;
    ml_tensor *out = sq ? ml_mean(sq, ML_ALL_DIMS, false) : NULL;
    ml_release(lse);
    ml_release(sq);
    return out;
}
