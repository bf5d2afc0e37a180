/* moe_conv.c -- channel-MoE convolution (MoE-CNN, AdvMoE) and the
 * score-masked convolution of the Sparse-CNN baseline. */
#include "moe_conv.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../autograd.h"
#include "../../ops/conv.h"
#include "../../ops/elementwise.h"
#include "../../ops/linalg.h"
#include "../../ops/pool.h"
#include "../../ops/reduce.h"
#include "../../ops/shape.h"
#include "../../ops/softmax.h"
#include "../layers.h"
#include "dispatch.h"
#include "moe.h"

typedef struct {
    int64_t cin, cout;
    int k, stride, pad;
    int experts;
    double ratio;
    int64_t block;  /* channels per expert = round(ratio * cout) */
    int64_t *start; /* first channel of each expert */
    bool global;    /* routed by the model's global router (ctx->route) */
    bool mask;      /* full compute then mask (reference form) instead of sparse */
    double w_importance, w_switch; /* balancing losses of a per-layer router (0: off) */
} moe_conv_state;

static void moe_conv_destroy(ml_module *m) {
    moe_conv_state *s = m->state;
    free(s->start);
    free(s);
}

/* Evenly spaced blocks: a partition when experts * block == cout, overlapping
 * blocks when experts * ratio > 1, gaps when < 1. */
static void block_starts(moe_conv_state *s) {
    for (int e = 0; e < s->experts; e++)
        s->start[e] = s->experts == 1 ? 0 : (int64_t)((double)e * (double)(s->cout - s->block) / (double)(s->experts - 1) + 0.5);
}

/* Routing for this layer: expert per sample (int64 [N], 0-based), gate per
 * sample (float [N], differentiable) and, for the trace, the probabilities. */
static int route_samples(ml_module *m, ml_tensor *x, ml_ctx *ctx, ml_tensor **experts, ml_tensor **gates,
                         ml_tensor **probs) {
    moe_conv_state *s = m->state;
    int64_t N = x->shape[0];
    *experts = *gates = *probs = NULL;
    if (s->global) {
        if (!ctx || !ctx->route || !ctx->route_gates)
            return ml_failc("MoEConv2d: this layer is routed by a global router, but the model gave no routing "
                            "(run it inside its MoE-CNN model)");
        int L = (int)ctx->route->shape[1];
        if (ctx->route_layer >= L)
            return ml_failc("MoEConv2d: the global router decided for %d layers, this is layer %d", L, ctx->route_layer + 1);
        int l = ctx->route_layer++;
        ml_tensor *col = ml_select(ctx->route, 1, l);
        *experts = col ? ml_contiguous(col) : NULL;
        ml_release(col);
        *gates = ml_select(ctx->route_gates, 1, l);
        if (ctx->route_probs) {
            ml_tensor *pl = ml_select(ctx->route_probs, 1, l);
            *probs = pl ? ml_contiguous(pl) : NULL;
            ml_release(pl);
        }
        return *experts && *gates ? 0 : -1;
    }
    /* per-layer router: softmax(R . GAP(x)), top-1 with the lowest index on ties */
    ml_tensor *pooled = ml_global_avg_pool2d(x);
    ml_tensor *logits = pooled ? ml_module_forward_child(m, 0, pooled, ctx) : NULL;
    ml_tensor *p = logits ? ml_softmax(logits, 1) : NULL;
    ml_release(pooled);
    ml_release(logits);
    if (!p) return -1;
    ml_tensor *idx = ml_argmax(p, 1, false);
    if (!idx) {
        ml_release(p);
        return -1;
    }
    /* gate = p[n, e(n)] through a flat gather, so the router gets gradients */
    int64_t E = s->experts, flat_shape[2] = {N * E, 1};
    ml_tensor *flat = ml_empty(ML_I64, 1, &N);
    for (int64_t n = 0; n < N; n++) ml_i64(flat)[n] = n * E + ml_i64(idx)[n];
    ml_tensor *pf = ml_reshape(p, 2, flat_shape);
    ml_tensor *g2 = pf ? ml_moe_gather(pf, flat) : NULL;
    *gates = g2 ? ml_reshape(g2, 1, &N) : NULL;
    ml_release(pf);
    ml_release(g2);
    ml_release(flat);
    *experts = idx;
    *probs = p;
    return *gates ? 0 : -1;
}

