/* moe_conv.c -- channel-MoE convolution (MoE-CNN, AdvMoE) and the
 * score-masked convolution of the Sparse-CNN baseline. */
#include "moe_conv.h"

#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../autograd.h"
#include "../../ops/conv.h"
#include "../../ops/elementwise.h"
#include "../../ops/index.h"
#include "../../ops/linalg.h"
#include "../../ops/pool.h"
#include "../../ops/reduce.h"
#include "../../ops/shape.h"
#include "../../ops/softmax.h"
#include "../layers.h"
#include "dispatch.h"
#include "forced.h"
#include "moe.h"
#include "ste.h"

/* ------------------------------------------------------------ global routing */
struct ml_global_route {
    int refcount;
    int layers, experts;
    int layers_attached; /* the next layer attached reads this column */
    ml_tensor *logits, *probs; /* [N, L, E] of the current forward, or NULL */
};

ml_global_route *ml_global_route_new(int layers, int experts) {
    ml_global_route *g = calloc(1, sizeof *g);
    if (!g) return ml_fail_oom(__func__);
    *g = (ml_global_route){1, layers, experts, 0, NULL, NULL};
    return g;
}

static ml_global_route *global_route_retain(ml_global_route *g) {
    if (g) g->refcount++;
    return g;
}

void ml_global_route_release(ml_global_route *g) {
    if (!g || --g->refcount > 0) return;
    ml_global_route_clear(g);
    free(g);
}

int ml_global_route_set(ml_global_route *g, ml_tensor *logits) {
    int64_t N = logits->shape[0], s3[3] = {N, g->layers, g->experts};
    if (logits->ndim != 2 || logits->shape[1] != (int64_t)g->layers * g->experts)
        return ml_failc("global router: %s logits for %d layers of %d experts", ML_SHAPE_STR(logits), g->layers, g->experts);
    ml_tensor *l3 = ml_reshape(logits, 3, s3);
    ml_tensor *p = l3 ? ml_softmax(l3, 2) : NULL;
    if (!p) {
        ml_release(l3);
        return -1;
    }
    ml_global_route_clear(g);
    g->logits = l3;
    g->probs = p;
    return 0;
}

void ml_global_route_clear(ml_global_route *g) {
    ml_release(g->logits);
    ml_release(g->probs);
    g->logits = g->probs = NULL;
}

/* ------------------------------------------------------------ MoEConv2d */
typedef struct {
    int64_t cin, cout;
    int k, stride, pad;
    int experts;
    double ratio;
    int64_t block;  /* channels per expert = round(ratio * cout) */
    int64_t *start; /* first channel of each expert */
    bool global;    /* routed by the model's global router */
    ml_global_route *route; /* ... whose decisions this layer reads (column route_layer); NULL until attached */
    int route_layer;
    bool mask;      /* full compute then mask (reference form) instead of sparse */
    double w_importance, w_switch; /* balancing losses of a per-layer router (0: off) */
} moe_conv_state;

static void moe_conv_destroy(ml_module *m) {
    moe_conv_state *s = m->state;
    ml_global_route_release(s->route);
    free(s->start);
    free(s);
}

/* Evenly spaced blocks: a partition when experts * block == cout, overlapping
 * blocks when experts * ratio > 1, gaps when < 1. */
static void block_starts(moe_conv_state *s) {
    for (int e = 0; e < s->experts; e++)
        s->start[e] = s->experts == 1 ? 0 : (int64_t)((double)e * (double)(s->cout - s->block) / (double)(s->experts - 1) + 0.5);
}

/* The router's logits and probabilities [N, E] for this layer: its own router
 * on the pooled input, or its column of the global router's decisions. */
static int router_outputs(ml_module *m, ml_tensor *x, ml_ctx *ctx, ml_tensor **logits, ml_tensor **probs) {
    moe_conv_state *s = m->state;
    *logits = *probs = NULL;
    if (s->global) {
        const ml_global_route *g = s->route;
        if (!g || !g->probs)
            return ml_failc("MoEConv2d: this layer is routed by a global router, but the model gave no routing "
                            "(run it inside its MoE-CNN model)");
        if (g->probs->shape[0] != x->shape[0])
            return ml_failc("MoEConv2d: the global router decided for %" PRId64 " samples, this layer got %" PRId64,
                            g->probs->shape[0], x->shape[0]);
        *logits = ml_select(g->logits, 1, s->route_layer);
        *probs = *logits ? ml_select(g->probs, 1, s->route_layer) : NULL;
        return *probs ? 0 : -1;
    }
    ml_tensor *pooled = ml_global_avg_pool2d(x);
    *logits = pooled ? ml_module_forward_child(m, 0, pooled, ctx) : NULL;
    *probs = *logits ? ml_softmax(*logits, 1) : NULL;
    ml_release(pooled);
    return *probs ? 0 : -1;
}

