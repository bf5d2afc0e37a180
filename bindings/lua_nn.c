/* lua_nn.c -- modules as Lua objects: constructors in ml.nn, calling,
 * parameters, train/eval, traces, configs; Lua functions as modules. */
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "lua_util.h"
#include "lua_nn.h"
#include "areas.h"

/* ------------------------------------------------------------ userdata */
ml_module *mlua_to_module(lua_State *L, int idx) {
    ml_module **p = luaL_testudata(L, idx, MLUA_MODULE);
    return p ? *p : NULL;
}

ml_module *mlua_check_module(lua_State *L, int idx) {
    ml_module *m = mlua_to_module(L, idx);
    if (!m) luaL_argerror(L, idx, lua_pushfstring(L, "module expected, got %s", luaL_typename(L, idx)));
    return m;
}

int mlua_push_module(lua_State *L, ml_module *m) {
    if (!m) return mlua_error(L);
    ml_module **p = lua_newuserdatauv(L, sizeof *p, 1);
    *p = m;
    luaL_setmetatable(L, MLUA_MODULE);
    return 1;
}

static int m_gc(lua_State *L) {
    ml_module **p = luaL_checkudata(L, 1, MLUA_MODULE);
    ml_module_release(*p);
    *p = NULL;
    return 0;
}

/* ------------------------------------------------------------ Lua functions as modules */
typedef struct {
    lua_State *L;
    int ref;
} lua_fn_module;

static ml_tensor *lua_module_forward(void *ud, ml_tensor *x, ml_ctx *ctx, bool training) {
    lua_fn_module *s = ud;
    lua_State *L = s->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, s->ref);
    mlua_push_tensor(L, ml_retain(x));
    lua_pushboolean(L, training);
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        if (ml_interrupt_pending()) ml_fail("interrupted");
        else ml_fail("%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error in a Lua module");
        lua_settop(L, top);
        return NULL;
    }
    ml_tensor *y = mlua_to_tensor(L, -1);
    if (!y) {
        ml_fail("Lambda: the Lua function returned a %s, not a tensor", luaL_typename(L, -1));
        lua_settop(L, top);
        return NULL;
    }
    ml_retain(y);
    lua_settop(L, top);
    return y;
}

static void lua_module_free(void *ud) {
    lua_fn_module *s = ud;
    luaL_unref(s->L, LUA_REGISTRYINDEX, s->ref);
    free(s);
}

/* ml.nn.Lambda(fn, [name]): fn(x, training) -> tensor */
static int l_lambda(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    const char *name = luaL_optstring(L, 2, "Lambda");
    lua_fn_module *s = malloc(sizeof *s);
    if (!s) return luaL_error(L, "out of memory");
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    s->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    lua_pushvalue(L, 1);
    s->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    ml_module *m = ml_nn_lambda(name, lua_module_forward, s, lua_module_free);
    if (!m) lua_module_free(s);
    return mlua_push_module(L, m);
}

/* ------------------------------------------------------------ constructors */
static int l_linear(lua_State *L) {
    lua_Integer in = luaL_checkinteger(L, 1), out = luaL_checkinteger(L, 2);
    static const char *const known[] = {"bias", NULL};
    mlua_check_options(L, 3, "Linear", known);
    return mlua_push_module(L, ml_nn_linear(in, out, mlua_opt_bool(L, 3, "bias", true)));
}

#define ACT(fname, OP) \
    static int fname(lua_State *L) { return mlua_push_module(L, ml_nn_activation(OP)); }
ACT(l_relu, ML_RELU)
ACT(l_gelu, ML_GELU)
ACT(l_tanh, ML_TANH)
ACT(l_sigmoid, ML_SIGMOID)
ACT(l_softplus, ML_SOFTPLUS)

static int l_identity(lua_State *L) { return mlua_push_module(L, ml_nn_identity()); }

static int l_flatten(lua_State *L) {
    int s = mlua_opt_dim(L, 1, "Flatten", 1), e = mlua_opt_dim(L, 2, "Flatten", -1);
    return mlua_push_module(L, ml_nn_flatten(s, e));
}

static int float_list(lua_State *L, int idx, float *out, int max, const char *fn, const char *what) {
    luaL_checktype(L, idx, LUA_TTABLE);
    int n = (int)lua_rawlen(L, idx);
    if (n < 1 || n > max) luaL_error(L, "%s: %s must list 1 to %d numbers", fn, what, max);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, idx, i + 1);
        out[i] = (float)luaL_checknumber(L, -1);
        lua_pop(L, 1);
    }
    return n;
}

/* ml.nn.Normalize({mean...}, {std...}) */
static int l_normalize(lua_State *L) {
    float mean[64], std[64];
    int n = float_list(L, 1, mean, 64, "Normalize", "mean");
    int k = float_list(L, 2, std, 64, "Normalize", "std");
    if (n != k) luaL_error(L, "Normalize: %d means but %d stds", n, k);
    return mlua_push_module(L, ml_nn_normalize(n, mean, std));
}

