/* cnn.c -- convolutional modules: Conv2d, BatchNorm2d, pooling, Dropout,
 * residual BasicBlock. */
#include "cnn.h"

#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/conv.h"
#include "../ops/conv_env.h"
#include "../ops/elementwise.h"
#include "../ops/norm.h"
#include "../ops/pool.h"
#include "layers.h"

static void free_state(ml_module *m) { free(m->state); }

/* ------------------------------------------------------------ Conv2d */
typedef struct {
    int64_t cin, cout;
    int k, stride, pad, groups;
    bool bias;
} conv_state;

static ml_tensor *conv_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    conv_state *s = m->state;
    ml_conv_opts o = {.stride_h = s->stride, .stride_w = s->stride, .pad_h = s->pad, .pad_w = s->pad,
                      .dil_h = 1, .dil_w = 1, .groups = s->groups};
    return ml_conv2d(x, ml_module_param(m, "weight"), s->bias ? ml_module_param(m, "bias") : NULL, &o);
}

static void conv_describe(const ml_module *m, char *buf, size_t n) {
    const conv_state *s = m->state;
    snprintf(buf, n, "Conv2d(%" PRId64 " -> %" PRId64 ", %dx%d, stride %d, padding %d%s%s)", s->cin, s->cout, s->k,
             s->k, s->stride, s->pad, s->groups > 1 ? ", grouped" : "", s->bias ? ", bias" : "");
}

static cJSON *conv_config(const ml_module *m) {
    const conv_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "Conv2d");
    cJSON_AddNumberToObject(c, "in", (double)s->cin);
    cJSON_AddNumberToObject(c, "out", (double)s->cout);
    cJSON_AddNumberToObject(c, "kernel", s->k);
    cJSON_AddNumberToObject(c, "stride", s->stride);
    cJSON_AddNumberToObject(c, "padding", s->pad);
    cJSON_AddNumberToObject(c, "groups", s->groups);
    cJSON_AddBoolToObject(c, "bias", s->bias);
    return c;
}

static const ml_module_type conv_type = {.name = "Conv2d", .forward = conv_forward, .destroy = free_state,
                                         .describe = conv_describe, .config = conv_config};

ml_module *ml_nn_conv2d(int64_t cin, int64_t cout, int k, int stride, int pad, int groups, bool bias) {
    if (cin <= 0 || cout <= 0 || k <= 0 || stride <= 0 || pad < 0 || groups <= 0)
        return ml_fail("Conv2d: invalid sizes (in %" PRId64 ", out %" PRId64 ", kernel %d, stride %d, padding %d, groups %d)",
                       cin, cout, k, stride, pad, groups);
    if (cin % groups || cout % groups)
        return ml_fail("Conv2d: groups = %d must divide in (%" PRId64 ") and out (%" PRId64 ")", groups, cin, cout);
    conv_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    *s = (conv_state){cin, cout, k, stride, pad, groups, bias};
    ml_module *m = ml_module_new(&conv_type, s);
    if (!m) {
        free(s);
        return NULL;
    }
    int64_t ws[4] = {cout, cin / groups, k, k}, fan_in = cin / groups * k * k;
    if (!ml_module_add_param(m, "weight", ml_init_uniform_fan_in(4, ws, fan_in), NULL) ||
        (bias && !ml_module_add_param(m, "bias", ml_init_uniform_fan_in(1, &cout, fan_in), NULL))) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *conv_from_config(const cJSON *c) {
    int in, out, k, stride, pad, groups;
    bool bias;
    if (ml_cfg_int(c, "in", 0, &in) || ml_cfg_int(c, "out", 0, &out) || ml_cfg_int(c, "kernel", 3, &k) ||
        ml_cfg_int(c, "stride", 1, &stride) || ml_cfg_int(c, "padding", 0, &pad) || ml_cfg_int(c, "groups", 1, &groups) ||
        ml_cfg_bool(c, "bias", false, &bias))
        return NULL;
    return ml_nn_conv2d(in, out, k, stride, pad, groups, bias);
}

/* ------------------------------------------------------------ BatchNorm2d */
typedef struct {
    int64_t c;
    double eps, momentum;
} bn_state;

static ml_tensor *bn_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    bn_state *s = m->state;
    return ml_batch_norm(x, ml_module_param(m, "weight"), ml_module_param(m, "bias"), ml_module_param(m, "running_mean"),
                         ml_module_param(m, "running_var"), m->training, s->momentum, s->eps);
}

