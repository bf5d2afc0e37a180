/* lua_autograd.c -- requires_grad, backward, grad, no_grad. */
#include "lua_util.h"
#include "areas.h"

/* t:requires_grad([on = true]) -> t */
static int l_requires_grad(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    bool on = lua_isnoneornil(L, 2) ? true : lua_toboolean(L, 2);
    if (ml_requires_grad_(t, on)) return mlua_error(L);
    lua_settop(L, 1);
    return 1;
}

static int l_needs_grad(lua_State *L) {
    lua_pushboolean(L, mlua_check_tensor(L, 1)->requires_grad);
    return 1;
}

static int l_is_leaf(lua_State *L) {
    lua_pushboolean(L, mlua_check_tensor(L, 1)->grad_fn == NULL);
    return 1;
}

static int l_grad_fn(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    if (t->grad_fn) lua_pushstring(L, t->grad_fn->op);
    else lua_pushnil(L);
    return 1;
}

/* loss:backward([grad], [{retain_graph = false}]) */
static int l_backward(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    ml_tensor *g = mlua_to_tensor(L, 2);
    int oi = g ? 3 : 2;
    static const char *const known[] = {"retain_graph", NULL};
    if (lua_istable(L, oi)) mlua_check_options(L, oi, "backward", known);
    bool retain = mlua_opt_bool(L, oi, "retain_graph", false);
    if (ml_backward(t, g, retain)) return mlua_error(L);
    return 0;
}

static int l_zero_grad(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    ml_zero_grad(t);
    lua_settop(L, 1);
    return 1;
}

static int l_detach(lua_State *L) { return mlua_push_tensor(L, ml_detach(mlua_check_tensor(L, 1))); }

/* ml.grad(output, inputs, [{grad = g, retain_graph = false}]) -> gradients
 * (inputs: one tensor or a list; returns the same shape of answer). Only the
 * part of the graph that leads to the inputs is computed; .grad is untouched. */
static int l_grad(lua_State *L) {
    ml_tensor *out = mlua_check_tensor(L, 1);
    bool single = mlua_to_tensor(L, 2) != NULL;
    int n = single ? 1 : (luaL_checktype(L, 2, LUA_TTABLE), (int)lua_rawlen(L, 2));
    if (n < 1 || n > 256) luaL_error(L, "grad: expected 1 to 256 input tensors, got %d", n);
    ml_tensor *ins[256], *gs[256];
    for (int i = 0; i < n; i++) {
        if (single) {
            ins[i] = mlua_to_tensor(L, 2);
        } else {
            lua_rawgeti(L, 2, i + 1);
            ins[i] = mlua_to_tensor(L, -1);
            if (!ins[i]) luaL_error(L, "grad: input %d is a %s, not a tensor", i + 1, luaL_typename(L, -1));
            lua_pop(L, 1);
        }
    }
    static const char *const known[] = {"grad", "retain_graph", NULL};
    mlua_check_options(L, 3, "grad", known);
    ml_tensor *g = NULL;
    if (lua_istable(L, 3)) {
        lua_getfield(L, 3, "grad");
        g = lua_isnil(L, -1) ? NULL : mlua_check_tensor(L, -1);
        lua_pop(L, 1); /* the options table keeps it alive */
    }
    bool retain = mlua_opt_bool(L, 3, "retain_graph", false);
    if (ml_grad(out, g, n, ins, gs, retain)) return mlua_error(L);
    if (single) return mlua_push_tensor(L, gs[0]);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        mlua_push_tensor(L, gs[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* ml.no_grad(fn, ...) -> fn(...) with recording off; errors restore the mode. */
static int grad_scope(lua_State *L, bool enabled) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    bool old = ml_grad_set(enabled);
    int nargs = lua_gettop(L) - 1;
    int rc = lua_pcall(L, nargs, LUA_MULTRET, 0);
    ml_grad_set(old);
    if (rc != LUA_OK) return lua_error(L);
    return lua_gettop(L);
}
static int l_no_grad(lua_State *L) { return grad_scope(L, false); }
static int l_enable_grad(lua_State *L) { return grad_scope(L, true); }

static int l_set_grad_enabled(lua_State *L) {
    lua_pushboolean(L, ml_grad_set(lua_toboolean(L, 1)));
    return 1;
}
static int l_is_grad_enabled(lua_State *L) {
    lua_pushboolean(L, ml_grad_enabled());
    return 1;
}

static const luaL_Reg methods[] = {{"requires_grad", l_requires_grad}, {"needs_grad", l_needs_grad},
                                   {"is_leaf", l_is_leaf},             {"grad_fn", l_grad_fn},
                                   {"backward", l_backward},           {"zero_grad", l_zero_grad},
                                   {"detach", l_detach},               {NULL, NULL}};
static const luaL_Reg functions[] = {{"grad", l_grad},
                                     {"no_grad", l_no_grad},
                                     {"enable_grad", l_enable_grad},
                                     {"set_grad_enabled", l_set_grad_enabled},
                                     {"is_grad_enabled", l_is_grad_enabled},
                                     {NULL, NULL}};

void mlua_open_autograd(lua_State *L) {
    mlua_register(L, methods, true);
    mlua_register(L, functions, false);
}
