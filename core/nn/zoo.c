/* zoo.c -- model names to builders; the "Model" type in the registry. */
#include "zoo.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <string.h>

#include "layers.h"
#include "zoo_internal.h"

ml_module *ml_zoo_build_cnn(const char *name, cJSON *cfg);
ml_module *ml_zoo_build_vit(const char *name, cJSON *cfg);

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
        return ml_fail("out of memory");
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
    double ratio;
    if ((strcmp(fam, "dense") ? ml_zoo_double(cfg, "ratio", 0.5, &ratio) : ml_cfg_double(cfg, "ratio", 0.5, &ratio)))
        return -1;
    z->conv.ratio = ratio;
    if (!strcmp(fam, "dense")) {
        z->conv.kind = CONV_DENSE;
    } else if (!strcmp(fam, "s_dense")) {
        z->conv.kind = CONV_DENSE;
        if (!(ratio > 0 && ratio <= 1)) return ml_failc("s_dense: ratio = %g must be in (0, 1]", ratio);
        z->width *= ratio; /* every width scaled by r */
    } else if (!strcmp(fam, "sparse_cnn")) {
        z->conv.kind = CONV_MASKED;
    } else if (!strcmp(fam, "moe_cnn")) {
        z->conv.kind = CONV_MOE;
        if (ml_zoo_int(cfg, "experts", 2, &z->conv.experts)) return -1;
        const char *router = ml_zoo_string(cfg, "router", "layer");
        if (strcmp(router, "layer") && strcmp(router, "global"))
            return ml_failc("moe_cnn: router must be \"layer\" or \"global\", got \"%s\"", router);
        z->conv.global = !strcmp(router, "global");
        bool mask;
        if (ml_zoo_bool(cfg, "mask", false, &mask)) return -1;
        z->conv.mask = mask;
        if (ml_zoo_double(cfg, "importance_weight", 0, &z->conv.w_importance) ||
            ml_zoo_double(cfg, "switch_weight", 0, &z->conv.w_switch))
            return -1;
        if (z->conv.global && (z->conv.w_importance > 0 || z->conv.w_switch > 0))
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


static const char *const cnn_models[] = {"mlp", "cnn", "resnet18", "vgg16", "wrn", NULL};
static const char *const vit_models[] = {"vit", "vmoe", NULL};

static bool in(const char *const *list, const char *name) {
    for (int i = 0; list[i]; i++)
        if (!strcmp(list[i], name)) return true;
    return false;
}

/* The options each model takes; anything else is refused (a typo or an option
 * of another model must not silently build something else). */
#define COMMON "classes", "input", "normalize"
#define FAMILY "width", "family", "ratio", "experts", "router", "mask", "importance_weight", "switch_weight"
#define VIT COMMON, "patch", "dim", "depth", "heads", "mlp", "eps"
static const char *const opts_mlp[] = {COMMON, "width", "family", "hidden", NULL};
static const char *const opts_cnn[] = {COMMON, FAMILY, NULL};
static const char *const opts_resnet18[] = {COMMON, FAMILY, "base_width", NULL};
static const char *const opts_vgg16[] = {COMMON, FAMILY, NULL};
static const char *const opts_wrn[] = {COMMON, FAMILY, "depth", "widen", NULL};
static const char *const opts_vit[] = {VIT, NULL};
static const char *const opts_vmoe[] = {VIT, "moe_every", "experts", "k", "capacity_factor", "noise_std",
                                        "importance_weight", "load_weight", "renormalize", "batch_priority",
                                        "round_capacity", NULL};
/* family-specific options: which family they need */
static const char *family_of_option(const char *key) {
    if (!strcmp(key, "experts") || !strcmp(key, "router") || !strcmp(key, "mask") || !strcmp(key, "switch_weight") ||
        !strcmp(key, "importance_weight"))
        return "moe_cnn";
    if (!strcmp(key, "ratio")) return "s_dense, sparse_cnn or moe_cnn";
    return NULL;
}

static int check_model_options(const char *name, const cJSON *cfg) {
    static const struct {
        const char *name;
        const char *const *opts;
    } table[] = {{"mlp", opts_mlp},     {"cnn", opts_cnn}, {"resnet18", opts_resnet18}, {"vgg16", opts_vgg16},
                 {"wrn", opts_wrn},     {"vit", opts_vit}, {"vmoe", opts_vmoe}};
    const char *const *opts = NULL;
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(table[i].name, name)) opts = table[i].opts;
    if (!opts) return 0;
    const char *fam = ml_cfg_string(cfg, "family", "dense");
    for (const cJSON *it = cfg->child; it; it = it->next) {
        if (!it->string || !strcmp(it->string, "type") || !strcmp(it->string, "model")) continue;
        bool ok = false;
        for (int i = 0; opts[i] && !ok; i++) ok = !strcmp(opts[i], it->string);
        if (!ok) {
            char list[512];
            size_t len = 0;
            for (int i = 0; opts[i] && len < sizeof list; i++)
                len += (size_t)snprintf(list + len, sizeof list - len, "%s%s", i ? ", " : "", opts[i]);
            return ml_failc("%s: option '%s' does not apply to this model (its options: %s)", name, it->string, list);
        }
        const char *need = family_of_option(it->string);
        bool vit = !strcmp(name, "vit") || !strcmp(name, "vmoe");
        if (need && !vit && !cJSON_IsNull(it) &&
            (!strcmp(fam, "dense") || (!strcmp(need, "moe_cnn") && strcmp(fam, "moe_cnn"))))
            return ml_failc("%s: option '%s' needs family = %s (the family is %s)", name, it->string, need, fam);
    }
    return 0;
}

ml_module *ml_zoo_build(const char *name, cJSON *cfg) {
    if (!cfg) cfg = cJSON_CreateObject();
    if (!cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return ml_fail("model: the options must be a table");
    }
    bool cnn = in(cnn_models, name), vit = in(vit_models, name);
    if (!cnn && !vit) {
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
    return cnn ? ml_zoo_build_cnn(name, cfg) : ml_zoo_build_vit(name, cfg);
}

static ml_module *model_from_config(const cJSON *c) {
    const char *name = ml_cfg_string(c, "model", NULL);
    if (!name) return ml_fail("model config: missing \"model\"");
    return ml_zoo_build(name, cJSON_Duplicate(c, true));
}

void ml_nn_register_zoo(void);
void ml_nn_register_zoo(void) { ml_module_register("Model", model_from_config); }
