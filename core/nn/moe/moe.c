/* moe.c -- Router, TokenMoE (sparse, V-MoE) and SmoothMoE layers. */
#include "moe.h"

#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../autograd.h"
#include "../../ops/elementwise.h"
#include "../../ops/index.h"
#include "../../ops/linalg.h"
#include "../../ops/mlp.h"
#include "../../ops/reduce.h"
#include "../../ops/shape.h"
#include "../../ops/softmax.h"
#include "../cnn.h"
#include "../layers.h"
#include "../registry.h"
#include "dispatch.h"
#include "forced.h"
#include "ste.h"

/* ------------------------------------------------------------ Router */
typedef struct {
    int dim, experts;
} router_opts;

static const ml_option router_option_list[] = {
    {.key = "dim", .type = ML_OPT_INT, .offset = offsetof(router_opts, dim), .min = 1, .max = 1e9, .required = true,
     .help = "input features D"},
    {.key = "experts", .type = ML_OPT_INT, .offset = offsetof(router_opts, experts), .min = 1, .max = 4096,
     .required = true, .help = "experts E (rows of the router)"},
};
const ml_options ml_router_options = ML_OPTIONS("Router", router_option_list);

static ml_tensor *router_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    router_opts *s = m->state;
    if (x->shape[x->ndim - 1] != s->dim)
        return ml_fail("Router: input has %" PRId64 " features, expected %d", x->shape[x->ndim - 1], s->dim);
    return ml_linear(x, ml_module_param(m, "weight"), NULL);
}

static void router_describe(const ml_module *m, char *buf, size_t n) {
    const router_opts *s = m->state;
    snprintf(buf, n, "Router(%d -> %d experts)", s->dim, s->experts);
}

static cJSON *router_config(const ml_module *m) { return ml_options_config(&ml_router_options, m->state); }

static void free_state(ml_module *m) { free(m->state); }

static const ml_module_type router_type = {.name = "Router", .forward = router_forward, .destroy = free_state,
                                           .describe = router_describe, .config = router_config};

