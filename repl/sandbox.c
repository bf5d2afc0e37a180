/* sandbox.c -- `moelab --sandbox`: run a script received from someone else.
 *
 * What it takes away: processes (os.execute, io.popen), native code
 * (package.loadlib, C modules: only the library's own embedded modules can be
 * required), binary chunks (load, loadfile and dofile read text only: crafted
 * bytecode can break memory safety), the debug library but for traceback (it
 * could reach the original functions behind the wrappers), and every file
 * outside the working folder: io.open, io.lines, io.input, io.output,
 * os.remove, os.rename, dofile, loadfile and the library's file functions
 * (checkpoints, safetensors, data loaders) check their paths first: no `..`,
 * no absolute path outside the folder, no symbolic link leading out of it.
 * What it does not bound: time and memory (use ulimit / timeout for those).
 *
 * The checks wrap the original functions in C closures; the originals stay
 * reachable only through upvalues, which without the debug library no script
 * can read. */
#include <errno.h>
#include <lauxlib.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "repl.h"

static char root[PATH_MAX]; /* the working folder, resolved */

/* Raises a Lua error unless `path` names a place inside the root. */
static void check_path(lua_State *L, const char *fn, const char *path) {
    if (!path[0]) luaL_error(L, "%s: an empty file name", fn);
    for (const char *p = path; *p;) { /* no ".." component anywhere */
        size_t len = strcspn(p, "/");
        if (len == 2 && p[0] == '.' && p[1] == '.')
            luaL_error(L, "%s: '..' is not allowed in the sandbox ('%s')", fn, path);
        p += len;
        while (*p == '/') p++;
    }
    char full[2 * PATH_MAX];
    int n = path[0] == '/' ? snprintf(full, sizeof full, "%s", path) : snprintf(full, sizeof full, "%s/%s", root, path);
    if (n < 0 || (size_t)n >= sizeof full) luaL_error(L, "%s: the path is too long", fn);
    /* resolve the deepest part that exists (symbolic links included); what
     * follows it does not exist yet and, without "..", stays below it */
    char resolved[PATH_MAX];
    while (!realpath(full, resolved)) {
        char *slash = strrchr(full, '/');
        if (!slash || slash == full) {
            snprintf(resolved, sizeof resolved, "/");
            break;
        }
        *slash = 0;
    }
    size_t rl = strlen(root);
    if (!(strncmp(resolved, root, rl) == 0 && (resolved[rl] == 0 || resolved[rl] == '/')))
        luaL_error(L, "%s: the sandbox allows files only inside the working folder %s, not '%s'", fn, root, path);
}

/* A wrapper: checks the string arguments at the positions in the mask
 * (bit k: argument k + 1; all bits: every string argument), then calls the
 * original. upvalues: original function, name, mask. */
static int guarded_call(lua_State *L) {
    const char *name = lua_tostring(L, lua_upvalueindex(2));
    lua_Integer mask = lua_tointeger(L, lua_upvalueindex(3));
    int n = lua_gettop(L);
    const char *option = lua_tostring(L, lua_upvalueindex(4));
    for (int i = 1; i <= n && i <= 62; i++) {
        if (((mask >> (i - 1)) & 1) && lua_type(L, i) == LUA_TSTRING) check_path(L, name, lua_tostring(L, i));
        if (option && lua_type(L, i) == LUA_TTABLE) { /* a path given as an option */
            if (lua_getfield(L, i, option) == LUA_TSTRING) check_path(L, name, lua_tostring(L, -1));
            lua_pop(L, 1);
        }
    }
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

/* Replaces t[field] (t on the stack top) by a guarded wrapper, when present. */
static void guard_with_option(lua_State *L, const char *field, const char *name, lua_Integer mask,
                              const char *option) {
    if (lua_getfield(L, -1, field) != LUA_TFUNCTION) {
        lua_pop(L, 1);
        return;
    }
    lua_pushstring(L, name);
    lua_pushinteger(L, mask);
    if (option) lua_pushstring(L, option);
    else lua_pushnil(L);
    lua_pushcclosure(L, guarded_call, 4);
    lua_setfield(L, -2, field);
}

static void guard(lua_State *L, const char *field, const char *name, lua_Integer mask) {
    guard_with_option(L, field, name, mask, NULL);
}

static int forbidden(lua_State *L) {
    return luaL_error(L, "%s is not allowed in the sandbox (moelab --sandbox runs untrusted code)",
                      lua_tostring(L, lua_upvalueindex(1)));
}

static void forbid(lua_State *L, const char *field, const char *name) {
    lua_pushstring(L, name);
    lua_pushcclosure(L, forbidden, 1);
    lua_setfield(L, -2, field);
}

/* load(chunk, [name], [mode], [env]) with mode "t": text chunks only. upvalue: load */
static int text_load(lua_State *L) {
    int n = lua_gettop(L);
    if (n < 3) lua_settop(L, n = 3);
    lua_pushliteral(L, "t");
    lua_replace(L, 3);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, n, LUA_MULTRET);
    return lua_gettop(L);
}

