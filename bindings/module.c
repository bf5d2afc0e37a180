/* module.c -- luaopen_moelab: builds the `ml` table from every binding area,
 * then runs the embedded Lua standard library (the files of lua/moelab/). */
#include <stdio.h>
#include <string.h>

#include "areas.h"
#include "lua_util.h"
#include "moelab_lua.h"

typedef struct {
    const char *name;
    const char *src;
    size_t len;
} ml_embedded_lua;
extern const ml_embedded_lua ml_embedded_lua_files[];

/* The binding areas, in the order they fill the `ml` table (areas.h). */
static const struct {
    const char *name;
    void (*open)(lua_State *L);
} areas[] = {
    {"tensor", mlua_open_tensor}, {"math", mlua_open_math},   {"autograd", mlua_open_autograd},
    {"system", mlua_open_system}, {"nn_ops", mlua_open_nn_ops}, {"conv", mlua_open_conv},
    {"index", mlua_open_index},   {"data", mlua_open_data},   {"io", mlua_open_io},
    {"nn", mlua_open_nn},         {"train", mlua_open_train}, {"theory", mlua_open_theory},
    {"moe", mlua_open_moe},
    {"nn_layers", mlua_open_nn_layers}, {"nn_zoo", mlua_open_nn_zoo},
    {"kind", mlua_open_kind},     {"trace", mlua_open_trace},
    {"plot", mlua_open_plot},     {"image", mlua_open_image},
    {"metrics", mlua_open_metrics},
    {"attack", mlua_open_attack},
};

/* package.preload loader for an embedded file: upvalue 1 = its index */
static int embedded_loader(lua_State *L) {
    int i = (int)lua_tointeger(L, lua_upvalueindex(1));
    const ml_embedded_lua *f = &ml_embedded_lua_files[i];
    char chunkname[128];
    snprintf(chunkname, sizeof chunkname, "@lua/moelab/%s.lua", f->name);
    if (luaL_loadbuffer(L, f->src, f->len, chunkname) != LUA_OK) return lua_error(L);
    lua_pushstring(L, lua_tostring(L, 1));
    lua_call(L, 1, 1);
    return 1;
}

int luaopen_moelab(lua_State *L) {
    lua_newtable(L);
    int ml = lua_gettop(L);
    for (size_t i = 0; i < sizeof areas / sizeof areas[0]; i++) {
        areas[i].open(L);
        lua_settop(L, ml);
    }
    /* Make `require "moelab"` from inside the Lua library return this table. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_pushvalue(L, ml);
    lua_setfield(L, -2, "moelab");
    lua_pop(L, 1);
    /* Register the embedded Lua files as moelab.<name> and run moelab.init. */
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    bool have_init = false;
    for (int i = 0; ml_embedded_lua_files[i].name; i++) {
        char name[128];
        snprintf(name, sizeof name, "moelab.%s", ml_embedded_lua_files[i].name);
        lua_pushinteger(L, i);
        lua_pushcclosure(L, embedded_loader, 1);
        lua_setfield(L, -2, name);
        have_init |= strcmp(ml_embedded_lua_files[i].name, "init") == 0;
    }
    lua_pop(L, 1);
    if (have_init) {
        lua_getglobal(L, "require");
        lua_pushstring(L, "moelab.init");
        lua_call(L, 1, 0);
    }
    lua_settop(L, ml);
    return 1;
}
