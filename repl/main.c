/* main.c -- the `moelab` executable (first version: scripts and -e).
 * The interactive prompt grows in repl/. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

int luaopen_moelab(lua_State *L);

static int traceback(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    luaL_traceback(L, L, msg ? msg : "(error object is not a string)", 1);
    return 1;
}

static int report(lua_State *L, int status) {
    if (status != LUA_OK) {
        fprintf(stderr, "moelab: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
    }
    return status;
}

static int run_chunk(lua_State *L, int status, int nargs) {
    if (status != LUA_OK) return report(L, status);
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, traceback);
    lua_insert(L, base);
    status = lua_pcall(L, nargs, 0, base);
    lua_remove(L, base);
    return report(L, status);
}

int main(int argc, char **argv) {
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "moelab", luaopen_moelab, 0);
    lua_setglobal(L, "ml");
    int status = LUA_OK;
    for (int i = 1; i < argc && status == LUA_OK; i++) {
        if (!strcmp(argv[i], "-e") && i + 1 < argc) {
            status = run_chunk(L, luaL_loadstring(L, argv[++i]), 0);
        } else {
            lua_createtable(L, argc - i, 1);
            for (int k = i; k < argc; k++) {
                lua_pushstring(L, argv[k]);
                lua_rawseti(L, -2, k - i);
            }
            lua_setglobal(L, "arg");
            int nargs = argc - i - 1;
            int st = luaL_loadfile(L, argv[i]);
            for (int k = i + 1; k < argc; k++) lua_pushstring(L, argv[k]);
            if (st != LUA_OK) lua_pop(L, nargs);
            status = run_chunk(L, st, st == LUA_OK ? nargs : 0);
            break;
        }
    }
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