static void bn_describe(const ml_module *m, char *buf, size_t n) {
    const bn_state *s = m->state;
    snprintf(buf, n, "BatchNorm2d(%" PRId64 ", eps %g, momentum %g)", s->c, s->eps, s->momentum);
}

static cJSON *bn_config(const ml_module *m) {
    const bn_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "BatchNorm2d");
    cJSON_AddNumberToObject(c, "channels", (double)s->c);
    cJSON_AddNumberToObject(c, "eps", s->eps);
    cJSON_AddNumberToObject(c, "momentum", s->momentum);
    return c;
}

static const ml_module_type bn_type = {.name = "BatchNorm2d", .forward = bn_forward, .destroy = free_state,
                                       .describe = bn_describe, .config = bn_config};

/* ------------------------------------------------------------ Conv2d + BatchNorm2d (+ ReLU) */
static _Atomic int fuse_mode = -1; /* -1: not read from the environment yet */

void ml_nn_set_fuse(bool on) { atomic_store(&fuse_mode, on ? 1 : 0); }

bool ml_nn_fuse(void) {
    int m = atomic_load(&fuse_mode);
    if (m < 0) {
        const char *e = ml_conv_env(ML_ENV_FUSE);
        m = e && !strcmp(e, "0") ? 0 : 1;
        atomic_store(&fuse_mode, m);
    }
    return m == 1;
}

ml_tensor *ml_nn_conv_bn_forward(ml_module *parent, int ic, int ib, ml_tensor *x, ml_ctx *ctx, bool relu) {
    return ml_nn_conv_bn_act_forward(parent, ic, ib, x, ctx, NULL, relu);
}

ml_tensor *ml_nn_conv_bn_act_forward(ml_module *parent, int ic, int ib, ml_tensor *x, ml_ctx *ctx, ml_tensor *residual,
                                     bool relu) {
    ml_module *cm = parent->children[ic].m, *bm = parent->children[ib].m;
    const conv_state *cs = cm->type == &conv_type ? cm->state : NULL;
    const bn_state *bs = bm->type == &bn_type ? bm->state : NULL;
    if (ml_nn_fuse() && cs && bs && !bm->training && bs->c == cs->cout && !(ctx && ctx->on_module)) {
        /* the BatchNorm folded into a per-channel scale and shift, through
         * differentiable ops so that its parameters still get gradients */
        ml_tensor *gamma = ml_module_param(bm, "weight"), *beta = ml_module_param(bm, "bias");
        ml_tensor *rm = ml_module_param(bm, "running_mean"), *rv = ml_module_param(bm, "running_var");
        ml_tensor *ve = ml_add_scalar(rv, bs->eps), *sd = ve ? ml_sqrt(ve) : NULL;
        ml_tensor *scale = sd ? ml_div(gamma, sd) : NULL, *ms = scale ? ml_mul(rm, scale) : NULL;
        ml_tensor *shift = ms ? ml_sub(beta, ms) : NULL;
        if (shift && cs->bias) {
            ml_tensor *bsc = ml_mul(ml_module_param(cm, "bias"), scale), *t = bsc ? ml_add(shift, bsc) : NULL;
            ml_release(bsc);
            ml_release(shift);
            shift = t;
        }
        ml_conv_opts o = {.stride_h = cs->stride, .stride_w = cs->stride, .pad_h = cs->pad, .pad_w = cs->pad,
                          .dil_h = 1, .dil_w = 1, .groups = cs->groups};
        ml_tensor *y =
            shift ? ml_conv2d_affine_residual(x, ml_module_param(cm, "weight"), scale, shift, residual, relu, &o) : NULL;
        if (!y)
            ml_error_locate("in modules '%s' and '%s' (Conv2d, BatchNorm2d) of %s: ", parent->children[ic].name,
                            parent->children[ib].name, parent->type->name);
        ml_release(ve);
        ml_release(sd);
        ml_release(scale);
        ml_release(ms);
        ml_release(shift);
        return y;
    }
    ml_tensor *h = ml_module_forward_child(parent, ic, x, ctx);
    ml_tensor *b = h ? ml_nn_bn_act_forward(parent, ib, h, ctx, residual, relu) : NULL;
    ml_release(h);
    return b;
}

