/* zoo.c -- model names to builders; the "Model" type in the registry. */
#include "zoo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <string.h>

#include "layers.h"
#include "zoo_internal.h"


/* ------------------------------------------------------------ the Model module */
static void model_destroy(ml_module *m) {
    ml_zoo_state *s = m->state;
    ml_global_route_release(s->route);
    cJSON_Delete(s->config);
    free(s);
}

/* "resnet18(classes = 10, input = 3x32x32, width = 1, ...)": the model's name and
 * its scalar knobs (nested objects such as the normalisation are left out). */
static void model_describe(const ml_module *m, char *buf, size_t n) {
    const ml_zoo_state *s = m->state;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(s->config, "model");
    size_t len = (size_t)snprintf(buf, n, "%s(", cJSON_IsString(name) ? name->valuestring : "Model");
    bool first = true;
    for (const cJSON *it = s->config ? s->config->child : NULL; it && len < n; it = it->next) {
        if (!it->string || !strcmp(it->string, "type") || !strcmp(it->string, "model")) continue;
        char val[64] = "";
        if (cJSON_IsNumber(it)) snprintf(val, sizeof val, "%.6g", it->valuedouble);
        else if (cJSON_IsString(it)) snprintf(val, sizeof val, "%s", it->valuestring);
        else if (cJSON_IsBool(it)) snprintf(val, sizeof val, "%s", cJSON_IsTrue(it) ? "true" : "false");
        else if (cJSON_IsArray(it)) {
            size_t vl = 0;
            for (const cJSON *e = it->child; e && vl < sizeof val; e = e->next)
                if (cJSON_IsNumber(e)) vl += (size_t)snprintf(val + vl, sizeof val - vl, "%s%.6g", vl ? "x" : "", e->valuedouble);
        }
        if (!val[0]) continue;
        len += (size_t)snprintf(buf + len, n - len, "%s%s = %s", first ? "" : ", ", it->string, val);
        first = false;
    }
    if (len < n) snprintf(buf + len, n - len, ")");
}

static cJSON *model_config(const ml_module *m) {
    const ml_zoo_state *s = m->state;
    return cJSON_Duplicate(s->config, true);
}

/* Runs the global router (child "router") and stores its decisions for the layers. */
int ml_zoo_run_global_router(ml_module *m, int child, ml_tensor *x, ml_ctx *ctx) {
    ml_zoo_state *s = m->state;
    ml_tensor *logits = ml_module_forward_child(m, child, x, ctx); /* [N, L*E] */
    int rc = logits ? ml_global_route_set(s->route, logits) : -1;
    ml_release(logits);
    return rc;
}

static ml_tensor *model_forward(ml_module *m, ml_tensor *x, ml_ctx *ctx) {
    ml_zoo_state *s = m->state;
    ml_ctx local = {0};
    if (!ctx) ctx = &local;
    ml_tensor *y = s->fwd(m, x, ctx);
    if (s->route) ml_global_route_clear(s->route);
    if (ctx == &local) ml_ctx_clear(&local);
    return y;
}

static const ml_module_type model_type = {.name = "Model", .forward = model_forward, .destroy = model_destroy,
                                          .describe = model_describe, .config = model_config};

ml_module *ml_zoo_model_new(cJSON *config, ml_zoo_fwd fwd) {
    ml_zoo_state *s = calloc(1, sizeof *s);
    if (!s) {
        cJSON_Delete(config);
        return ml_fail_oom(__func__);
    }
    s->config = config;
    s->fwd = fwd;
    ml_module *m = ml_module_new(&model_type, s);
    if (!m) {
        cJSON_Delete(config);
        free(s);
    }
    return m;
}

/* Index of a child by name (they are few). */
int ml_zoo_child_index(const ml_module *m, const char *name) {
    for (int i = 0; i < m->n_children; i++)
        if (!strcmp(m->children[i].name, name)) return i;
    return -1;
}

/* Runs children [from, n) in order: the common case of a model forward. */
ml_tensor *ml_zoo_run_children(ml_module *m, int from, ml_tensor *x, ml_ctx *ctx) {
    ml_tensor *h = ml_retain(x);
    for (int i = from; i < m->n_children && h; i++) {
        if (!strcmp(m->children[i].name, "router")) continue;
        ml_tensor *next = ml_module_forward_child(m, i, h, ctx);
        ml_release(h);
        h = next;
    }
    return h;
}

/* ------------------------------------------------------------ common config handling */
static bool absent(const cJSON *cfg, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, key);
    return !v || cJSON_IsNull(v);
}