static ml_tensor *weight_block(ml_module *m, int e) {
    moe_conv_state *s = m->state;
    return ml_narrow(ml_module_param(m, "weight"), 0, s->start[e], s->block);
}

static ml_tensor *moe_conv_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    moe_conv_state *s = m->state;
    if (x->ndim != 4 || x->shape[1] != s->cin)
        return ml_fail("MoEConv2d: input has shape %s, expected [N, %" PRId64 ", H, W]", ML_SHAPE_STR(x), s->cin);
    int64_t N = x->shape[0], E = s->experts;
    ml_tensor *experts, *gates, *probs;
    if (route_samples(m, x, ctx, &experts, &gates, &probs)) return NULL;
    ml_conv_opts co = {.stride_h = s->stride, .stride_w = s->stride, .pad_h = s->pad, .pad_w = s->pad, .dil_h = 1,
                       .dil_w = 1, .groups = 1};
    ml_tensor *out = NULL;
    const int64_t *ex = ml_i64(experts);
    int64_t *count = calloc((size_t)E, sizeof *count);
    for (int64_t n = 0; n < N; n++) count[ex[n]]++;
    if (s->mask || N == 0) {
        /* reference form (and an empty batch): the full convolution, then each sample keeps its
         * expert's channels, scaled by its gate */
        ml_tensor *full = ml_conv2d(x, ml_module_param(m, "weight"), NULL, &co);
        int64_t *first = full ? malloc(sizeof *first * (size_t)(N ? N : 1)) : NULL;
        if (first) {
            for (int64_t n = 0; n < N; n++) first[n] = s->start[ex[n]];
            out = ml_moe_mask_channels(full, first, s->block, gates);
        } else if (full) {
            ml_fail("out of memory");
        }
        free(first);
        ml_release(full);
    } else {
        /* sparse form: gather each expert's samples, convolve with its block */
        ml_tensor *parts[64] = {0}, *ids[64] = {0};
        int rc = 0;
        for (int e = 0; e < E && rc == 0; e++) {
            ids[e] = ml_empty(ML_I64, 1, &count[e]);
            if (!ids[e]) {
                rc = -1;
                break;
            }
            int64_t k = 0;
            for (int64_t n = 0; n < N; n++)
                if (ex[n] == e) ml_i64(ids[e])[k++] = n;
            if (count[e] == 0) continue;
            ml_tensor *xe = ml_moe_gather(x, ids[e]);
            ml_tensor *we = xe ? weight_block(m, e) : NULL;
            parts[e] = we ? ml_conv2d(xe, we, NULL, &co) : NULL;
            ml_release(xe);
            ml_release(we);
            if (!parts[e]) rc = -1;
        }
        if (rc == 0) out = ml_moe_place_channels((int)E, parts, ids, gates, N, s->cout, s->start);
        for (int e = 0; e < E; e++) {
            ml_release(parts[e]);
            ml_release(ids[e]);
        }
    }
    /* balancing losses on a per-layer router (training, or when asked for) */
    double aux_values[4] = {NAN, NAN, NAN, NAN};
    if (out && ctx && probs && !s->global && (s->w_importance > 0 || s->w_switch > 0) &&
        (m->training || ctx->want_aux || ctx->trace)) {
        bool add = m->training || ctx->want_aux;
        ml_tensor *terms[2] = {s->w_importance > 0 ? ml_aux_importance(probs) : NULL,
                               s->w_switch > 0 ? ml_aux_switch(probs, experts) : NULL};
        double w[2] = {s->w_importance, s->w_switch};
        for (int i = 0; i < 2; i++) {
            if (!terms[i]) continue;
            ml_item(terms[i], &aux_values[i == 0 ? 0 : 2]);
            ml_tensor *wt = add ? ml_mul_scalar(terms[i], w[i]) : NULL;
            if (wt) ml_ctx_add_aux(ctx, wt);
            ml_release(wt);
            ml_release(terms[i]);
        }
    }
    if (out && ctx && ctx->trace) {
        ml_trace *tr = calloc(1, sizeof *tr);
        tr->layer = strdup(ctx->path);
        tr->num_experts = (int)E;
        int64_t ts[2] = {N, 1};
        tr->experts = ml_reshape(experts, 2, ts);
        ml_tensor *gd = ml_detach(gates);
        tr->gates = gd ? ml_reshape(gd, 2, ts) : NULL;
        ml_release(gd);
        tr->probs = probs ? ml_detach(probs) : NULL;
        tr->kept = ml_full(ML_I64, 2, ts, 1.0);
        tr->load = ml_empty(ML_F32, 1, &E);
        for (int64_t e = 0; e < E; e++) ml_f32(tr->load)[e] = (float)count[e];
        memcpy(tr->aux, aux_values, sizeof aux_values);
        ml_ctx_add_trace(ctx, tr);
    }
    free(count);
    ml_release(experts);
    ml_release(gates);
    ml_release(probs);
    return out;
}

