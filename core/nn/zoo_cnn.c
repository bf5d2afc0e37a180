/* zoo_cnn.c -- the convolutional models of the zoo: a small MNIST CNN, an MLP,
 * CIFAR ResNet-18, VGG-16 (BN) and Wide ResNets, each in the AdvMoE family
 * Dense / S-Dense / Sparse-CNN / MoE-CNN (docs/MODELS.md describes them
 * precisely). */
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/elementwise.h"
#include "../ops/pool.h"
#include "../ops/reduce.h"
#include "../ops/shape.h"
#include "../ops/softmax.h"
#include "cnn.h"
#include "layers.h"
#include "moe/dispatch.h"
#include "moe/moe.h"
#include "moe/moe_conv.h"
#include "zoo.h"
#include "zoo_internal.h"

/* ------------------------------------------------------------ conv specs */
/* A 3x3 convolution (padding 1) of the kind the spec says. */
static ml_module *make_conv(const conv_spec *sp, int64_t cin, int64_t cout, int stride) {
    if (sp->kind == CONV_DENSE) return ml_nn_conv2d(cin, cout, 3, stride, 1, 1, false);
    if (cin > 1000000000 || cout > 1000000000) return ml_fail("conv: %" PRId64 " -> %" PRId64 " channels", cin, cout);
    if (sp->kind == CONV_MASKED) {
        ml_masked_conv_opts o = {(int)cin, (int)cout, 3, stride, 1, sp->moe.ratio};
        return ml_nn_masked_conv2d(&o);
    }
    ml_moe_conv_opts o = sp->moe;
    o.in = (int)cin;
    o.out = (int)cout;
    o.kernel = 3;
    o.stride = stride;
    o.padding = 1;
    return ml_nn_moe_conv2d(&o);
}

/* ------------------------------------------------------------ global router */
/* A small CNN on the (normalised) image that picks an expert for every MoE
 * layer: conv3x3(C -> 16, stride 2) -> ReLU -> global average pool -> linear(16 -> L*E). */
static ml_module *global_router(int in_c, int layers, int experts) {
    ml_module *seq = ml_nn_sequential();
    if (!seq) return NULL;
    if (!ml_nn_sequential_add(seq, ml_nn_conv2d(in_c, 16, 3, 2, 1, 1, true)) ||
        !ml_nn_sequential_add(seq, ml_nn_activation(ML_RELU)) || !ml_nn_sequential_add(seq, ml_nn_global_avg_pool()) ||
        !ml_nn_sequential_add(seq, ml_nn_linear(16, (int64_t)layers * experts, true))) {
        ml_module_release(seq);
        return NULL;
    }
    /* all router parameters belong to the "router" group */
    for (int i = 0; i < seq->n_children; i++)
        for (int j = 0; j < seq->children[i].m->n_params; j++) seq->children[i].m->params[j].group = "router";
    return seq;
}

static int attach_global_router(ml_module *m, const ml_zoo_common *z) {
    ml_zoo_state *s = m->state;
    if (z->conv.kind != CONV_MOE || z->conv.moe.router != ML_MOE_ROUTER_GLOBAL) return 0;
    int layers = ml_moe_conv_count(m), experts = z->conv.moe.experts;
    if (!(s->route = ml_global_route_new(layers, experts)) || ml_moe_conv_attach_global(m, s->route) != layers) return -1;
    return ml_module_add_child(m, "router", global_router(z->in_c, layers, experts)) ? 0 : -1;
}

/* Model forward: normalize, then (global router), then the remaining children. */
static ml_tensor *forward_backbone(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    ml_zoo_state *s = m->state;
    ml_tensor *h = ml_module_forward_child(m, 0, x, ctx); /* normalize */
    if (!h) return NULL;
    if (s->route && ml_zoo_run_global_router(m, ml_zoo_child_index(m, "router"), h, ctx)) {
        ml_release(h);
        return NULL;
    }
    ml_tensor *y = ml_zoo_run_children(m, 1, h, ctx);
    ml_release(h);
    return y;
}

