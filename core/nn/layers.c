/* layers.c -- Linear, activations, Identity, Flatten, Normalize, Sequential, Lambda. */
#include "layers.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/linalg.h"
#include "../ops/mlp.h"
#include "../ops/shape.h"
#include "cnn.h"
#include "registry.h"

/* ------------------------------------------------------------ Linear */
typedef struct {
    int64_t in, out;
    bool bias;
} linear_state;

static ml_tensor *linear_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    linear_state *s = m->state;
    if (x->ndim < 1 || x->shape[x->ndim - 1] != s->in)
        return ml_fail("Linear: input has %" PRId64 " features (shape %s), expected %" PRId64,
                       x->ndim ? x->shape[x->ndim - 1] : 0, ML_SHAPE_STR(x), s->in);
    return ml_linear(x, ml_module_param(m, "weight"), s->bias ? ml_module_param(m, "bias") : NULL);
}

static void linear_describe(const ml_module *m, char *buf, size_t n) {
    const linear_state *s = m->state;
    snprintf(buf, n, "Linear(%" PRId64 " -> %" PRId64 "%s)", s->in, s->out, s->bias ? "" : ", no bias");
}

static cJSON *linear_config(const ml_module *m) {
    const linear_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "Linear");
    cJSON_AddNumberToObject(c, "in", (double)s->in);
    cJSON_AddNumberToObject(c, "out", (double)s->out);
    cJSON_AddBoolToObject(c, "bias", s->bias);
    return c;
}

static void free_state(ml_module *m) { free(m->state); }

static const ml_module_type linear_type = {
    .name = "Linear", .forward = linear_forward, .destroy = free_state, .describe = linear_describe,
    .config = linear_config};

ml_module *ml_nn_linear(int64_t in, int64_t out, bool bias) {
    if (in <= 0 || out <= 0)
        return ml_fail("Linear: sizes must be positive (got in = %" PRId64 ", out = %" PRId64 ")", in, out);
    linear_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    *s = (linear_state){in, out, bias};
    ml_module *m = ml_module_new(&linear_type, s);
    if (!m) {
        free(s);
        return NULL;
    }
    int64_t ws[2] = {out, in};
    if (!ml_module_add_param(m, "weight", ml_init_uniform_fan_in(2, ws, in), NULL) ||
        (bias && !ml_module_add_param(m, "bias", ml_init_uniform_fan_in(1, &out, in), NULL))) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *linear_from_config(const cJSON *c) {
    int in, out;
    bool bias;
    if (ml_cfg_int(c, "in", 0, &in) || ml_cfg_int(c, "out", 0, &out) || ml_cfg_bool(c, "bias", true, &bias))
        return NULL;
    return ml_nn_linear(in, out, bias);
}

/* ------------------------------------------------------------ activations */
static ml_tensor *act_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    return ml_unary((ml_unary_op)(intptr_t)m->state, x);
}

static const char *act_name(ml_unary_op op) {
    switch (op) {
    case ML_RELU: return "ReLU";
    case ML_GELU: return "GELU";
    case ML_TANH: return "Tanh";
    case ML_SIGMOID: return "Sigmoid";
    case ML_SOFTPLUS: return "Softplus";
    default: return ml_unary_name(op);
    }
}

static void act_describe(const ml_module *m, char *buf, size_t n) {
    snprintf(buf, n, "%s()", act_name((ml_unary_op)(intptr_t)m->state));
}

static cJSON *act_config(const ml_module *m) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "Activation");
    cJSON_AddStringToObject(c, "op", ml_unary_name((ml_unary_op)(intptr_t)m->state));
    return c;
}

static const ml_module_type act_type = {
    .name = "Activation", .forward = act_forward, .describe = act_describe, .config = act_config};

ml_module *ml_nn_activation(ml_unary_op op) {
    if ((unsigned)op >= ML_UNARY_COUNT) return ml_fail("Activation: unknown op %d", (int)op);
    return ml_module_new(&act_type, (void *)(intptr_t)op);
}

static ml_module *act_from_config(const cJSON *c) {
    const char *name = ml_cfg_string(c, "op", "relu");
    for (int op = 0; op < ML_UNARY_COUNT; op++)
        if (!strcmp(ml_unary_name((ml_unary_op)op), name)) return ml_nn_activation((ml_unary_op)op);
    return ml_fail("Activation: unknown op '%s'", name);
}

/* ------------------------------------------------------------ Identity */
static ml_tensor *identity_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) { return ml_retain(x); }
static cJSON *identity_config(const ml_module *m) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "Identity");
    return c;
}
static const ml_module_type identity_type = {.name = "Identity", .forward = identity_forward, .config = identity_config};
ml_module *ml_nn_identity(void) { return ml_module_new(&identity_type, NULL); }
static ml_module *identity_from_config(const cJSON *c) { return ml_nn_identity(); }

