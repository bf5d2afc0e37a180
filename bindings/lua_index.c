/* lua_index.c -- index_select, gather, scatter_add, one_hot, topk (1-based indices). */
#include "lua_util.h"
#include "areas.h"

static int l_index_select(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    int d = mlua_check_dim(L, 2, "index_select");
    ml_tensor *idx = mlua_index_to_core(L, 3, "index_select");
    ml_tensor *out = ml_index_select(x, d, idx);
    ml_release(idx);
    return mlua_push_tensor(L, out);
}

static int l_gather(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    int d = mlua_check_dim(L, 2, "gather");
    ml_tensor *idx = mlua_index_to_core(L, 3, "gather");
    ml_tensor *out = ml_gather(x, d, idx);
    ml_release(idx);
    return mlua_push_tensor(L, out);
}

static int l_scatter_add(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    int d = mlua_check_dim(L, 2, "scatter_add");
    ml_tensor *src = mlua_check_tensor(L, 4);
    ml_tensor *idx = mlua_index_to_core(L, 3, "scatter_add");
    ml_tensor *out = ml_scatter_add(x, d, idx, src);
    ml_release(idx);
    return mlua_push_tensor(L, out);
}

static int l_one_hot(lua_State *L) {
    lua_Integer K = luaL_checkinteger(L, 2);
    ml_tensor *idx = mlua_index_to_core(L, 1, "one_hot");
    ml_tensor *out = ml_one_hot(idx, K);
    ml_release(idx);
    return mlua_push_tensor(L, out);
}

/* x:topk(k, [dim = -1], [{largest = true, sorted = true, random_ties = false}]) -> values, indices */
static int l_topk(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    lua_Integer k = luaL_checkinteger(L, 2);
    int oi = lua_istable(L, 3) ? 3 : 4;
    int d = oi == 3 ? -1 : mlua_opt_dim(L, 3, "topk", -1);
    static const char *const known[] = {"largest", "sorted", "random_ties", NULL};
    mlua_check_options(L, oi, "topk", known);
    bool largest = mlua_opt_bool(L, oi, "largest", true), sorted = mlua_opt_bool(L, oi, "sorted", true);
    bool rnd = mlua_opt_bool(L, oi, "random_ties", false);
    ml_tensor *v, *i;
    if (ml_topk(x, k, d, largest, sorted, rnd, &v, &i)) return mlua_error(L);
    mlua_push_tensor(L, v);
    ml_tensor *i1 = mlua_index_from_core(i);
    ml_release(i);
    mlua_push_tensor(L, i1);
    return 2;
}

static const luaL_Reg methods[] = {{"index_select", l_index_select}, {"gather", l_gather},
                                   {"scatter_add", l_scatter_add},   {"one_hot", l_one_hot},
                                   {"topk", l_topk},                 {NULL, NULL}};

void mlua_open_index(lua_State *L) { mlua_register(L, methods, true); }