int ml_zoo_int(cJSON *cfg, const char *key, int def, int *out) {
    bool add = absent(cfg, key);
    if (ml_cfg_int(cfg, key, def, out)) return -1;
    if (add) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, key);
        cJSON_AddNumberToObject(cfg, key, *out);
    }
    return 0;
}

int ml_zoo_double(cJSON *cfg, const char *key, double def, double *out) {
    bool add = absent(cfg, key);
    if (ml_cfg_double(cfg, key, def, out)) return -1;
    if (add) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, key);
        cJSON_AddNumberToObject(cfg, key, *out);
    }
    return 0;
}

int ml_zoo_bool(cJSON *cfg, const char *key, bool def, bool *out) {
    bool add = absent(cfg, key);
    if (ml_cfg_bool(cfg, key, def, out)) return -1;
    if (add) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, key);
        cJSON_AddBoolToObject(cfg, key, *out);
    }
    return 0;
}

const char *ml_zoo_string(cJSON *cfg, const char *key, const char *def) {
    if (absent(cfg, key) && def) {
        cJSON_DeleteItemFromObjectCaseSensitive(cfg, key);
        cJSON_AddStringToObject(cfg, key, def);
    }
    return ml_cfg_string(cfg, key, def);
}

/* Reads classes, input, width, the conv family and normalisation; writes the
 * resolved values back into cfg so the stored config is complete. */
