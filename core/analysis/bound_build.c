/* bound_build.c -- the deviation program of a model (bound.h): one forward
 * records the routing and the centre statistics (bound_centre.c), then the
 * module tree becomes a tree of nodes, each with the constants of its rule
 * (docs/ANALYSIS.md derives every rule). */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "../nn/moe/moe_conv.h"
#include "../nn/moe/route.h"
#include "../ops/shape.h"
#include "bound_internal.h"
#include "opnorm.h"
#include "router.h"

/* snprintf that may cut the text short (names in notes and paths). */
static void text(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void text(char *dst, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

void ml_bound_free(ml_bound *b) {
    if (!b) return;
    for (int i = 0; i < b->n_all; i++) {
        bound_node *n = b->all[i];
        free(n->wq);
        free(n->wk);
        free(n->wv);
        free(n->lipe);
        free(n->emax);
        free(n->kids);
        free(n);
    }
    free(b->all);
    free(b->info);
    bound_capture_free(&b->cap);
    free(b);
}

bool ml_bound_exact(const ml_bound *b, int i) { return b->info[i].exact && !b->info[i].note[0]; }
const char *ml_bound_note(const ml_bound *b, int i) { return b->info[i].note; }
bool ml_bound_coupled(const ml_bound *b, int i) { return b->info[i].coupled; }
bool ml_bound_blocks(const ml_bound *b, int i) { return b->info[i].blocks; }

/* ------------------------------------------------------------ building */
typedef struct {
    const char *fn;
    ml_bound *b;
    ml_module *model;
    const ml_trace *trace;
    bool plain;     /* only reshapes between the model's input and here */
    char why[256];  /* the first module without a bound, "" while there is none */
    bool failed;    /* a hard error (out of memory, LAPACK): the build fails */
} builder;

static bound_node *new_node(builder *bd, bound_kind kind) {
    if (bd->failed) return NULL;
    if (bd->b->n_all == bd->b->cap_all) {
        int cap = bd->b->cap_all ? 2 * bd->b->cap_all : 64;
        bound_node **p = realloc(bd->b->all, sizeof *p * (size_t)cap);
        if (!p) {
            bd->failed = true;
            return ml_fail("out of memory");
        }
        bd->b->all = p;
        bd->b->cap_all = cap;
    }
    bound_node *n = calloc(1, sizeof *n);
    if (!n) {
        bd->failed = true;
        return ml_fail("out of memory");
    }
    n->kind = kind;
    n->layer = -1;
    bd->b->all[bd->b->n_all++] = n;
    return n;
}

static bool hard_fail(builder *bd) {
    bd->failed = true;
    return false;
}

static bound_node *inf_node(builder *bd, const char *path, const char *fmt, const char *what) {
    if (!bd->why[0]) {
        char reason[160];
        text(reason, sizeof reason, fmt, what);
        text(bd->why, sizeof bd->why, "no sound bound through '%s': %s", path[0] ? path : "(the model)", reason);
    }
    bd->plain = false;
    return new_node(bd, N_INF);
}

/* A linear (or pointwise) map: see bound_node. */
static bound_node *linear_node(builder *bd, double c2, double cinf, double cinf2, bool tokenwise, bool whole,
                               const bound_rec *r, bool keeps_plain) {
    if (isnan(c2) || isnan(cinf) || isnan(cinf2)) {
        hard_fail(bd);
        return NULL;
    }
    bound_node *n = new_node(bd, N_LINEAR);
    if (n) {
        n->c2 = c2;
        n->cinf = cinf;
        n->cinf2 = cinf2;
        n->tokenwise = tokenwise;
        n->whole = whole;
        n->out_numel = r ? r->out_numel : 0;
    }
    if (!keeps_plain) bd->plain = false;
    return n;
}

static bool add_kid(builder *bd, bound_node *parent, bound_node *kid) {
    if (!parent || bd->failed) return false;
    bound_node **k = realloc(parent->kids, sizeof *k * (size_t)(parent->n + 1));
    if (!k) {
        ml_fail("out of memory");
        return hard_fail(bd);
    }
    parent->kids = k;
    parent->kids[parent->n++] = kid;
    return true;
}

/* Lipschitz constants of the pointwise activations (GELU: the largest slope
 * of x Phi(x), 1.1290 at x = sqrt(2); erf: 2/sqrt(pi)); 0 when the function
 * is not Lipschitz (a jump or an unbounded slope). */
static double activation_lipschitz(const char *op) {
    static const struct {
        const char *name;
        double lip;
    } table[] = {{"relu", 1}, {"gelu", 1.1290}, {"tanh", 1}, {"sigmoid", 0.25}, {"softplus", 1}, {"neg", 1},
                 {"abs", 1},  {"sin", 1},       {"cos", 1},  {"erf", 1.1284}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(table[i].name, op)) return table[i].lip;
    return 0;
}

static void join(char *out, size_t n, const char *path, const char *name) {
    text(out, n, "%s%s%s", path, path[0] ? "." : "", name);
}

static const bound_rec *centre(builder *bd, const char *path) {
    const bound_rec *r = bound_capture_find(&bd->b->cap, path);
    return r && r->calls == 1 ? r : NULL;
}

static bound_node *build(builder *bd, ml_module *m, const char *path);

static bound_node *build_child(builder *bd, ml_module *m, const char *path, const char *name) {
    ml_module *c = ml_module_child(m, name);
    char p[ML_PATH_MAX];
    join(p, sizeof p, path, name);
    if (!c) return inf_node(bd, p, "%s", "the module is missing");
    return build(bd, c, p);
}

/* The l2 gain of a node built of linear maps, chains and sums only (an
 * expert's Lipschitz constant), or +inf. */
static double gain(const bound_node *n) {
    if (!n) return 1;
    double g;
    switch (n->kind) {
    case N_LINEAR: return n->c2;
    case N_CHAIN:
        g = 1;
        for (int i = 0; i < n->n; i++) g = n->kids[i] && gain(n->kids[i]) == 0 ? 0 : g * gain(n->kids[i]);
        return g;
    case N_SUM:
        g = 0;
        for (int i = 0; i < n->n; i++) g += gain(n->kids[i]);
        return g;
    default: return INFINITY;
    }
}

static bound_node *build_chain(builder *bd, ml_module *m, const char *path, bool model) {
    bound_node *n = new_node(bd, N_CHAIN);
    ml_module *router = model ? ml_module_child(m, "router") : NULL;
    for (int i = 0; n && i < m->n_children && !bd->failed; i++) {
        const char *name = m->children[i].name;
        if (router && !strcmp(name, "router")) continue;
        char p[ML_PATH_MAX];
        join(p, sizeof p, path, name);
        if (!add_kid(bd, n, build(bd, m->children[i].m, p))) return NULL;
        if (router && !strcmp(name, "normalize")) {
            /* the global router reads the normalised image: its feature (the
             * input of its last Linear) is tapped here for the MoE layers */
            bound_node *t = new_node(bd, N_TAP), *feat = new_node(bd, N_CHAIN);
            bool plain = bd->plain;
            char rp[ML_PATH_MAX];
            join(rp, sizeof rp, path, "router");
            for (int j = 0; feat && j + 1 < router->n_children; j++) {
                join(p, sizeof p, rp, router->children[j].name);
                if (!add_kid(bd, feat, build(bd, router->children[j].m, p))) return NULL;
            }
            bd->plain = plain;
            if (!add_kid(bd, t, feat) || !add_kid(bd, n, t)) return NULL;
            router = NULL;
        }
    }
    return n;
}

static bound_node *build_sum(builder *bd, bound_node *a, bound_node *b) {
    bound_node *n = new_node(bd, N_SUM);
    if (!add_kid(bd, n, a) || !add_kid(bd, n, b)) return NULL;
    bd->plain = false;
    return n;
}

static bound_node *chain_of(builder *bd, ml_module *m, const char *path, const char *const *names, int count) {
    bound_node *n = new_node(bd, N_CHAIN);
    for (int i = 0; n && i < count; i++)
        if (!add_kid(bd, n, build_child(bd, m, path, names[i]))) return NULL;
    return n;
}

static bound_node *build_layernorm(builder *bd, ml_module *m, const char *path) {
    const bound_rec *r = centre(bd, path);
    if (!r || !r->v) return inf_node(bd, path, "%s", "no single centre forward recorded");
    cJSON *cfg = ml_module_config(m);
    double eps = NAN;
    int rc = cfg ? ml_cfg_double(cfg, "eps", 1e-5, &eps) : -1;
    cJSON_Delete(cfg);
    ml_tensor *g = rc ? NULL : ml_contiguous(ml_module_param(m, "weight"));
    if (!g) {
        hard_fail(bd);
        return NULL;
    }
    double gmax = 0;
    for (int64_t i = 0; i < ml_numel(g); i++) gmax = fmax(gmax, fabs(ml_f32(g)[i]));
    bound_node *n = new_node(bd, N_LN);
    if (n) {
        n->c2 = gmax * (1 + 1e-12);
        n->eps = eps;
        n->D = ml_numel(g);
        n->tokens = r->rows;
        n->r = r;
    }
    ml_release(g);
    bd->plain = false;
    return n;
}

static bound_node *build_attention(builder *bd, ml_module *m, const char *path) {
    const bound_rec *r = centre(bd, path);
    if (!r || !r->P) return inf_node(bd, path, "%s", "no single centre forward recorded");
    ml_module *qkv = ml_module_child(m, "qkv"), *proj = ml_module_child(m, "proj");
    if (!qkv || !proj) return inf_node(bd, path, "%s", "an attention without qkv and proj");
    ml_tensor *W = ml_module_param(qkv, "weight");
    int heads = r->heads;
    int64_t D = W->shape[1], d = D / heads;
    bound_node *n = new_node(bd, N_ATTN);
    if (!n) return NULL;
    n->heads = heads;
    n->D = d;
    n->r = r;
    n->wq = calloc((size_t)heads, sizeof(double));
    n->wk = calloc((size_t)heads, sizeof(double));
    n->wv = calloc((size_t)heads, sizeof(double));
    if (!n->wq || !n->wk || !n->wv) {
        ml_fail("out of memory");
        hard_fail(bd);
        return NULL;
    }
    double *dst[3] = {n->wq, n->wk, n->wv};
    for (int part = 0; part < 3; part++)
        for (int h = 0; h < heads; h++) {
            ml_tensor *rows = ml_narrow(W, 0, part * D + h * d, d);
            dst[part][h] = rows ? ml_opnorm_spectral(rows) : NAN;
            ml_release(rows);
            if (isnan(dst[part][h])) hard_fail(bd);
        }
    n->c2 = ml_opnorm_spectral(ml_module_param(proj, "weight"));
    if (isnan(n->c2)) hard_fail(bd);
    bd->plain = false;
    return bd->failed ? NULL : n;
}

static bound_node *build_mlp(builder *bd, ml_module *m, const char *path) {
    cJSON *cfg = ml_module_config(m);
    char act[32];
    text(act, sizeof act, "%s", cfg ? ml_cfg_string(cfg, "activation", "gelu") : "?");
    cJSON_Delete(cfg);
    double lip = activation_lipschitz(act);
    bound_node *n = new_node(bd, N_CHAIN);
    if (!add_kid(bd, n, build_child(bd, m, path, "fc1"))) return NULL;
    bound_node *a = lip > 0 ? linear_node(bd, lip, lip, INFINITY, true, false, NULL, false)
                            : inf_node(bd, path, "the activation %s is not Lipschitz", act);
    return add_kid(bd, n, a) && add_kid(bd, n, build_child(bd, m, path, "fc2")) ? n : NULL;
}

/* The experts' common Lipschitz constant (each expert's global bound). */
static double experts_lipschitz(builder *bd, ml_module *experts, const char *path) {
    double lip = 0;
    bool plain = bd->plain;
    char why[sizeof bd->why];
    memcpy(why, bd->why, sizeof why);
    for (int e = 0; e < experts->n_children && !bd->failed; e++) {
        char p[ML_PATH_MAX];
        text(p, sizeof p, "%s%sexperts.%s", path, path[0] ? "." : "", experts->children[e].name);
        lip = fmax(lip, gain(build(bd, experts->children[e].m, p)));
    }
    bd->plain = plain;
    memcpy(bd->why, why, sizeof why); /* an expert without a global bound shows as an infinite gain instead */
    return lip;
}

static int trace_layer(builder *bd, const char *path) {
    int i = ml_trace_index(bd->trace, path);
    if (i < 0) {
        ml_failc("%s: the MoE layer '%s' reported no routing", bd->fn, path);
        hard_fail(bd);
    }
    return i;
}

/* exact: the router reads the layer's input itself (token routers) and only
 * reshapes lie before it. */
static void layer_note(builder *bd, int i, bool reads_input) {
    bound_layer *li = &bd->b->info[i];
    li->exact = bd->plain && reads_input;
    text(li->note, sizeof li->note, "%s", bd->why);
}

static bound_node *build_token_moe(builder *bd, ml_module *m, const char *path, bool smooth) {
    int i = trace_layer(bd, path);
    if (i < 0) return NULL;
    const bound_rec *r = centre(bd, path);
    const ml_trace_layer *l = &bd->trace->layers[i];
    if (!r || !r->v) {
        bound_node *n = inf_node(bd, path, "%s", "no single centre forward recorded");
        layer_note(bd, i, true);
        return n;
    }
    if (r->rows != l->T) {
        ml_failc("%s: layer '%s' routed %" PRId64 " items, its input has %" PRId64, bd->fn, path, l->T, r->rows);
        hard_fail(bd);
        return NULL;
    }
    layer_note(bd, i, true);
    bd->plain = false;
    bound_node *n = new_node(bd, N_MOE);
    if (!n) return NULL;
    n->layer = i;
    n->moe = MOE_TOKEN;
    n->check = !smooth;
    n->c2 = ml_opnorm_spectral(ml_module_param(ml_module_child(m, "router"), "weight"));
    n->lip = experts_lipschitz(bd, ml_module_child(m, "experts"), path);
    n->emax = calloc((size_t)l->T, sizeof(double));
    if (!n->emax || isnan(n->c2)) {
        if (!n->emax) ml_fail("out of memory");
        hard_fail(bd);
        return NULL;
    }
    int64_t K = l->K, E = l->E;
    const int64_t *ex = ml_i64(l->experts), *kept = ml_i64(l->kept);
    for (int64_t t = 0; t < l->T; t++)
        for (int64_t k = 0; k < (smooth ? E : K); k++)
            if (smooth || kept[t * K + k]) n->emax[t] = fmax(n->emax[t], r->v[t * E + (smooth ? k : ex[t * K + k])]);
    /* capacity: a layer that can drop items ties every sample's routing to the batch */
    cJSON *cfg = ml_module_config(m);
    double cf = 0;
    bool round4 = false, priority = false;
    if (!smooth && cfg && !ml_cfg_double(cfg, "capacity_factor", 0, &cf) &&
        !ml_cfg_bool(cfg, "round_capacity", false, &round4) && !ml_cfg_bool(cfg, "batch_priority", false, &priority) &&
        cf > 0 && ml_route_capacity(l->T, E, (int)K, cf, round4) < l->T) {
        bd->b->info[i].coupled = true;
        bd->b->info[i].blocks = priority;
    }
    cJSON_Delete(cfg);
    return n;
}

static bound_node *build_moe_conv(builder *bd, ml_module *m, const char *path) {
    int i = trace_layer(bd, path);
    if (i < 0) return NULL;
    const bound_rec *r = centre(bd, path);
    const ml_trace_layer *l = &bd->trace->layers[i];
    layer_note(bd, i, false);
    if (!r || !r->v || !r->hw) return inf_node(bd, path, "%s", "no single centre forward recorded");
    bd->plain = false;
    bound_node *n = new_node(bd, N_MOE);
    if (!n) return NULL;
    n->layer = i;
    n->check = true;
    n->moe = l->kind == ML_TRACE_GLOBAL ? MOE_GLOBAL : MOE_CONV;
    n->hw = (double)r->hw;
    n->cin = (double)(r->in_numel / r->hw);
    n->expert_of = ml_i64(l->experts);
    int k, stride;
    n->lipe = calloc((size_t)l->E, sizeof(double));
    n->emax = calloc((size_t)bd->b->B, sizeof(double));
    if (!n->lipe || !n->emax) ml_fail("out of memory");
    if (!n->lipe || !n->emax || bound_config_int(m, "kernel", 3, &k) || bound_config_int(m, "stride", 1, &stride)) {
        hard_fail(bd);
        return NULL;
    }
    ml_tensor *W = ml_module_param(m, "weight");
    for (int e = 0; e < l->E && !bd->failed; e++) {
        int64_t first, count;
        if (ml_moe_conv_expert_channels(bd->fn, m, e, &first, &count)) return hard_fail(bd), NULL;
        ml_tensor *blk = ml_narrow(W, 0, first, count);
        ml_opnorm on;
        if (!blk || ml_opnorm_conv(blk, k, stride, 1, 0, &on)) hard_fail(bd);
        n->lipe[e] = on.l2;
        ml_release(blk);
    }
    /* the sample's convolution before its gate: output norm / gate */
    for (int64_t s = 0; s < bd->b->B; s++) {
        double g = ml_f32(l->gates)[s];
        n->emax[s] = g > 0 ? r->v[s] / g : INFINITY;
    }
    ml_router_weights w;
    if (ml_router_weights_get(bd->fn, bd->model, bd->trace, i, &w)) return hard_fail(bd), NULL;
    n->c2 = ml_opnorm_spectral(w.weight);
    ml_router_weights_free(&w);
    if (isnan(n->c2)) hard_fail(bd);
    return bd->failed ? NULL : n;
}

static bound_node *build_conv(builder *bd, ml_module *m, const char *path, const char *type) {
    int k, stride, groups = 1;
    if (bound_config_int(m, "kernel", 3, &k) || bound_config_int(m, "stride", 1, &stride) ||
        (!strcmp(type, "Conv2d") && bound_config_int(m, "groups", 1, &groups))) {
        hard_fail(bd);
        return NULL;
    }
    ml_tensor *W = ml_module_param(m, "weight");
    const bound_rec *r = centre(bd, path);
    ml_opnorm on;
    if (ml_opnorm_conv(W, k, stride, groups, r ? r->out_numel / W->shape[0] : 0, &on)) return hard_fail(bd), NULL;
    return linear_node(bd, on.l2, on.linf, on.linf2, false, true, r, false);
}

static bound_node *build_patch(builder *bd, ml_module *m, const char *path) {
    int patch;
    if (bound_config_int(m, "patch", 4, &patch)) return hard_fail(bd), NULL;
    ml_tensor *W = ml_module_param(m, "weight");
    const bound_rec *r = centre(bd, path);
    ml_opnorm on; /* per patch: one output vector of the patch's pixels */
    if (ml_opnorm_conv(W, patch, patch, 1, 1, &on)) return hard_fail(bd), NULL;
    if (!r) return inf_node(bd, path, "%s", "no single centre forward recorded");
    bound_node *n = new_node(bd, N_PATCH);
    if (n) {
        n->c2 = on.l2;
        n->cinf = on.linf;
        n->cinf2 = on.linf2;
        n->out_numel = r->out_numel;
        n->tokens = r->out_numel / W->shape[0];
        n->D = W->shape[1] * W->shape[2] * W->shape[3]; /* pixels of a patch */
    }
    bd->plain = false;
    return n;
}

static bound_node *build_leaf(builder *bd, ml_module *m, const char *path, const char *type) {
    const bound_rec *r = centre(bd, path);
    if (!strcmp(type, "Linear") || !strcmp(type, "Router")) {
        ml_tensor *W = ml_module_param(m, "weight");
        ml_opnorm on;
        if (ml_opnorm_matrix(W, &on)) return hard_fail(bd), NULL;
        return linear_node(bd, on.l2, on.linf, on.linf2, true, r && r->in_numel == W->shape[1], r, false);
    }
    if (!strcmp(type, "Conv2d") || !strcmp(type, "MaskedConv2d")) return build_conv(bd, m, path, type);
    if (!strcmp(type, "PatchEmbed")) return build_patch(bd, m, path);
    if (!strcmp(type, "BatchNorm2d")) {
        if (m->training) return inf_node(bd, path, "%s", "BatchNorm2d in training mode (batch statistics)");
        cJSON *cfg = ml_module_config(m);
        double eps = 1e-5;
        if (cfg) ml_cfg_double(cfg, "eps", 1e-5, &eps);
        cJSON_Delete(cfg);
        ml_tensor *g = ml_contiguous(ml_module_param(m, "weight")), *v = ml_contiguous(ml_module_param(m, "running_var"));
        double lip = 0;
        for (int64_t c = 0; g && v && c < ml_numel(g); c++)
            lip = fmax(lip, fabs(ml_f32(g)[c]) / sqrt((double)ml_f32(v)[c] + eps));
        ml_release(g);
        ml_release(v);
        lip *= 1 + 1e-12;
        return linear_node(bd, lip, lip, INFINITY, false, false, r, false);
    }
    if (!strcmp(type, "Normalize")) {
        ml_tensor *inv = ml_module_param(m, "inv_std");
        double lip = 0;
        for (int64_t c = 0; c < ml_numel(inv); c++) lip = fmax(lip, fabs(ml_f32(inv)[c]));
        return linear_node(bd, lip, lip, INFINITY, false, false, r, false);
    }
    if (!strcmp(type, "Activation")) {
        cJSON *cfg = ml_module_config(m);
        char op[32];
        text(op, sizeof op, "%s", cfg ? ml_cfg_string(cfg, "op", "?") : "?");
        cJSON_Delete(cfg);
        double lip = activation_lipschitz(op);
        return lip > 0 ? linear_node(bd, lip, lip, INFINITY, true, false, r, false)
                       : inf_node(bd, path, "the activation %s is not Lipschitz", op);
    }
    if (!strcmp(type, "Identity")) return linear_node(bd, 1, 1, INFINITY, true, false, r, true);
    if (!strcmp(type, "Flatten")) return linear_node(bd, 1, 1, INFINITY, false, false, r, true);
    if (!strcmp(type, "Dropout"))
        return m->training ? inf_node(bd, path, "%s", "Dropout in training mode")
                           : linear_node(bd, 1, 1, INFINITY, true, false, r, true);
    if (!strcmp(type, "MaxPool2d") || !strcmp(type, "AvgPool2d")) {
        int k, stride;
        if (bound_config_int(m, "kernel", 2, &k) || bound_config_int(m, "stride", 2, &stride)) return hard_fail(bd), NULL;
        /* an input pixel lies in at most ceil(k/s)^2 windows; max and mean are
         * 1-Lipschitz in l_inf within a window */
        return linear_node(bd, ceil((double)k / (double)stride), 1, INFINITY, false, false, r, false);
    }
    if (!strcmp(type, "GlobalAvgPool")) {
        double hw = r && r->hw ? (double)r->hw : 1, C = r ? (double)r->out_numel : INFINITY;
        return linear_node(bd, 1 / sqrt(hw), 1, sqrt(C), false, true, r, false);
    }
    return inf_node(bd, path, "a %s module has no known bound", type);
}

static bound_node *build(builder *bd, ml_module *m, const char *path) {
    if (bd->failed) return NULL;
    const char *type = m->type->name;
    if (!strcmp(type, "Sequential") || !strcmp(type, "Model")) return build_chain(bd, m, path, !strcmp(type, "Model"));
    if (!strcmp(type, "BasicBlock")) {
        static const char *const body[] = {"conv1", "bn1", "conv2", "bn2"}, *const sc[] = {"shortcut"};
        bound_node *a = chain_of(bd, m, path, body, 4);
        bound_node *b = ml_module_child(m, "shortcut") ? chain_of(bd, m, path, sc, 1) : NULL;
        return a ? build_sum(bd, a, b) : NULL;
    }
    if (!strcmp(type, "WideBlock")) {
        static const char *const body[] = {"bn1", "conv1", "bn2", "conv2"}, *const sc[] = {"bn1", "shortcut"};
        bound_node *a = chain_of(bd, m, path, body, 4);
        bound_node *b = ml_module_child(m, "shortcut") ? chain_of(bd, m, path, sc, 2) : NULL;
        return a ? build_sum(bd, a, b) : NULL;
    }
    if (!strcmp(type, "TransformerBlock")) {
        static const char *const attn[] = {"ln1", "attn"}, *const mlp[] = {"ln2", "mlp"};
        bound_node *a = chain_of(bd, m, path, attn, 2), *s1 = a ? build_sum(bd, NULL, a) : NULL;
        bound_node *f = s1 ? chain_of(bd, m, path, mlp, 2) : NULL, *s2 = f ? build_sum(bd, NULL, f) : NULL;
        bound_node *n = s2 ? new_node(bd, N_CHAIN) : NULL;
        return add_kid(bd, n, s1) && add_kid(bd, n, s2) ? n : NULL;
    }
    if (!strcmp(type, "Attention")) return build_attention(bd, m, path);
    if (!strcmp(type, "MLP")) return build_mlp(bd, m, path);
    if (!strcmp(type, "LayerNorm")) return build_layernorm(bd, m, path);
    if (!strcmp(type, "TokenMoE")) return build_token_moe(bd, m, path, false);
    if (!strcmp(type, "SmoothMoE")) return build_token_moe(bd, m, path, true);
    if (!strcmp(type, "MoEConv2d")) return build_moe_conv(bd, m, path);
    return build_leaf(bd, m, path, type);
}

ml_bound *ml_bound_build(const char *fn, ml_module *model, ml_tensor *x, ml_trace **trace) {
    *trace = NULL;
    if (model->training)
        return ml_fail("%s: the model is in training mode (batch statistics, dropout and router noise); call "
                       "model:eval() first", fn);
    if (x->ndim < 1 || x->shape[0] < 1) return ml_fail("%s: the input needs a batch dimension, got %s", fn, ML_SHAPE_STR(x));
    ml_bound *b = calloc(1, sizeof *b);
    if (!b) return ml_fail("out of memory");
    b->B = b->cap.B = x->shape[0];
    b->in_numel = ml_numel(x) / b->B;
    if (x->ndim == 2 || x->ndim == 3) { /* [B, D] is one token per sample, [B, T, D] T tokens */
        b->in_tokens = x->ndim == 3 ? x->shape[1] : 1;
        b->in_dim = x->shape[x->ndim - 1];
    }
    bool grad = ml_grad_set(false);
    ml_ctx ctx = {.trace = true, .on_module = bound_capture_hook, .on_module_ud = &b->cap};
    ml_tensor *y = ml_module_forward(model, x, &ctx);
    ml_trace *t = y ? ml_ctx_take_trace(&ctx) : NULL;
    ml_ctx_clear(&ctx);
    if (y) bound_capture_hook(&b->cap, "", model, x, y, 0, 0); /* the hook sees children only */
    ml_release(y);
    if (t && b->cap.failed) ml_fail("%s: %s", fn, b->cap.error);
    builder bd = {.fn = fn, .b = b, .model = model, .trace = t, .plain = true};
    if (t && !b->cap.failed) {
        b->layers = t->n;
        b->info = calloc((size_t)(t->n ? t->n : 1), sizeof *b->info);
        if (!b->info) ml_fail("out of memory");
        for (int i = 0; b->info && i < t->n && !bd.failed; i++) {
            if (t->layers[i].T % b->B) {
                ml_fail("%s: layer '%s' routed %" PRId64 " items, not a multiple of the batch size %" PRId64, fn,
                        t->layers[i].name, t->layers[i].T, b->B);
                bd.failed = true;
            }
            b->info[i].per_sample = t->layers[i].T / b->B;
        }
        b->root = b->info && !bd.failed ? build(&bd, model, "") : NULL;
    }
    ml_grad_set(grad);
    if (!t || b->cap.failed || !b->info || bd.failed || !b->root) {
        ml_trace_free(t);
        ml_bound_free(b);
        return NULL;
    }
    *trace = t;
    return b;
}
