/* lua_moe.c -- ml.moe: routing, dispatch and auxiliary losses as functions, the
 * building blocks of the MoE layers (for tests, and for users writing their own). */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>

#include "lua_util.h"
#include "nn/moe/dispatch.h"
#include "nn/moe/moe.h"
#include "nn/moe/route.h"
#include "areas.h"

/* ml.moe.route(probs, {k = TokenMoE's default, capacity_factor = 0 (none), round_capacity = false,
 *   batch_priority = false, random_ties = false}) -> {experts, kept, load, token, capacity, offsets}.
 * k's default is read from TokenMoE's option table, so the two never disagree; a bare
 * routing call has no capacity and breaks ties by index (TokenMoE in eval mode), unless asked. */
static int l_route(lua_State *L) {
    ml_tensor *p = mlua_check_tensor(L, 1);
    static const char *const known[] = {"k", "capacity_factor", "round_capacity", "batch_priority", "random_ties", NULL};
    mlua_check_options(L, 2, "route", known);
    ml_route_opts o = {0};
    o.k = (int)mlua_opt_integer(L, 2, "k", ml_options_find(&ml_token_moe_options, "k")->def);
    o.capacity_factor = mlua_opt_number(L, 2, "capacity_factor", 0);
    o.round_capacity = mlua_opt_bool(L, 2, "round_capacity", false);
    o.batch_priority = mlua_opt_bool(L, 2, "batch_priority", false);
    o.random_ties = mlua_opt_bool(L, 2, "random_ties", false);
    ml_routing r;
    if (ml_route(p, &o, &r)) return mlua_error(L);
    lua_createtable(L, 0, 6);
    mlua_push_tensor(L, mlua_index_from_core(r.experts));
    lua_setfield(L, -2, "experts");
    mlua_push_tensor(L, ml_retain(r.kept));
    lua_setfield(L, -2, "kept");
    mlua_push_tensor(L, ml_retain(r.load));
    lua_setfield(L, -2, "load");
    mlua_push_tensor(L, mlua_index_from_core(r.token));
    lua_setfield(L, -2, "token");
    lua_pushinteger(L, r.capacity);
    lua_setfield(L, -2, "capacity");
    int64_t n_off = r.E + 1;
    ml_tensor *off = ml_from_data(ML_I64, 1, &n_off, r.offset);
    ml_tensor *off1 = off ? mlua_index_from_core(off) : NULL; /* first assignment of each expert, 1-based */
    ml_release(off);
    ml_routing_free(&r);
    if (!off1) return mlua_error(L);
    lua_createtable(L, (int)n_off, 0);
    for (int64_t e = 0; e < n_off; e++) {
        lua_pushinteger(L, ml_i64(off1)[e]);
        lua_rawseti(L, -2, (int)e + 1);
    }
    ml_release(off1);
    lua_setfield(L, -2, "offsets");
    return 1;
}

static int l_gather(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    ml_tensor *ids = mlua_index_to_core(L, 2, "moe.gather");
    ml_tensor *y = ml_moe_gather(x, ids);
    ml_release(ids);
    return mlua_push_tensor(L, y);
}

static int l_combine(lua_State *L) {
    ml_tensor *y = mlua_check_tensor(L, 1), *w = mlua_check_tensor(L, 2);
    lua_Integer T = luaL_checkinteger(L, 4);
    ml_tensor *ids = mlua_index_to_core(L, 3, "moe.combine");
    ml_tensor *out = ml_moe_combine(y, w, ids, T);
    ml_release(ids);
    return mlua_push_tensor(L, out);
}