int ml_zoo_read_common(cJSON *cfg, ml_zoo_common *z, int def_c, int def_h, int def_w) {
    memset(z, 0, sizeof *z);
    if (ml_zoo_int(cfg, "classes", 10, &z->classes)) return -1;
    if (z->classes < 2) return ml_failc("model: classes must be at least 2, got %d", z->classes);
    cJSON *in = cJSON_GetObjectItemCaseSensitive(cfg, "input");
    z->in_c = def_c, z->in_h = def_h, z->in_w = def_w;
    if (in) {
        if (!cJSON_IsArray(in) || cJSON_GetArraySize(in) != 3)
            return ml_failc("model: input must be {C, H, W}, e.g. {3, 32, 32}");
        z->in_c = cJSON_GetArrayItem(in, 0)->valueint;
        z->in_h = cJSON_GetArrayItem(in, 1)->valueint;
        z->in_w = cJSON_GetArrayItem(in, 2)->valueint;
        if (z->in_c < 1 || z->in_c > 16 || z->in_h < 1 || z->in_w < 1)
            return ml_failc("model: input {%d, %d, %d} is not a valid image shape", z->in_c, z->in_h, z->in_w);
    } else {
        cJSON *arr = cJSON_CreateArray();
        cJSON_AddItemToArray(arr, cJSON_CreateNumber(z->in_c));
        cJSON_AddItemToArray(arr, cJSON_CreateNumber(z->in_h));
        cJSON_AddItemToArray(arr, cJSON_CreateNumber(z->in_w));
        cJSON_AddItemToObject(cfg, "input", arr);
    }
    /* width and family belong to the CNNs: recorded in their configs only */
    const char *model = ml_cfg_string(cfg, "model", "");
    bool conv_model = strcmp(model, "vit") && strcmp(model, "vmoe");
    if ((conv_model ? ml_zoo_double(cfg, "width", 1.0, &z->width) : ml_cfg_double(cfg, "width", 1.0, &z->width)))
        return -1;
    if (!(z->width > 0 && z->width <= 64)) return ml_failc("model: width = %g must be in (0, 64]", z->width);
    const char *fam = conv_model ? ml_zoo_string(cfg, "family", "dense") : ml_cfg_string(cfg, "family", "dense");
    /* the convolutions' knobs: MoEConv2d's options, defaults and checks */
    ml_moe_conv_opts *mo = &z->conv.moe;
    ml_moe_conv_defaults(mo);
    bool family = strcmp(fam, "dense") != 0;
    if (ml_option_read_key(&ml_moe_conv_options, "ratio", cfg, &mo->ratio, family && conv_model, fam)) return -1;
    if (!strcmp(fam, "dense")) {
        z->conv.kind = CONV_DENSE;
    } else if (!strcmp(fam, "s_dense")) {
        z->conv.kind = CONV_DENSE;
        if (!(mo->ratio > 0 && mo->ratio <= 1)) return ml_failc("s_dense: ratio = %g must be in (0, 1]", mo->ratio);
        z->width *= mo->ratio; /* every width scaled by r */
    } else if (!strcmp(fam, "sparse_cnn")) {
        z->conv.kind = CONV_MASKED;
    } else if (!strcmp(fam, "moe_cnn")) {
        z->conv.kind = CONV_MOE;
        static const char *const keys[] = {"experts", "router", "mask", "importance_weight", "switch_weight"};
        void *fields[] = {&mo->experts, &mo->router, &mo->mask, &mo->w_importance, &mo->w_switch};
        for (int i = 0; i < 5; i++)
            if (ml_option_read_key(&ml_moe_conv_options, keys[i], cfg, fields[i], true, "moe_cnn")) return -1;
        if (mo->router == ML_MOE_ROUTER_GLOBAL && (mo->w_importance > 0 || mo->w_switch > 0))
            return ml_failc("moe_cnn: importance_weight and switch_weight apply to per-layer routers (router = \"layer\")");
    } else {
        return ml_failc("model: unknown family \"%s\" (use dense, s_dense, sparse_cnn or moe_cnn)", fam);
    }
    /* normalisation inside the model: dataset statistics by channel count */
    z->normalize = true;
    cJSON *norm = cJSON_GetObjectItemCaseSensitive(cfg, "normalize");
    if (cJSON_IsFalse(norm)) {
        z->normalize = false;
    } else if (cJSON_IsObject(norm)) {
        cJSON *mm = cJSON_GetObjectItemCaseSensitive(norm, "mean"), *ss = cJSON_GetObjectItemCaseSensitive(norm, "std");
        if (cJSON_GetArraySize(mm) != z->in_c || cJSON_GetArraySize(ss) != z->in_c)
            return ml_failc("model: normalize needs %d means and %d stds", z->in_c, z->in_c);
        for (int i = 0; i < z->in_c; i++) {
            z->mean[i] = (float)cJSON_GetArrayItem(mm, i)->valuedouble;
            z->std[i] = (float)cJSON_GetArrayItem(ss, i)->valuedouble;
        }
    } else {
        static const float cm[3] = {0.4914f, 0.4822f, 0.4465f}, cs[3] = {0.2470f, 0.2435f, 0.2616f};
        for (int i = 0; i < z->in_c; i++) {
            z->mean[i] = z->in_c == 3 ? cm[i] : z->in_c == 1 ? 0.1307f : 0.5f;
            z->std[i] = z->in_c == 3 ? cs[i] : z->in_c == 1 ? 0.3081f : 0.5f;
        }
        cJSON *o = cJSON_CreateObject(), *mm = cJSON_AddArrayToObject(o, "mean"), *ss = cJSON_AddArrayToObject(o, "std");
        for (int i = 0; i < z->in_c; i++) {
            cJSON_AddItemToArray(mm, cJSON_CreateNumber(z->mean[i]));
            cJSON_AddItemToArray(ss, cJSON_CreateNumber(z->std[i]));
        }
        cJSON_DeleteItemFromObject(cfg, "normalize");
        cJSON_AddItemToObject(cfg, "normalize", o);
    }
    return 0;
}

int ml_zoo_add_normalize(ml_module *m, const ml_zoo_common *z) {
    ml_module *n = z->normalize ? ml_nn_normalize(z->in_c, z->mean, z->std) : ml_nn_identity();
    return ml_module_add_child(m, "normalize", n) ? 0 : -1;
}

int64_t ml_zoo_scaled(int base, double width) {
    int64_t c = (int64_t)floor(base * width + 0.5);
    return c < 1 ? 1 : c;
}


/* ------------------------------------------------------------ names and options */
enum { Z_MLP = 1, Z_CNN = 2, Z_RESNET = 4, Z_VGG = 8, Z_WRN = 16, Z_VIT = 32, Z_VMOE = 64 };
#define Z_CONV (Z_CNN | Z_RESNET | Z_VGG | Z_WRN) /* the backbones of the AdvMoE family */
#define Z_ALL (Z_MLP | Z_CONV | Z_VIT | Z_VMOE)

static const struct {
    const char *name;
    unsigned bit;
} models[] = {{"mlp", Z_MLP}, {"cnn", Z_CNN}, {"resnet18", Z_RESNET}, {"vgg16", Z_VGG},
              {"wrn", Z_WRN}, {"vit", Z_VIT}, {"vmoe", Z_VMOE}};
#define N_MODELS (int)(sizeof models / sizeof models[0])