static void moe_conv_describe(const ml_module *m, char *buf, size_t n) {
    const moe_conv_state *s = m->state;
    snprintf(buf, n, "MoEConv2d(%" PRId64 " -> %" PRId64 ", %dx%d, stride %d, %d experts x %" PRId64 " channels, %s router%s)",
             s->cin, s->cout, s->k, s->k, s->stride, s->experts, s->block, s->global ? "global" : "layer",
             s->mask ? ", mask form" : "");
}

static cJSON *moe_conv_config(const ml_module *m) {
    const moe_conv_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "MoEConv2d");
    cJSON_AddNumberToObject(c, "in", (double)s->cin);
    cJSON_AddNumberToObject(c, "out", (double)s->cout);
    cJSON_AddNumberToObject(c, "kernel", s->k);
    cJSON_AddNumberToObject(c, "stride", s->stride);
    cJSON_AddNumberToObject(c, "padding", s->pad);
    cJSON_AddNumberToObject(c, "experts", s->experts);
    cJSON_AddNumberToObject(c, "ratio", s->ratio);
    cJSON_AddStringToObject(c, "router", s->global ? "global" : "layer");
    cJSON_AddBoolToObject(c, "mask", s->mask);
    if (s->w_importance > 0) cJSON_AddNumberToObject(c, "importance_weight", s->w_importance);
    if (s->w_switch > 0) cJSON_AddNumberToObject(c, "switch_weight", s->w_switch);
    return c;
}

/* Active per input: one expert's block of the weight, plus the router. */
static int64_t moe_conv_active(const ml_module *m) {
    const moe_conv_state *s = m->state;
    int64_t router = m->n_children ? ml_module_num_params(m->children[0].m) : 0;
    return s->block * s->cin * s->k * s->k + router;
}

static const ml_module_type moe_conv_type = {.name = "MoEConv2d", .forward = moe_conv_forward,
                                             .destroy = moe_conv_destroy, .describe = moe_conv_describe,
                                             .config = moe_conv_config, .active_params = moe_conv_active};