/* loadfile([path], [mode], [env]) as text; the path checked */
static int text_loadfile(lua_State *L) {
    const char *path = luaL_optstring(L, 1, NULL);
    if (path) check_path(L, "loadfile", path);
    int env = !lua_isnone(L, 3) ? 3 : 0;
    if (luaL_loadfilex(L, path, "t") != LUA_OK) {
        luaL_pushfail(L);
        lua_insert(L, -2);
        return 2;
    }
    if (env) {
        lua_pushvalue(L, env);
        if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
    }
    return 1;
}

/* dofile([path]) as text; the path checked */
static int text_dofile(lua_State *L) {
    const char *path = luaL_optstring(L, 1, NULL);
    if (path) check_path(L, "dofile", path);
    lua_settop(L, 1);
    if (luaL_loadfilex(L, path, "t") != LUA_OK) return lua_error(L);
    lua_call(L, 0, LUA_MULTRET);
    return lua_gettop(L) - 1;
}

/* Functions of the moelab library that open files, with the arguments that
 * are paths (-1: every string argument, as ml.save takes (path, model) and
 * (model, path)). A new file function belongs here; tests/lua/test_sandbox.lua
 * checks that every documented function taking a path is listed. */
static const struct {
    const char *table, *field;
    lua_Integer mask;
    const char *option; /* a table argument's field that is a path, or NULL */
} library_files[] = {
    {NULL, "save", -1, NULL},
    {NULL, "load", -1, NULL},
    {"io", "load_safetensors", 1, NULL},
    {"io", "save_safetensors", 1, NULL},
    {"io", "safetensors_header", 1, NULL},
    {"data", "mnist", 1, NULL},
    {"data", "cifar10", 1, NULL},
    {"data", "png_folder", 1, NULL},
    {"attack", "save", 1, NULL},
    {"attack", "load", 1, NULL},
    {"attack", "autoattack", -1, "state"},
    {"image", "save", -1, NULL},
    {"image", "load", 1, NULL},
    {"image", "grid", -1, "path"},
    {"trace", "save", -1, NULL},
    {"trace", "load", 1, NULL},
    {"results", "write", 2, NULL},
    {"results", "read", 1, NULL},
};

/* Methods that write files, by the registry name of their object kind: the
 * path is argument 2 (argument 1 is the object). */
static const struct {
    const char *tname, *method;
} method_files[] = {
    {"moelab.Trace", "save"},
    {"moelab.Plot", "png"},
};

static void guard_methods(lua_State *L) {
    for (size_t i = 0; i < sizeof method_files / sizeof method_files[0]; i++) {
        if (luaL_getmetatable(L, method_files[i].tname) != LUA_TTABLE) {
            lua_pop(L, 1);
            continue;
        }
        if (lua_getfield(L, -1, "__methods") != LUA_TTABLE) {
            lua_pop(L, 1);
            lua_getfield(L, -1, "__index");
        }
        if (lua_istable(L, -1)) {
            char name[64];
            const char *kind = strrchr(method_files[i].tname, '.');
            snprintf(name, sizeof name, "%s:%s", kind ? kind + 1 : method_files[i].tname, method_files[i].method);
            guard(L, method_files[i].method, name, 2);
        }
        lua_pop(L, 2);
    }
}