/* ------------------------------------------------------------ Flatten */
typedef struct {
    int start, end;
} flatten_state;

static ml_tensor *flatten_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    flatten_state *s = m->state;
    return ml_flatten(x, s->start, s->end);
}

static void flatten_describe(const ml_module *m, char *buf, size_t n) {
    const flatten_state *s = m->state;
    snprintf(buf, n, "Flatten(%d, %d)", s->start + 1, s->end < 0 ? s->end : s->end + 1);
}

static cJSON *flatten_config(const ml_module *m) {
    const flatten_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "Flatten");
    cJSON_AddNumberToObject(c, "start", s->start);
    cJSON_AddNumberToObject(c, "end", s->end);
    return c;
}

static const ml_module_type flatten_type = {.name = "Flatten", .forward = flatten_forward, .destroy = free_state,
                                            .describe = flatten_describe, .config = flatten_config};

ml_module *ml_nn_flatten(int start_dim, int end_dim) {
    flatten_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    *s = (flatten_state){start_dim, end_dim};
    ml_module *m = ml_module_new(&flatten_type, s);
    if (!m) free(s);
    return m;
}

static ml_module *flatten_from_config(const cJSON *c) {
    int s, e;
    if (ml_cfg_int(c, "start", 1, &s) || ml_cfg_int(c, "end", -1, &e)) return NULL;
    return ml_nn_flatten(s, e);
}

/* ------------------------------------------------------------ Normalize */
static ml_tensor *normalize_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    ml_tensor *mean = ml_module_param(m, "mean"), *inv = ml_module_param(m, "inv_std");
    int64_t c = mean->shape[0];
    if (x->ndim < 2 || x->shape[1] != c)
        return ml_fail("Normalize: input has shape %s, expected %" PRId64 " channels in dimension 2", ML_SHAPE_STR(x), c);
    /* view the per-channel buffers as [C, 1, 1, ...] to broadcast over the rest */
    int64_t shape[ML_MAX_DIMS];
    int nd = x->ndim - 1;
    shape[0] = c;
    for (int d = 1; d < nd; d++) shape[d] = 1;
    ml_tensor *mv = ml_reshape(mean, nd, shape), *iv = ml_reshape(inv, nd, shape);
    ml_tensor *d = mv ? ml_sub(x, mv) : NULL, *y = d && iv ? ml_mul(d, iv) : NULL;
    ml_release(mv);
    ml_release(iv);
    ml_release(d);
    return y;
}

static void normalize_describe(const ml_module *m, char *buf, size_t n) {
    const ml_tensor *mean = ml_module_param(m, "mean"), *inv = ml_module_param(m, "inv_std");
    size_t k = (size_t)snprintf(buf, n, "Normalize(mean =");
    for (int64_t i = 0; i < mean->shape[0] && k < n; i++) k += (size_t)snprintf(buf + k, n - k, " %.4f", ml_f32(mean)[i]);
    if (k < n) k += (size_t)snprintf(buf + k, n - k, ", std =");
    for (int64_t i = 0; i < inv->shape[0] && k < n; i++) k += (size_t)snprintf(buf + k, n - k, " %.4f", 1.0 / ml_f32(inv)[i]);
    if (k < n) snprintf(buf + k, n - k, ")");
}

static cJSON *normalize_config(const ml_module *m) {
    const ml_tensor *mean = ml_module_param(m, "mean"), *inv = ml_module_param(m, "inv_std");
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "Normalize");
    cJSON *mm = cJSON_AddArrayToObject(c, "mean"), *ss = cJSON_AddArrayToObject(c, "std");
    for (int64_t i = 0; i < mean->shape[0]; i++) {
        cJSON_AddItemToArray(mm, cJSON_CreateNumber(ml_f32(mean)[i]));
        cJSON_AddItemToArray(ss, cJSON_CreateNumber(1.0 / ml_f32(inv)[i]));
    }
    return c;
}

static const ml_module_type normalize_type = {.name = "Normalize", .forward = normalize_forward,
                                              .describe = normalize_describe, .config = normalize_config};

ml_module *ml_nn_normalize(int channels, const float *mean, const float *std) {
    if (channels <= 0) return ml_fail("Normalize: needs at least one channel");
    for (int i = 0; i < channels; i++)
        if (!(std[i] > 0)) return ml_fail("Normalize: std of channel %d is %g; it must be positive", i + 1, std[i]);
    int64_t c = channels;
    ml_tensor *mt = ml_from_data(ML_F32, 1, &c, mean), *it = ml_empty(ML_F32, 1, &c);
    if (!mt || !it) {
        ml_release(mt);
        ml_release(it);
        return NULL;
    }
    for (int i = 0; i < channels; i++) ml_f32(it)[i] = 1.0f / std[i];
    ml_module *m = ml_module_new(&normalize_type, NULL);
    if (!m) {
        ml_release(mt);
        ml_release(it);
        return NULL;
    }
    ml_module_add_buffer(m, "mean", mt);
    ml_module_add_buffer(m, "inv_std", it);
    return m;
}