/* ------------------------------------------------------------ BasicBlock (ResNet) */
typedef struct {
    bool has_shortcut;
    int64_t cin, cout;
    int stride;
    conv_spec spec;
} block_state;

static ml_tensor *basic_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    block_state *s = m->state;
    bool watched = ctx && ctx->on_module;
    /* conv1 + bn1 + ReLU: one op in eval mode (ml_nn_conv_bn_forward), conv
     * and BN + ReLU in training */
    ml_tensor *a = ml_nn_conv_bn_forward(m, 0, 1, x, ctx, true);
    if (!a) return NULL;
    ml_module *scm = s->has_shortcut ? m->children[4].m : NULL;
    if (!watched) {
        /* the shortcut, then ReLU(bn2(conv2(a)) + shortcut) as one op (eval)
         * or the convolution and one op (training) */
        ml_tensor *sc = !scm ? ml_retain(x)
                        : scm->n_children == 2 ? ml_nn_conv_bn_forward(scm, 0, 1, x, ctx, false)
                                               : ml_module_forward_child(m, 4, x, ctx);
        ml_tensor *y = sc ? ml_nn_conv_bn_act_forward(m, 2, 3, a, ctx, sc, true) : NULL;
        ml_release(a);
        ml_release(sc);
        return y;
    }
    ml_tensor *b2 = ml_nn_conv_bn_forward(m, 2, 3, a, ctx, false);
    ml_release(a);
    if (!b2) return NULL;
    ml_tensor *sc = !scm ? ml_retain(x) : ml_module_forward_child(m, 4, x, ctx);
    ml_tensor *sum = sc ? ml_add(b2, sc) : NULL;
    ml_release(b2);
    ml_release(sc);
    ml_tensor *y = sum ? ml_relu(sum) : NULL;
    ml_release(sum);
    return y;
}

static void free_state(ml_module *m) { free(m->state); }

/* The convolutions of a block in its config: "conv" (dense, moe or masked)
 * and the options of MoEConv2d that apply (its option table). */
static const char *const spec_keys[] = {"ratio", "experts", "router", "mask", "importance_weight", "switch_weight"};
static const size_t spec_fields[] = {offsetof(ml_moe_conv_opts, ratio),  offsetof(ml_moe_conv_opts, experts),
                                     offsetof(ml_moe_conv_opts, router), offsetof(ml_moe_conv_opts, mask),
                                     offsetof(ml_moe_conv_opts, w_importance), offsetof(ml_moe_conv_opts, w_switch)};

static int spec_to_json(cJSON *c, const conv_spec *sp) {
    cJSON_AddStringToObject(c, "conv", sp->kind == CONV_MOE ? "moe" : sp->kind == CONV_MASKED ? "masked" : "dense");
    if (sp->kind == CONV_MASKED) cJSON_AddNumberToObject(c, "ratio", sp->moe.ratio);
    if (sp->kind != CONV_MOE) return 0;
    cJSON *all = ml_options_config(&ml_moe_conv_options, &sp->moe);
    if (!all) return -1;
    for (size_t i = 0; i < sizeof spec_keys / sizeof spec_keys[0]; i++)
        cJSON_AddItemToObject(c, spec_keys[i], cJSON_DetachItemFromObjectCaseSensitive(all, spec_keys[i]));
    cJSON_Delete(all);
    return 0;
}

static int spec_from_json(const cJSON *c, conv_spec *sp) {
    memset(sp, 0, sizeof *sp);
    ml_moe_conv_defaults(&sp->moe);
    const char *kind = ml_cfg_string(c, "conv", "dense");
    if (!strcmp(kind, "moe")) sp->kind = CONV_MOE;
    else if (!strcmp(kind, "masked")) sp->kind = CONV_MASKED;
    else if (strcmp(kind, "dense")) return ml_failc("BasicBlock: conv must be \"dense\", \"moe\" or \"masked\", got \"%s\"", kind);
    for (size_t i = 0; i < sizeof spec_keys / sizeof spec_keys[0]; i++)
        if (ml_option_read_key(&ml_moe_conv_options, spec_keys[i], (cJSON *)c, (char *)&sp->moe + spec_fields[i], false,
                               "BasicBlock"))
            return -1;
    return 0;
}

