/* transformer.c -- LayerNorm, attention, pre-LN block, patch embedding. */
#include "transformer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/attention.h"
#include "../ops/conv.h"
#include "../ops/elementwise.h"
#include "../ops/linalg.h"
#include "../ops/norm.h"
#include "../ops/shape.h"
#include "../ops/softmax.h"
#include "layers.h"
#include "registry.h"

static void free_state(ml_module *m) { free(m->state); }

/* ------------------------------------------------------------ LayerNorm */
typedef struct {
    int64_t dim;
    double eps;
} ln_state;

static ml_tensor *ln_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    ln_state *s = m->state;
    if (x->ndim < 1 || x->shape[x->ndim - 1] != s->dim)
        return ml_fail("LayerNorm: input has shape %s, expected [..., %" PRId64 "]", ML_SHAPE_STR(x), s->dim);
    return ml_layer_norm(x, 1, ml_module_param(m, "weight"), ml_module_param(m, "bias"), s->eps);
}

static void ln_describe(const ml_module *m, char *buf, size_t n) {
    const ln_state *s = m->state;
    snprintf(buf, n, "LayerNorm(%" PRId64 ", eps %g)", s->dim, s->eps);
}

static cJSON *ln_config(const ml_module *m) {
    const ln_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "LayerNorm");
    cJSON_AddNumberToObject(c, "dim", (double)s->dim);
    cJSON_AddNumberToObject(c, "eps", s->eps);
    return c;
}

static const ml_module_type ln_type = {.name = "LayerNorm", .forward = ln_forward, .destroy = free_state,
                                       .describe = ln_describe, .config = ln_config};

ml_module *ml_nn_layernorm(int64_t dim, double eps) {
    if (dim < 1) return ml_fail("LayerNorm: dim must be positive, got %" PRId64, dim);
    if (!(eps > 0)) return ml_fail("LayerNorm: eps must be positive");
    ln_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    *s = (ln_state){dim, eps};
    ml_module *m = ml_module_new(&ln_type, s);
    if (!m) {
        free(s);
        return NULL;
    }
    if (!ml_module_add_param(m, "weight", ml_full(ML_F32, 1, &dim, 1.0), NULL) ||
        !ml_module_add_param(m, "bias", ml_zeros(ML_F32, 1, &dim), NULL)) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *ln_from_config(const cJSON *c) {
    int dim;
    double eps;
    if (ml_cfg_int(c, "dim", 0, &dim) || ml_cfg_double(c, "eps", 1e-5, &eps)) return NULL;
    return ml_nn_layernorm(dim, eps);
}

/* ------------------------------------------------------------ attention */
typedef struct {
    int64_t dim;
    int heads;
} attn_state;

static ml_tensor *attn_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    attn_state *s = m->state;
    if (x->ndim != 3 || x->shape[2] != s->dim)
        return ml_fail("Attention: input has shape %s, expected [B, T, %" PRId64 "]", ML_SHAPE_STR(x), s->dim);
    ml_tensor *qkv = ml_module_forward_child(m, 0, x, ctx); /* [B, T, 3D] */
    if (!qkv) return NULL;
    /* softmax(q k^T / sqrt(D/H)) v per head, heads concatenated: one fused op */
    ml_tensor *cat = ml_attention(qkv, s->heads); /* [B, T, D] */
    ml_release(qkv);
    ml_tensor *y = cat ? ml_module_forward_child(m, 1, cat, ctx) : NULL;
    ml_release(cat);
    return y;
}

static void attn_describe(const ml_module *m, char *buf, size_t n) {
    const attn_state *s = m->state;
    snprintf(buf, n, "Attention(dim %" PRId64 ", %d heads)", s->dim, s->heads);
}

static cJSON *attn_config(const ml_module *m) {
    const attn_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "Attention");
    cJSON_AddNumberToObject(c, "dim", (double)s->dim);
    cJSON_AddNumberToObject(c, "heads", s->heads);
    return c;
}

static const ml_module_type attn_type = {.name = "Attention", .forward = attn_forward, .destroy = free_state,
                                         .describe = attn_describe, .config = attn_config};