/* ml.nn.Sequential(m1, m2, ...) or ml.nn.Sequential({m1, m2, ...}) */
static int l_sequential(lua_State *L) {
    int top = lua_gettop(L);
    ml_module *seq = ml_nn_sequential();
    if (!seq) return mlua_error(L);
    mlua_push_module(L, seq);
    int from = 1, to = top;
    if (top == 1 && lua_istable(L, 1) && !mlua_to_module(L, 1)) {
        to = (int)lua_rawlen(L, 1);
        for (int i = 1; i <= to; i++) {
            lua_rawgeti(L, 1, i);
            ml_module *c = mlua_to_module(L, -1);
            if (!c) luaL_error(L, "Sequential: element %d is a %s, not a module", i, luaL_typename(L, -1));
            ml_nn_sequential_add(seq, ml_module_retain(c));
            lua_pop(L, 1);
        }
        return 1;
    }
    for (int i = from; i <= to; i++) {
        ml_module *c = mlua_to_module(L, i);
        if (!c) luaL_error(L, "Sequential: argument %d is a %s, not a module", i, luaL_typename(L, i));
        ml_nn_sequential_add(seq, ml_module_retain(c));
    }
    return 1;
}

/* ------------------------------------------------------------ more layers */
static int l_conv2d(lua_State *L) {
    lua_Integer in = luaL_checkinteger(L, 1), out = luaL_checkinteger(L, 2), k = luaL_checkinteger(L, 3);
    static const char *const known[] = {"stride", "padding", "groups", "bias", NULL};
    mlua_check_options(L, 4, "Conv2d", known);
    return mlua_push_module(L, ml_nn_conv2d(in, out, (int)k, (int)mlua_opt_integer(L, 4, "stride", 1),
                                            (int)mlua_opt_integer(L, 4, "padding", 0), (int)mlua_opt_integer(L, 4, "groups", 1),
                                            mlua_opt_bool(L, 4, "bias", false)));
}

static int l_batchnorm2d(lua_State *L) {
    lua_Integer c = luaL_checkinteger(L, 1);
    static const char *const known[] = {"eps", "momentum", NULL};
    mlua_check_options(L, 2, "BatchNorm2d", known);
    return mlua_push_module(L, ml_nn_batchnorm2d(c, mlua_opt_number(L, 2, "eps", 1e-5), mlua_opt_number(L, 2, "momentum", 0.1)));
}

static int pool_module(lua_State *L, bool is_max) {
    lua_Integer k = luaL_checkinteger(L, 1);
    static const char *const known[] = {"stride", "padding", NULL};
    mlua_check_options(L, 2, is_max ? "MaxPool2d" : "AvgPool2d", known);
    int stride = (int)mlua_opt_integer(L, 2, "stride", k), pad = (int)mlua_opt_integer(L, 2, "padding", 0);
    return mlua_push_module(L, is_max ? ml_nn_maxpool2d((int)k, stride, pad) : ml_nn_avgpool2d((int)k, stride, pad));
}
static int l_maxpool2d(lua_State *L) { return pool_module(L, true); }
static int l_avgpool2d(lua_State *L) { return pool_module(L, false); }
static int l_gap(lua_State *L) { return mlua_push_module(L, ml_nn_global_avg_pool()); }
static int l_dropout(lua_State *L) { return mlua_push_module(L, ml_nn_dropout(luaL_optnumber(L, 1, 0.5))); }

static int l_layernorm(lua_State *L) {
    lua_Integer d = luaL_checkinteger(L, 1);
    static const char *const known[] = {"eps", NULL};
    mlua_check_options(L, 2, "LayerNorm", known);
    return mlua_push_module(L, ml_nn_layernorm(d, mlua_opt_number(L, 2, "eps", 1e-5)));
}

static int l_attention(lua_State *L) {
    lua_Integer d = luaL_checkinteger(L, 1), h = luaL_optinteger(L, 2, 1);
    return mlua_push_module(L, ml_nn_attention(d, (int)h));
}

static int l_mlp(lua_State *L) {
    lua_Integer in = luaL_checkinteger(L, 1), hidden = luaL_checkinteger(L, 2), out = luaL_optinteger(L, 3, in);
    const char *act = luaL_optstring(L, 4, "gelu");
    for (int op = 0; op < ML_UNARY_COUNT; op++)
        if (!strcmp(ml_unary_name((ml_unary_op)op), act)) return mlua_push_module(L, ml_nn_mlp(in, hidden, out, (ml_unary_op)op));
    return luaL_error(L, "MLP: unknown activation '%s' (use relu, gelu, tanh, sigmoid, ...)", act);
}

/* ml.nn.TransformerBlock(dim, heads, [{eps = 1e-6, mlp = module | hidden size}]) */
static int l_block(lua_State *L) {
    lua_Integer d = luaL_checkinteger(L, 1), h = luaL_checkinteger(L, 2);
    static const char *const known[] = {"eps", "mlp", NULL};
    mlua_check_options(L, 3, "TransformerBlock", known);
    double eps = mlua_opt_number(L, 3, "eps", 1e-6);
    ml_module *mlp = NULL;
    if (lua_istable(L, 3) && lua_getfield(L, 3, "mlp") != LUA_TNIL) {
        mlp = mlua_to_module(L, -1);
        if (mlp) ml_module_retain(mlp);
        else mlp = ml_nn_mlp(d, luaL_checkinteger(L, -1), d, ML_GELU);
    } else {
        mlp = ml_nn_mlp(d, 4 * d, d, ML_GELU);
    }
    return mlua_push_module(L, ml_nn_transformer_block(d, (int)h, eps, mlp));
}