/* ml.moe.place_channels({part_1, ...}, {ids_1, ...}, gates_or_nil, N, [C, {start_1, ...}]) (starts 1-based) */
static int l_place_channels(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    luaL_checktype(L, 2, LUA_TTABLE);
    ml_tensor *gates = lua_isnoneornil(L, 3) ? NULL : mlua_check_tensor(L, 3);
    lua_Integer N = luaL_checkinteger(L, 4);
    int E = (int)lua_rawlen(L, 2);
    if (E < 1 || E > 16) luaL_error(L, "place_channels: expected 1 to 16 experts, got %d", E);
    ml_tensor *parts[16] = {0}, *ids[16] = {0};
    for (int e = 0; e < E; e++) {
        lua_rawgeti(L, 1, e + 1);
        parts[e] = mlua_to_tensor(L, -1);
        lua_pop(L, 1);
    }
    for (int e = 0; e < E; e++) {
        lua_rawgeti(L, 2, e + 1);
        ids[e] = mlua_index_to_core(L, lua_gettop(L), "moe.place_channels");
        lua_pop(L, 1);
    }
    int64_t start[16];
    lua_Integer C = luaL_optinteger(L, 5, 0);
    bool has_start = lua_istable(L, 6);
    for (int e = 0; has_start && e < E; e++) {
        lua_rawgeti(L, 6, e + 1);
        start[e] = luaL_checkinteger(L, -1) - 1;
        lua_pop(L, 1);
    }
    ml_tensor *out = ml_moe_place_channels(E, parts, ids, gates, N, C, has_start ? start : NULL);
    for (int e = 0; e < E; e++) ml_release(ids[e]);
    return mlua_push_tensor(L, out);
}

/* ml.moe.mask_channels(full, first, c, [gates]): first = each sample's first
 * channel (1-based; a table or an int64 tensor), c channels per block */
static int l_mask_channels(lua_State *L) {
    ml_tensor *full = mlua_check_tensor(L, 1);
    ml_tensor *first = mlua_index_to_core(L, 2, "moe.mask_channels");
    lua_Integer c = luaL_checkinteger(L, 3);
    ml_tensor *gates = lua_isnoneornil(L, 4) ? NULL : mlua_check_tensor(L, 4);
    ml_tensor *out = NULL;
    if (first->ndim != 1 || full->ndim < 1 || first->shape[0] != full->shape[0])
        ml_fail("moe.mask_channels: expected one first channel per sample (%" PRId64 "), got %s",
                full->ndim ? full->shape[0] : 0, ML_SHAPE_STR(first));
    else
        out = ml_moe_mask_channels(full, ml_i64(first), c, gates);
    ml_release(first);
    return mlua_push_tensor(L, out);
}

static int l_importance(lua_State *L) { return mlua_push_tensor(L, ml_aux_importance(mlua_check_tensor(L, 1))); }
static int l_load(lua_State *L) {
    ml_tensor *clean = mlua_check_tensor(L, 1), *noisy = mlua_check_tensor(L, 2);
    return mlua_push_tensor(L, ml_aux_load(clean, noisy, (int)luaL_checkinteger(L, 3), luaL_checknumber(L, 4)));
}
static int l_switch(lua_State *L) {
    ml_tensor *p = mlua_check_tensor(L, 1);
    ml_tensor *ex = mlua_index_to_core(L, 2, "moe.switch_loss");
    ml_tensor *out = ml_aux_switch(p, ex);
    ml_release(ex);
    return mlua_push_tensor(L, out);
}
static int l_zloss(lua_State *L) { return mlua_push_tensor(L, ml_aux_zloss(mlua_check_tensor(L, 1))); }
static int l_cv2(lua_State *L) { return mlua_push_tensor(L, ml_cv2(mlua_check_tensor(L, 1))); }

static int l_capacity(lua_State *L) {
    lua_pushinteger(L, ml_route_capacity(luaL_checkinteger(L, 1), luaL_checkinteger(L, 2), (int)luaL_checkinteger(L, 3),
                                         luaL_checknumber(L, 4), lua_toboolean(L, 5)));
    return 1;
}

static const luaL_Reg functions[] = {
    {"route", l_route},           {"gather", l_gather},         {"combine", l_combine},
    {"place_channels", l_place_channels}, {"importance_loss", l_importance}, {"load_loss", l_load},
    {"switch_loss", l_switch},    {"z_loss", l_zloss},          {"cv2", l_cv2},
    {"capacity", l_capacity},     {"mask_channels", l_mask_channels}, {NULL, NULL}};

void mlua_open_moe(lua_State *L) {
    mlua_subtable(L, "moe");
    luaL_setfuncs(L, functions, 0);
    lua_pop(L, 1);
}
