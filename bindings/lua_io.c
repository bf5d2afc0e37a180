/* lua_io.c -- ml.io: safetensors files as tables of tensors; ml.save / ml.load
 * (checkpoints, core/io/checkpoint.h); ml.json. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/checkpoint.h"
#include "io/safetensors.h"
#include "lua_nn.h"
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
    lua_settop(L, 3); /* slot 3 is the metadata (or nil) before anything is pushed */
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

/* ------------------------------------------------------------ checkpoints */
/* ml.save(path, model, [opts]) or ml.save(model, path, [opts]) (Torch7's and
 * PyTorch's orders); opts = {optimizer = opt, epoch = n, meta = {key = value}} */
static int l_save(lua_State *L) {
    int pi, mi;
    if (lua_type(L, 1) == LUA_TSTRING && mlua_to_module(L, 2)) pi = 1, mi = 2;
    else if (mlua_to_module(L, 1) && lua_type(L, 2) == LUA_TSTRING) pi = 2, mi = 1;
    else
        return luaL_error(L, "save: expected ml.save(path, model, [options]) or ml.save(model, path, [options]), got %s "
                          "and %s", luaL_typename(L, 1), luaL_typename(L, 2));
    static const char *const known[] = {"optimizer", "epoch", "meta", NULL};
    mlua_check_options(L, 3, "save", known);
    lua_settop(L, 3);
    ml_checkpoint_meta meta = {0};
    ml_optim *opt = NULL;
    if (lua_istable(L, 3) && lua_getfield(L, 3, "optimizer") != LUA_TNIL) {
        opt = mlua_check_optim(L, lua_gettop(L));
        /* the names opt:state_dict() uses: paths in the model, or 1, 2, ... for a list */
        lua_getfield(L, -1, "params");
        lua_insert(L, -2);
        lua_call(L, 1, 1);
        int list = lua_gettop(L), n = ml_optim_num_params(opt);
        const char **names = lua_newuserdatauv(L, sizeof *names * (size_t)(n + 1), 0);
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, list, i + 1);
            lua_getfield(L, -1, "name");
            names[i] = lua_tostring(L, -1); /* alive in the list */
            if (!names[i]) luaL_error(L, "save: the optimizer's parameter %d has no name", i + 1);
            lua_pop(L, 2);
        }
        meta.optim_names = names;
    }
    if (lua_istable(L, 3) && lua_getfield(L, 3, "epoch") != LUA_TNIL) {
        int ok;
        lua_Integer e = lua_tointegerx(L, -1, &ok);
        if (!ok || e < 0) luaL_error(L, "save: epoch must be a non-negative integer, got %s", luaL_tolstring(L, -1, NULL));
        meta.has_epoch = true;
        meta.epoch = e;
    }
    if (lua_istable(L, 3) && lua_getfield(L, 3, "meta") != LUA_TNIL) {
        int t = lua_gettop(L);
        if (!lua_istable(L, t)) luaL_error(L, "save: meta must be a table of strings, got a %s", luaL_typename(L, t));
        int n = 0;
        for (lua_pushnil(L); lua_next(L, t); lua_pop(L, 1)) n++;
        const char **keys = lua_newuserdatauv(L, sizeof *keys * (size_t)(n + 1), 0);
        const char **values = lua_newuserdatauv(L, sizeof *values * (size_t)(n + 1), 0);
        lua_createtable(L, n, 0); /* keeps the converted values alive */
        int hold = lua_gettop(L), k = 0;
        for (lua_pushnil(L); lua_next(L, t); lua_pop(L, 1)) {
            int vt = lua_type(L, -1);
            if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "save: meta keys must be strings, found a %s", luaL_typename(L, -2));
            if (vt != LUA_TSTRING && vt != LUA_TNUMBER && vt != LUA_TBOOLEAN)
                luaL_error(L, "save: meta '%s' must be a string, number or boolean, got a %s", lua_tostring(L, -2),
                           luaL_typename(L, -1));
            keys[k] = lua_tostring(L, -2);
            values[k] = luaL_tolstring(L, -1, NULL);
            lua_rawseti(L, hold, ++k);
        }
        meta.n = k;
        meta.keys = keys;
        meta.values = values;
    }
    if (ml_checkpoint_save(lua_tostring(L, pi), mlua_to_module(L, mi), opt, &meta)) return mlua_error(L);
    return 0;
}