static int l_patch_embed(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    int c, h, w;
    lua_rawgeti(L, 1, 1);
    lua_rawgeti(L, 1, 2);
    lua_rawgeti(L, 1, 3);
    c = (int)luaL_checkinteger(L, -3);
    h = (int)luaL_checkinteger(L, -2);
    w = (int)luaL_checkinteger(L, -1);
    lua_pop(L, 3);
    return mlua_push_module(L, ml_nn_patch_embed(c, h, w, (int)luaL_checkinteger(L, 2), luaL_checkinteger(L, 3)));
}

static int l_basic_block(lua_State *L) {
    return mlua_push_module(L, ml_nn_basic_block(luaL_checkinteger(L, 1), luaL_checkinteger(L, 2), (int)luaL_optinteger(L, 3, 1)));
}

static int l_router(lua_State *L) {
    return mlua_push_module(L, ml_nn_router(luaL_checkinteger(L, 1), (int)luaL_checkinteger(L, 2)));
}

static int l_moe_conv2d(lua_State *L) {
    lua_Integer in = luaL_checkinteger(L, 1), out = luaL_checkinteger(L, 2), k = luaL_checkinteger(L, 3);
    static const char *const known[] = {"stride", "padding", "experts", "ratio", "router", "mask",
                                        "importance_weight", "switch_weight", NULL};
    mlua_check_options(L, 4, "MoEConv2d", known);
    const char *router = mlua_opt_string(L, 4, "router", "layer");
    if (strcmp(router, "layer") && strcmp(router, "global"))
        luaL_error(L, "MoEConv2d: router must be \"layer\" or \"global\", got \"%s\"", router);
    double wi = mlua_opt_number(L, 4, "importance_weight", 0), ws = mlua_opt_number(L, 4, "switch_weight", 0);
    ml_module *m = ml_nn_moe_conv2d(in, out, (int)k, (int)mlua_opt_integer(L, 4, "stride", 1),
                                    (int)mlua_opt_integer(L, 4, "padding", (k - 1) / 2),
                                    (int)mlua_opt_integer(L, 4, "experts", 2), mlua_opt_number(L, 4, "ratio", 0.5),
                                    !strcmp(router, "global"), mlua_opt_bool(L, 4, "mask", false));
    if (m && ml_moe_conv_set_balance(m, wi, ws)) {
        ml_module_release(m);
        m = NULL;
    }
    return mlua_push_module(L, m);
}

static int l_masked_conv2d(lua_State *L) {
    lua_Integer in = luaL_checkinteger(L, 1), out = luaL_checkinteger(L, 2), k = luaL_checkinteger(L, 3);
    static const char *const known[] = {"stride", "padding", "ratio", NULL};
    mlua_check_options(L, 4, "MaskedConv2d", known);
    return mlua_push_module(L, ml_nn_masked_conv2d(in, out, (int)k, (int)mlua_opt_integer(L, 4, "stride", 1),
                                                   (int)mlua_opt_integer(L, 4, "padding", (k - 1) / 2),
                                                   mlua_opt_number(L, 4, "ratio", 0.5)));
}

/* The known options of the zoo (typos are errors, not silently ignored). */
static const char *const zoo_options[] = {
    "classes", "input", "width", "family", "ratio", "experts", "router", "mask", "normalize", "base_width", "depth",
    "widen", "hidden", "patch", "dim", "heads", "mlp", "eps", "moe_every", "k", "capacity_factor", "noise_std",
    "importance_weight", "load_weight", "switch_weight", "renormalize", "batch_priority", "round_capacity", NULL};

static int zoo(lua_State *L, const char *name) {
    if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
    char fn[64];
    snprintf(fn, sizeof fn, "ml.nn.%s", name);
    mlua_check_options(L, 1, fn, zoo_options);
    cJSON *cfg = lua_istable(L, 1) ? mlua_check_json(L, 1, "config") : cJSON_CreateObject();
    return mlua_push_module(L, ml_zoo_build(name, cfg));
}
static int l_zoo_mlp(lua_State *L) { return zoo(L, "mlp"); }
static int l_zoo_cnn(lua_State *L) { return zoo(L, "cnn"); }
static int l_zoo_resnet18(lua_State *L) { return zoo(L, "resnet18"); }
static int l_zoo_vgg16(lua_State *L) { return zoo(L, "vgg16"); }
static int l_zoo_wrn(lua_State *L) { return zoo(L, "wrn"); }
static int l_zoo_vit(lua_State *L) { return zoo(L, "vit"); }
static int l_zoo_vmoe(lua_State *L) { return zoo(L, "vmoe"); }

/* ml.nn.moe_cnn{backbone = "resnet18", experts = 2, ratio = 0.5, router = "layer", ...} and the
 * other members of the AdvMoE family: dense, s_dense, sparse_cnn. */