ml_module *ml_nn_moe_conv2d(int64_t cin, int64_t cout, int k, int stride, int pad, int experts, double ratio,
                            bool global_router, bool mask_form) {
    if (cin <= 0 || cout <= 0 || k <= 0 || stride <= 0 || pad < 0)
        return ml_fail("MoEConv2d: invalid sizes (in %" PRId64 ", out %" PRId64 ", kernel %d)", cin, cout, k);
    if (experts < 1 || experts > 64) return ml_fail("MoEConv2d: experts = %d must be between 1 and 64", experts);
    if (!(ratio > 0 && ratio <= 1)) return ml_fail("MoEConv2d: ratio = %g must be in (0, 1]", ratio);
    int64_t block = (int64_t)floor(ratio * (double)cout + 0.5);
    if (block < 1) block = 1;
    moe_conv_state *s = calloc(1, sizeof *s);
    if (!s) return ml_fail("out of memory");
    *s = (moe_conv_state){cin, cout, k, stride, pad, experts, ratio, block, NULL, global_router, mask_form, 0, 0};
    s->start = calloc((size_t)experts, sizeof *s->start);
    block_starts(s);
    ml_module *m = ml_module_new(&moe_conv_type, s);
    if (!m) {
        free(s->start);
        free(s);
        return NULL;
    }
    int64_t ws[4] = {cout, cin, k, k};
    if (!ml_module_add_param(m, "weight", ml_init_uniform_fan_in(4, ws, cin * k * k), NULL) ||
        (!global_router && !ml_module_add_child(m, "router", ml_nn_router(cin, experts)))) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *moe_conv_from_config(const cJSON *c) {
    int in, out, k, stride, pad, experts;
    double ratio;
    bool mask;
    if (ml_cfg_int(c, "in", 0, &in) || ml_cfg_int(c, "out", 0, &out) || ml_cfg_int(c, "kernel", 3, &k) ||
        ml_cfg_int(c, "stride", 1, &stride) || ml_cfg_int(c, "padding", 1, &pad) ||
        ml_cfg_int(c, "experts", 2, &experts) || ml_cfg_double(c, "ratio", 0.5, &ratio) ||
        ml_cfg_bool(c, "mask", false, &mask))
        return NULL;
    const char *router = ml_cfg_string(c, "router", "layer");
    if (strcmp(router, "layer") && strcmp(router, "global"))
        return ml_fail("MoEConv2d: router must be \"layer\" or \"global\", got \"%s\"", router);
    double wi, ws;
    if (ml_cfg_double(c, "importance_weight", 0, &wi) || ml_cfg_double(c, "switch_weight", 0, &ws)) return NULL;
    ml_module *m = ml_nn_moe_conv2d(in, out, k, stride, pad, experts, ratio, !strcmp(router, "global"), mask);
    if (m && ml_moe_conv_set_balance(m, wi, ws)) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

int ml_moe_conv_set_balance(ml_module *m, double importance_weight, double switch_weight) {
    if (!(importance_weight >= 0) || !(switch_weight >= 0))
        return ml_failc("MoEConv2d: importance_weight and switch_weight must be >= 0, got %g and %g", importance_weight,
                        switch_weight);
    if (m->type == &moe_conv_type) {
        moe_conv_state *s = m->state;
        if (s->global && (importance_weight > 0 || switch_weight > 0))
            return ml_failc("MoEConv2d: balancing losses apply to per-layer routers, not to a global router");
        s->w_importance = importance_weight;
        s->w_switch = switch_weight;
    }
    for (int i = 0; i < m->n_children; i++)
        if (ml_moe_conv_set_balance(m->children[i].m, importance_weight, switch_weight)) return -1;
    return 0;
}

void ml_moe_conv_set_mask(ml_module *m, bool mask) {
    if (m->type == &moe_conv_type) ((moe_conv_state *)m->state)->mask = mask;
    for (int i = 0; i < m->n_children; i++) ml_moe_conv_set_mask(m->children[i].m, mask);
}

int ml_moe_conv_count(const ml_module *m) {
    int n = m->type == &moe_conv_type;
    for (int i = 0; i < m->n_children; i++) n += ml_moe_conv_count(m->children[i].m);
    return n;
}

/* ------------------------------------------------------------ score-masked conv (Sparse-CNN) */
/* y = conv(x, W) * mask, mask = the `ratio` fraction of output channels with the
 * largest scores (a static structure once trained). The scores learn through a
 * straight-through estimator: d loss / d score_c = d loss / d mask_c. */
typedef struct {
    int64_t cin, cout;
    int k, stride, pad;
    double ratio;
    int64_t keep;
} masked_state;

static int ste_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    gin[0] = ml_retain(g);
    return 0;
}

/* The binary top-k mask of scores [C] as a tensor whose gradient passes
 * straight through to the scores. */
static ml_tensor *topk_mask_ste(ml_tensor *scores, int64_t keep) {
    int64_t C = scores->shape[0];
    ml_tensor *sc = ml_contiguous(scores);
    ml_tensor *mask = sc ? ml_zeros(ML_F32, 1, &C) : NULL;
    if (!mask) {
        ml_release(sc);
        return NULL;
    }
    char *taken = calloc((size_t)C, 1);
    for (int64_t j = 0; j < keep; j++) {
        int64_t best = -1;
        for (int64_t c = 0; c < C; c++)
            if (!taken[c] && (best < 0 || fabsf(ml_f32(sc)[c]) > fabsf(ml_f32(sc)[best]))) best = c;
        taken[best] = 1;
        ml_f32(mask)[best] = 1.0f;
    }
    free(taken);
    ml_release(sc);
    ml_record("topk_mask", mask, 1, &scores, ste_backward);
    return mask;
}

static ml_tensor *masked_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    masked_state *s = m->state;
    ml_conv_opts co = {.stride_h = s->stride, .stride_w = s->stride, .pad_h = s->pad, .pad_w = s->pad, .dil_h = 1,
                       .dil_w = 1, .groups = 1};
    ml_tensor *y = ml_conv2d(x, ml_module_param(m, "weight"), NULL, &co);
    ml_tensor *mask = y ? topk_mask_ste(ml_module_param(m, "scores"), s->keep) : NULL;
    int64_t m4[4] = {1, s->cout, 1, 1};
    ml_tensor *m4t = mask ? ml_reshape(mask, 4, m4) : NULL;
    ml_tensor *out = m4t ? ml_mul(y, m4t) : NULL;
    ml_release(y);
    ml_release(mask);
    ml_release(m4t);
    return out;
}