/* Every option of the zoo: the models it applies to, and the family it needs
 * (NULL: any; a key may appear once per set of models). Anything else is refused: a typo or another model's option
 * must not silently build something else. Defaults are the builders' (some
 * depend on the model or on other options) and are written into the stored
 * config; the MoE knobs take MoEConv2d's and TokenMoE's (their option tables). */
static const ml_zoo_option zoo_options[] = {
    {"classes", Z_ALL, NULL, "number of classes"},
    {"input", Z_ALL, NULL, "image shape {C, H, W}"},
    {"normalize", Z_ALL, NULL, "{mean = {...}, std = {...}} per channel, or false"},
    {"width", Z_MLP | Z_CONV, NULL, "multiplier of every width"},
    {"family", Z_MLP | Z_CONV, NULL, "\"dense\", \"s_dense\", \"sparse_cnn\" or \"moe_cnn\" (docs/MODELS.md)"},
    {"ratio", Z_CONV, "s_dense, sparse_cnn or moe_cnn", "share r of the channels (an expert's, a mask's, s_dense's width)"},
    {"experts", Z_CONV, "moe_cnn", "number of experts"},
    {"experts", Z_VMOE, NULL, "number of experts"},
    {"router", Z_CONV, "moe_cnn", "\"layer\" (a router per MoE convolution) or \"global\" (one for the model)"},
    {"mask", Z_CONV, "moe_cnn", "MoE convolutions in the mask form (the reference)"},
    {"importance_weight", Z_CONV, "moe_cnn", "weight of the routers' importance loss"},
    {"importance_weight", Z_VMOE, NULL, "weight of the routers' importance loss"},
    {"switch_weight", Z_CONV, "moe_cnn", "weight of the routers' Switch loss"},
    {"hidden", Z_MLP, NULL, "hidden sizes {h1, h2, ...}"},
    {"base_width", Z_RESNET, NULL, "channels of the first stage"},
    {"depth", Z_WRN | Z_VIT | Z_VMOE, NULL, "layers (wrn: 6n + 4) or transformer blocks"},
    {"widen", Z_WRN, NULL, "widening factor k"},
    {"patch", Z_VIT | Z_VMOE, NULL, "patch size p"},
    {"dim", Z_VIT | Z_VMOE, NULL, "token width"},
    {"heads", Z_VIT | Z_VMOE, NULL, "attention heads"},
    {"mlp", Z_VIT | Z_VMOE, NULL, "hidden size of the MLPs (and of the experts)"},
    {"eps", Z_VIT | Z_VMOE, NULL, "LayerNorm epsilon"},
    {"moe_every", Z_VMOE, NULL, "the MLP of every moe_every-th block is a TokenMoE"},
    {"k", Z_VMOE, NULL, "experts per token"},
    {"capacity_factor", Z_VMOE, NULL, "expert capacity factor (<= 0: unlimited)"},
    {"noise_std", Z_VMOE, NULL, "router noise in training (std noise_std / E)"},
    {"load_weight", Z_VMOE, NULL, "weight of the load loss"},
    {"renormalize", Z_VMOE, NULL, "renormalise the combine weights over the kept choices"},
    {"batch_priority", Z_VMOE, NULL, "batch-priority routing"},
    {"round_capacity", Z_VMOE, NULL, "round the capacity up to a multiple of 4"},
};
#define N_ZOO_OPTIONS (int)(sizeof zoo_options / sizeof zoo_options[0])

static unsigned model_bit(const char *name) {
    for (int i = 0; i < N_MODELS; i++)
        if (!strcmp(models[i].name, name)) return models[i].bit;
    return 0;
}

int ml_zoo_options(const char *model, const ml_zoo_option **out, int max) {
    unsigned bit = model ? model_bit(model) : Z_ALL;
    int n = 0;
    for (int i = 0; i < N_ZOO_OPTIONS; i++)
        if (zoo_options[i].models & bit) {
            if (n < max) out[n] = &zoo_options[i];
            n++;
        }
    return n;
}

/* Whether fam is one of the families listed in "a, b or c". */
static bool family_allows(const char *list, const char *fam) {
    size_t n = strlen(fam);
    for (const char *p = strstr(list, fam); p; p = strstr(p + 1, fam))
        if ((p == list || p[-1] == ' ') && (p[n] == 0 || p[n] == ','  || p[n] == ' ')) return true;
    return false;
}