static int family(lua_State *L, const char *fam) {
    if (!lua_isnoneornil(L, 1)) luaL_checktype(L, 1, LUA_TTABLE);
    const char *backbone = "resnet18";
    cJSON *cfg = cJSON_CreateObject();
    if (lua_istable(L, 1)) {
        lua_pushnil(L);
        while (lua_next(L, 1)) {
            if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "%s: options must be given by name", fam);
            const char *k = lua_tostring(L, -2);
            if (!strcmp(k, "backbone")) {
                backbone = luaL_checkstring(L, -1);
            } else {
                bool known = false;
                for (int i = 0; zoo_options[i]; i++) known |= !strcmp(zoo_options[i], k);
                if (!known || !strcmp(k, "family")) {
                    cJSON_Delete(cfg);
                    luaL_error(L, "%s: unknown option '%s'", fam, k);
                }
                char err[256];
                cJSON *v = mlua_to_json(L, -1, fam, err, sizeof err);
                if (!v) {
                    cJSON_Delete(cfg);
                    luaL_error(L, "%s", err);
                }
                cJSON_AddItemToObject(cfg, k, v);
            }
            lua_pop(L, 1);
        }
    }
    if (strcmp(backbone, "resnet18") && strcmp(backbone, "vgg16") && strcmp(backbone, "wrn") && strcmp(backbone, "cnn")) {
        cJSON_Delete(cfg);
        luaL_error(L, "%s: unknown backbone '%s' (use resnet18, vgg16, wrn or cnn)", fam, backbone);
    }
    cJSON_AddStringToObject(cfg, "family", fam);
    return mlua_push_module(L, ml_zoo_build(backbone, cfg));
}
static int l_fam_dense(lua_State *L) { return family(L, "dense"); }
static int l_fam_s_dense(lua_State *L) { return family(L, "s_dense"); }
static int l_fam_sparse(lua_State *L) { return family(L, "sparse_cnn"); }
static int l_fam_moe(lua_State *L) { return family(L, "moe_cnn"); }

/* ml.nn.TokenMoE(dim, {experts = 8, k = 2, capacity_factor = 1.25, noise_std = 1, expert = module config,
 * importance_weight, load_weight, switch_weight, z_weight, renormalize, batch_priority, round_capacity, random_ties})
 * and ml.nn.SmoothMoE(dim, {experts, expert}) */
static int moe_layer(lua_State *L, bool smooth) {
    lua_Integer d = luaL_checkinteger(L, 1);
    static const char *const known[] = {"experts", "k", "capacity_factor", "noise_std", "expert", "importance_weight",
                                        "load_weight", "switch_weight", "z_weight", "renormalize", "batch_priority",
                                        "round_capacity", "random_ties", NULL};
    mlua_check_options(L, 2, smooth ? "SmoothMoE" : "TokenMoE", known);
    /* the options as JSON, but for `expert`, which may be a module (handled below) */
    lua_newtable(L);
    if (lua_istable(L, 2)) {
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            if (lua_type(L, -2) == LUA_TSTRING && strcmp(lua_tostring(L, -2), "expert") == 0 && mlua_to_module(L, -1)) {
                lua_pop(L, 1);
                continue;
            }
            lua_pushvalue(L, -2);
            lua_insert(L, -2);
            lua_rawset(L, -4);
        }
    }
    cJSON *cfg = mlua_check_json(L, -1, smooth ? "SmoothMoE" : "TokenMoE");
    lua_pop(L, 1);
    cJSON_DeleteItemFromObject(cfg, "dim");
    cJSON_AddNumberToObject(cfg, "dim", (double)d);
    if (lua_istable(L, 2) && lua_getfield(L, 2, "expert") != LUA_TNIL) {
        /* an expert given as a module: use its config */
        ml_module *ex = mlua_to_module(L, -1);
        if (ex) {
            cJSON *ec = ml_module_config(ex);
            if (!ec) {
                cJSON_Delete(cfg);
                return mlua_error(L);
            }
            cJSON_DeleteItemFromObject(cfg, "expert");
            cJSON_AddItemToObject(cfg, "expert", ec);
        }
    }
    ml_moe_opts o;
    if (ml_moe_opts_from_config(cfg, &o)) {
        cJSON_Delete(cfg);
        return mlua_error(L);
    }
    ml_module *m = smooth ? ml_nn_smooth_moe(&o) : ml_nn_token_moe(&o);
    cJSON_Delete(cfg);
    return mlua_push_module(L, m);
}
static int l_token_moe(lua_State *L) { return moe_layer(L, false); }
static int l_smooth_moe(lua_State *L) { return moe_layer(L, true); }

/* m:set_moe_form("sparse" | "mask"): how the MoE convolutions compute */
static int m_set_moe_form(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    const char *f = luaL_checkstring(L, 2);
    if (strcmp(f, "sparse") && strcmp(f, "mask")) luaL_error(L, "set_moe_form: use \"sparse\" or \"mask\", got \"%s\"", f);
    ml_moe_conv_set_mask(m, !strcmp(f, "mask"));
    lua_settop(L, 1);
    return 1;
}

/* m:set_bn_momentum(v) -> m: momentum of every BatchNorm2d (1: the next training
 * forward sets the running statistics to the batch's) */
