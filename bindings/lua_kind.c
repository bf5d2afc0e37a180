/* lua_kind.c -- object kinds and ml.extend (lua_kind.h). */
#include <string.h>

#include "areas.h"
#include "lua_kind.h"
#include "lua_util.h"

void mlua_new_kind(lua_State *L, const char *tname, const char *kind, const luaL_Reg *methods, const luaL_Reg *meta) {
    luaL_newmetatable(L, tname);
    lua_newtable(L);
    if (methods) luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__methods");
    luaL_setfuncs(L, meta, 0);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
}

/* Pushes the method table of the metatable on top (replacing it); nil when it has none. */
static void methods_of(lua_State *L) {
    if (lua_getfield(L, -1, "__methods") != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_getfield(L, -1, "__index");
        if (!lua_istable(L, -1)) {
            lua_pop(L, 1);
            lua_pushnil(L);
        }
    }
    lua_remove(L, -2);
}

void mlua_kind_methods(lua_State *L, const char *tname) {
    luaL_getmetatable(L, tname);
    methods_of(L);
}

void mlua_kind_add_methods(lua_State *L, const char *tname, const luaL_Reg *methods) {
    mlua_kind_methods(L, tname);
    luaL_setfuncs(L, methods, 0);
    lua_pop(L, 1);
}

/* ml.extend(kind, {name = function, __metamethod = function, ...}) -> nil */
static int l_extend(lua_State *L) {
    const char *kind = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_pushfstring(L, "moelab.%s", kind);
    if (luaL_getmetatable(L, lua_tostring(L, -1)) != LUA_TTABLE)
        return luaL_error(L, "extend: no object kind '%s' (kinds: Tensor, Module, Trace, Dataset, Optimizer)", kind);
    int mt = lua_gettop(L);
    lua_pushvalue(L, mt);
    methods_of(L);
    int methods = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, 2)) {
        if (lua_type(L, -2) != LUA_TSTRING || !lua_isfunction(L, -1))
            return luaL_error(L, "extend: entries must be name = function");
        const char *name = lua_tostring(L, -2);
        bool meta = strncmp(name, "__", 2) == 0;
        if (meta && (!strcmp(name, "__gc") || !strcmp(name, "__index") || !strcmp(name, "__name")))
            return luaL_error(L, "extend: %s of a %s belongs to the bindings", name, kind);
        if (!meta && lua_isnil(L, methods)) return luaL_error(L, "extend: a %s has no method table to extend", kind);
        lua_pushvalue(L, -2);
        lua_insert(L, -2);
        lua_rawset(L, meta ? mt : methods);
    }
    return 0;
}

void mlua_open_kind(lua_State *L) {
    const luaL_Reg f[] = {{"extend", l_extend}, {NULL, NULL}};
    luaL_setfuncs(L, f, 0);
}