ml_module *ml_nn_attention(int64_t dim, int heads) {
    if (dim < 1 || heads < 1 || dim % heads)
        return ml_fail("Attention: heads = %d must divide dim = %" PRId64, heads, dim);
    attn_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    *s = (attn_state){dim, heads};
    ml_module *m = ml_module_new(&attn_type, s);
    if (!m) {
        free(s);
        return NULL;
    }
    if (!ml_module_add_child(m, "qkv", ml_nn_linear(dim, 3 * dim, true)) ||
        !ml_module_add_child(m, "proj", ml_nn_linear(dim, dim, true))) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *attn_from_config(const cJSON *c) {
    int dim, heads;
    if (ml_cfg_int(c, "dim", 0, &dim) || ml_cfg_int(c, "heads", 1, &heads)) return NULL;
    return ml_nn_attention(dim, heads);
}

/* ------------------------------------------------------------ block */
static ml_tensor *block_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    /* children: ln1, attn, ln2, mlp */
    ml_tensor *h = ml_module_forward_child(m, 0, x, ctx);
    ml_tensor *a = h ? ml_module_forward_child(m, 1, h, ctx) : NULL;
    ml_release(h);
    ml_tensor *x1 = a ? ml_add(x, a) : NULL;
    ml_release(a);
    ml_tensor *h2 = x1 ? ml_module_forward_child(m, 2, x1, ctx) : NULL;
    ml_tensor *f = h2 ? ml_module_forward_child(m, 3, h2, ctx) : NULL;
    ml_release(h2);
    ml_tensor *y = f ? ml_add(x1, f) : NULL;
    ml_release(x1);
    ml_release(f);
    return y;
}

static cJSON *block_config(const ml_module *m) {
    const attn_state *a = m->children[1].m->state;
    const ln_state *l = m->children[0].m->state;
    cJSON *mlp = ml_module_config(m->children[3].m);
    if (!mlp) return NULL;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "TransformerBlock");
    cJSON_AddNumberToObject(c, "dim", (double)a->dim);
    cJSON_AddNumberToObject(c, "heads", a->heads);
    cJSON_AddNumberToObject(c, "eps", l->eps);
    cJSON_AddItemToObject(c, "mlp", mlp);
    return c;
}

static const ml_module_type block_type = {.name = "TransformerBlock", .forward = block_forward, .config = block_config};

ml_module *ml_nn_transformer_block(int64_t dim, int heads, double eps, ml_module *mlp) {
    if (!mlp) return NULL;
    ml_module *m = ml_module_new(&block_type, NULL);
    if (!m) {
        ml_module_release(mlp);
        return NULL;
    }
    if (!ml_module_add_child(m, "ln1", ml_nn_layernorm(dim, eps)) || !ml_module_add_child(m, "attn", ml_nn_attention(dim, heads)) ||
        !ml_module_add_child(m, "ln2", ml_nn_layernorm(dim, eps))) {
        ml_module_release(mlp); /* not attached yet: ours to release (found by tests/fuzz) */
        ml_module_release(m);
        return NULL;
    }
    if (!ml_module_add_child(m, "mlp", mlp)) { /* add_child released mlp */
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *block_from_config(const cJSON *c) {
    int dim, heads;
    double eps;
    if (ml_cfg_int(c, "dim", 0, &dim) || ml_cfg_int(c, "heads", 1, &heads) || ml_cfg_double(c, "eps", 1e-6, &eps))
        return NULL;
    const cJSON *mc = cJSON_GetObjectItemCaseSensitive(c, "mlp");
    ml_module *mlp = mc ? ml_module_from_config(mc) : ml_nn_mlp(dim, 4 * dim, dim, ML_GELU);
    return ml_nn_transformer_block(dim, heads, eps, mlp);
}

/* ------------------------------------------------------------ patch embedding */
typedef struct {
    int c, h, w, patch;
    int64_t dim, tokens;
} pe_state;

static ml_tensor *pe_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    pe_state *s = m->state;
    if (x->ndim != 4 || x->shape[1] != s->c || x->shape[2] != s->h || x->shape[3] != s->w)
        return ml_fail("PatchEmbed: input has shape %s, expected [N, %d, %d, %d]", ML_SHAPE_STR(x), s->c, s->h, s->w);
    int64_t B = x->shape[0];
    ml_conv_opts o = {s->patch, s->patch, 0, 0, 1, 1, 1};
    ml_tensor *y = ml_conv2d(x, ml_module_param(m, "weight"), ml_module_param(m, "bias"), &o); /* [B, D, h', w'] */
    int64_t s3[3] = {B, s->dim, s->tokens - 1};
    ml_tensor *f = y ? ml_reshape(y, 3, s3) : NULL;
    ml_release(y);
    ml_tensor *t = f ? ml_transpose(f, 1, 2) : NULL; /* [B, T-1, D] */
    ml_release(f);
    int64_t cs[3] = {B, 1, s->dim};
    ml_tensor *cls = t ? ml_expand(ml_module_param(m, "cls_token"), 3, cs) : NULL;
    ml_tensor *seq = cls ? ml_cat(2, (ml_tensor *[]){cls, t}, 1) : NULL;
    ml_release(cls);
    ml_release(t);
    ml_tensor *out = seq ? ml_add(seq, ml_module_param(m, "pos_embed")) : NULL;
    ml_release(seq);
    return out;
}

static void pe_describe(const ml_module *m, char *buf, size_t n) {
    const pe_state *s = m->state;
    snprintf(buf, n, "PatchEmbed(%dx%dx%d, patch %d -> %" PRId64 " tokens of %" PRId64 ")", s->c, s->h, s->w, s->patch,
             s->tokens, s->dim);
}

static cJSON *pe_config(const ml_module *m) {
    const pe_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "PatchEmbed");
    cJSON_AddNumberToObject(c, "channels", s->c);
    cJSON_AddNumberToObject(c, "height", s->h);
    cJSON_AddNumberToObject(c, "width", s->w);
    cJSON_AddNumberToObject(c, "patch", s->patch);
    cJSON_AddNumberToObject(c, "dim", (double)s->dim);
    return c;
}