static int m_set_bn_momentum(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    double v = luaL_checknumber(L, 2);
    if (!(v >= 0 && v <= 1)) luaL_error(L, "set_bn_momentum: momentum must be in [0, 1], got %g", v);
    ml_nn_set_bn_momentum(m, v);
    lua_settop(L, 1);
    return 1;
}

/* ------------------------------------------------------------ traces */
static void push_index_tensor(lua_State *L, ml_tensor *t) {
    if (!t) {
        lua_pushnil(L);
        return;
    }
    mlua_push_tensor(L, mlua_index_from_core(t));
}

/* Pushes the traces of ctx as {layer = {...}}, plus the ordered layer names. */
static void push_traces(lua_State *L, const ml_ctx *ctx) {
    lua_newtable(L);
    int tbl = lua_gettop(L);
    lua_newtable(L);
    int order = lua_gettop(L);
    int n = 0;
    for (const ml_trace *tr = ctx->traces; tr; tr = tr->next) {
        lua_newtable(L);
        lua_pushstring(L, tr->layer);
        lua_setfield(L, -2, "layer");
        lua_pushinteger(L, tr->num_experts);
        lua_setfield(L, -2, "num_experts");
        push_index_tensor(L, tr->experts);
        lua_setfield(L, -2, "experts");
        if (tr->gates) mlua_push_tensor(L, ml_retain(tr->gates)), lua_setfield(L, -2, "gates");
        if (tr->probs) mlua_push_tensor(L, ml_retain(tr->probs)), lua_setfield(L, -2, "probs");
        if (tr->kept) mlua_push_tensor(L, ml_retain(tr->kept)), lua_setfield(L, -2, "kept");
        if (tr->load) mlua_push_tensor(L, ml_retain(tr->load)), lua_setfield(L, -2, "load");
        lua_newtable(L);
        static const char *const aux_names[4] = {"importance", "load", "switch", "z"};
        for (int k = 0; k < 4; k++)
            if (tr->aux[k] == tr->aux[k]) { /* not NaN */
                lua_pushnumber(L, tr->aux[k]);
                lua_setfield(L, -2, aux_names[k]);
            }
        lua_setfield(L, -2, "aux");
        lua_pushvalue(L, -1);
        lua_setfield(L, tbl, tr->layer);
        lua_pop(L, 1);
        lua_pushstring(L, tr->layer);
        lua_rawseti(L, order, ++n);
    }
    /* let the Lua library attach its printing metatable: ml.nn._trace(tbl, order) */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_getfield(L, -1, "moelab");
    lua_getfield(L, -1, "nn");
    if (lua_istable(L, -1) && lua_getfield(L, -1, "_trace") == LUA_TFUNCTION) {
        lua_pushvalue(L, tbl);
        lua_pushvalue(L, order);
        lua_call(L, 2, 0);
    } else {
        lua_pop(L, 1);
    }
    lua_settop(L, tbl);
}

/* ------------------------------------------------------------ methods */
/* The Lua hook: hook(path, module, input, output). Errors stop the forward. */
typedef struct {
    lua_State *L;
    int fn;
    bool failed;
} hook_ud;

static void hook_cb(void *ud, const char *path, const ml_module *m, ml_tensor *x, ml_tensor *y, int64_t flops,
                    double seconds) {
    hook_ud *h = ud;
    if (h->failed) return;
    lua_State *L = h->L;
    lua_pushvalue(L, h->fn);
    lua_pushstring(L, path);
    mlua_push_module(L, ml_module_retain((ml_module *)m));
    mlua_push_tensor(L, ml_retain(x));
    mlua_push_tensor(L, ml_retain(y));
    if (lua_pcall(L, 4, 0, 0) != LUA_OK) {
        h->failed = true;
        lua_setfield(L, LUA_REGISTRYINDEX, "moelab.hook_error");
    }
}

/* m:forward(x, [{trace = false, aux = false, hook = fn(path, module, input, output)}]) -> y, trace|nil, aux|nil */
static int m_forward(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    ml_tensor *x = mlua_check_tensor(L, 2);
    static const char *const known[] = {"trace", "aux", "hook", NULL};
    mlua_check_options(L, 3, "forward", known);
    ml_ctx ctx = {0};
    ctx.trace = mlua_opt_bool(L, 3, "trace", false);
    ctx.want_aux = mlua_opt_bool(L, 3, "aux", false);
    hook_ud hook = {L, 0, false};
    if (lua_istable(L, 3) && lua_getfield(L, 3, "hook") != LUA_TNIL) {
        luaL_checktype(L, -1, LUA_TFUNCTION);
        hook.fn = lua_gettop(L);
        ctx.on_module = hook_cb;
        ctx.on_module_ud = &hook;
    }
    ml_tensor *y = ml_module_forward(m, x, &ctx);
    if (hook.failed) {
        ml_release(y);
        ml_ctx_clear(&ctx);
        lua_getfield(L, LUA_REGISTRYINDEX, "moelab.hook_error");
        return lua_error(L);
    }
    if (!y) {
        ml_ctx_clear(&ctx);
        return mlua_error(L);
    }
    mlua_push_tensor(L, y);
    if (ctx.trace) push_traces(L, &ctx);
    else lua_pushnil(L);
    if (ctx.aux) mlua_push_tensor(L, ml_retain(ctx.aux));
    else lua_pushnil(L);
    ml_ctx_clear(&ctx);
    return 3;
}