/* Routing for this layer: expert per sample (int64 [N, 1], 0-based; top-1
 * with the lowest index on ties, or as the forward context forces it), its
 * gate p[n, e(n)] (float [N], differentiable: the router learns through it),
 * and the router's logits and probabilities [N, E]. */
static int route_samples(ml_module *m, ml_tensor *x, ml_ctx *ctx, ml_tensor **experts, ml_tensor **gates,
                         ml_tensor **logits, ml_tensor **probs) {
    moe_conv_state *s = m->state;
    int64_t N = x->shape[0];
    *experts = *gates = NULL;
    if (router_outputs(m, x, ctx, logits, probs)) return -1;
    ml_layer_plan plan;
    if (ml_layer_plan_get(ctx, "MoEConv2d", s->global ? ML_TRACE_GLOBAL : ML_TRACE_CHANNEL, N, s->experts, 1, &plan))
        return -1;
    ml_route_opts top1 = {.k = 1};
    ml_layer_plan_apply(&plan, &top1);
    ml_routing r;
    int rc = ml_route(*probs, &top1, &r);
    ml_layer_plan_free(&plan);
    if (rc) return -1;
    *experts = ml_retain(r.experts);
    ml_routing_free(&r);
    ml_tensor *g = ml_gather(*probs, 1, *experts);
    *gates = g ? ml_reshape(g, 1, &N) : NULL;
    ml_release(g);
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
    ml_tensor *experts = NULL, *gates = NULL, *logits = NULL, *probs = NULL;
    if (route_samples(m, x, ctx, &experts, &gates, &logits, &probs)) {
        ml_release(experts);
        ml_release(gates);
        ml_release(logits);
        ml_release(probs);
        return NULL;
    }
    ml_conv_opts co = {.stride_h = s->stride, .stride_w = s->stride, .pad_h = s->pad, .pad_w = s->pad, .dil_h = 1,
                       .dil_w = 1, .groups = 1};
    ml_tensor *out = NULL;
    const int64_t *ex = ml_i64(experts);
    int64_t *count = calloc((size_t)E, sizeof *count);
    for (int64_t n = 0; n < N; n++) count[ex[n]]++;
    if (s->mask) {
        /* reference form: the full convolution, then each sample keeps its
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
    if (out && ml_moe_ste_wanted(ctx)) {
        /* the straight-through term of the selection (ste.h): every channel, without gradient */
        bool gm = ml_grad_set(false);
        ml_tensor *full = ml_conv2d(x, ml_module_param(m, "weight"), NULL, &co);
        ml_grad_set(gm);
        ml_tensor *term = full ? ml_moe_ste_channels(probs, full, s->start, s->block) : NULL;
        ml_tensor *sum = term ? ml_add(out, term) : NULL;
        ml_release(full);
        ml_release(term);
        ml_release(out);
        out = sum;
    }
    /* balancing losses on a per-layer router (training, or when asked for) */
    double aux_values[ML_AUX_COUNT] = {NAN, NAN, NAN, NAN};
    if (out && ctx && probs && !s->global && (s->w_importance > 0 || s->w_switch > 0) &&
        (m->training || ctx->want_aux || ctx->trace)) {
        bool add = m->training || ctx->want_aux;
        ml_tensor *terms[2] = {s->w_importance > 0 ? ml_aux_importance(probs) : NULL,
                               s->w_switch > 0 ? ml_aux_switch(probs, experts) : NULL};
        double w[2] = {s->w_importance, s->w_switch};
        for (int i = 0; i < 2; i++) {
            if (!terms[i]) continue;
            ml_item(terms[i], &aux_values[i == 0 ? ML_AUX_IMPORTANCE : ML_AUX_SWITCH]);
            ml_tensor *wt = add ? ml_mul_scalar(terms[i], w[i]) : NULL;
            if (wt) ml_ctx_add_aux(ctx, wt);
            ml_release(wt);
            ml_release(terms[i]);
        }
    }
    if (out && ctx && ctx->trace) {
        int64_t ts[2] = {N, 1};
        ml_tensor *g2 = ml_reshape(gates, 2, ts);
        ml_trace_entry e = {.kind = s->global ? ML_TRACE_GLOBAL : ML_TRACE_CHANNEL, .experts = experts, .gates = g2,
                            .probs = probs, .logits = logits, .aux = aux_values};
        if (!g2 || ml_ctx_record(ctx, &e)) {
            ml_release(out);
            out = NULL;
        }
        ml_release(g2);
    }
    free(count);
    ml_release(experts);
    ml_release(gates);
    ml_release(logits);
    ml_release(probs);
    return out;
}