ml_module *ml_nn_router(int64_t dim, int experts) {
    if (dim <= 0 || dim > 1000000000 || experts < 1)
        return ml_fail("Router: dim and experts must be positive (got %" PRId64 ", %d)", dim, experts);
    router_opts *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom("Router");
    *s = (router_opts){(int)dim, experts};
    ml_module *m = ml_module_new(&router_type, s);
    if (!m) {
        free(s);
        return NULL;
    }
    int64_t ws[2] = {experts, dim};
    if (!ml_module_add_param(m, "weight", ml_init_uniform_fan_in(2, ws, dim), "router")) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *router_from_config(const cJSON *c) {
    router_opts o;
    if (ml_options_read(&ml_router_options, c, &o, true)) return NULL;
    return ml_nn_router(o.dim, o.experts);
}

/* ------------------------------------------------------------ options */
#define MOE_OPT(field) .offset = offsetof(ml_moe_opts, field)
#define ANY_WEIGHT .min = 0, .max = INFINITY
static const ml_option token_moe_option_list[] = {
    {.key = "dim", .type = ML_OPT_INT, MOE_OPT(dim), .min = 1, .max = 1e9, .required = true, .help = "token width D"},
    {.key = "experts", .type = ML_OPT_INT, MOE_OPT(experts), .def = 8, .min = 1, .max = 4096, .help = "experts E"},
    {.key = "k", .type = ML_OPT_INT, MOE_OPT(k), .def = 2, .min = 1, .max = 4096, .help = "experts per token K (at most E)"},
    {.key = "capacity_factor", .type = ML_OPT_NUMBER, MOE_OPT(capacity_factor), .def = 1.25,
     .help = "expert capacity ceil(K T factor / E); <= 0: unlimited"},
    {.key = "round_capacity", .type = ML_OPT_BOOL, MOE_OPT(round_capacity), .help = "round the capacity up to a multiple of 4"},
    {.key = "batch_priority", .type = ML_OPT_BOOL, MOE_OPT(batch_priority),
     .help = "fill slots by decreasing top-1 probability instead of token order"},
    {.key = "random_ties", .type = ML_OPT_BOOL, MOE_OPT(random_ties), .def = 1,
     .help = "in training, break exact ties at random (evaluation: lowest index)"},
    {.key = "renormalize", .type = ML_OPT_BOOL, MOE_OPT(renormalize),
     .help = "combine weights divided by their sum over the token's kept choices"},
    {.key = "noise_std", .type = ML_OPT_NUMBER, MOE_OPT(noise_std), .def = 1, ANY_WEIGHT,
     .help = "router noise std noise_std / E added to the logits in training"},
    {.key = "importance_weight", .type = ML_OPT_NUMBER, MOE_OPT(w_importance), .def = 0.005, ANY_WEIGHT,
     .help = "weight of the importance loss"},
    {.key = "load_weight", .type = ML_OPT_NUMBER, MOE_OPT(w_load), .def = 0.005, ANY_WEIGHT, .help = "weight of the load loss"},
    {.key = "switch_weight", .type = ML_OPT_NUMBER, MOE_OPT(w_switch), ANY_WEIGHT, .help = "weight of the Switch loss"},
    {.key = "z_weight", .type = ML_OPT_NUMBER, MOE_OPT(w_z), ANY_WEIGHT, .help = "weight of the router z-loss"},
    {.key = "expert", .type = ML_OPT_CONFIG, MOE_OPT(expert), .def_text = "MLP(dim, 4 dim, dim), GELU",
     .help = "the config (or, in Lua, a module) every expert is built from"},
};
const ml_options ml_token_moe_options = ML_OPTIONS("TokenMoE", token_moe_option_list);

/* SmoothMoE routes softly: the sparse routing's knobs do not apply. */
static const ml_option smooth_moe_option_list[] = {
    {.key = "dim", .type = ML_OPT_INT, MOE_OPT(dim), .min = 1, .max = 1e9, .required = true, .help = "input width D"},
    {.key = "experts", .type = ML_OPT_INT, MOE_OPT(experts), .def = 8, .min = 1, .max = 4096, .help = "experts E"},
    {.key = "expert", .type = ML_OPT_CONFIG, MOE_OPT(expert), .def_text = "MLP(dim, 4 dim, dim), GELU",
     .help = "the config (or, in Lua, a module) every expert is built from"},
};
const ml_options ml_smooth_moe_options = ML_OPTIONS("SmoothMoE", smooth_moe_option_list);

void ml_moe_defaults(ml_moe_opts *o, int dim) {
    ml_options_defaults(&ml_token_moe_options, o);
    o->dim = dim;
}

/* ------------------------------------------------------------ shared state */
typedef struct {
    ml_moe_opts o;  /* o.expert: points to expert */
    cJSON *expert;  /* the expert config (owned) */
    const ml_options *options;
} moe_state;

static void moe_destroy(ml_module *m) {
    moe_state *s = m->state;
    cJSON_Delete(s->expert);
    free(s);
}

static cJSON *moe_config(const ml_module *m) {
    const moe_state *s = m->state;
    return ml_options_config(s->options, &s->o);
}

/* Builds router + E experts as children; m->state must be set. */
static int build_children(ml_module *m, const ml_moe_opts *o) {
    if (!ml_module_add_child(m, "router", ml_nn_router(o->dim, o->experts))) return -1;
    ml_module *experts = ml_nn_sequential(); /* a plain container: experts.<i> */
    if (!experts || !ml_module_add_child(m, "experts", experts)) return -1;
    for (int e = 0; e < o->experts; e++) {
        ml_module *ex = ml_module_from_config(o->expert);
        if (!ex) {
            ml_error_prefix("expert config: ");
            return -1;
        }
        if (!ml_nn_sequential_add(experts, ex)) return -1;
    }
    return 0;
}

static ml_module *moe_new(const ml_module_type *type, const ml_options *options, const ml_moe_opts *o) {
    if (o->dim <= 0) return ml_fail("%s: dim must be positive", type->name);
    if (o->experts < 1 || o->experts > 4096) return ml_fail("%s: experts = %d is out of range", type->name, o->experts);
    if (o->k < 1 || o->k > o->experts)
        return ml_fail("%s: k = %d must be between 1 and experts = %d", type->name, o->k, o->experts);
    if (o->noise_std < 0) return ml_fail("%s: noise_std must be >= 0", type->name);
    moe_state *s = calloc(1, sizeof *s);
    if (!s) return ml_fail_oom(type->name);
    s->o = *o;
    s->options = options;
    if (o->expert) {
        s->expert = cJSON_Duplicate(o->expert, true);
    } else { /* the V-MoE expert: MLP(D, 4D, D) with GELU */
        s->expert = cJSON_CreateObject();
        cJSON_AddStringToObject(s->expert, "type", "MLP");
        cJSON_AddNumberToObject(s->expert, "in", (double)o->dim);
        cJSON_AddNumberToObject(s->expert, "hidden", (double)(4 * o->dim));
        cJSON_AddNumberToObject(s->expert, "out", (double)o->dim);
        cJSON_AddStringToObject(s->expert, "activation", "gelu");
    }
    s->o.expert = s->expert;
    ml_module *m = ml_module_new(type, s);
    if (!m) {
        cJSON_Delete(s->expert);
        free(s);
        return NULL;
    }
    if (build_children(m, &s->o)) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

/* Router logits for tokens X [T, D]. */
static ml_tensor *router_logits(ml_module *m, ml_tensor *X, ml_ctx *ctx) {
    return ml_module_forward_child(m, 0, X, ctx);
}

static ml_module *expert(ml_module *m, int e) { return m->children[1].m->children[e].m; }

/* Runs expert e on x, naming it experts.<e> in paths and errors. */
static ml_tensor *run_expert(ml_module *m, int e, ml_tensor *x, ml_ctx *ctx) {
    ml_module *experts = m->children[1].m;
    size_t len = 0;
    if (ctx) {
        len = strlen(ctx->path);
        snprintf(ctx->path + len, sizeof ctx->path - len, len ? ".experts" : "experts");
    }
    ml_tensor *y = ml_module_forward_child(experts, e, x, ctx);
    if (ctx) ctx->path[len] = 0;
    return y;
}

/* The experts and the weighted combine in one fused op (ops/mlp.h,
 * ml_mlp_routed) over the tokens X [T, D] routed by r: when every expert is an
 * MLP with the same activation and sizes and no hook watches the experts'
 * layers. Returns 1 with *out [T, D] set, 0 when the layer must gather, run
 * its experts one by one and combine, -1 on error. */
static int fused_experts(ml_module *m, ml_tensor *X, const ml_routing *r, ml_tensor *gates, ml_ctx *ctx,
                         ml_tensor **out) {
    int E = (int)r->E;
    if (!ml_nn_fuse() || (ctx && ctx->on_module)) return 0;
    ml_tensor **w = malloc(sizeof *w * (size_t)(4 * E));
    if (!w) return ml_failc("out of memory");
    ml_unary_op act = ML_GELU, a;
    bool ok = true;
    for (int e = 0; e < E && ok; e++) {
        ok = ml_nn_mlp_parts(expert(m, e), &w[e], &w[E + e], &w[2 * E + e], &w[3 * E + e], &a) &&
             ml_mlp_act_supported(a) && (e == 0 || a == act) && w[e]->ndim == 2 && w[e]->shape[1] == X->shape[1] &&
             ml_same_shape(w[e], w[0]) && ml_same_shape(w[2 * E + e], w[2 * E]) && w[2 * E]->shape[0] == X->shape[1];
        act = a;
    }
    *out = ok ? ml_mlp_routed(X, r->token, gates, E, r->offset, w, w + E, w + 2 * E, w + 3 * E, act) : NULL;
    free(w);
    return !ok ? 0 : *out ? 1 : -1;
}

/* Adds weight * term to ctx->aux (when weight > 0) and returns the term's value. */
static double add_aux(ml_ctx *ctx, ml_tensor *term, double weight, bool add) {
    if (!term) return NAN;
    double v = NAN;
    ml_item(term, &v);
    if (add && weight > 0 && ctx) {
        ml_tensor *w = ml_mul_scalar(term, weight);
        if (w) ml_ctx_add_aux(ctx, w);
        ml_release(w);
    }
    ml_release(term);
    return v;
}

/* ------------------------------------------------------------ TokenMoE */
/* The combine weight of every (token, choice), kept or dropped: probs at the
 * selected experts, divided by the sum over the token's kept choices when
 * renormalising (a token without kept choices keeps its raw weights).
 * Differentiable: the trace's gates. */
static ml_tensor *choice_gates(ml_tensor *probs, const ml_routing *r, bool renormalize) {
    ml_tensor *g = ml_gather(probs, 1, r->experts);
    if (!g || !renormalize) return g;
    int64_t T = r->T, K = r->K, ts[2] = {T, 1};
    ml_tensor *keptf = ml_to_dtype(r->kept, ML_F32), *none = ml_zeros(ML_F32, 2, ts);
    if (keptf && none)
        for (int64_t t = 0; t < T; t++) {
            float s = 0;
            for (int64_t k = 0; k < K; k++) s += ml_f32(keptf)[t * K + k];
            ml_f32(none)[t] = s == 0 ? 1.0f : 0.0f;
        }
    ml_tensor *gk = keptf && none ? ml_mul(g, keptf) : NULL;
    ml_tensor *den = gk ? ml_sum(gk, 1, true) : NULL;
    ml_tensor *safe = den ? ml_add(den, none) : NULL;
    ml_tensor *out = safe ? ml_div(g, safe) : NULL;
    ml_release(g);
    ml_release(keptf);
    ml_release(none);
    ml_release(gk);
    ml_release(den);
    ml_release(safe);
    return out;
}

/* Auxiliary losses (added to ctx->aux, weighted, when training or asked
 * for) and the trace of a TokenMoE forward. */
static int token_report(ml_module *m, ml_ctx *ctx, ml_tensor *logits, ml_tensor *noisy, ml_tensor *probs,
                        const ml_routing *r, double sigma) {
    const ml_moe_opts *o = &((moe_state *)m->state)->o;
    bool add = m->training || ctx->want_aux;
    double av[ML_AUX_COUNT] = {NAN, NAN, NAN, NAN};
    ml_tensor *pclean = noisy == logits ? ml_retain(probs) : ml_softmax(logits, 1);
    if (!pclean) return -1;
    if (o->w_importance > 0 || ctx->trace) av[ML_AUX_IMPORTANCE] = add_aux(ctx, ml_aux_importance(pclean), o->w_importance, add);
    if (o->w_load > 0 || ctx->trace)
        av[ML_AUX_LOAD] = add_aux(ctx, ml_aux_load(logits, noisy, o->k, sigma > 0 ? sigma : 1.0 / (double)o->experts),
                                  o->w_load, add);
    if (o->w_switch > 0) av[ML_AUX_SWITCH] = add_aux(ctx, ml_aux_switch(probs, r->experts), o->w_switch, add);
    if (o->w_z > 0) av[ML_AUX_Z] = add_aux(ctx, ml_aux_zloss(logits), o->w_z, add);
    int rc = 0;
    if (ctx->trace) {
        ml_tensor *gates = choice_gates(probs, r, o->renormalize);
        ml_trace_entry e = {.kind = ML_TRACE_TOKEN, .experts = r->experts, .gates = gates, .probs = pclean,
                            .logits = logits, .kept = r->kept, .aux = av};
        rc = gates ? ml_ctx_record(ctx, &e) : -1;
        ml_release(gates);
    }
    ml_release(pclean);
    return rc;
}

/* out += the straight-through term of the selection (ste.h): every expert
 * runs on every token, without gradient. On failure out is released. */
static int add_selection_ste(ml_module *m, ml_tensor *X, ml_tensor *probs, ml_tensor **out) {
    int E = ((moe_state *)m->state)->o.experts, rc = 0;
    ml_tensor **f = calloc((size_t)E, sizeof *f), *term = NULL, *shaped = NULL, *sum = NULL;
    bool gm = ml_grad_set(false);
    for (int e = 0; f && e < E && !rc; e++)
        if (!(f[e] = run_expert(m, e, X, NULL))) rc = -1;
    ml_grad_set(gm);
    if (!f) rc = ml_failc_oom("TokenMoE");
    if (!rc && !(term = ml_moe_ste_tokens(probs, f, E))) rc = -1;
    if (!rc && !(shaped = ml_reshape(term, (*out)->ndim, (*out)->shape))) rc = -1;
    if (!rc && !(sum = ml_add(*out, shaped))) rc = -1;
    for (int e = 0; f && e < E; e++) ml_release(f[e]);
    free(f);
    ml_release(term);
    ml_release(shaped);
    ml_release(*out);
    *out = sum;
    return rc;
}

static ml_tensor *token_moe_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    moe_state *s = m->state;
    const ml_moe_opts *o = &s->o;
    int64_t D = o->dim, E = o->experts;
    if (x->ndim < 2 || x->shape[x->ndim - 1] != D)
        return ml_fail("TokenMoE: input has shape %s, expected [..., %" PRId64 "] tokens", ML_SHAPE_STR(x), D);
    int64_t rows[2] = {-1, D};
    ml_tensor *X = ml_reshape(x, 2, rows);
    if (!X) return NULL;
    int64_t T = X->shape[0];
    ml_tensor *logits = NULL, *noisy = NULL, *probs = NULL, *gates = NULL, *Xd = NULL, *Y = NULL, *out = NULL;
    ml_tensor **ys = NULL;
    ml_routing r = {0};
    ml_layer_plan plan = {0};
    bool routed = false;

    logits = router_logits(m, X, ctx);
    if (!logits) goto done;
    double sigma = o->noise_std / (double)E;
    if ((m->training || (ctx && ctx->router_noise)) && sigma > 0) {
        int64_t ls[2] = {T, E};
        ml_tensor *noise = ml_randn(2, ls);
        ml_tensor *sn = noise ? ml_mul_scalar(noise, sigma) : NULL;
        noisy = sn ? ml_add(logits, sn) : NULL;
        ml_release(noise);
        ml_release(sn);
        if (!noisy) goto done;
    } else {
        noisy = ml_retain(logits);
    }
    probs = ml_softmax(noisy, 1);
    if (!probs) goto done;
    if (ml_layer_plan_get(ctx, "TokenMoE", ML_TRACE_TOKEN, T, (int)E, o->k, &plan)) goto done;
    /* random tie-breaking is a training option: evaluation is deterministic */
    ml_route_opts ro = {.k = o->k, .capacity_factor = o->capacity_factor, .round_capacity = o->round_capacity,
                        .batch_priority = o->batch_priority, .random_ties = o->random_ties && m->training};
    ml_layer_plan_apply(&plan, &ro);
    if (ml_route(probs, &ro, &r)) goto done;
    routed = true;

    /* combine weights: P[token, expert] for every kept assignment */
    {
        int64_t fs[2] = {T * E, 1};
        ml_tensor *pf = ml_reshape(probs, 2, fs);
        ml_tensor *g2 = pf ? ml_moe_gather(pf, r.flat) : NULL;
        gates = g2 ? ml_reshape(g2, 1, &r.A) : NULL;
        ml_release(pf);
        ml_release(g2);
        if (!gates) goto done;
        if (o->renormalize && r.A > 0) {
            /* divide by the sum of the token's kept weights */
            ml_tensor *ones = ml_full(ML_F32, 1, &r.A, 1.0);
            int64_t cs[2] = {r.A, 1};
            ml_tensor *g1 = ones ? ml_reshape(gates, 2, cs) : NULL;
            ml_tensor *den = g1 ? ml_moe_combine(g1, ones, r.token, T) : NULL; /* [T, 1] */
            ml_tensor *dt = den ? ml_moe_gather(den, r.token) : NULL;          /* [A, 1] */
            ml_tensor *dr = dt ? ml_reshape(dt, 1, &r.A) : NULL;
            ml_tensor *gn = dr ? ml_div(gates, dr) : NULL;
            ml_release(ones);
            ml_release(g1);
            ml_release(den);
            ml_release(dt);
            ml_release(dr);
            ml_release(gates);
            gates = gn;
            if (!gates) goto done;
        }
    }
    if (r.A == 0) { /* everything dropped: the residual carries every token */
        out = ml_zeros(ML_F32, x->ndim, x->shape);
        goto report;
    }
    switch (fused_experts(m, X, &r, gates, ctx, &Y)) {
    case -1: goto done;
    case 1:
        out = ml_reshape(Y, x->ndim, x->shape);
        if (!out) goto done;
        goto report;
    default: break;
    }
    Xd = ml_moe_gather(X, r.token);
    if (!Xd) goto done;
    ys = calloc((size_t)E, sizeof *ys);
    int n_parts = 0;
    for (int e = 0; e < E; e++) {
        int64_t n = r.offset[e + 1] - r.offset[e];
        if (n == 0) continue;
        ml_tensor *xe = ml_narrow(Xd, 0, r.offset[e], n);
        ys[n_parts] = xe ? run_expert(m, e, xe, ctx) : NULL;
        ml_release(xe);
        if (!ys[n_parts]) goto done;
        if (ys[n_parts]->ndim != 2 || ys[n_parts]->shape[1] != D) {
            ml_fail("TokenMoE: expert %d returned shape %s, expected [%" PRId64 ", %" PRId64 "]", e + 1,
                    ML_SHAPE_STR(ys[n_parts]), n, D);
            n_parts++;
            goto done;
        }
        n_parts++;
    }
    Y = n_parts == 1 ? ml_retain(ys[0]) : ml_cat(n_parts, ys, 0);
    for (int i = 0; i < n_parts; i++) ml_release(ys[i]);
    free(ys);
    ys = NULL;
    if (!Y) goto done;
    {
        ml_tensor *o2 = ml_moe_combine(Y, gates, r.token, T);
        out = o2 ? ml_reshape(o2, x->ndim, x->shape) : NULL;
        ml_release(o2);
        if (!out) goto done;
    }
report:
    if (ml_moe_ste_wanted(ctx) && add_selection_ste(m, X, probs, &out)) goto done;
    if (ctx && (m->training || ctx->want_aux || ctx->trace) && token_report(m, ctx, logits, noisy, probs, &r, sigma)) {
        ml_release(out);
        out = NULL;
    }
done:
    if (ys) free(ys);
    if (routed) ml_routing_free(&r);
    ml_layer_plan_free(&plan);
    ml_release(X);
    ml_release(logits);
    ml_release(noisy);
    ml_release(probs);
    ml_release(gates);
    ml_release(Xd);
    ml_release(Y);
    return out;
}

static void moe_describe_common(const ml_module *m, char *buf, size_t n, const char *name) {
    const moe_state *s = m->state;
    const ml_moe_opts *o = &s->o;
    if (!strcmp(name, "SmoothMoE"))
        snprintf(buf, n, "SmoothMoE(dim %d, %d experts, soft routing)", o->dim, o->experts);
    else
        snprintf(buf, n, "TokenMoE(dim %d, %d experts, k = %d, capacity %.2f%s)", o->dim, o->experts, o->k,
                 o->capacity_factor, o->noise_std > 0 ? ", noisy" : "");
}

static void token_describe(const ml_module *m, char *buf, size_t n) { moe_describe_common(m, buf, n, "TokenMoE"); }

/* Active parameters per token: the router and K of the E experts. */
static int64_t token_active(const ml_module *m) {
    const moe_state *s = m->state;
    int64_t router = ml_module_num_params(m->children[0].m);
    int64_t one = s->o.experts > 0 ? ml_module_num_params(expert((ml_module *)m, 0)) : 0;
    return router + one * s->o.k;
}

static const ml_module_type token_moe_type = {.name = "TokenMoE", .forward = token_moe_forward, .destroy = moe_destroy,
                                              .describe = token_describe, .config = moe_config,
                                              .active_params = token_active};

ml_module *ml_nn_token_moe(const ml_moe_opts *o) { return moe_new(&token_moe_type, &ml_token_moe_options, o); }

static ml_module *token_moe_from_config(const cJSON *c) {
    ml_moe_opts o;
    if (ml_options_read(&ml_token_moe_options, c, &o, true)) return NULL;
    return ml_nn_token_moe(&o);
}

/* ------------------------------------------------------------ SmoothMoE */
/* The trace of a soft routing: the top-1 expert of every token (K = 1). */
static int smooth_record(ml_ctx *ctx, ml_tensor *logits, ml_tensor *probs) {
    ml_route_opts top1 = {.k = 1};
    ml_routing r;
    if (ml_route(probs, &top1, &r)) return -1;
    ml_trace_entry e = {.kind = ML_TRACE_SMOOTH, .experts = r.experts, .probs = probs, .logits = logits};
    int rc = ml_ctx_record(ctx, &e);
    ml_routing_free(&r);
    return rc;
}

/* Soft routing has no selection to force: a forced routing is only checked
 * against the layer, and forcing or silencing an expert is refused. */
static int smooth_plan(ml_ctx *ctx, int64_t T, int E) {
    ml_layer_plan plan;
    if (ml_layer_plan_get(ctx, "SmoothMoE", ML_TRACE_SMOOTH, T, E, 1, &plan)) return -1;
    bool overridden = plan.force_first || plan.silenced;
    ml_layer_plan_free(&plan);
    return overridden ? ml_failc("SmoothMoE: every expert contributes to a soft routing; forcing or silencing an "
                                 "expert applies to sparse layers (TokenMoE, MoEConv2d)") : 0;
}

static ml_tensor *smooth_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    moe_state *s = m->state;
    const ml_moe_opts *o = &s->o;
    int64_t D = o->dim;
    if (x->ndim < 1 || x->shape[x->ndim - 1] != D)
        return ml_fail("SmoothMoE: input has shape %s, expected [..., %" PRId64 "]", ML_SHAPE_STR(x), D);
    int64_t rows[2] = {-1, D};
    ml_tensor *X = ml_reshape(x, 2, rows);
    if (!X) return NULL;
    if (smooth_plan(ctx, X->shape[0], o->experts)) {
        ml_release(X);
        return NULL;
    }
    ml_tensor *logits = router_logits(m, X, ctx), *probs = logits ? ml_softmax(logits, 1) : NULL, *acc = NULL;
    for (int e = 0; e < o->experts && probs; e++) {
        ml_tensor *ye = run_expert(m, e, X, ctx);
        if (!ye) break;
        if (ye->ndim != 2 || ye->shape[0] != X->shape[0]) {
            ml_fail("SmoothMoE: expert %d returned shape %s for %" PRId64 " tokens", e + 1, ML_SHAPE_STR(ye), X->shape[0]);
            ml_release(ye);
            break;
        }
        ml_tensor *pe = ml_narrow(probs, 1, e, 1); /* [T, 1] broadcasts over the expert's outputs */
        ml_tensor *term = pe ? ml_mul(ye, pe) : NULL;
        ml_release(pe);
        ml_release(ye);
        if (!term) break;
        if (!acc) {
            acc = term;
        } else {
            ml_tensor *sum = ml_add(acc, term);
            ml_release(acc);
            ml_release(term);
            acc = sum;
            if (!acc) break;
        }
        if (e == o->experts - 1) {
            /* success: shape back to x's leading dims */
            int64_t shape[ML_MAX_DIMS];
            for (int d = 0; d < x->ndim - 1; d++) shape[d] = x->shape[d];
            shape[x->ndim - 1] = acc->shape[1];
            ml_tensor *out = ml_reshape(acc, x->ndim, shape);
            if (out && ctx && ctx->trace && smooth_record(ctx, logits, probs)) {
                ml_release(out);
                out = NULL;
            }
            ml_release(acc);
            ml_release(X);
            ml_release(logits);
            ml_release(probs);
            return out;
        }
    }
    ml_release(acc);
    ml_release(X);
    ml_release(logits);
    ml_release(probs);
    return NULL;
}

static void smooth_describe(const ml_module *m, char *buf, size_t n) { moe_describe_common(m, buf, n, "SmoothMoE"); }

static const ml_module_type smooth_moe_type = {.name = "SmoothMoE", .forward = smooth_forward, .destroy = moe_destroy,
                                               .describe = smooth_describe, .config = moe_config};

/* SmoothMoE reads no k: the layer needs k = 1 <= E for its checks. */
ml_module *ml_nn_smooth_moe(const ml_moe_opts *o) {
    ml_moe_opts soft = *o;
    soft.k = 1;
    return moe_new(&smooth_moe_type, &ml_smooth_moe_options, &soft);
}

static ml_module *smooth_moe_from_config(const cJSON *c) {
    ml_moe_opts o;
    ml_moe_defaults(&o, 0);
    if (ml_options_read(&ml_smooth_moe_options, c, &o, true)) return NULL;
    return ml_nn_smooth_moe(&o);
}

const ml_module_kind ml_moe_kinds[] = {{"Router", router_from_config, &ml_router_options},
                                       {"TokenMoE", token_moe_from_config, &ml_token_moe_options},
                                       {"SmoothMoE", smooth_moe_from_config, &ml_smooth_moe_options},
                                       {NULL, NULL, NULL}};