/* m(x) -> y (the plain call; no trace) */
static int m_call(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    ml_tensor *x = mlua_check_tensor(L, 2);
    if (!lua_isnoneornil(L, 3)) return m_forward(L);
    ml_ctx ctx = {0};
    ml_tensor *y = ml_module_forward(m, x, &ctx);
    ml_ctx_clear(&ctx);
    return mlua_push_tensor(L, y);
}

static int m_train(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    ml_module_set_training(m, lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2));
    lua_settop(L, 1);
    return 1;
}

static int m_eval(lua_State *L) {
    ml_module_set_training(mlua_check_module(L, 1), false);
    lua_settop(L, 1);
    return 1;
}

static int m_is_training(lua_State *L) {
    lua_pushboolean(L, mlua_check_module(L, 1)->training);
    return 1;
}

typedef struct {
    lua_State *L;
    const char *group;
    int n;
    bool list;
} param_walk;

static int push_param_cb(void *ud, const char *path, ml_param *p, ml_module *owner) {
    param_walk *w = ud;
    if (w->group && strcmp(w->group, p->group) != 0) return 0;
    lua_State *L = w->L;
    if (w->list) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, path);
        lua_setfield(L, -2, "name");
        mlua_push_tensor(L, ml_retain(p->t));
        lua_setfield(L, -2, "tensor");
        lua_pushstring(L, p->group);
        lua_setfield(L, -2, "group");
        lua_rawseti(L, -2, ++w->n);
    } else {
        mlua_push_tensor(L, ml_retain(p->t));
        lua_setfield(L, -2, path);
        w->n++;
    }
    return 0;
}

static const char *check_group(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return NULL;
    const char *g = luaL_checkstring(L, idx);
    if (strcmp(g, "router") && strcmp(g, "backbone") && strcmp(g, "all"))
        luaL_error(L, "parameters: unknown group '%s' (use \"router\", \"backbone\" or \"all\")", g);
    return strcmp(g, "all") ? g : NULL;
}

/* m:parameters([group]) -> {name = tensor}; group "router" | "backbone" */
static int m_parameters(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    param_walk w = {L, check_group(L, 2), 0, false};
    lua_newtable(L);
    ml_module_visit_params(m, false, push_param_cb, &w);
    return 1;
}

/* m:named_parameters([group]) -> ordered list of {name, tensor, group} */
static int m_named_parameters(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    param_walk w = {L, check_group(L, 2), 0, true};
    lua_newtable(L);
    ml_module_visit_params(m, false, push_param_cb, &w);
    return 1;
}

/* m:buffers() -> {name = tensor} (running statistics etc.) */
static int buffer_cb(void *ud, const char *path, ml_param *p, ml_module *owner) {
    if (!p->buffer) return 0;
    lua_State *L = ud;
    mlua_push_tensor(L, ml_retain(p->t));
    lua_setfield(L, -2, path);
    return 0;
}
static int m_buffers(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    lua_newtable(L);
    ml_module_visit_params(m, true, buffer_cb, L);
    return 1;
}

/* m:state_dict() -> {name = tensor} of parameters and buffers (shared, not copies) */
static int state_cb(void *ud, const char *path, ml_param *p, ml_module *owner) {
    lua_State *L = ud;
    mlua_push_tensor(L, ml_retain(p->t));
    lua_setfield(L, -2, path);
    return 0;
}
static int m_state_dict(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    lua_newtable(L);
    ml_module_visit_params(m, true, state_cb, L);
    return 1;
}

/* m:load_state_dict(tbl, [{strict = true}]) -> number copied (ml_module_load_state_dict) */
static int m_load_state_dict(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    static const char *const known[] = {"strict", NULL};
    mlua_check_options(L, 3, "load_state_dict", known);
    bool strict = mlua_opt_bool(L, 3, "strict", true);
    int n = 0;
    for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) n++;
    const char **names = lua_newuserdatauv(L, sizeof *names * (size_t)(n + 1), 0);
    ml_tensor **ts = lua_newuserdatauv(L, sizeof *ts * (size_t)(n + 1), 0);
    int k = 0; /* the strings stay alive as keys of the table */
    for (lua_pushnil(L); lua_next(L, 2); lua_pop(L, 1)) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "load_state_dict: the table's keys must be names, found a %s key", luaL_typename(L, -2));
        names[k] = lua_tostring(L, -2);
        ts[k] = mlua_to_tensor(L, -1);
        if (!ts[k]) luaL_error(L, "load_state_dict: '%s' is a %s, not a tensor", names[k], luaL_typename(L, -1));
        k++;
    }
    int copied = ml_module_load_state_dict(m, k, names, ts, strict, "the table");
    if (copied < 0) return mlua_error(L);
    lua_pushinteger(L, copied);
    return 1;
}

static int zero_grad_cb(void *ud, const char *path, ml_param *p, ml_module *owner) {
    ml_zero_grad(p->t);
    return 0;
}
static int m_zero_grad(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    ml_module_visit_params(m, false, zero_grad_cb, NULL);
    lua_settop(L, 1);
    return 1;
}

