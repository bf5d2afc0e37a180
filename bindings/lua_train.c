/* lua_train.c -- ml.optim: optimizers as Lua objects; gradient clipping. */
#include <stdlib.h>
#include <string.h>

#include "lua_nn.h"
#include "lua_util.h"
#include "train/optim.h"
#include "areas.h"

#define MLUA_OPTIM "moelab.Optimizer"

typedef struct {
    ml_optim *o;
} optim_ud;

/* One {name, tensor} entry per trainable parameter of a module, in the
 * module's stable order. */
typedef struct {
    lua_State *L;
    int list, n;
} param_list;

static int add_param_cb(void *ud, const char *path, ml_param *p, ml_module *owner) {
    param_list *w = ud;
    lua_createtable(w->L, 0, 2);
    lua_pushstring(w->L, path);
    lua_setfield(w->L, -2, "name");
    mlua_push_tensor(w->L, ml_retain(p->t));
    lua_setfield(w->L, -2, "tensor");
    lua_rawseti(w->L, w->list, ++w->n);
    return 0;
}

/* Collects parameters from a module, a {name = tensor} table or a list of
 * tensors into a Lua list of {name, tensor} sorted stably; leaves it on the stack. */
static int collect_params(lua_State *L, int idx, const char *fn) {
    idx = lua_absindex(L, idx);
    ml_module *m = mlua_to_module(L, idx);
    if (m) {
        lua_newtable(L);
        param_list w = {L, lua_gettop(L), 0};
        ml_module_visit_params(m, false, add_param_cb, &w);
        return w.n;
    }
    if (!lua_istable(L, idx)) luaL_error(L, "%s: expected a model, a table of tensors or a list of tensors", fn);
    lua_newtable(L);
    int out = lua_gettop(L), n = 0;
    if (lua_rawlen(L, idx) > 0) {
        for (int i = 1; i <= (int)lua_rawlen(L, idx); i++) {
            lua_rawgeti(L, idx, i);
            if (!mlua_to_tensor(L, -1)) luaL_error(L, "%s: element %d is a %s, not a tensor", fn, i, luaL_typename(L, -1));
            lua_createtable(L, 0, 2);
            lua_pushfstring(L, "%d", i);
            lua_setfield(L, -2, "name");
            lua_insert(L, -2);
            lua_setfield(L, -2, "tensor");
            lua_rawseti(L, out, ++n);
        }
        return n;
    }
    /* named table: sort the names for a stable order */
    lua_newtable(L);
    int names = lua_gettop(L), k = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (lua_type(L, -2) != LUA_TSTRING || !mlua_to_tensor(L, -1))
            luaL_error(L, "%s: expected name = tensor entries", fn);
        lua_pop(L, 1);
        lua_pushvalue(L, -1);
        lua_rawseti(L, names, ++k);
    }
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_pushvalue(L, names);
    lua_call(L, 1, 0);
    lua_pop(L, 1);
    for (int i = 1; i <= k; i++) {
        lua_createtable(L, 0, 2);
        lua_rawgeti(L, names, i);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, "name");
        lua_gettable(L, idx);
        lua_setfield(L, -2, "tensor");
        lua_rawseti(L, out, ++n);
    }
    lua_pop(L, 1);
    return n;
}

static int make_optim(lua_State *L, ml_optim_kind kind, const char *fn) {
    static const char *const known[] = {"lr", "momentum", "dampening", "nesterov", "weight_decay",
                                        "betas", "beta1", "beta2", "eps", NULL};
    mlua_check_options(L, 2, fn, known);
    int n = collect_params(L, 1, fn);
    int list = lua_gettop(L);
    if (n == 0) luaL_error(L, "%s: no parameters to optimise", fn);
    ml_optim_opts o = {0};
    o.kind = kind;
    o.lr = mlua_opt_number(L, 2, "lr", kind == ML_OPT_SGD ? 0.01 : 1e-3);
    o.momentum = mlua_opt_number(L, 2, "momentum", 0);
    o.dampening = mlua_opt_number(L, 2, "dampening", 0);
    o.nesterov = mlua_opt_bool(L, 2, "nesterov", false);
    o.weight_decay = mlua_opt_number(L, 2, "weight_decay", kind == ML_OPT_ADAMW ? 0.01 : 0);
    o.beta1 = mlua_opt_number(L, 2, "beta1", 0.9);
    o.beta2 = mlua_opt_number(L, 2, "beta2", 0.999);
    if (lua_istable(L, 2) && lua_getfield(L, 2, "betas") == LUA_TTABLE) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        o.beta1 = luaL_checknumber(L, -2);
        o.beta2 = luaL_checknumber(L, -1);
        lua_pop(L, 2);
    }
    if (lua_istable(L, 2)) lua_pop(L, 1);
    o.eps = mlua_opt_number(L, 2, "eps", 1e-8);
    ml_tensor **ps = lua_newuserdatauv(L, sizeof *ps * (size_t)n, 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, list, i + 1);
        lua_getfield(L, -1, "tensor");
        ps[i] = mlua_to_tensor(L, -1);
        lua_pop(L, 2);
    }
    ml_optim *opt = ml_optim_new(&o, n, ps);
    if (!opt) return mlua_error(L);
    optim_ud *ud = lua_newuserdatauv(L, sizeof *ud, 1);
    ud->o = opt;
    luaL_setmetatable(L, MLUA_OPTIM);
    lua_pushvalue(L, list);
    lua_setiuservalue(L, -2, 1); /* keep the {name, tensor} list */
    return 1;
}

static int l_sgd(lua_State *L) { return make_optim(L, ML_OPT_SGD, "sgd"); }
static int l_adam(lua_State *L) { return make_optim(L, ML_OPT_ADAM, "adam"); }
static int l_adamw(lua_State *L) { return make_optim(L, ML_OPT_ADAMW, "adamw"); }

