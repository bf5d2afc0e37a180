/* module.c -- luaopen_moelab: builds the `ml` table from every binding area,
 * then runs the embedded Lua standard library (the files of lua/moelab/). */
#include <stdio.h>
#include <string.h>

#include "lua_util.h"

typedef struct {
    const char *name;
    const char *src;
    size_t len;
} ml_embedded_lua;
extern const ml_embedded_lua ml_embedded_lua_files[];

/* Binding areas. Declared weak so that an area not yet built is skipped. */
#define AREA(name) void mlua_open_##name(lua_State *L) __attribute__((weak));
#define AREAS(X) X(tensor) X(math) X(autograd) X(system) X(nn_ops) X(conv) X(index) X(data) X(io) X(nn) \
    X(train) X(theory) X(moe)
AREAS(AREA)
#undef AREA

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

int luaopen_moelab(lua_State *L);
int luaopen_moelab(lua_State *L) {
    lua_newtable(L);
    int ml = lua_gettop(L);
#define CALL(name) if (mlua_open_##name) { mlua_open_##name(L); lua_settop(L, ml); }
    AREAS(CALL)
#undef CALL
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