static void basic_describe(const ml_module *m, char *buf, size_t n) {
    const block_state *s = m->state;
    snprintf(buf, n, "BasicBlock(%" PRId64 " -> %" PRId64 ", stride %d%s)", s->cin, s->cout, s->stride,
             s->spec.kind == CONV_MOE ? ", MoE convolutions" : s->spec.kind == CONV_MASKED ? ", masked convolutions" : "");
}

static cJSON *basic_config(const ml_module *m) {
    const block_state *s = m->state;
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "type", "BasicBlock");
    cJSON_AddNumberToObject(c, "in", (double)s->cin);
    cJSON_AddNumberToObject(c, "out", (double)s->cout);
    cJSON_AddNumberToObject(c, "stride", s->stride);
    if (spec_to_json(c, &s->spec)) {
        cJSON_Delete(c);
        return NULL;
    }
    return c;
}

static const ml_module_type basic_type = {.name = "BasicBlock", .forward = basic_forward, .destroy = free_state,
                                          .describe = basic_describe, .config = basic_config};

static ml_module *basic_block(const conv_spec *sp, int64_t cin, int64_t cout, int stride) {
    if (cin < 1 || cout < 1 || stride < 1)
        return ml_fail("BasicBlock: invalid sizes (in %" PRId64 ", out %" PRId64 ", stride %d)", cin, cout, stride);
    block_state *s = malloc(sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    *s = (block_state){stride != 1 || cin != cout, cin, cout, stride, *sp};
    ml_module *m = ml_module_new(&basic_type, s);
    if (!m) {
        free(s);
        return NULL;
    }
    bool ok = ml_module_add_child(m, "conv1", make_conv(sp, cin, cout, stride)) &&
              ml_module_add_child(m, "bn1", ml_nn_batchnorm2d(cout, 1e-5, 0.1)) &&
              ml_module_add_child(m, "conv2", make_conv(sp, cout, cout, 1)) &&
              ml_module_add_child(m, "bn2", ml_nn_batchnorm2d(cout, 1e-5, 0.1));
    if (ok && s->has_shortcut) {
        ml_module *sc = ml_nn_sequential();
        ok = ml_module_add_child(m, "shortcut", sc) && /* attached first: no leak when a layer fails */
             ml_nn_sequential_add(sc, ml_nn_conv2d(cin, cout, 1, stride, 0, 1, false)) &&
             ml_nn_sequential_add(sc, ml_nn_batchnorm2d(cout, 1e-5, 0.1));
    }
    if (!ok) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

ml_module *ml_nn_basic_block(int64_t cin, int64_t cout, int stride) {
    conv_spec dense = {0};
    return basic_block(&dense, cin, cout, stride);
}

ml_module *ml_zoo_basic_block_from_config(const cJSON *c) {
    int in, out, stride;
    conv_spec sp;
    if (ml_cfg_int(c, "in", 0, &in) || ml_cfg_int(c, "out", 0, &out) || ml_cfg_int(c, "stride", 1, &stride) ||
        spec_from_json(c, &sp))
        return NULL;
    return basic_block(&sp, in, out, stride);
}

/* ------------------------------------------------------------ ResNet-18 (CIFAR stem) */
static ml_tensor *resnet_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    /* normalize, [router], conv1, bn1, (relu), layer1..4, pool, fc */
    ml_zoo_state *s = m->state;
    ml_tensor *h = ml_module_forward_child(m, 0, x, ctx);
    if (!h) return NULL;
    if (s->route && ml_zoo_run_global_router(m, ml_zoo_child_index(m, "router"), h, ctx)) {
        ml_release(h);
        return NULL;
    }
    int i = 1;
    for (; i < m->n_children && h; i++) {
        const char *name = m->children[i].name;
        if (!strcmp(name, "router")) continue;
        ml_tensor *next;
        if (!strcmp(name, "fc")) {
            ml_tensor *p = ml_global_avg_pool2d(h);
            next = p ? ml_module_forward_child(m, i, p, ctx) : NULL;
            ml_release(p);
        } else if (!strcmp(name, "conv1") && i + 1 < m->n_children && !strcmp(m->children[i + 1].name, "bn1")) {
            next = ml_nn_conv_bn_forward(m, i, i + 1, h, ctx, true); /* the stem: conv1 + bn1 + ReLU */
            i++;
        } else {
            next = ml_module_forward_child(m, i, h, ctx);
            if (next && !strcmp(name, "bn1")) {
                ml_tensor *r = ml_relu(next);
                ml_release(next);
                next = r;
            }
        }
        ml_release(h);
        h = next;
    }
    return h;
}

static ml_module *build_resnet18(cJSON *cfg) {
    ml_zoo_common z;
    if (ml_zoo_read_common(cfg, &z, 3, 32, 32)) {
        cJSON_Delete(cfg);
        return NULL;
    }
    int base;
    if (ml_zoo_int(cfg, "base_width", 16, &base)) {
        cJSON_Delete(cfg);
        return NULL;
    }
    ml_module *m = ml_zoo_model_new(cfg, resnet_forward);
    if (!m) return NULL;
    int64_t w[4] = {ml_zoo_scaled(base, z.width), ml_zoo_scaled(2 * base, z.width), ml_zoo_scaled(4 * base, z.width), ml_zoo_scaled(8 * base, z.width)};
    bool ok = ml_zoo_add_normalize(m, &z) == 0 && ml_module_add_child(m, "conv1", ml_nn_conv2d(z.in_c, w[0], 3, 1, 1, 1, false)) &&
              ml_module_add_child(m, "bn1", ml_nn_batchnorm2d(w[0], 1e-5, 0.1));
    int64_t cin = w[0];
    for (int l = 0; l < 4 && ok; l++) {
        ml_module *layer = ml_nn_sequential();
        char name[16];
        snprintf(name, sizeof name, "layer%d", l + 1);
        ok = layer && ml_module_add_child(m, name, layer) &&
             ml_nn_sequential_add(layer, basic_block(&z.conv, cin, w[l], l == 0 ? 1 : 2)) &&
             ml_nn_sequential_add(layer, basic_block(&z.conv, w[l], w[l], 1));
        cin = w[l];
    }
    ok = ok && ml_module_add_child(m, "fc", ml_nn_linear(cin, z.classes, true)) && attach_global_router(m, &z) == 0;
    if (!ok) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

/* ------------------------------------------------------------ VGG-16 (BN) */
static ml_module *build_vgg16(cJSON *cfg) {
    ml_zoo_common z;
    if (ml_zoo_read_common(cfg, &z, 3, 32, 32)) {
        cJSON_Delete(cfg);
        return NULL;
    }
    static const int plan[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0};
    ml_module *m = ml_zoo_model_new(cfg, forward_backbone);
    if (!m) return NULL;
    ml_module *feat = NULL; /* created when it can be attached at once (no leak on failure) */
    bool ok = ml_zoo_add_normalize(m, &z) == 0 && (feat = ml_nn_sequential()) && ml_module_add_child(m, "features", feat);
    int64_t cin = z.in_c, h = z.in_h, wd = z.in_w;
    bool first = true;
    for (size_t i = 0; i < sizeof plan / sizeof plan[0] && ok; i++) {
        if (plan[i] == 0) {
            if (h >= 2 && wd >= 2) {
                ok = ml_nn_sequential_add(feat, ml_nn_maxpool2d(2, 2, 0)) != NULL;
                h /= 2;
                wd /= 2;
            }
            continue;
        }
        int64_t cout = ml_zoo_scaled(plan[i], z.width);
        conv_spec dense = {0};
        ok = ml_nn_sequential_add(feat, make_conv(first ? &dense : &z.conv, cin, cout, 1)) &&
             ml_nn_sequential_add(feat, ml_nn_batchnorm2d(cout, 1e-5, 0.1)) &&
             ml_nn_sequential_add(feat, ml_nn_activation(ML_RELU));
        first = false;
        cin = cout;
    }
    ml_module *head = NULL;
    ok = ok && (head = ml_nn_sequential()) && ml_module_add_child(m, "classifier", head) &&
         ml_nn_sequential_add(head, ml_nn_global_avg_pool()) &&
         ml_nn_sequential_add(head, ml_nn_linear(cin, z.classes, true)) && attach_global_router(m, &z) == 0;
    if (!ok) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

/* ------------------------------------------------------------ Wide ResNet (pre-activation) */
typedef struct {
    bool has_shortcut;
    double dropout;
} wide_state;

static ml_tensor *wide_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    wide_state *s = m->state;
    /* children: bn1, conv1, bn2, conv2, [shortcut] */
    ml_tensor *b1 = ml_module_forward_child(m, 0, x, ctx);
    ml_tensor *a1 = b1 ? ml_relu(b1) : NULL;
    ml_release(b1);
    ml_tensor *h = a1 ? ml_module_forward_child(m, 1, a1, ctx) : NULL;
    ml_tensor *b2 = h ? ml_module_forward_child(m, 2, h, ctx) : NULL;
    ml_release(h);
    ml_tensor *a2 = b2 ? ml_relu(b2) : NULL;
    ml_release(b2);
    ml_tensor *h2 = a2 ? ml_module_forward_child(m, 3, a2, ctx) : NULL;
    ml_release(a2);
    ml_tensor *sc = !h2 ? NULL : s->has_shortcut ? ml_module_forward_child(m, 4, a1, ctx) : ml_retain(x);
    ml_release(a1);
    ml_tensor *y = sc ? ml_add(h2, sc) : NULL;
    ml_release(h2);
    ml_release(sc);
    return y;
}

static const ml_module_type wide_type = {.name = "WideBlock", .forward = wide_forward, .destroy = free_state};

static ml_module *wide_block(const conv_spec *sp, int64_t cin, int64_t cout, int stride) {
    wide_state *s = calloc(1, sizeof *s);
    if (!s) return ml_fail_oom(__func__);
    s->has_shortcut = stride != 1 || cin != cout;
    ml_module *m = ml_module_new(&wide_type, s);
    if (!m) {
        free(s);
        return NULL;
    }
    bool ok = ml_module_add_child(m, "bn1", ml_nn_batchnorm2d(cin, 1e-5, 0.1)) &&
              ml_module_add_child(m, "conv1", make_conv(sp, cin, cout, stride)) &&
              ml_module_add_child(m, "bn2", ml_nn_batchnorm2d(cout, 1e-5, 0.1)) &&
              ml_module_add_child(m, "conv2", make_conv(sp, cout, cout, 1));
    if (ok && s->has_shortcut) ok = ml_module_add_child(m, "shortcut", ml_nn_conv2d(cin, cout, 1, stride, 0, 1, false)) != NULL;
    if (!ok) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_tensor *wrn_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    /* normalize, [router], conv1, block1..3, bn, (relu, pool), fc */
    ml_zoo_state *s = m->state;
    ml_tensor *h = ml_module_forward_child(m, 0, x, ctx);
    if (!h) return NULL;
    if (s->route && ml_zoo_run_global_router(m, ml_zoo_child_index(m, "router"), h, ctx)) {
        ml_release(h);
        return NULL;
    }
    for (int i = 1; i < m->n_children && h; i++) {
        const char *name = m->children[i].name;
        if (!strcmp(name, "router")) continue;
        ml_tensor *next;
        if (!strcmp(name, "fc")) {
            ml_tensor *r = ml_relu(h), *p = r ? ml_global_avg_pool2d(r) : NULL;
            next = p ? ml_module_forward_child(m, i, p, ctx) : NULL;
            ml_release(r);
            ml_release(p);
        } else {
            next = ml_module_forward_child(m, i, h, ctx);
        }
        ml_release(h);
        h = next;
    }
    return h;
}

static ml_module *build_wrn(cJSON *cfg) {
    ml_zoo_common z;
    int depth, widen;
    if (ml_zoo_read_common(cfg, &z, 3, 32, 32) || ml_zoo_int(cfg, "depth", 16, &depth) || ml_zoo_int(cfg, "widen", 4, &widen)) {
        cJSON_Delete(cfg);
        return NULL;
    }
    if (depth < 10 || (depth - 4) % 6) {
        cJSON_Delete(cfg);
        return ml_fail("wrn: depth must be 6n + 4 (10, 16, 22, 28, ...), got %d", depth);
    }
    if (widen < 1) {
        cJSON_Delete(cfg);
        return ml_fail("wrn: widen factor must be >= 1, got %d", widen);
    }
    int n = (depth - 4) / 6;
    ml_module *m = ml_zoo_model_new(cfg, wrn_forward);
    if (!m) return NULL;
    int64_t w0 = ml_zoo_scaled(16, z.width);
    bool ok = ml_zoo_add_normalize(m, &z) == 0 && ml_module_add_child(m, "conv1", ml_nn_conv2d(z.in_c, w0, 3, 1, 1, 1, false));
    int64_t cin = w0;
    for (int g = 0; g < 3 && ok; g++) {
        int64_t cout = ml_zoo_scaled(16 << g, z.width * widen);
        ml_module *grp = ml_nn_sequential();
        char name[16];
        snprintf(name, sizeof name, "block%d", g + 1);
        ok = grp && ml_module_add_child(m, name, grp);
        for (int b = 0; b < n && ok; b++) {
            ok = ml_nn_sequential_add(grp, wide_block(&z.conv, cin, cout, b == 0 && g > 0 ? 2 : 1)) != NULL;
            cin = cout;
        }
    }
    ok = ok && ml_module_add_child(m, "bn", ml_nn_batchnorm2d(cin, 1e-5, 0.1)) &&
         ml_module_add_child(m, "fc", ml_nn_linear(cin, z.classes, true)) && attach_global_router(m, &z) == 0;
    if (!ok) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

/* ------------------------------------------------------------ small CNN and MLP */
static ml_module *build_cnn(cJSON *cfg) {
    ml_zoo_common z;
    if (ml_zoo_read_common(cfg, &z, 1, 28, 28)) {
        cJSON_Delete(cfg);
        return NULL;
    }
    ml_module *m = ml_zoo_model_new(cfg, forward_backbone);
    if (!m) return NULL;
    int64_t c1 = ml_zoo_scaled(32, z.width), c2 = ml_zoo_scaled(64, z.width), hidden = ml_zoo_scaled(128, z.width);
    int64_t h = z.in_h / 4, w = z.in_w / 4;
    if (h < 1 || w < 1) {
        ml_module_release(m);
        return ml_fail("cnn: input %dx%d is too small (needs at least 4x4)", z.in_h, z.in_w);
    }
    conv_spec dense = {0};
    ml_module *f = NULL, *head = NULL; /* each created when it can be attached at once (no leak on failure) */
    bool ok = ml_zoo_add_normalize(m, &z) == 0 && (f = ml_nn_sequential()) && ml_module_add_child(m, "features", f) &&
              ml_nn_sequential_add(f, make_conv(&dense, z.in_c, c1, 1)) && ml_nn_sequential_add(f, ml_nn_activation(ML_RELU)) &&
              ml_nn_sequential_add(f, ml_nn_maxpool2d(2, 2, 0)) && ml_nn_sequential_add(f, make_conv(&z.conv, c1, c2, 1)) &&
              ml_nn_sequential_add(f, ml_nn_activation(ML_RELU)) && ml_nn_sequential_add(f, ml_nn_maxpool2d(2, 2, 0)) &&
              (head = ml_nn_sequential()) && ml_module_add_child(m, "classifier", head) &&
              ml_nn_sequential_add(head, ml_nn_flatten(1, -1)) &&
              ml_nn_sequential_add(head, ml_nn_linear(c2 * h * w, hidden, true)) &&
              ml_nn_sequential_add(head, ml_nn_activation(ML_RELU)) &&
              ml_nn_sequential_add(head, ml_nn_linear(hidden, z.classes, true)) && attach_global_router(m, &z) == 0;
    if (!ok) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

static ml_module *build_mlp(cJSON *cfg) {
    ml_zoo_common z;
    if (ml_zoo_read_common(cfg, &z, 1, 28, 28)) {
        cJSON_Delete(cfg);
        return NULL;
    }
    if (z.conv.kind != CONV_DENSE) {
        cJSON_Delete(cfg);
        return ml_fail("mlp: only the dense family applies (use a MoE layer with linear experts instead)");
    }
    cJSON *hid = cJSON_GetObjectItemCaseSensitive(cfg, "hidden");
    int64_t sizes[16], nh = 0;
    if (cJSON_IsArray(hid)) {
        cJSON *it;
        cJSON_ArrayForEach(it, hid) {
            /* checked before the conversion: a double past int64 is undefined behaviour (found by tests/fuzz) */
            if (!cJSON_IsNumber(it) || !(it->valuedouble >= 1 && it->valuedouble <= 1e9) ||
                it->valuedouble != floor(it->valuedouble)) {
                cJSON_Delete(cfg);
                return ml_fail("mlp: hidden sizes must be integers in 1..1e9");
            }
            if (nh < 16) sizes[nh++] = (int64_t)it->valuedouble;
        }
    } else {
        sizes[nh++] = 256;
        sizes[nh++] = 128;
        cJSON *arr = cJSON_CreateArray();
        for (int i = 0; i < nh; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)sizes[i]));
        cJSON_AddItemToObject(cfg, "hidden", arr);
    }
    ml_module *m = ml_zoo_model_new(cfg, forward_backbone);
    if (!m) return NULL;
    ml_module *body = NULL; /* created when it can be attached at once (no leak on failure) */
    bool ok = ml_zoo_add_normalize(m, &z) == 0 && (body = ml_nn_sequential()) && ml_module_add_child(m, "layers", body) &&
              ml_nn_sequential_add(body, ml_nn_flatten(1, -1));
    int64_t in = (int64_t)z.in_c * z.in_h * z.in_w;
    for (int i = 0; i < nh && ok; i++) {
        int64_t out = ml_zoo_scaled((int)sizes[i], z.width);
        ok = ml_nn_sequential_add(body, ml_nn_linear(in, out, true)) && ml_nn_sequential_add(body, ml_nn_activation(ML_RELU));
        in = out;
    }
    ok = ok && ml_nn_sequential_add(body, ml_nn_linear(in, z.classes, true));
    if (!ok) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}

/* ------------------------------------------------------------ entry */
ml_module *ml_zoo_build_cnn(const char *name, cJSON *cfg) {
    if (!strcmp(name, "resnet18")) return build_resnet18(cfg);
    if (!strcmp(name, "vgg16")) return build_vgg16(cfg);
    if (!strcmp(name, "wrn")) return build_wrn(cfg);
    if (!strcmp(name, "cnn")) return build_cnn(cfg);
    if (!strcmp(name, "mlp")) return build_mlp(cfg);
    cJSON_Delete(cfg);
    return NULL;
}