static int check_model_options(const char *name, const cJSON *cfg) {
    unsigned bit = model_bit(name);
    const char *fam = ml_cfg_string(cfg, "family", "dense");
    for (const cJSON *it = cfg->child; it; it = it->next) {
        if (!it->string || !strcmp(it->string, "type") || !strcmp(it->string, "model")) continue;
        const ml_zoo_option *o = NULL;
        bool known = false;
        for (int i = 0; i < N_ZOO_OPTIONS && !o; i++)
            if (!strcmp(zoo_options[i].key, it->string)) {
                known = true;
                if (zoo_options[i].models & bit) o = &zoo_options[i];
            }
        if (!o) {
            char list[512];
            size_t len = 0;
            for (int i = 0; i < N_ZOO_OPTIONS && len < sizeof list; i++)
                if (zoo_options[i].models & bit)
                    len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", len ? ", " : "", zoo_options[i].key);
            return ml_failc("%s: %s '%s'%s (its options: %s)", name, known ? "option" : "unknown option", it->string,
                            known ? " does not apply to this model" : "", list);
        }
        /* the family's knobs need that family (a ViT's MoE knobs are its own) */
        if (o->family && (bit & Z_CONV) && !cJSON_IsNull(it) && !family_allows(o->family, fam))
            return ml_failc("%s: option '%s' needs family = %s (the family is %s)", name, it->string, o->family, fam);
    }
    return 0;
}

ml_module *ml_zoo_build(const char *name, cJSON *cfg) {
    if (!cfg) cfg = cJSON_CreateObject();
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return ml_fail("model: the options must be a table");
    }
    unsigned bit = model_bit(name);
    if (!bit) {
        cJSON_Delete(cfg);
        return ml_fail("model: unknown model '%s' (known: mlp, cnn, resnet18, vgg16, wrn, vit, vmoe)", name);
    }
    if (check_model_options(name, cfg)) {
        cJSON_Delete(cfg);
        return NULL;
    }
    /* canonical order: type, model, then the options as given */
    cJSON_DeleteItemFromObject(cfg, "type");
    cJSON_DeleteItemFromObject(cfg, "model");
    cJSON *head = cJSON_CreateObject();
    cJSON_AddStringToObject(head, "type", "Model");
    cJSON_AddStringToObject(head, "model", name);
    while (cfg->child) {
        cJSON *item = cJSON_DetachItemViaPointer(cfg, cfg->child);
        cJSON_AddItemToObject(head, item->string, item);
    }
    cJSON_Delete(cfg);
    cfg = head;
    return bit & (Z_VIT | Z_VMOE) ? ml_zoo_build_vit(name, cfg) : ml_zoo_build_cnn(name, cfg);
}

ml_module *ml_zoo_build_family(const char *family, cJSON *cfg) {
    static const char *const families[] = {"dense", "s_dense", "sparse_cnn", "moe_cnn"};
    bool known = false;
    for (int i = 0; i < 4; i++) known |= !strcmp(families[i], family);
    if (!known || (cfg && !cJSON_IsObject(cfg))) {
        cJSON_Delete(cfg);
        return ml_fail("model: unknown family \"%s\" (use dense, s_dense, sparse_cnn or moe_cnn)", family);
    }
    if (!cfg) cfg = cJSON_CreateObject();
    if (cJSON_GetObjectItemCaseSensitive(cfg, "family")) {
        cJSON_Delete(cfg);
        return ml_fail("%s: unknown option 'family' (the function names the family)", family);
    }
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(cfg, "backbone");
    if (b && !cJSON_IsString(b)) {
        cJSON_Delete(cfg);
        return ml_fail("%s: backbone must be a name (resnet18, vgg16, wrn or cnn)", family);
    }
    char backbone[32];
    snprintf(backbone, sizeof backbone, "%s", b ? b->valuestring : "resnet18");
    if (!(model_bit(backbone) & Z_CONV)) {
        cJSON_Delete(cfg);
        return ml_fail("%s: unknown backbone '%s' (use resnet18, vgg16, wrn or cnn)", family, backbone);
    }
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "backbone");
    cJSON_AddStringToObject(cfg, "family", family);
    return ml_zoo_build(backbone, cfg);
}

static ml_module *model_from_config(const cJSON *c) {
    const char *name = ml_cfg_string(c, "model", NULL);
    if (!name) return ml_fail("model config: missing \"model\"");
    return ml_zoo_build(name, cJSON_Duplicate(c, true));
}

const ml_module_kind ml_zoo_kinds[] = {{"Model", model_from_config, NULL}, {"BasicBlock", ml_zoo_basic_block_from_config, NULL},
                                       {NULL, NULL, NULL}};