static ml_optim *check_optim(lua_State *L, int idx) {
    optim_ud *ud = luaL_checkudata(L, idx, MLUA_OPTIM);
    return ud->o;
}

static int o_gc(lua_State *L) {
    optim_ud *ud = luaL_checkudata(L, 1, MLUA_OPTIM);
    ml_optim_free(ud->o);
    ud->o = NULL;
    return 0;
}

static int o_step(lua_State *L) {
    if (ml_optim_step(check_optim(L, 1))) return mlua_error(L);
    return 0;
}

static int o_zero_grad(lua_State *L) {
    ml_optim_zero_grad(check_optim(L, 1));
    return 0;
}

/* opt:lr() -> current; opt:lr(v) sets it */
static int o_lr(lua_State *L) {
    ml_optim *o = check_optim(L, 1);
    if (!lua_isnoneornil(L, 2)) {
        double lr = luaL_checknumber(L, 2);
        if (!(lr >= 0)) luaL_error(L, "lr: learning rate must be >= 0, got %g", lr);
        ml_optim_set_lr(o, lr);
    }
    lua_pushnumber(L, ml_optim_get_lr(o));
    return 1;
}

static int o_steps(lua_State *L) {
    lua_pushinteger(L, ml_optim_steps(check_optim(L, 1)));
    return 1;
}

static int o_params(lua_State *L) {
    check_optim(L, 1);
    lua_getiuservalue(L, 1, 1);
    return 1;
}

/* opt:state_dict() -> {["<name>.s1"] = tensor, ["<name>.s2"] = ..., }, steps */
static int o_state_dict(lua_State *L) {
    ml_optim *o = check_optim(L, 1);
    lua_getiuservalue(L, 1, 1);
    int list = lua_gettop(L);
    lua_newtable(L);
    int result = lua_gettop(L);
    for (int i = 0; i < ml_optim_num_params(o); i++) {
        ml_tensor *s[2];
        ml_optim_state(o, i, &s[0], &s[1]);
        lua_rawgeti(L, list, i + 1);
        lua_getfield(L, -1, "name");
        const char *name = lua_tostring(L, -1);
        for (int k = 0; k < 2; k++) {
            if (!s[k]) continue;
            lua_pushfstring(L, "%s.s%d", name, k + 1);
            mlua_push_tensor(L, ml_clone(s[k]));
            lua_settable(L, result);
        }
        lua_settop(L, result);
    }
    lua_pushinteger(L, ml_optim_steps(o));
    return 2;
}

static int o_load_state_dict(lua_State *L) {
    ml_optim *o = check_optim(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_Integer steps = luaL_checkinteger(L, 3);
    lua_getiuservalue(L, 1, 1);
    int list = lua_gettop(L);
    for (int i = 0; i < ml_optim_num_params(o); i++) {
        lua_rawgeti(L, list, i + 1);
        lua_getfield(L, -1, "name");
        const char *name = lua_tostring(L, -1);
        lua_pushfstring(L, "%s.s1", name);
        lua_gettable(L, 2);
        lua_pushfstring(L, "%s.s2", name);
        lua_gettable(L, 2);
        ml_tensor *s1 = mlua_to_tensor(L, -2), *s2 = mlua_to_tensor(L, -1);
        if (ml_optim_set_state(o, i, s1, s2, steps)) return mlua_error(L);
        lua_pop(L, 4);
    }
    return 0;
}

static int o_tostring(lua_State *L) {
    ml_optim *o = check_optim(L, 1);
    lua_pushfstring(L, "Optimizer(%d parameters, lr %f, %d steps)", ml_optim_num_params(o), ml_optim_get_lr(o),
                    (int)ml_optim_steps(o));
    return 1;
}

/* ml.clip_grad_norm(params_or_model, max_norm) -> norm before clipping */
static int l_clip_grad_norm(lua_State *L) {
    double max_norm = luaL_checknumber(L, 2);
    int n = collect_params(L, 1, "clip_grad_norm");
    int list = lua_gettop(L);
    ml_tensor **ps = lua_newuserdatauv(L, sizeof *ps * (size_t)(n ? n : 1), 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, list, i + 1);
        lua_getfield(L, -1, "tensor");
        ps[i] = mlua_to_tensor(L, -1);
        lua_pop(L, 2);
    }
    double norm = ml_clip_grad_norm(n, ps, max_norm);
    if (norm < 0) return mlua_error(L);
    lua_pushnumber(L, norm);
    return 1;
}

static const luaL_Reg optim_methods[] = {{"step", o_step},           {"zero_grad", o_zero_grad},
                                         {"lr", o_lr},               {"steps", o_steps},
                                         {"params", o_params},       {"state_dict", o_state_dict},
                                         {"load_state_dict", o_load_state_dict}, {NULL, NULL}};

void mlua_open_train(lua_State *L) {
    luaL_newmetatable(L, MLUA_OPTIM);
    lua_newtable(L);
    luaL_setfuncs(L, optim_methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, o_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, o_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    mlua_subtable(L, "optim");
    const luaL_Reg f[] = {{"sgd", l_sgd}, {"adam", l_adam}, {"adamw", l_adamw}, {NULL, NULL}};
    luaL_setfuncs(L, f, 0);
    lua_pop(L, 1);
    const luaL_Reg g[] = {{"clip_grad_norm", l_clip_grad_norm}, {NULL, NULL}};
    luaL_setfuncs(L, g, 0);
}

/* For other binding files (checkpoints): the optimizer at idx, or a Lua error. */
ml_optim *mlua_check_optim(lua_State *L, int idx) { return check_optim(L, idx); }
