/* lua_conv.c -- ml.conv2d and pooling. */
#include "lua_util.h"
#include "areas.h"

/* An option that is a number or {h, w}. */
static void pair_opt(lua_State *L, int idx, const char *key, int def, int *h, int *w) {
    *h = *w = def;
    if (!lua_istable(L, idx)) return;
    int ty = lua_getfield(L, idx, key);
    if (ty == LUA_TNUMBER) {
        *h = *w = (int)luaL_checkinteger(L, -1);
    } else if (ty == LUA_TTABLE) {
        lua_rawgeti(L, -1, 1);
        lua_rawgeti(L, -2, 2);
        if (!lua_isinteger(L, -2) || !lua_isinteger(L, -1))
            luaL_error(L, "option '%s' must be a number or {h, w}", key);
        *h = (int)lua_tointeger(L, -2);
        *w = (int)lua_tointeger(L, -1);
        lua_pop(L, 2);
    } else if (ty != LUA_TNIL) {
        luaL_error(L, "option '%s' must be a number or {h, w}, got %s", key, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
}

/* ml.conv2d(x, w, [b], [{stride = 1, padding = 0, dilation = 1, groups = 1}]) */
static int l_conv2d(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1), *w = mlua_check_tensor(L, 2);
    ml_tensor *b = mlua_to_tensor(L, 3);
    int oi = b || lua_isnil(L, 3) ? 4 : 3;
    if (!b && !lua_isnoneornil(L, 3) && !lua_istable(L, 3))
        return luaL_argerror(L, 3, "bias tensor, nil or an options table expected");
    static const char *const known[] = {"stride", "padding", "dilation", "groups", NULL};
    mlua_check_options(L, oi, "conv2d", known);
    ml_conv_opts o = {0};
    pair_opt(L, oi, "stride", 1, &o.stride_h, &o.stride_w);
    pair_opt(L, oi, "padding", 0, &o.pad_h, &o.pad_w);
    pair_opt(L, oi, "dilation", 1, &o.dil_h, &o.dil_w);
    o.groups = (int)mlua_opt_integer(L, oi, "groups", 1);
    if (o.stride_h < 1 || o.stride_w < 1) luaL_error(L, "conv2d: stride must be positive");
    if (o.dil_h < 1 || o.dil_w < 1) luaL_error(L, "conv2d: dilation must be positive");
    if (o.groups < 1) luaL_error(L, "conv2d: groups must be positive, got %d", o.groups);
    if (o.pad_h < 0 || o.pad_w < 0) luaL_error(L, "conv2d: padding must be >= 0");
    return mlua_push_tensor(L, ml_conv2d(x, w, b, &o));
}

static int pool(lua_State *L, bool is_max) {
    const char *fn = is_max ? "max_pool2d" : "avg_pool2d";
    ml_tensor *x = mlua_check_tensor(L, 1);
    int kh, kw;
    if (lua_istable(L, 2)) {
        lua_rawgeti(L, 2, 1);
        lua_rawgeti(L, 2, 2);
        kh = (int)luaL_checkinteger(L, -2);
        kw = (int)luaL_checkinteger(L, -1);
        lua_pop(L, 2);
    } else {
        kh = kw = (int)luaL_checkinteger(L, 2);
    }
    static const char *const known[] = {"stride", "padding", NULL};
    mlua_check_options(L, 3, fn, known);
    int sh, sw, ph, pw;
    pair_opt(L, 3, "stride", 0, &sh, &sw);
    if (sh == 0) sh = kh;
    if (sw == 0) sw = kw;
    pair_opt(L, 3, "padding", 0, &ph, &pw);
    return mlua_push_tensor(L, is_max ? ml_max_pool2d(x, kh, kw, sh, sw, ph, pw) : ml_avg_pool2d(x, kh, kw, sh, sw, ph, pw));
}

static int l_max_pool2d(lua_State *L) { return pool(L, true); }
static int l_avg_pool2d(lua_State *L) { return pool(L, false); }
static int l_global_avg_pool(lua_State *L) { return mlua_push_tensor(L, ml_global_avg_pool2d(mlua_check_tensor(L, 1))); }

static const luaL_Reg methods[] = {{"conv2d", l_conv2d},
                                   {"max_pool2d", l_max_pool2d},
                                   {"avg_pool2d", l_avg_pool2d},
                                   {"global_avg_pool", l_global_avg_pool},
                                   {NULL, NULL}};

void mlua_open_conv(lua_State *L) { mlua_register(L, methods, true); }