static const ml_module_type pe_type = {.name = "PatchEmbed", .forward = pe_forward, .destroy = free_state,
                                       .describe = pe_describe, .config = pe_config};

ml_module *ml_nn_patch_embed(int c, int h, int w, int patch, int64_t dim) {
    if (patch < 1 || h % patch || w % patch)
        return ml_fail("PatchEmbed: patch size %d must divide the image size %dx%d", patch, h, w);
    if (c < 1 || dim < 1) return ml_fail("PatchEmbed: channels and dim must be positive");
    pe_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    *s = (pe_state){c, h, w, patch, dim, 1 + (int64_t)(h / patch) * (w / patch)};
    ml_module *m = ml_module_new(&pe_type, s);
    if (!m) {
        free(s);
        return NULL;
    }
    int64_t ws[4] = {dim, c, patch, patch}, fan_in = (int64_t)c * patch * patch;
    int64_t cs[3] = {1, 1, dim}, ps[3] = {1, s->tokens, dim};
    /* class token and position embedding: N(0, 0.02^2), as ViT implementations do */
    ml_tensor *cls = ml_randn(3, cs), *pos = ml_randn(3, ps);
    if (cls) ml_mul_scalar_(cls, 0.02);
    if (pos) ml_mul_scalar_(pos, 0.02);
    if (!ml_module_add_param(m, "weight", ml_init_uniform_fan_in(4, ws, fan_in), NULL) ||
        !ml_module_add_param(m, "bias", ml_init_uniform_fan_in(1, &dim, fan_in), NULL) ||
        !ml_module_add_param(m, "cls_token", cls, NULL) || !ml_module_add_param(m, "pos_embed", pos, NULL)) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *pe_from_config(const cJSON *c) {
    int ch, h, w, patch, dim;
    if (ml_cfg_int(c, "channels", 1, &ch) || ml_cfg_int(c, "height", 28, &h) || ml_cfg_int(c, "width", 28, &w) ||
        ml_cfg_int(c, "patch", 4, &patch) || ml_cfg_int(c, "dim", 64, &dim))
        return NULL;
    return ml_nn_patch_embed(ch, h, w, patch, dim);
}

const ml_module_kind ml_transformer_kinds[] = {
    {"LayerNorm", ln_from_config, NULL},         {"Attention", attn_from_config, NULL},
    {"TransformerBlock", block_from_config, NULL}, {"PatchEmbed", pe_from_config, NULL},
    {NULL, NULL, NULL}};
