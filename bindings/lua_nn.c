/* lua_nn.c -- modules as Lua objects (the Module kind): the userdata, calling
 * and forward (traces, forced routing, hooks), parameters, train/eval,
 * state dicts, structure, configs and profiles. The constructors of ml.nn
 * are in lua_nn_layers.c and lua_nn_zoo.c. */
#include <stdlib.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "areas.h"
#include "lua_kind.h"
#include "lua_nn.h"
#include "lua_trace.h"
#include "lua_util.h"

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

/* m:forward(x, [{trace = false, trace_grad = false, aux = false, hook = fn(path, module, input, output),
 *   routing = trace, force = {[layer] = e}, silence = {[layer] = e | {e...}}}]) -> y, trace|nil, aux|nil */
static int m_forward(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    ml_tensor *x = mlua_check_tensor(L, 2);
    static const char *const known[] = {"trace", "trace_grad", "aux", "hook", "routing", "force", "silence", NULL};
    mlua_check_options(L, 3, "forward", known);
    ml_ctx ctx = {0};
    ctx.trace_grad = mlua_opt_bool(L, 3, "trace_grad", false);
    ctx.trace = mlua_opt_bool(L, 3, "trace", false) || ctx.trace_grad;
    ctx.want_aux = mlua_opt_bool(L, 3, "aux", false);
    mlua_routing_options(L, 3, &ctx, "forward");
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
    if (ctx.trace) mlua_push_trace(L, ml_ctx_take_trace(&ctx));
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

static int m_index(lua_State *L) {
    mlua_check_module(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) return m_get(L);
    mlua_kind_methods(L, MLUA_MODULE);
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

void mlua_open_nn(lua_State *L) {
    /* the tree view of a module is the Lua library's (lua/moelab/nn.lua, through ml.extend) */
    const luaL_Reg meta[] = {{"__gc", m_gc}, {"__call", m_call}, {"__index", m_index}, {"__tostring", m_describe},
                             {NULL, NULL}};
    mlua_new_kind(L, MLUA_MODULE, "Module", module_methods, meta);
}

/* Adds methods to the Module method table (for other binding areas). */
void mlua_module_methods(lua_State *L, const luaL_Reg *methods) { mlua_kind_add_methods(L, MLUA_MODULE, methods); }