static void masked_describe(const ml_module *m, char *buf, size_t n) {
    const masked_state *s = m->state;
    snprintf(buf, n, "MaskedConv2d(%" PRId64 " -> %" PRId64 ", %dx%d, stride %d, keeps %" PRId64 " channels)", s->cin,
             s->cout, s->k, s->k, s->stride, s->keep);
}

static cJSON *masked_config(const ml_module *m) {
    const masked_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "MaskedConv2d");
    cJSON_AddNumberToObject(c, "in", (double)s->cin);
    cJSON_AddNumberToObject(c, "out", (double)s->cout);
    cJSON_AddNumberToObject(c, "kernel", s->k);
    cJSON_AddNumberToObject(c, "stride", s->stride);
    cJSON_AddNumberToObject(c, "padding", s->pad);
    cJSON_AddNumberToObject(c, "ratio", s->ratio);
    return c;
}

static int64_t masked_active(const ml_module *m) {
    const masked_state *s = m->state;
    return s->keep * s->cin * s->k * s->k;
}

static void free_state(ml_module *m) { free(m->state); }

static const ml_module_type masked_type = {.name = "MaskedConv2d", .forward = masked_forward, .destroy = free_state,
                                           .describe = masked_describe, .config = masked_config,
                                           .active_params = masked_active};

ml_module *ml_nn_masked_conv2d(int64_t cin, int64_t cout, int k, int stride, int pad, double ratio) {
    if (!(ratio > 0 && ratio <= 1)) return ml_fail("MaskedConv2d: ratio = %g must be in (0, 1]", ratio);
    masked_state *s = malloc(sizeof *s);
    if (!s) return ml_fail("out of memory");
    int64_t keep = (int64_t)floor(ratio * (double)cout + 0.5);
    *s = (masked_state){cin, cout, k, stride, pad, ratio, keep < 1 ? 1 : keep};
    ml_module *m = ml_module_new(&masked_type, s);
    if (!m) {
        free(s);
        return NULL;
    }
    int64_t ws[4] = {cout, cin, k, k};
    /* HYDRA initialises the scores proportionally to the weights' magnitude; a
     * per-channel score starts at the channel's weight norm. */
    ml_tensor *w = ml_init_uniform_fan_in(4, ws, cin * k * k);
    ml_tensor *scores = w ? ml_empty(ML_F32, 1, &cout) : NULL;
    if (scores) {
        int64_t per = cin * k * k;
        for (int64_t c = 0; c < cout; c++) {
            double ss = 0;
            for (int64_t j = 0; j < per; j++) ss += (double)ml_f32(w)[c * per + j] * ml_f32(w)[c * per + j];
            ml_f32(scores)[c] = (float)sqrt(ss);
        }
    }
    if (!ml_module_add_param(m, "weight", w, NULL) || !ml_module_add_param(m, "scores", scores, "router")) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *masked_from_config(const cJSON *c) {
    int in, out, k, stride, pad;
    double ratio;
    if (ml_cfg_int(c, "in", 0, &in) || ml_cfg_int(c, "out", 0, &out) || ml_cfg_int(c, "kernel", 3, &k) ||
        ml_cfg_int(c, "stride", 1, &stride) || ml_cfg_int(c, "padding", 1, &pad) || ml_cfg_double(c, "ratio", 0.5, &ratio))
        return NULL;
    return ml_nn_masked_conv2d(in, out, k, stride, pad, ratio);
}

void ml_nn_register_moe_conv(void);
void ml_nn_register_moe_conv(void) {
    ml_module_register("MoEConv2d", moe_conv_from_config);
    ml_module_register("MaskedConv2d", masked_from_config);
}
