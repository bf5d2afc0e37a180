/* lua_nn_layers.c -- the layer constructors of ml.nn: Linear ... BasicBlock,
 * the MoE layers (their options come from the core's option tables:
 * core/nn/options.h), Lua functions as modules (Lambda), from_config, and
 * ml.nn.options (what a module type or zoo model takes). */
#include <stdlib.h>
#include <string.h>

#include "areas.h"
#include "lua_nn.h"
#include "lua_util.h"
#include "nn/registry.h"

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
        if (!ml_interrupted()) ml_fail("%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error in a Lua module");
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

/* ------------------------------------------------------------ layers with an option table */
/* ml.nn.<type>(positional..., [options]): the positional arguments (integers,
 * named by `positional`) and the options table make the type's config, read
 * by the type's option table (defaults, types, ranges) as a checkpoint's
 * would be. An option of config type may be given as a module: its config. */
static int build_from_options(lua_State *L, const char *type, const char *const *positional, int npos) {
    const ml_module_kind *kind = ml_module_kind_find(type);
    const ml_options *t = kind->options;
    const char *known[64];
    int n = 0;
    for (int i = 0; i < t->n && n < 63; i++) {
        bool pos = false;
        for (int j = 0; j < npos; j++) pos |= !strcmp(positional[j], t->list[i].key);
        if (!pos) known[n++] = t->list[i].key;
    }
    known[n] = NULL;
    int opts = npos + 1;
    lua_Integer args[8];
    for (int j = 0; j < npos; j++) args[j] = luaL_checkinteger(L, j + 1);
    mlua_check_options(L, opts, type, known);
    cJSON *cfg = cJSON_CreateObject();
    if (!cfg) return luaL_error(L, "%s: out of memory", type);
    cJSON_AddStringToObject(cfg, "type", type);
    for (int j = 0; j < npos; j++) cJSON_AddNumberToObject(cfg, positional[j], (double)args[j]);
    for (int i = 0; i < n && lua_istable(L, opts); i++) {
        if (lua_getfield(L, opts, known[i]) == LUA_TNIL) {
            lua_pop(L, 1);
            continue;
        }
        ml_module *m = mlua_to_module(L, -1);
        char err[256];
        cJSON *v = m && ml_options_find(t, known[i])->type == ML_OPT_CONFIG ? ml_module_config(m)
                                                                           : mlua_to_json(L, -1, type, err, sizeof err);
        lua_pop(L, 1);
        if (!v) {
            cJSON_Delete(cfg);
            if (m) return mlua_error(L);
            return luaL_error(L, "%s", err);
        }
        cJSON_AddItemToObject(cfg, known[i], v);
    }
    ml_module *m = kind->from_config(cfg); /* unknown keys were refused above */
    cJSON_Delete(cfg);
    return mlua_push_module(L, m);
}

static int l_router(lua_State *L) {
    static const char *const pos[] = {"dim", "experts"};
    return build_from_options(L, "Router", pos, 2);
}

/* ml.nn.TokenMoE(dim, [{experts = 8, k = 2, ...}]) and ml.nn.SmoothMoE(dim, [{experts, expert}]) */
static int l_token_moe(lua_State *L) {
    static const char *const pos[] = {"dim"};
    return build_from_options(L, "TokenMoE", pos, 1);
}

static int l_smooth_moe(lua_State *L) {
    static const char *const pos[] = {"dim"};
    return build_from_options(L, "SmoothMoE", pos, 1);
}

/* ml.nn.MoEConv2d(in, out, k, [{...}]) and ml.nn.MaskedConv2d(in, out, k, [{...}]) */
static int l_moe_conv2d(lua_State *L) {
    static const char *const pos[] = {"in", "out", "kernel"};
    return build_from_options(L, "MoEConv2d", pos, 3);
}

static int l_masked_conv2d(lua_State *L) {
    static const char *const pos[] = {"in", "out", "kernel"};
    return build_from_options(L, "MaskedConv2d", pos, 3);
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


/* ml.nn.options(type | model) -> list of {key, type, default, help, choices} for a module type with an option
 * table, or of {key, help, family} for a model of the zoo */
static int l_options(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const ml_module_kind *kind = ml_module_kind_find(name);
    if (kind && kind->options) {
        const ml_options *t = kind->options;
        lua_createtable(L, t->n, 0);
        for (int i = 0; i < t->n; i++) {
            const ml_option *o = &t->list[i];
            char def[96];
            ml_option_default_text(o, def, sizeof def);
            lua_createtable(L, 0, 5);
            lua_pushstring(L, o->key);
            lua_setfield(L, -2, "key");
            lua_pushstring(L, ml_option_type_name(o->type));
            lua_setfield(L, -2, "type");
            lua_pushstring(L, def);
            lua_setfield(L, -2, "default");
            lua_pushstring(L, o->help);
            lua_setfield(L, -2, "help");
            if (o->choices) {
                lua_pushstring(L, o->choices);
                lua_setfield(L, -2, "choices");
            }
            lua_rawseti(L, -2, i + 1);
        }
        return 1;
    }
    const ml_zoo_option *zo[64];
    int n = ml_zoo_options(name, zo, 64);
    if (n == 0)
        return luaL_error(L, "options: '%s' is neither a module type with options (TokenMoE, SmoothMoE, Router, "
                             "MoEConv2d, MaskedConv2d) nor a model of the zoo", name);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n && i < 64; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, zo[i]->key);
        lua_setfield(L, -2, "key");
        lua_pushstring(L, zo[i]->help);
        lua_setfield(L, -2, "help");
        if (zo[i]->family) {
            lua_pushstring(L, zo[i]->family);
            lua_setfield(L, -2, "family");
        }
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static const luaL_Reg functions[] = {
    {"Linear", l_linear},     {"ReLU", l_relu},         {"GELU", l_gelu},         {"Tanh", l_tanh},
    {"Sigmoid", l_sigmoid},   {"Softplus", l_softplus}, {"Identity", l_identity}, {"Flatten", l_flatten},
    {"Normalize", l_normalize}, {"Sequential", l_sequential}, {"Lambda", l_lambda},
    {"from_config", l_from_config}, {"Conv2d", l_conv2d}, {"BatchNorm2d", l_batchnorm2d},
    {"MaxPool2d", l_maxpool2d}, {"AvgPool2d", l_avgpool2d}, {"GlobalAvgPool", l_gap}, {"Dropout", l_dropout},
    {"LayerNorm", l_layernorm}, {"MultiHeadSelfAttention", l_attention}, {"MLP", l_mlp},
    {"TransformerBlock", l_block}, {"PatchEmbed", l_patch_embed}, {"BasicBlock", l_basic_block},
    {"Router", l_router}, {"TokenMoE", l_token_moe}, {"SmoothMoE", l_smooth_moe}, {"MoEConv2d", l_moe_conv2d},
    {"MaskedConv2d", l_masked_conv2d}, {"options", l_options}, {NULL, NULL}};

void mlua_open_nn_layers(lua_State *L) {
    mlua_subtable(L, "nn");
    luaL_setfuncs(L, functions, 0);
    lua_pop(L, 1);
}
