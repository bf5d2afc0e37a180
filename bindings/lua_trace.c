/* lua_trace.c -- routing traces (core/nn/trace.h) as Lua values: a trace is a
 * userdata holding the C trace; indexing it by position or layer name gives
 * that layer as a table with 1-based expert ids (built once, then cached).
 * ml.trace.new builds one from Lua tables, ml.trace.load reads one from a
 * file; t:save writes it; a trace goes back to C as a forced routing
 * (model:forward(x, {routing = t})). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "areas.h"
#include "lua_kind.h"
#include "lua_trace.h"
#include "lua_util.h"

typedef struct {
    ml_trace *t;
} trace_ud;

int mlua_push_trace(lua_State *L, ml_trace *t) {
    if (!t) return mlua_error(L);
    trace_ud *ud = lua_newuserdatauv(L, sizeof *ud, 1);
    ud->t = t;
    luaL_setmetatable(L, MLUA_TRACE);
    lua_newtable(L); /* the cache of layer tables, by position */
    lua_setiuservalue(L, -2, 1);
    return 1;
}

ml_trace *mlua_to_trace(lua_State *L, int idx) {
    trace_ud *ud = luaL_testudata(L, idx, MLUA_TRACE);
    return ud ? ud->t : NULL;
}

ml_trace *mlua_check_trace(lua_State *L, int idx) {
    ml_trace *t = mlua_to_trace(L, idx);
    if (!t) luaL_argerror(L, idx, lua_pushfstring(L, "routing trace expected, got %s", luaL_typename(L, idx)));
    return t;
}

static int t_gc(lua_State *L) {
    trace_ud *ud = luaL_checkudata(L, 1, MLUA_TRACE);
    ml_trace_free(ud->t);
    ud->t = NULL;
    return 0;
}

/* ------------------------------------------------------------ layers as tables */
static void set_tensor(lua_State *L, const char *key, ml_tensor *t) {
    if (!t) return;
    mlua_push_tensor(L, ml_retain(t));
    lua_setfield(L, -2, key);
}

/* Pushes layer i (0-based) of the trace at idx, from the cache or built. */
static void push_layer(lua_State *L, int idx, int i) {
    idx = lua_absindex(L, idx);
    const ml_trace_layer *l = &mlua_check_trace(L, idx)->layers[i];
    lua_getiuservalue(L, idx, 1);
    if (lua_rawgeti(L, -1, i + 1) == LUA_TTABLE) {
        lua_remove(L, -2);
        return;
    }
    lua_pop(L, 1);
    lua_createtable(L, 0, 16);
    lua_pushstring(L, l->name);
    lua_setfield(L, -2, "layer");
    lua_pushstring(L, ml_trace_kind_name(l->kind));
    lua_setfield(L, -2, "kind");
    lua_pushinteger(L, l->T);
    lua_setfield(L, -2, "T");
    lua_pushinteger(L, l->E);
    lua_setfield(L, -2, "E");
    lua_pushinteger(L, l->K);
    lua_setfield(L, -2, "K");
    lua_pushinteger(L, l->E);
    lua_setfield(L, -2, "num_experts");
    lua_pushinteger(L, ml_trace_dropped(l));
    lua_setfield(L, -2, "dropped");
    mlua_push_tensor(L, mlua_index_from_core(l->experts));
    lua_setfield(L, -2, "experts");
    set_tensor(L, "gates", l->gates);
    set_tensor(L, "probs", l->probs);
    set_tensor(L, "logits", l->logits);
    set_tensor(L, "kept", l->kept);
    set_tensor(L, "load", l->load);
    lua_newtable(L);
    for (int k = 0; k < ML_AUX_COUNT; k++)
        if (!isnan(l->aux[k])) {
            lua_pushnumber(L, l->aux[k]);
            lua_setfield(L, -2, ml_aux_names[k]);
        }
    lua_setfield(L, -2, "aux");
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, i + 1);
    lua_remove(L, -2);
}