ml_tensor *ml_nn_bn_act_forward(ml_module *parent, int ib, ml_tensor *x, ml_ctx *ctx, ml_tensor *residual, bool relu) {
    ml_module *bm = parent->children[ib].m;
    const bn_state *bs = bm->type == &bn_type ? bm->state : NULL;
    if (ml_nn_fuse() && bs && (residual || relu) && !(ctx && ctx->on_module)) {
        ml_tensor *y = ml_batch_norm_act(x, ml_module_param(bm, "weight"), ml_module_param(bm, "bias"),
                                         ml_module_param(bm, "running_mean"), ml_module_param(bm, "running_var"),
                                         bm->training, bs->momentum, bs->eps, residual, relu);
        if (!y) ml_error_locate("in module '%s' (BatchNorm2d) of %s: ", parent->children[ib].name, parent->type->name);
        return y;
    }
    ml_tensor *b = ml_module_forward_child(parent, ib, x, ctx);
    if (b && residual) {
        ml_tensor *t = ml_add(b, residual);
        ml_release(b);
        b = t;
    }
    if (!relu || !b) return b;
    ml_tensor *r = ml_relu(b);
    ml_release(b);
    return r;
}

ml_module *ml_nn_batchnorm2d(int64_t c, double eps, double momentum) {
    if (c <= 0) return ml_fail("BatchNorm2d: channels must be positive, got %" PRId64, c);
    bn_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    *s = (bn_state){c, eps, momentum};
    ml_module *m = ml_module_new(&bn_type, s);
    if (!m) {
        free(s);
        return NULL;
    }
    if (!ml_module_add_param(m, "weight", ml_full(ML_F32, 1, &c, 1.0), NULL) ||
        !ml_module_add_param(m, "bias", ml_zeros(ML_F32, 1, &c), NULL) ||
        !ml_module_add_buffer(m, "running_mean", ml_zeros(ML_F32, 1, &c)) ||
        !ml_module_add_buffer(m, "running_var", ml_full(ML_F32, 1, &c, 1.0))) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *bn_from_config(const cJSON *c) {
    int ch;
    double eps, mom;
    if (ml_cfg_int(c, "channels", 0, &ch) || ml_cfg_double(c, "eps", 1e-5, &eps) || ml_cfg_double(c, "momentum", 0.1, &mom))
        return NULL;
    return ml_nn_batchnorm2d(ch, eps, mom);
}

void ml_nn_set_bn_momentum(ml_module *m, double momentum) {
    if (m->type == &bn_type) ((bn_state *)m->state)->momentum = momentum;
    for (int i = 0; i < m->n_children; i++) ml_nn_set_bn_momentum(m->children[i].m, momentum);
}

/* ------------------------------------------------------------ pooling */
typedef struct {
    int k, stride, pad;
    bool is_max;
} pool_state;

static ml_tensor *pool_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    pool_state *s = m->state;
    return s->is_max ? ml_max_pool2d(x, s->k, s->k, s->stride, s->stride, s->pad, s->pad)
                     : ml_avg_pool2d(x, s->k, s->k, s->stride, s->stride, s->pad, s->pad);
}

static void pool_describe(const ml_module *m, char *buf, size_t n) {
    const pool_state *s = m->state;
    snprintf(buf, n, "%s(%dx%d, stride %d, padding %d)", s->is_max ? "MaxPool2d" : "AvgPool2d", s->k, s->k, s->stride,
             s->pad);
}