static void moe_conv_describe(const ml_module *m, char *buf, size_t n) {
    const moe_conv_state *s = m->state;
    snprintf(buf, n, "MoEConv2d(%" PRId64 " -> %" PRId64 ", %dx%d, stride %d, %d experts x %" PRId64 " channels, %s router%s)",
             s->cin, s->cout, s->k, s->k, s->stride, s->experts, s->block, s->global ? "global" : "layer",
             s->mask ? ", mask form" : "");
}

/* ------------------------------------------------------------ options */
#define MC_OPT(field) .offset = offsetof(ml_moe_conv_opts, field)
#define CONV_SHAPE_OPTIONS(T)                                                                                       \
    {.key = "in", .type = ML_OPT_INT, .offset = offsetof(T, in), .min = 1, .max = 1e9, .required = true,             \
     .help = "input channels"},                                                                                      \
    {.key = "out", .type = ML_OPT_INT, .offset = offsetof(T, out), .min = 1, .max = 1e9, .required = true,          \
     .help = "output channels"},                                                                                     \
    {.key = "kernel", .type = ML_OPT_INT, .offset = offsetof(T, kernel), .def = 3, .min = 1, .max = 1e6,            \
     .help = "kernel size k (k x k)"},                                                                               \
    {.key = "stride", .type = ML_OPT_INT, .offset = offsetof(T, stride), .def = 1, .min = 1, .max = 1e6,            \
     .help = "stride"},                                                                                              \
    {.key = "padding", .type = ML_OPT_INT, .offset = offsetof(T, padding), .def = -1, .min = -1, .max = 1e6,        \
     .def_text = "(kernel - 1) / 2", .help = "zero padding (the default keeps the size at stride 1)"}

static const ml_option moe_conv_option_list[] = {
    CONV_SHAPE_OPTIONS(ml_moe_conv_opts),
    {.key = "experts", .type = ML_OPT_INT, MC_OPT(experts), .def = 2, .min = 1, .max = 64, .help = "experts N"},
    {.key = "ratio", .type = ML_OPT_NUMBER, MC_OPT(ratio), .def = 0.5, .min = 0, .max = 1,
     .help = "each expert's share r of the output channels, in (0, 1]"},
    {.key = "router", .type = ML_OPT_CHOICE, MC_OPT(router), .choices = "layer|global",
     .help = "\"layer\": this layer's router on its pooled input; \"global\": the model's router decides"},
    {.key = "mask", .type = ML_OPT_BOOL, MC_OPT(mask), .help = "compute the full convolution then mask (the reference form)"},
    {.key = "importance_weight", .type = ML_OPT_NUMBER, MC_OPT(w_importance), .min = 0, .max = INFINITY,
     .help = "weight of the importance loss of a per-layer router"},
    {.key = "switch_weight", .type = ML_OPT_NUMBER, MC_OPT(w_switch), .min = 0, .max = INFINITY,
     .help = "weight of the Switch loss of a per-layer router"},
};
const ml_options ml_moe_conv_options = ML_OPTIONS("MoEConv2d", moe_conv_option_list);

static const ml_option masked_conv_option_list[] = {
    CONV_SHAPE_OPTIONS(ml_masked_conv_opts),
    {.key = "ratio", .type = ML_OPT_NUMBER, .offset = offsetof(ml_masked_conv_opts, ratio), .def = 0.5, .min = 0,
     .max = 1, .help = "share of the output channels kept, in (0, 1]"},
};
const ml_options ml_masked_conv_options = ML_OPTIONS("MaskedConv2d", masked_conv_option_list);