static int m_num_params(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    lua_pushinteger(L, ml_module_num_params(m));
    lua_pushinteger(L, ml_module_active_params(m));
    return 2;
}

static int m_describe(lua_State *L) {
    char buf[512];
    ml_module_describe(mlua_check_module(L, 1), buf, sizeof buf);
    lua_pushstring(L, buf);
    return 1;
}

static int m_type(lua_State *L) {
    lua_pushstring(L, mlua_check_module(L, 1)->type->name);
    return 1;
}

/* m:children() -> ordered list of {name, module} */
static int m_children(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    lua_createtable(L, m->n_children, 0);
    for (int i = 0; i < m->n_children; i++) {
        lua_createtable(L, 0, 2);
        lua_pushstring(L, m->children[i].name);
        lua_setfield(L, -2, "name");
        mlua_push_module(L, ml_module_retain(m->children[i].m));
        lua_setfield(L, -2, "module");
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* m:get(i | "name" | "a.b.c") -> child module */
static int m_get(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer i = luaL_checkinteger(L, 2);
        if (i < 1 || i > m->n_children)
            luaL_error(L, "get: index %d is out of range (the module has %d children)", (int)i, m->n_children);
        return mlua_push_module(L, ml_module_retain(m->children[i - 1].m));
    }
    const char *path = luaL_checkstring(L, 2);
    char buf[ML_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    ml_module *cur = m;
    for (char *tok = strtok(buf, "."); tok; tok = strtok(NULL, ".")) {
        ml_module *next = ml_module_child(cur, tok);
        if (!next) luaL_error(L, "get: no child named '%s' in '%s'", tok, path);
        cur = next;
    }
    return mlua_push_module(L, ml_module_retain(cur));
}

/* m:add(child) for Sequential */
static int m_add(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    ml_module *c = mlua_check_module(L, 2);
    if (m->type != &ml_sequential_type) luaL_error(L, "add: only a Sequential can add children (this is a %s)", m->type->name);
    if (c == m) luaL_error(L, "add: a module cannot contain itself");
    ml_nn_sequential_add(m, ml_module_retain(c));
    lua_settop(L, 1);
    return 1;
}

/* m:config() -> JSON string of the constructor config (nil, message if not serialisable) */
static int m_config(lua_State *L) {
    cJSON *c = ml_module_config(mlua_check_module(L, 1));
    if (!c) {
        lua_pushnil(L);
        lua_pushstring(L, ml_last_error());
        return 2;
    }
    char *s = cJSON_PrintUnformatted(c);
    cJSON_Delete(c);
    lua_pushstring(L, s);
    free(s);
    return 1;
}

/* ml.nn.from_config(json) -> module */
static int l_from_config(lua_State *L) {
    const char *s = luaL_checkstring(L, 1);
    cJSON *c = cJSON_Parse(s);
    if (!c) luaL_error(L, "from_config: not valid JSON");
    ml_module *m = ml_module_from_config(c);
    cJSON_Delete(c);
    return mlua_push_module(L, m);
}

/* m:modules() -> list of {path, module, depth, describe, params, active} (pre-order) */
typedef struct {
    lua_State *L;
    int n;
} mod_walk;

static int modules_cb(void *ud, const char *path, ml_module *m, int depth) {
    mod_walk *w = ud;
    lua_State *L = w->L;
    char desc[512];
    ml_module_describe(m, desc, sizeof desc);
    lua_createtable(L, 0, 6);
    lua_pushstring(L, path);
    lua_setfield(L, -2, "path");
    mlua_push_module(L, ml_module_retain(m));
    lua_setfield(L, -2, "module");
    lua_pushinteger(L, depth);
    lua_setfield(L, -2, "depth");
    lua_pushstring(L, desc);
    lua_setfield(L, -2, "describe");
    lua_pushinteger(L, ml_module_num_params(m));
    lua_setfield(L, -2, "params");
    lua_pushinteger(L, ml_module_active_params(m));
    lua_setfield(L, -2, "active");
    lua_pushstring(L, m->type->name);
    lua_setfield(L, -2, "type");
    lua_rawseti(L, -2, ++w->n);
    return 0;
}

static int m_modules(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    mod_walk w = {L, 0};
    lua_newtable(L);
    ml_module_visit(m, modules_cb, &w);
    return 1;
}

/* m:profile(x) -> y, {path = {flops = n, seconds = s}} : one forward with per-module FLOPs and time */
static void profile_cb(void *ud, const char *path, const ml_module *m, ml_tensor *x, ml_tensor *y, int64_t flops,
                       double seconds) {
    lua_State *L = ud;
    lua_getfield(L, -1, path);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, 0);
        lua_setfield(L, -2, "flops");
        lua_pushnumber(L, 0);
        lua_setfield(L, -2, "seconds");
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, path);
    }
    lua_getfield(L, -1, "flops");
    lua_Integer f = lua_tointeger(L, -1);
    lua_pop(L, 1);
    lua_pushinteger(L, f + flops);
    lua_setfield(L, -2, "flops");
    lua_getfield(L, -1, "seconds");
    lua_Number s = lua_tonumber(L, -1);
    lua_pop(L, 1);
    lua_pushnumber(L, s + seconds);
    lua_setfield(L, -2, "seconds");
    lua_pop(L, 1);
}