static ml_module *normalize_from_config(const cJSON *c) {
    const cJSON *mm = cJSON_GetObjectItemCaseSensitive(c, "mean"), *ss = cJSON_GetObjectItemCaseSensitive(c, "std");
    int n = cJSON_GetArraySize(mm);
    if (!cJSON_IsArray(mm) || !cJSON_IsArray(ss) || n != cJSON_GetArraySize(ss) || n < 1 || n > 64)
        return ml_fail("Normalize: config needs mean and std lists of the same length");
    float mean[64], std[64];
    for (int i = 0; i < n; i++) {
        mean[i] = (float)cJSON_GetArrayItem(mm, i)->valuedouble;
        std[i] = (float)cJSON_GetArrayItem(ss, i)->valuedouble;
    }
    return ml_nn_normalize(n, mean, std);
}

/* ------------------------------------------------------------ Sequential */
static ml_tensor *seq_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    ml_tensor *h = ml_retain(x);
    for (int i = 0; i < m->n_children && h; i++) {
        ml_tensor *next = ml_module_forward_child(m, i, h, ctx);
        ml_release(h);
        h = next;
    }
    return h;
}

static void seq_describe(const ml_module *m, char *buf, size_t n) {
    snprintf(buf, n, "Sequential(%d modules)", m->n_children);
}

static cJSON *seq_config(const ml_module *m) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "Sequential");
    cJSON *list = cJSON_AddArrayToObject(c, "modules");
    for (int i = 0; i < m->n_children; i++) {
        cJSON *cc = ml_module_config(m->children[i].m);
        if (!cc) {
            cJSON_Delete(c);
            return NULL;
        }
        cJSON_AddItemToArray(list, cc);
    }
    return c;
}

const ml_module_type ml_sequential_type = {
    .name = "Sequential", .forward = seq_forward, .describe = seq_describe, .config = seq_config};

ml_module *ml_nn_sequential(void) { return ml_module_new(&ml_sequential_type, NULL); }

ml_module *ml_nn_sequential_add(ml_module *seq, ml_module *child) {
    char name[16];
    snprintf(name, sizeof name, "%d", seq->n_children);
    return ml_module_add_child(seq, name, child);
}

static ml_module *seq_from_config(const cJSON *c) {
    const cJSON *list = cJSON_GetObjectItemCaseSensitive(c, "modules");
    if (!cJSON_IsArray(list)) return ml_fail("Sequential: config needs a list of modules");
    ml_module *seq = ml_nn_sequential();
    if (!seq) return NULL;
    for (const cJSON *it = list->child; it; it = it->next) {
        ml_module *child = ml_module_from_config(it);
        if (!child || !ml_nn_sequential_add(seq, child)) {
            ml_module_release(seq);
            return NULL;
        }
    }
    return seq;
}

/* ------------------------------------------------------------ Lambda */
typedef struct {
    char name[64];
    ml_lambda_fn fn;
    void *ud;
    void (*free_ud)(void *);
} lambda_state;

static ml_tensor *lambda_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    lambda_state *s = m->state;
    return s->fn(s->ud, x, ctx, m->training);
}

static void lambda_destroy(ml_module *m) {
    lambda_state *s = m->state;
    if (s->free_ud) s->free_ud(s->ud);
    free(s);
}

static void lambda_describe(const ml_module *m, char *buf, size_t n) {
    const lambda_state *s = m->state;
    snprintf(buf, n, "%s", s->name);
}

static const ml_module_type lambda_type = {
    .name = "Lambda", .forward = lambda_forward, .destroy = lambda_destroy, .describe = lambda_describe};

ml_module *ml_nn_lambda(const char *name, ml_lambda_fn fn, void *ud, void (*free_ud)(void *)) {
    lambda_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    snprintf(s->name, sizeof s->name, "%s", name ? name : "Lambda");
    s->fn = fn;
    s->ud = ud;
    s->free_ud = free_ud;
    ml_module *m = ml_module_new(&lambda_type, s);
    if (!m) free(s);
    return m;
}

/* ------------------------------------------------------------ MLP */
/* fc1 -> activation -> fc2, the transformer MLP and the V-MoE expert. */
typedef struct {
    int64_t in, hidden, out;
    ml_unary_op act;
} mlp_state;

static const ml_module_type mlp_type;

