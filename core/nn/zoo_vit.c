/* zoo_vit.c -- vision transformers: vit (dense) and vmoe (V-MoE: the MLP of
 * every moe_every-th block, the last of each group, is a token MoE).
 *
 *   normalize -> patch embedding (conv p x p stride p, bias) + class token +
 *   position embedding -> depth x pre-LN block -> LayerNorm on the class
 *   token -> linear head.
 * Defaults (W3/W4 of WORKLOADS.md): patch 4, dim 64, depth 4, heads 4, MLP 256,
 * LayerNorm eps 1e-6; vmoe: experts 8, k 2, capacity factor 1.25, noise 1,
 * importance and load weights 0.005, MoE in blocks 2 and 4. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/shape.h"
#include "layers.h"
#include "moe/moe.h"
#include "transformer.h"
#include "zoo.h"
#include "zoo_internal.h"

#include <stddef.h>

/* The class token after the final norm: x [B, T, D] -> [B, D]. */
static ml_tensor *vit_run(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    ml_tensor *h = ml_module_forward_child(m, 0, x, ctx); /* normalize */
    ml_tensor *t = h ? ml_module_forward_child(m, 1, h, ctx) : NULL; /* patch_embed */
    ml_release(h);
    ml_tensor *b = t ? ml_module_forward_child(m, 2, t, ctx) : NULL; /* blocks */
    ml_release(t);
    ml_tensor *cls = b ? ml_select(b, 1, 0) : NULL;
    ml_release(b);
    ml_tensor *n = cls ? ml_module_forward_child(m, 3, cls, ctx) : NULL; /* norm */
    ml_release(cls);
    ml_tensor *y = n ? ml_module_forward_child(m, 4, n, ctx) : NULL; /* head */
    ml_release(n);
    return y;
}

/* The TokenMoE options a vmoe takes (their defaults and checks are TokenMoE's). */
static const char *const vmoe_keys[] = {"experts",     "k",           "capacity_factor", "noise_std",     "importance_weight",
                                        "load_weight", "renormalize", "batch_priority",  "round_capacity"};
#define N_VMOE_KEYS (int)(sizeof vmoe_keys / sizeof vmoe_keys[0])

ml_module *ml_zoo_build_vit(const char *name, cJSON *cfg) {
    ml_zoo_common z;
    bool moe = !strcmp(name, "vmoe");
    int patch, dim, depth, heads, hidden, every = 0;
    double eps;
    ml_moe_opts mo;
    ml_moe_defaults(&mo, 0);
    int rc = ml_zoo_read_common(cfg, &z, 1, 28, 28) || ml_zoo_int(cfg, "patch", 4, &patch) ||
             ml_zoo_int(cfg, "dim", 64, &dim) || ml_zoo_int(cfg, "depth", 4, &depth) || ml_zoo_int(cfg, "heads", 4, &heads) ||
             ml_zoo_int(cfg, "mlp", 4 * dim, &hidden) || ml_zoo_double(cfg, "eps", 1e-6, &eps) ||
             (moe && ml_zoo_int(cfg, "moe_every", 2, &every));
    for (int i = 0; i < N_VMOE_KEYS && moe && !rc; i++) {
        const ml_option *o = ml_options_find(&ml_token_moe_options, vmoe_keys[i]);
        rc = ml_option_read_key(&ml_token_moe_options, vmoe_keys[i], cfg, (char *)&mo + o->offset, true, name);
    }
    if (rc) {
        cJSON_Delete(cfg);
        return NULL;
    }
    if (z.conv.kind != 0) {
        cJSON_Delete(cfg);
        return ml_fail("%s: the family option applies to CNNs only", name);
    }
    if (depth < 1 || dim < 1 || heads < 1 || dim % heads) {
        cJSON_Delete(cfg);
        return ml_fail("%s: invalid depth %d / dim %d / heads %d (heads must divide dim)", name, depth, dim, heads);
    }
    if (moe && every < 1) {
        cJSON_Delete(cfg);
        return ml_fail("vmoe: moe_every must be >= 1, got %d", every);
    }
    ml_module *m = ml_zoo_model_new(cfg, vit_run);
    if (!m) return NULL;
    ml_module *blocks = NULL; /* created once it can be attached at once (no leak on failure) */
    bool ok = ml_zoo_add_normalize(m, &z) == 0 &&
              ml_module_add_child(m, "patch_embed", ml_nn_patch_embed(z.in_c, z.in_h, z.in_w, patch, dim)) &&
              (blocks = ml_nn_sequential()) && ml_module_add_child(m, "blocks", blocks);
    for (int i = 0; i < depth && ok; i++) {
        ml_module *mlp;
        if (moe && (i + 1) % every == 0) {
            ml_moe_opts o = mo;
            o.dim = dim;
            cJSON *ex = cJSON_CreateObject();
            cJSON_AddStringToObject(ex, "type", "MLP");
            cJSON_AddNumberToObject(ex, "in", dim);
            cJSON_AddNumberToObject(ex, "hidden", hidden);
            cJSON_AddNumberToObject(ex, "out", dim);
            cJSON_AddStringToObject(ex, "activation", "gelu");
            o.expert = ex;
            mlp = ml_nn_token_moe(&o);
            cJSON_Delete(ex);
        } else {
            mlp = ml_nn_mlp(dim, hidden, dim, ML_GELU);
        }
        ok = ml_nn_sequential_add(blocks, ml_nn_transformer_block(dim, heads, eps, mlp)) != NULL;
    }
    ok = ok && ml_module_add_child(m, "norm", ml_nn_layernorm(dim, eps)) &&
         ml_module_add_child(m, "head", ml_nn_linear(dim, z.classes, true));
    if (!ok) {
        ml_module_release(m);
        return NULL;
    }
    return m;
}