static int m_profile(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    ml_tensor *x = mlua_check_tensor(L, 2);
    lua_settop(L, 2);
    lua_newtable(L); /* 3: the profile table (top of stack during the forward) */
    ml_ctx ctx = {0};
    ctx.on_module = profile_cb;
    ctx.on_module_ud = L;
    int64_t f0 = ml_flops();
    ml_tensor *y = ml_module_forward(m, x, &ctx);
    int64_t total = ml_flops() - f0;
    ml_ctx_clear(&ctx);
    if (!y) return mlua_error(L);
    lua_pushinteger(L, total);
    lua_setfield(L, 3, "total_flops");
    mlua_push_tensor(L, y);
    lua_insert(L, 3);
    return 2;
}

static int m_tostring(lua_State *L) {
    /* the tree view lives in lua/moelab/nn.lua when loaded */
    lua_getglobal(L, "package");
    lua_getfield(L, -1, "loaded");
    lua_getfield(L, -1, "moelab");
    lua_getfield(L, -1, "nn");
    if (lua_istable(L, -1) && lua_getfield(L, -1, "_tostring") == LUA_TFUNCTION) {
        lua_pushvalue(L, 1);
        lua_call(L, 1, 1);
        return 1;
    }
    return m_describe(L);
}

static int m_index(lua_State *L) {
    mlua_check_module(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) return m_get(L);
    luaL_getmetatable(L, MLUA_MODULE);
    lua_getfield(L, -1, "__methods");
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static const luaL_Reg module_methods[] = {
    {"forward", m_forward},           {"train", m_train},
    {"eval", m_eval},                 {"is_training", m_is_training},
    {"parameters", m_parameters},     {"named_parameters", m_named_parameters},
    {"buffers", m_buffers},           {"state_dict", m_state_dict},
    {"load_state_dict", m_load_state_dict}, {"zero_grad", m_zero_grad},
    {"num_params", m_num_params},     {"describe", m_describe},
    {"type", m_type},                 {"children", m_children},
    {"get", m_get},                   {"add", m_add},
    {"config", m_config},             {"modules", m_modules},
    {"profile", m_profile},           {"set_moe_form", m_set_moe_form},
    {"set_bn_momentum", m_set_bn_momentum},
    {NULL, NULL}};

static const luaL_Reg nn_functions[] = {
    {"Linear", l_linear},     {"ReLU", l_relu},         {"GELU", l_gelu},         {"Tanh", l_tanh},
    {"Sigmoid", l_sigmoid},   {"Softplus", l_softplus}, {"Identity", l_identity}, {"Flatten", l_flatten},
    {"Normalize", l_normalize}, {"Sequential", l_sequential}, {"Lambda", l_lambda},
    {"from_config", l_from_config}, {"Conv2d", l_conv2d}, {"BatchNorm2d", l_batchnorm2d},
    {"MaxPool2d", l_maxpool2d}, {"AvgPool2d", l_avgpool2d}, {"GlobalAvgPool", l_gap}, {"Dropout", l_dropout},
    {"LayerNorm", l_layernorm}, {"MultiHeadSelfAttention", l_attention}, {"MLP", l_mlp},
    {"TransformerBlock", l_block}, {"PatchEmbed", l_patch_embed}, {"BasicBlock", l_basic_block},
    {"Router", l_router}, {"TokenMoE", l_token_moe}, {"SmoothMoE", l_smooth_moe}, {"MoEConv2d", l_moe_conv2d},
    {"MaskedConv2d", l_masked_conv2d}, {"mlp", l_zoo_mlp}, {"cnn", l_zoo_cnn}, {"resnet18", l_zoo_resnet18},
    {"vgg16", l_zoo_vgg16}, {"wrn", l_zoo_wrn}, {"vit", l_zoo_vit}, {"vmoe", l_zoo_vmoe},
    {"dense", l_fam_dense}, {"s_dense", l_fam_s_dense}, {"sparse_cnn", l_fam_sparse}, {"moe_cnn", l_fam_moe},
    {NULL, NULL}};

void mlua_open_nn(lua_State *L) {
    luaL_newmetatable(L, MLUA_MODULE);
    lua_newtable(L);
    luaL_setfuncs(L, module_methods, 0);
    lua_setfield(L, -2, "__methods");
    const luaL_Reg meta[] = {{"__gc", m_gc}, {"__call", m_call}, {"__index", m_index}, {"__tostring", m_tostring},
                             {NULL, NULL}};
    luaL_setfuncs(L, meta, 0);
    lua_pushstring(L, "Module");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    mlua_subtable(L, "nn");
    luaL_setfuncs(L, nn_functions, 0);
    lua_pop(L, 1);
}

/* Adds methods to the Module method table (for other binding areas). */
void mlua_module_methods(lua_State *L, const luaL_Reg *methods) {
    luaL_getmetatable(L, MLUA_MODULE);
    lua_getfield(L, -1, "__methods");
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 2);
}