static cJSON *pool_config(const ml_module *m) {
    const pool_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", s->is_max ? "MaxPool2d" : "AvgPool2d");
    cJSON_AddNumberToObject(c, "kernel", s->k);
    cJSON_AddNumberToObject(c, "stride", s->stride);
    cJSON_AddNumberToObject(c, "padding", s->pad);
    return c;
}

static const ml_module_type maxpool_type = {.name = "MaxPool2d", .forward = pool_forward, .destroy = free_state,
                                            .describe = pool_describe, .config = pool_config};
static const ml_module_type avgpool_type = {.name = "AvgPool2d", .forward = pool_forward, .destroy = free_state,
                                            .describe = pool_describe, .config = pool_config};

static ml_module *pool_new(bool is_max, int k, int stride, int pad) {
    if (k <= 0 || stride <= 0 || pad < 0 || pad * 2 > k)
        return ml_fail("%s: invalid kernel %d / stride %d / padding %d", is_max ? "MaxPool2d" : "AvgPool2d", k, stride, pad);
    pool_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    *s = (pool_state){k, stride, pad, is_max};
    ml_module *m = ml_module_new(is_max ? &maxpool_type : &avgpool_type, s);
    if (!m) free(s);
    return m;
}

ml_module *ml_nn_maxpool2d(int k, int stride, int pad) { return pool_new(true, k, stride > 0 ? stride : k, pad); }
ml_module *ml_nn_avgpool2d(int k, int stride, int pad) { return pool_new(false, k, stride > 0 ? stride : k, pad); }

static ml_module *pool_from_config(const cJSON *c) {
    int k, stride, pad;
    if (ml_cfg_int(c, "kernel", 2, &k) || ml_cfg_int(c, "stride", k, &stride) || ml_cfg_int(c, "padding", 0, &pad))
        return NULL;
    return pool_new(!strcmp(ml_cfg_string(c, "type", ""), "MaxPool2d"), k, stride, pad);
}

static ml_tensor *gap_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) { return ml_global_avg_pool2d(x); }
static cJSON *gap_config(const ml_module *m) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "GlobalAvgPool");
    return c;
}
static const ml_module_type gap_type = {.name = "GlobalAvgPool", .forward = gap_forward, .config = gap_config};
ml_module *ml_nn_global_avg_pool(void) { return ml_module_new(&gap_type, NULL); }
static ml_module *gap_from_config(const cJSON *c) { return ml_nn_global_avg_pool(); }

/* ------------------------------------------------------------ Dropout */
static ml_tensor *dropout_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    double p = *(double *)m->state;
    return ml_dropout(x, p, m->training);
}
static void dropout_describe(const ml_module *m, char *buf, size_t n) { snprintf(buf, n, "Dropout(p = %g)", *(double *)m->state); }
static cJSON *dropout_config(const ml_module *m) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "Dropout");
    cJSON_AddNumberToObject(c, "p", *(double *)m->state);
    return c;
}
static const ml_module_type dropout_type = {.name = "Dropout", .forward = dropout_forward, .destroy = free_state,
                                            .describe = dropout_describe, .config = dropout_config};
ml_module *ml_nn_dropout(double p) {
    if (!(p >= 0 && p < 1)) return ml_fail("Dropout: p must be in [0, 1), got %g", p);
    double *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    *s = p;
    ml_module *m = ml_module_new(&dropout_type, s);
    if (!m) free(s);
    return m;
}
static ml_module *dropout_from_config(const cJSON *c) {
    double p;
    if (ml_cfg_double(c, "p", 0.5, &p)) return NULL;
    return ml_nn_dropout(p);
}

const ml_module_kind ml_cnn_kinds[] = {
    {"Conv2d", conv_from_config, NULL},     {"BatchNorm2d", bn_from_config, NULL},
    {"MaxPool2d", pool_from_config, NULL},  {"AvgPool2d", pool_from_config, NULL},
    {"GlobalAvgPool", gap_from_config, NULL}, {"Dropout", dropout_from_config, NULL},
    {NULL, NULL, NULL}};