/* ml.load(path, [{strict = true}]) -> model, info {meta, epoch, optimizer_state, optimizer_steps, optimizer_lr} */
static int l_load(lua_State *L) {
    if (lua_type(L, 1) != LUA_TSTRING)
        return luaL_error(L, "load: expected ml.load(path, [{strict = true}]), got a %s", luaL_typename(L, 1));
    static const char *const known[] = {"strict", NULL};
    mlua_check_options(L, 2, "load", known);
    ml_checkpoint *c = ml_checkpoint_load(lua_tostring(L, 1), mlua_opt_bool(L, 2, "strict", true));
    if (!c) return mlua_error(L);
    const ml_st_file *f = c->file;
    lua_settop(L, 2);
    mlua_push_module(L, ml_module_retain(c->model));
    lua_createtable(L, 0, 5);
    lua_createtable(L, 0, ml_st_meta_count(f));
    for (int i = 0; i < ml_st_meta_count(f); i++) {
        lua_pushstring(L, ml_st_meta_get(f, ml_st_meta_key(f, i)));
        lua_setfield(L, -2, ml_st_meta_key(f, i));
    }
    lua_setfield(L, -2, "meta");
    if (c->epoch >= 0) {
        lua_pushinteger(L, c->epoch);
        lua_setfield(L, -2, "epoch");
    }
    if (c->optim_steps >= 0) {
        lua_pushinteger(L, c->optim_steps);
        lua_setfield(L, -2, "optimizer_steps");
        if (!isnan(c->optim_lr)) {
            lua_pushnumber(L, c->optim_lr);
            lua_setfield(L, -2, "optimizer_lr");
        }
        lua_newtable(L); /* {"<parameter>.s1" = tensor}, as opt:load_state_dict takes it */
        for (int i = 0; i < ml_st_count(f); i++) {
            const char *name = ml_st_name(f, i);
            if (strncmp(name, "optim.", 6)) continue;
            ml_tensor *t = ml_st_get_at(f, i);
            if (!t) {
                ml_checkpoint_free(c);
                return mlua_error(L);
            }
            mlua_push_tensor(L, t);
            lua_setfield(L, -2, name + 6);
        }
        lua_setfield(L, -2, "optimizer_state");
    }
    ml_checkpoint_free(c);
    return 2;
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

/* ml.io.safetensors_header(path) -> the raw JSON header text, its length (for inspection and tests) */
static int l_header(lua_State *L) {
    uint64_t n;
    char *text = ml_st_read_header(luaL_checkstring(L, 1), &n);
    if (!text) return mlua_error(L);
    lua_pushlstring(L, text, (size_t)n);
    free(text);
    lua_pushinteger(L, (lua_Integer)n);
    return 2;
}

static const luaL_Reg functions[] = {{"load_safetensors", l_load_safetensors}, {"safetensors_header", l_header},
                                     {"save_safetensors", l_save_safetensors},
                                     {NULL, NULL}};

void mlua_open_io(lua_State *L) {
    const luaL_Reg top[] = {{"save", l_save}, {"load", l_load}, {NULL, NULL}};
    mlua_register(L, top, false);
    mlua_subtable(L, "io");
    mlua_register(L, functions, false);
    lua_pop(L, 1);
    mlua_subtable(L, "json");
    const luaL_Reg json[] = {{"encode", l_json_encode}, {"decode", l_json_decode}, {NULL, NULL}};
    luaL_setfuncs(L, json, 0);
    lua_pop(L, 1);
}