/* The position (0-based) of key k at idx (a 1-based number or a layer name), or -1. */
static int layer_position(lua_State *L, const ml_trace *t, int k) {
    if (lua_type(L, k) == LUA_TNUMBER) {
        lua_Integer i = lua_tointeger(L, k);
        return i >= 1 && i <= t->n ? (int)i - 1 : -1;
    }
    return lua_type(L, k) == LUA_TSTRING ? ml_trace_index(t, lua_tostring(L, k)) : -1;
}

/* t[i] or t["layer"]: the layer table (nil when absent); else a method. */
static int t_index(lua_State *L) {
    ml_trace *t = mlua_check_trace(L, 1);
    int i = layer_position(L, t, 2);
    if (i >= 0) {
        push_layer(L, 1, i);
        return 1;
    }
    if (lua_type(L, 2) != LUA_TSTRING) return 0;
    mlua_kind_methods(L, MLUA_TRACE);
    lua_pushvalue(L, 2);
    lua_rawget(L, -2);
    return 1;
}

static int t_len(lua_State *L) {
    lua_pushinteger(L, mlua_check_trace(L, 1)->n);
    return 1;
}

/* ------------------------------------------------------------ methods (also ml.trace.<name>) */
int mlua_check_trace_layer(lua_State *L, const ml_trace *t, int idx, const char *fn) {
    int i = layer_position(L, t, idx);
    if (i >= 0) return i;
    const char *key = luaL_tolstring(L, idx, NULL);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int j = 0; j < t->n && j < 20; j++) {
        if (j) luaL_addstring(&b, ", ");
        luaL_addchar(&b, '\'');
        luaL_addstring(&b, t->layers[j].name);
        luaL_addchar(&b, '\'');
    }
    if (t->n == 0) luaL_addstring(&b, "none");
    luaL_pushresult(&b);
    return luaL_error(L, "%s: no layer '%s' in this trace (its layers: %s)", fn, key, lua_tostring(L, -1));
}

/* t:get(i | "layer") -> the layer table; an absent layer is an error. */
static int t_get(lua_State *L) {
    ml_trace *t = mlua_check_trace(L, 1);
    push_layer(L, 1, mlua_check_trace_layer(L, t, 2, "trace"));
    return 1;
}