bool ml_nn_mlp_parts(const ml_module *m, ml_tensor **w1, ml_tensor **b1, ml_tensor **w2, ml_tensor **b2,
                     ml_unary_op *act) {
    if (m->type != &mlp_type) return false;
    const ml_module *fc1 = m->children[0].m, *fc2 = m->children[1].m;
    *w1 = ml_module_param(fc1, "weight");
    *b1 = ml_module_param(fc1, "bias");
    *w2 = ml_module_param(fc2, "weight");
    *b2 = ml_module_param(fc2, "bias");
    *act = ((const mlp_state *)m->state)->act;
    return *w1 && *b1 && *w2 && *b2;
}

static ml_tensor *mlp_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    mlp_state *s = m->state;
    ml_tensor *w1, *b1, *w2, *b2;
    ml_unary_op act;
    /* fused (ops/mlp.h) unless hooks watch fc1 / fc2, or turned off (MOELAB_FUSE=0) */
    if (ml_nn_fuse() && !(ctx && ctx->on_module) && x->ndim >= 1 && x->shape[x->ndim - 1] == s->in &&
        ml_nn_mlp_parts(m, &w1, &b1, &w2, &b2, &act) && ml_mlp_act_supported(act)) {
        int64_t rows[2] = {-1, s->in};
        ml_tensor *x2 = ml_reshape(x, 2, rows);
        int64_t off[2] = {0, x2 ? x2->shape[0] : 0};
        ml_tensor *y2 = x2 ? ml_mlp_blocks(x2, 1, off, &w1, &b1, &w2, &b2, act) : NULL;
        ml_release(x2);
        if (!y2) return NULL;
        int64_t shape[ML_MAX_DIMS];
        for (int d = 0; d < x->ndim - 1; d++) shape[d] = x->shape[d];
        shape[x->ndim - 1] = s->out;
        ml_tensor *y = ml_reshape(y2, x->ndim, shape);
        ml_release(y2);
        return y;
    }
    ml_tensor *h = ml_module_forward_child(m, 0, x, ctx);
    if (!h) return NULL;
    ml_tensor *a = ml_unary(s->act, h);
    ml_release(h);
    if (!a) return NULL;
    ml_tensor *y = ml_module_forward_child(m, 1, a, ctx);
    ml_release(a);
    return y;
}

static void mlp_describe(const ml_module *m, char *buf, size_t n) {
    const mlp_state *s = m->state;
    snprintf(buf, n, "MLP(%" PRId64 " -> %" PRId64 " -> %" PRId64 ", %s)", s->in, s->hidden, s->out,
             act_name(s->act));
}

static cJSON *mlp_config(const ml_module *m) {
    const mlp_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "MLP");
    cJSON_AddNumberToObject(c, "in", (double)s->in);
    cJSON_AddNumberToObject(c, "hidden", (double)s->hidden);
    cJSON_AddNumberToObject(c, "out", (double)s->out);
    cJSON_AddStringToObject(c, "activation", ml_unary_name(s->act));
    return c;
}

static const ml_module_type mlp_type = {
    .name = "MLP", .forward = mlp_forward, .destroy = free_state, .describe = mlp_describe, .config = mlp_config};

ml_module *ml_nn_mlp(int64_t in, int64_t hidden, int64_t out, ml_unary_op act) {
    mlp_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    *s = (mlp_state){in, hidden, out, act};
    ml_module *m = ml_module_new(&mlp_type, s);
    if (!m) {
        free(s);
        return NULL;
    }
    if (!ml_module_add_child(m, "fc1", ml_nn_linear(in, hidden, true)) ||
        !ml_module_add_child(m, "fc2", ml_nn_linear(hidden, out, true))) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *mlp_from_config(const cJSON *c) {
    int in, hidden, out;
    if (ml_cfg_int(c, "in", 0, &in) || ml_cfg_int(c, "hidden", 0, &hidden) || ml_cfg_int(c, "out", in, &out))
        return NULL;
    const char *act = ml_cfg_string(c, "activation", "gelu");
    for (int op = 0; op < ML_UNARY_COUNT; op++)
        if (!strcmp(ml_unary_name((ml_unary_op)op), act)) return ml_nn_mlp(in, hidden, out, (ml_unary_op)op);
    return ml_fail("MLP: unknown activation '%s'", act);
}

/* ------------------------------------------------------------ registration */
const ml_module_kind ml_layers_kinds[] = {
    {"Linear", linear_from_config, NULL},       {"Activation", act_from_config, NULL},
    {"Identity", identity_from_config, NULL},   {"Flatten", flatten_from_config, NULL},
    {"Normalize", normalize_from_config, NULL}, {"Sequential", seq_from_config, NULL},
    {"MLP", mlp_from_config, NULL},             {NULL, NULL, NULL}};