static void guard_library(lua_State *L) {
    guard_methods(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    if (lua_getfield(L, -1, "moelab") != LUA_TTABLE) {
        lua_pop(L, 2);
        return;
    }
    for (size_t i = 0; i < sizeof library_files / sizeof library_files[0]; i++) {
        const char *t = library_files[i].table, *f = library_files[i].field;
        if (t && lua_getfield(L, -1, t) != LUA_TTABLE) {
            lua_pop(L, 1);
            continue;
        }
        lua_pushfstring(L, "ml.%s%s%s", t ? t : "", t ? "." : "", f);
        char name[64];
        snprintf(name, sizeof name, "%s", lua_tostring(L, -1));
        lua_pop(L, 1);
        guard_with_option(L, f, name, library_files[i].mask, library_files[i].option);
        if (t) lua_pop(L, 1);
    }
    if (lua_getfield(L, -1, "repl") == LUA_TTABLE) { /* completion lists folders */
        lua_pushnil(L);
        lua_setfield(L, -2, "_listdir");
    }
    lua_pop(L, 3);
}

void repl_sandbox(lua_State *L) {
    if (!realpath(".", root)) luaL_error(L, "sandbox: cannot resolve the working folder: %s", strerror(errno));
    repl_text_chunks_only();
    lua_pushglobaltable(L);
    /* base library */
    lua_getfield(L, -1, "load");
    lua_pushcclosure(L, text_load, 1);
    lua_setfield(L, -2, "load");
    lua_pushcfunction(L, text_loadfile);
    lua_setfield(L, -2, "loadfile");
    lua_pushcfunction(L, text_dofile);
    lua_setfield(L, -2, "dofile");
    lua_pop(L, 1);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    /* os */
    if (lua_getfield(L, -1, "os") == LUA_TTABLE) {
        forbid(L, "execute", "os.execute");
        forbid(L, "tmpname", "os.tmpname (a file outside the working folder)");
        guard(L, "remove", "os.remove", 1);
        guard(L, "rename", "os.rename", 3);
    }
    lua_pop(L, 1);
    /* io */
    if (lua_getfield(L, -1, "io") == LUA_TTABLE) {
        forbid(L, "popen", "io.popen");
        guard(L, "open", "io.open", 1);
        guard(L, "lines", "io.lines", 1);
        guard(L, "input", "io.input", 1);
        guard(L, "output", "io.output", 1);
    }
    lua_pop(L, 1);
    /* package: only the library's embedded modules */
    if (lua_getfield(L, -1, "package") == LUA_TTABLE) {
        forbid(L, "loadlib", "package.loadlib");
        forbid(L, "searchpath", "package.searchpath");
        lua_pushliteral(L, "");
        lua_setfield(L, -2, "path");
        lua_pushliteral(L, "");
        lua_setfield(L, -2, "cpath");
        if (lua_getfield(L, -1, "searchers") == LUA_TTABLE) {
            for (lua_Integer i = (lua_Integer)lua_rawlen(L, -1); i >= 2; i--) {
                lua_pushnil(L);
                lua_rawseti(L, -2, i); /* keep [1], the preload searcher */
            }
        }
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    /* debug: traceback only */
    if (lua_getfield(L, -1, "debug") == LUA_TTABLE) {
        lua_getfield(L, -1, "traceback");
        lua_newtable(L);
        lua_insert(L, -2);
        lua_setfield(L, -2, "traceback");
        lua_pushvalue(L, -1);
        lua_setfield(L, -4, "debug"); /* package.loaded.debug */
        lua_setglobal(L, "debug");
    }
    lua_pop(L, 2);
    guard_library(L);
}