/* t:layers() -> the layer names in forward order */
static int t_layers(lua_State *L) {
    ml_trace *t = mlua_check_trace(L, 1);
    lua_createtable(L, t->n, 0);
    for (int i = 0; i < t->n; i++) {
        lua_pushstring(L, t->layers[i].name);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* t:equal(other) -> true when both select the same experts with the same kept flags */
static int t_equal(lua_State *L) {
    lua_pushboolean(L, ml_trace_same_routing(mlua_check_trace(L, 1), mlua_check_trace(L, 2)));
    return 1;
}

static int t_eq(lua_State *L) {
    ml_trace *a = mlua_to_trace(L, 1), *b = mlua_to_trace(L, 2);
    lua_pushboolean(L, a && b && ml_trace_same_routing(a, b));
    return 1;
}

/* t:compatible(other) -> t; an error naming the first difference when the
 * traces are of different models or batch sizes */
static int t_compatible(lua_State *L) {
    if (ml_trace_check_compatible("trace:compatible", mlua_check_trace(L, 1), mlua_check_trace(L, 2))) return mlua_error(L);
    lua_settop(L, 1);
    return 1;
}

static int t_save(lua_State *L) {
    ml_trace *t = mlua_check_trace(L, 1);
    if (ml_trace_save(luaL_checkstring(L, 2), t)) return mlua_error(L);
    lua_settop(L, 1);
    return 1;
}

static int l_load(lua_State *L) { return mlua_push_trace(L, ml_trace_load(luaL_checkstring(L, 1))); }

static int t_tostring(lua_State *L) {
    ml_trace *t = mlua_check_trace(L, 1);
    lua_pushfstring(L, "routing trace (%d MoE layers)", t->n);
    return 1;
}

/* ------------------------------------------------------------ ml.trace.new */
/* Field `key` of the table on top as a tensor of dtype dt (a tensor, or a
 * nested table of numbers), pushed so that Lua owns it; NULL (nothing
 * pushed) when absent. */
static ml_tensor *opt_field_tensor(lua_State *L, const char *key, ml_dtype dt, int layer) {
    if (lua_getfield(L, -1, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return NULL;
    }
    if (!mlua_to_tensor(L, -1) && !lua_istable(L, -1))
        luaL_error(L, "trace.new: layer %d: %s must be a tensor, got %s", layer, key, luaL_typename(L, -1));
    bool owned;
    ml_tensor *t = mlua_check_tensorish(L, -1, &owned);
    if (owned) mlua_push_tensor(L, t);
    if (t->dtype != dt) {
        mlua_push_tensor(L, ml_to_dtype(t, dt));
        t = mlua_to_tensor(L, -1);
    }
    return t;
}

/* ml.trace.new({{layer = name, kind = "token", experts = (1-based) [T, K], E = n,
 *   gates, probs, logits, kept, aux = {importance = v, ...}}, ...}) -> trace */
static int l_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    mlua_push_trace(L, ml_trace_new());
    ml_trace *t = mlua_to_trace(L, -1);
    int n = (int)lua_rawlen(L, 1);
    for (int i = 1; i <= n; i++) {
        int top = lua_gettop(L);
        if (lua_rawgeti(L, 1, i) != LUA_TTABLE) luaL_error(L, "trace.new: layer %d must be a table", i);
        static const char *const known[] = {"layer", "kind", "experts", "E", "gates", "probs", "logits", "kept", "aux",
                                            "T", "K", "num_experts", "dropped", "load", NULL};
        mlua_check_options(L, -1, "trace.new", known);
        ml_trace_entry e = {0};
        lua_getfield(L, -1, "layer");
        if (!lua_isstring(L, -1)) luaL_error(L, "trace.new: layer %d needs its name (layer = \"blocks.1.mlp\")", i);
        e.name = lua_tostring(L, -1);
        lua_getfield(L, -2, "kind");
        if (ml_trace_kind_parse("trace.new", luaL_optstring(L, -1, "token"), &e.kind)) return mlua_error(L);
        lua_getfield(L, -3, "E");
        e.E = (int)luaL_optinteger(L, -1, 0);
        lua_pushvalue(L, top + 1);
        if (lua_getfield(L, -1, "experts") == LUA_TNIL) luaL_error(L, "trace.new: layer %d needs experts [T, K]", i);
        e.experts = mlua_index_to_core(L, lua_gettop(L), "trace.new");
        mlua_push_tensor(L, e.experts); /* Lua owns it from here */
        lua_pushvalue(L, top + 1);
        e.gates = opt_field_tensor(L, "gates", ML_F32, i);
        lua_pushvalue(L, top + 1);
        e.probs = opt_field_tensor(L, "probs", ML_F32, i);
        lua_pushvalue(L, top + 1);
        e.logits = opt_field_tensor(L, "logits", ML_F32, i);
        lua_pushvalue(L, top + 1);
        e.kept = opt_field_tensor(L, "kept", ML_I64, i);
        double aux[ML_AUX_COUNT];
        lua_pushvalue(L, top + 1);
        int auxt = lua_getfield(L, -1, "aux") == LUA_TNIL ? 0 : lua_gettop(L);
        if (auxt && !lua_istable(L, auxt)) luaL_error(L, "trace.new: layer %d: aux must be a table of numbers", i);
        for (int k = 0; k < ML_AUX_COUNT; k++) {
            aux[k] = NAN;
            if (auxt && lua_getfield(L, auxt, ml_aux_names[k]) != LUA_TNIL) aux[k] = luaL_checknumber(L, -1);
            if (auxt) lua_pop(L, 1);
        }
        e.aux = aux;
        if (ml_trace_add(t, &e, false)) {
            ml_error_prefix("trace.new: ");
            return mlua_error(L);
        }
        lua_settop(L, top);
    }
    return 1;
}

/* ------------------------------------------------------------ forced routing from Lua options */
/* Adds one override per (layer, expert) of the option table `key` (values are
 * 1-based experts, or lists of them) into the array at the top of the stack. */
static int read_overrides(lua_State *L, int opts, const char *key, ml_route_override_kind what, ml_route_override *ov,
                          int n, int cap, const char *fn) {
    if (lua_getfield(L, opts, key) == LUA_TNIL) {
        lua_pop(L, 1);
        return n;
    }
    if (!lua_istable(L, -1)) luaL_error(L, "%s: %s must map layer names to experts ({[\"blocks.1.mlp\"] = 2})", fn, key);
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "%s: %s must be keyed by layer name", fn, key);
        int list = lua_istable(L, -1), count = list ? (int)lua_rawlen(L, -1) : 1;
        for (int j = 1; j <= count; j++) {
            if (list) lua_rawgeti(L, -1, j);
            int ok;
            lua_Integer e = lua_tointegerx(L, -1, &ok);
            if (!ok) luaL_error(L, "%s: %s[\"%s\"] must be an expert number (1-based), got %s", fn, key, lua_tostring(L, -2 - list),
                                luaL_typename(L, -1));
            if (list) lua_pop(L, 1);
            if (n == cap) luaL_error(L, "%s: at most %d forced or silenced experts", fn, cap);
            /* the name is a key of the options table, which stays on the stack during the forward */
            ov[n++] = (ml_route_override){lua_tostring(L, -2), what, (int)(e - 1)};
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return n;
}

int mlua_routing_options(lua_State *L, int idx, ml_ctx *ctx, const char *fn) {
    if (!lua_istable(L, idx)) return 0;
    idx = lua_absindex(L, idx);
    if (lua_getfield(L, idx, "routing") != LUA_TNIL) {
        ml_trace *t = mlua_to_trace(L, -1);
        if (!t) luaL_error(L, "%s: routing must be a routing trace (from model:forward(x, {trace = true})), got %s", fn,
                           luaL_typename(L, -1));
        ctx->routing = t;
    }
    /* the overrides live in a userdata left on the stack (with the trace) */
    enum { CAP = 256 };
    ml_route_override *ov = lua_newuserdatauv(L, sizeof *ov * CAP, 0);
    int n = read_overrides(L, idx, "force", ML_ROUTE_FORCE, ov, 0, CAP, fn);
    n = read_overrides(L, idx, "silence", ML_ROUTE_SILENCE, ov, n, CAP, fn);
    ctx->overrides = n ? ov : NULL;
    ctx->n_overrides = n;
    return 2;
}

/* ------------------------------------------------------------ registration */
static const luaL_Reg methods[] = {{"get", t_get},     {"layers", t_layers}, {"equal", t_equal},
                                   {"save", t_save},   {"compatible", t_compatible}, {NULL, NULL}};

void mlua_open_trace(lua_State *L) {
    const luaL_Reg meta[] = {{"__gc", t_gc},   {"__index", t_index}, {"__len", t_len}, {"__eq", t_eq},
                             {"__tostring", t_tostring}, {NULL, NULL}};
    mlua_new_kind(L, MLUA_TRACE, "Trace", methods, meta);
    mlua_subtable(L, "trace");
    luaL_setfuncs(L, methods, 0);
    const luaL_Reg functions[] = {{"new", l_new}, {"load", l_load}, {NULL, NULL}};
    luaL_setfuncs(L, functions, 0);
    lua_pop(L, 1);
}