void ml_moe_conv_defaults(ml_moe_conv_opts *o) { ml_options_defaults(&ml_moe_conv_options, o); }

static cJSON *moe_conv_config(const ml_module *m) {
    const moe_conv_state *s = m->state;
    ml_moe_conv_opts o = {(int)s->cin, (int)s->cout, s->k, s->stride, s->pad, s->experts, s->ratio,
                          s->global ? ML_MOE_ROUTER_GLOBAL : ML_MOE_ROUTER_LAYER, s->mask, s->w_importance, s->w_switch};
    return ml_options_config(&ml_moe_conv_options, &o);
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

ml_module *ml_nn_moe_conv2d(const ml_moe_conv_opts *o) {
    int64_t cin = o->in, cout = o->out;
    int k = o->kernel, stride = o->stride, pad = o->padding < 0 ? (o->kernel - 1) / 2 : o->padding;
    bool global = o->router == ML_MOE_ROUTER_GLOBAL;
    if (cin <= 0 || cout <= 0 || k <= 0 || stride <= 0)
        return ml_fail("MoEConv2d: invalid sizes (in %" PRId64 ", out %" PRId64 ", kernel %d)", cin, cout, k);
    if (o->experts < 1 || o->experts > 64) return ml_fail("MoEConv2d: experts = %d must be between 1 and 64", o->experts);
    if (!(o->ratio > 0 && o->ratio <= 1)) return ml_fail("MoEConv2d: ratio = %g must be in (0, 1]", o->ratio);
    if (!(o->w_importance >= 0) || !(o->w_switch >= 0))
        return ml_fail("MoEConv2d: importance_weight and switch_weight must be >= 0, got %g and %g", o->w_importance,
                       o->w_switch);
    if (global && (o->w_importance > 0 || o->w_switch > 0))
        return ml_fail("MoEConv2d: balancing losses apply to per-layer routers, not to a global router");
    int64_t block = (int64_t)floor(o->ratio * (double)cout + 0.5);
    if (block < 1) block = 1;
    moe_conv_state *s = calloc(1, sizeof *s);
    if (!s) return ml_fail_oom("MoEConv2d");
    *s = (moe_conv_state){cin,  cout, k,     stride,  pad,         o->experts,     o->ratio,   block,
                          NULL, global, NULL, 0,      o->mask, o->w_importance, o->w_switch};
    s->start = calloc((size_t)o->experts, sizeof *s->start);
    if (!s->start) {
        free(s);
        return ml_fail_oom("MoEConv2d");
    }
    block_starts(s);
    ml_module *m = ml_module_new(&moe_conv_type, s);
    if (!m) {
        free(s->start);
        free(s);
        return NULL;
    }
    int64_t ws[4] = {cout, cin, k, k};
    if (!ml_module_add_param(m, "weight", ml_init_uniform_fan_in(4, ws, cin * k * k), NULL) ||
        (!global && !ml_module_add_child(m, "router", ml_nn_router(cin, o->experts)))) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *moe_conv_from_config(const cJSON *c) {
    ml_moe_conv_opts o;
    if (ml_options_read(&ml_moe_conv_options, c, &o, true)) return NULL;
    return ml_nn_moe_conv2d(&o);
}

void ml_moe_conv_set_mask(ml_module *m, bool mask) {
    if (m->type == &moe_conv_type) ((moe_conv_state *)m->state)->mask = mask;
    for (int i = 0; i < m->n_children; i++) ml_moe_conv_set_mask(m->children[i].m, mask);
}

int ml_moe_conv_attach_global(ml_module *m, ml_global_route *g) {
    int n = 0;
    if (m->type == &moe_conv_type) {
        moe_conv_state *s = m->state;
        if (s->global) {
            if (g && s->experts != g->experts)
                return ml_failc("MoEConv2d: %d experts, the global router decides among %d", s->experts, g->experts);
            ml_global_route_release(s->route);
            s->route = global_route_retain(g);
            s->route_layer = g ? g->layers_attached++ : 0;
            n++;
        }
    }
    for (int i = 0; i < m->n_children; i++) {
        int k = ml_moe_conv_attach_global(m->children[i].m, g);
        if (k < 0) return -1;
        n += k;
    }
    return n;
}

int ml_moe_conv_count(const ml_module *m) {
    int n = m->type == &moe_conv_type;
    for (int i = 0; i < m->n_children; i++) n += ml_moe_conv_count(m->children[i].m);
    return n;
}

int ml_moe_conv_expert_channels(const char *fn, const ml_module *m, int e, int64_t *first, int64_t *count) {
    if (m->type != &moe_conv_type) return ml_failc("%s: a MoEConv2d is needed, got a %s", fn, m->type->name);
    const moe_conv_state *s = m->state;
    if (e < 0 || e >= s->experts)
        return ml_failc("%s: expert %d of a MoEConv2d with %d experts", fn, e + 1, s->experts);
    *first = s->start[e];
    *count = s->block;
    return 0;
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

/* The binary mask [C] of the `keep` scores largest in magnitude (no autograd). */
static ml_tensor *topk_mask(ml_tensor *scores, int64_t keep) {
    int64_t C = scores->shape[0];
    ml_tensor *sc = ml_contiguous(scores);
    ml_tensor *mask = sc ? ml_zeros(ML_F32, 1, &C) : NULL;
    char *taken = mask ? calloc((size_t)C, 1) : NULL;
    if (!taken) {
        if (mask) ml_fail("out of memory");
        ml_release(sc);
        ml_release(mask);
        return NULL;
    }
    for (int64_t j = 0; j < keep; j++) {
        int64_t best = -1;
        for (int64_t c = 0; c < C; c++)
            if (!taken[c] && (best < 0 || fabsf(ml_f32(sc)[c]) > fabsf(ml_f32(sc)[best]))) best = c;
        taken[best] = 1;
        ml_f32(mask)[best] = 1.0f;
    }
    free(taken);
    ml_release(sc);
    return mask;
}

/* The same mask as a tensor whose gradient passes straight through to the scores. */
static ml_tensor *topk_mask_ste(ml_tensor *scores, int64_t keep) {
    ml_tensor *mask = topk_mask(scores, keep);
    if (mask) ml_record("topk_mask", mask, 1, &scores, ste_backward);
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
    ml_masked_conv_opts o = {(int)s->cin, (int)s->cout, s->k, s->stride, s->pad, s->ratio};
    return ml_options_config(&ml_masked_conv_options, &o);
}

static int64_t masked_active(const ml_module *m) {
    const masked_state *s = m->state;
    return s->keep * s->cin * s->k * s->k;
}

static void free_state(ml_module *m) { free(m->state); }

static const ml_module_type masked_type = {.name = "MaskedConv2d", .forward = masked_forward, .destroy = free_state,
                                           .describe = masked_describe, .config = masked_config,
                                           .active_params = masked_active};

ml_module *ml_nn_masked_conv2d(const ml_masked_conv_opts *o) {
    int64_t cin = o->in, cout = o->out;
    int k = o->kernel, stride = o->stride, pad = o->padding < 0 ? (o->kernel - 1) / 2 : o->padding;
    double ratio = o->ratio;
    if (cin <= 0 || cout <= 0 || k <= 0 || stride <= 0)
        return ml_fail("MaskedConv2d: invalid sizes (in %" PRId64 ", out %" PRId64 ", kernel %d)", cin, cout, k);
    if (!(ratio > 0 && ratio <= 1)) return ml_fail("MaskedConv2d: ratio = %g must be in (0, 1]", ratio);
    masked_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
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

ml_tensor *ml_masked_conv_mask(const char *fn, const ml_module *m) {
    if (m->type != &masked_type) return ml_fail("%s: a MaskedConv2d is needed, got a %s", fn, m->type->name);
    return topk_mask(ml_module_param(m, "scores"), ((const masked_state *)m->state)->keep);
}

static ml_module *masked_from_config(const cJSON *c) {
    ml_masked_conv_opts o;
    if (ml_options_read(&ml_masked_conv_options, c, &o, true)) return NULL;
    return ml_nn_masked_conv2d(&o);
}

const ml_module_kind ml_moe_conv_kinds[] = {{"MoEConv2d", moe_conv_from_config, &ml_moe_conv_options},
                                            {"MaskedConv2d", masked_from_config, &ml_masked_conv_options},
                                            {NULL, NULL, NULL}};
