/* lua_io.c -- ml.io: safetensors files as tables of tensors. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "lua_util.h"
#include "areas.h"

/* ml.io.load_safetensors(path) -> {name = tensor, ...}, {metadata key = string} */
static int l_load_safetensors(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    ml_st_file *f = ml_st_open(path);
    if (!f) return mlua_error(L);
    lua_createtable(L, 0, ml_st_count(f));
    for (int i = 0; i < ml_st_count(f); i++) {
        ml_tensor *t = ml_st_get(f, ml_st_name(f, i));
        if (!t) {
            ml_st_close(f);
            return mlua_error(L);
        }
        mlua_push_tensor(L, t);
        lua_setfield(L, -2, ml_st_name(f, i));
    }
    lua_createtable(L, 0, ml_st_meta_count(f));
    for (int i = 0; i < ml_st_meta_count(f); i++) {
        lua_pushstring(L, ml_st_meta_get(f, ml_st_meta_key(f, i)));
        lua_setfield(L, -2, ml_st_meta_key(f, i));
    }
    ml_st_close(f);
    return 2;
}

/* Sorted string keys of the table at idx, pushed as a Lua array (for a stable file order). */
static int sorted_keys(lua_State *L, int idx, const char *what) {
    lua_newtable(L);
    int n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "save_safetensors: %s keys must be strings, found a %s", what, luaL_typename(L, -1));
        lua_pushvalue(L, -1);
        lua_rawseti(L, -3, ++n);
    }
    lua_getglobal(L, "table");
    lua_getfield(L, -1, "sort");
    lua_remove(L, -2);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    return n;
}

/* ml.io.save_safetensors(path, {name = tensor}, [{key = "value"}]) -- atomic write */
static int l_save_safetensors(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
    lua_settop(L, 3); /* slot 3 stays the metadata (or nil), not the first table pushed below */
    int n = sorted_keys(L, 2, "tensor");
    int keys = lua_gettop(L);
    const char **names = lua_newuserdatauv(L, sizeof *names * (size_t)(n + 1), 0);
    ml_tensor **ts = lua_newuserdatauv(L, sizeof *ts * (size_t)(n + 1), 0);
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, keys, i + 1);
        names[i] = lua_tostring(L, -1);
        lua_gettable(L, 2);
        ts[i] = mlua_to_tensor(L, -1);
        if (!ts[i]) luaL_error(L, "save_safetensors: value '%s' is a %s, not a tensor", names[i], luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    int m = 0, mkeys = 0;
    const char **mk = NULL, **mv = NULL;
    if (lua_istable(L, 3)) {
        m = sorted_keys(L, 3, "metadata");
        mkeys = lua_gettop(L);
        mk = lua_newuserdatauv(L, sizeof *mk * (size_t)(m + 1), 0);
        mv = lua_newuserdatauv(L, sizeof *mv * (size_t)(m + 1), 0);
        for (int i = 0; i < m; i++) {
            lua_rawgeti(L, mkeys, i + 1);
            mk[i] = lua_tostring(L, -1);
            lua_gettable(L, 3);
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "save_safetensors: metadata '%s' must be a string, got %s", mk[i], luaL_typename(L, -1));
            mv[i] = lua_tostring(L, -1);
            lua_rawseti(L, mkeys, m + i + 1); /* keep the string alive */
        }
    }
    if (ml_st_save(path, n, names, ts, m, mk, mv)) return mlua_error(L);
    return 0;
}

/* ------------------------------------------------------------ JSON */
/* ml.json.decode(text) -> Lua value (objects -> tables, arrays -> lists, null -> nil) */
static int l_json_decode(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    cJSON *j = cJSON_ParseWithLength(s, len);
    if (!j) {
        const char *at = cJSON_GetErrorPtr();
        return luaL_error(L, "json.decode: invalid JSON near position %d", at ? (int)(at - s) + 1 : 0);
    }
    mlua_push_json(L, j);
    cJSON_Delete(j);
    return 1;
}

/* ml.json.encode(value) -> compact JSON text (one-element tensors become numbers) */
static int l_json_encode(lua_State *L) {
    luaL_checkany(L, 1);
    cJSON *j = mlua_check_json(L, 1, "json.encode");
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    lua_pushstring(L, s);
    free(s);
    return 1;
}

/* ml.io.safetensors_header(path) -> the raw JSON header text (for inspection and tests) */
static int l_header(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    FILE *f = fopen(path, "rb");
    if (!f) return luaL_error(L, "safetensors_header: cannot open %s", path);
    unsigned char b[8];
    if (fread(b, 1, 8, f) != 8) {
        fclose(f);
        return luaL_error(L, "safetensors_header: %s is too short", path);
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    if (n > (100u << 20)) {
        fclose(f);
        return luaL_error(L, "safetensors_header: %s: implausible header length", path);
    }
    char *buf = malloc(n + 1);
    size_t got = fread(buf, 1, n, f);
    fclose(f);
    lua_pushlstring(L, buf, got);
    lua_pushinteger(L, (lua_Integer)n);
    free(buf);
    return 2;
}

static const luaL_Reg functions[] = {{"load_safetensors", l_load_safetensors}, {"safetensors_header", l_header},
                                     {"save_safetensors", l_save_safetensors},
                                     {NULL, NULL}};

void mlua_open_io(lua_State *L) {
    mlua_subtable(L, "io");
    mlua_register(L, functions, false);
    lua_pop(L, 1);
    mlua_subtable(L, "json");
    const luaL_Reg json[] = {{"encode", l_json_encode}, {"decode", l_json_decode}, {NULL, NULL}};
    luaL_setfuncs(L, json, 0);
    lua_pop(L, 1);
}
