/* lua_util.c -- see lua_util.h. */
#include "lua_util.h"

#include <math.h>
#include <stdio.h>
#include "memory.h"

#include <inttypes.h>
#include <string.h>

/* ------------------------------------------------------------ tensors */
ml_tensor *mlua_to_tensor(lua_State *L, int idx) {
    ml_tensor **p = luaL_testudata(L, idx, MLUA_TENSOR);
    return p ? *p : NULL;
}

ml_tensor *mlua_check_tensor(lua_State *L, int idx) {
    ml_tensor *t = mlua_to_tensor(L, idx);
    if (!t) {
        const char *got = luaL_typename(L, idx);
        luaL_argerror(L, idx, lua_pushfstring(L, "tensor expected, got %s", got));
    }
    return t;
}

/* Reads a (nested) Lua table of numbers: first pass finds the shape. */
static int table_shape(lua_State *L, int idx, int depth, int64_t *shape, int *ndim) {
    if (depth >= ML_MAX_DIMS) return -1;
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    shape[depth] = n;
    if (depth + 1 > *ndim) *ndim = depth + 1;
    if (n == 0) return 0;
    lua_rawgeti(L, idx, 1);
    int rc = 0;
    if (lua_istable(L, -1)) rc = table_shape(L, lua_gettop(L), depth + 1, shape, ndim);
    lua_pop(L, 1);
    return rc;
}

static void table_fill(lua_State *L, int idx, int depth, int ndim, const int64_t *shape, ml_tensor *t,
                       int64_t *pos) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    if (n != shape[depth])
        luaL_error(L, "tensor: ragged table (a row at depth %d has %d entries, expected %d)", depth + 1, (int)n,
                   (int)shape[depth]);
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        if (depth + 1 < ndim) {
            if (!lua_istable(L, -1))
                luaL_error(L, "tensor: ragged table (expected a table at depth %d, got %s)", depth + 2,
                           luaL_typename(L, -1));
            table_fill(L, lua_gettop(L), depth + 1, ndim, shape, t, pos);
        } else {
            int isnum;
            if (t->dtype == ML_I64) {
                lua_Integer v = lua_tointegerx(L, -1, &isnum);
                if (!isnum) {
                    lua_Number f = lua_tonumberx(L, -1, &isnum);
                    if (!isnum) luaL_error(L, "tensor: expected numbers, found a %s", luaL_typename(L, -1));
                    v = (lua_Integer)f;
                }
                ml_i64(t)[(*pos)++] = v;
            } else {
                lua_Number v = lua_tonumberx(L, -1, &isnum);
                if (!isnum) {
                    if (lua_isboolean(L, -1)) v = lua_toboolean(L, -1);
                    else luaL_error(L, "tensor: expected numbers, found a %s", luaL_typename(L, -1));
                }
                ml_f32(t)[(*pos)++] = (float)v;
            }
        }
        lua_pop(L, 1);
    }
}

ml_tensor *mlua_table_to_tensor(lua_State *L, int idx, ml_dtype dt) {
    idx = lua_absindex(L, idx);
    int64_t shape[ML_MAX_DIMS] = {0};
    int ndim = 0;
    if (table_shape(L, idx, 0, shape, &ndim))
        luaL_error(L, "tensor: table nested deeper than %d levels", ML_MAX_DIMS);
    ml_tensor *t = ml_empty(dt, ndim, shape);
    if (!t) mlua_error(L);
    /* the userdata owns t while filling, so a Lua error (ragged table) frees it */
    mlua_push_tensor(L, t);
    int64_t pos = 0;
    table_fill(L, idx, 0, ndim, shape, t, &pos);
    ml_retain(t);
    lua_pop(L, 1);
    return t;
}

ml_tensor *mlua_check_tensorish(lua_State *L, int idx, bool *owned) {
    ml_tensor *t = mlua_to_tensor(L, idx);
    *owned = false;
    if (t) return t;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        *owned = true;
        t = ml_scalar(lua_tonumber(L, idx));
        if (!t) mlua_error(L);
        return t;
    }
    if (lua_istable(L, idx)) {
        *owned = true;
        return mlua_table_to_tensor(L, idx, ML_F32);
    }
    luaL_argerror(L, idx, lua_pushfstring(L, "tensor or number expected, got %s", luaL_typename(L, idx)));
    return NULL;
}

int mlua_error(lua_State *L) {
    const char *msg = ml_last_error();
    /* level 1 adds "file:line:" of the Lua caller when there is one */
    luaL_where(L, 1);
    lua_pushstring(L, msg);
    lua_concat(L, 2);
    ml_error_clear();
    return lua_error(L);
}

int mlua_push_tensor(lua_State *L, ml_tensor *t) {
    if (!t) return mlua_error(L);
    ml_tensor **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = t;
    luaL_setmetatable(L, MLUA_TENSOR);
    mlua_memory_pressure(L);
    return 1;
}

/* ------------------------------------------------------------ conversions */
int mlua_check_dim(lua_State *L, int idx, const char *fn) {
    lua_Integer d = luaL_checkinteger(L, idx);
    if (d == 0) luaL_error(L, "%s: dimension 0 is invalid (dimensions are 1-based; -1 is the last)", fn);
    if (d > 1000 || d < -1000) luaL_error(L, "%s: dimension %d is out of range", fn, (int)d);
    return d > 0 ? (int)d - 1 : (int)d;
}

int mlua_opt_dim(lua_State *L, int idx, const char *fn, int def) {
    if (lua_isnoneornil(L, idx)) return def;
    return mlua_check_dim(L, idx, fn);
}

ml_tensor *mlua_index_to_core(lua_State *L, int idx, const char *fn) {
    ml_tensor *t = mlua_to_tensor(L, idx), *owned = NULL;
    if (!t) {
        if (!lua_istable(L, idx))
            luaL_error(L, "%s: index must be an int64 tensor or a table of integers, got %s", fn,
                       luaL_typename(L, idx));
        owned = t = mlua_table_to_tensor(L, idx, ML_I64);
    }
    if (t->dtype != ML_I64) {
        ml_release(owned);
        luaL_error(L, "%s: index tensor must be int64 (use :long()), got %s", fn, ml_dtype_name(t->dtype));
    }
    ml_tensor *c = ml_contiguous(t);
    ml_tensor *z = c ? ml_empty(ML_I64, t->ndim, t->shape) : NULL;
    if (z) {
        const int64_t *s = ml_i64(c);
        int64_t *d = ml_i64(z);
        /* wrapping: math.mininteger becomes a huge index the op refuses, not undefined behaviour */
        for (int64_t i = 0, n = ml_numel(t); i < n; i++) d[i] = (int64_t)((uint64_t)s[i] - 1u);
    }
    ml_release(c);
    ml_release(owned);
    if (!z) mlua_error(L);
    return z;
}

ml_tensor *mlua_index_from_core(ml_tensor *t) {
    ml_tensor *c = ml_contiguous(t);
    ml_tensor *z = c ? ml_empty(ML_I64, t->ndim, t->shape) : NULL;
    if (z) {
        const int64_t *s = ml_i64(c);
        int64_t *d = ml_i64(z);
        for (int64_t i = 0, n = ml_numel(t); i < n; i++) d[i] = s[i] + 1;
    }
    ml_release(c);
    return z;
}

int mlua_check_shape(lua_State *L, int idx, int64_t *shape, const char *fn) {
    int nd = 0;
    if (lua_istable(L, idx) && !mlua_to_tensor(L, idx)) {
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
        if (n > ML_MAX_DIMS) luaL_error(L, "%s: %d dimensions requested, at most %d are supported", fn, (int)n, ML_MAX_DIMS);
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            int ok;
            lua_Integer v = lua_tointegerx(L, -1, &ok);
            if (!ok) luaL_error(L, "%s: size %d must be an integer, got %s", fn, (int)i, luaL_typename(L, -1));
            shape[nd++] = v;
            lua_pop(L, 1);
        }
        return nd;
    }
    int top = lua_gettop(L);
    for (int i = idx; i <= top && lua_type(L, i) == LUA_TNUMBER; i++) {
        if (nd >= ML_MAX_DIMS) luaL_error(L, "%s: at most %d dimensions are supported", fn, ML_MAX_DIMS);
        int ok;
        lua_Integer v = lua_tointegerx(L, i, &ok);
        if (!ok) luaL_error(L, "%s: size %d must be an integer, got %s", fn, nd + 1, lua_tostring(L, i));
        shape[nd++] = v;
    }
    return nd;
}

/* ------------------------------------------------------------ options */
static int opt_field(lua_State *L, int idx, const char *key) {
    if (!lua_istable(L, idx)) return LUA_TNIL;
    return lua_getfield(L, idx, key);
}

lua_Number mlua_opt_number(lua_State *L, int idx, const char *key, lua_Number def) {
    int ty = opt_field(L, idx, key);
    if (ty == LUA_TNIL) {
        if (lua_istable(L, idx)) lua_pop(L, 1);
        return def;
    }
    int ok;
    lua_Number v = lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_error(L, "option '%s' must be a number, got %s", key, luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

lua_Integer mlua_opt_integer(lua_State *L, int idx, const char *key, lua_Integer def) {
    int ty = opt_field(L, idx, key);
    if (ty == LUA_TNIL) {
        if (lua_istable(L, idx)) lua_pop(L, 1);
        return def;
    }
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok) luaL_error(L, "option '%s' must be an integer, got %s", key, lua_tostring(L, -1) ? lua_tostring(L, -1) : luaL_typename(L, -1));
    lua_pop(L, 1);
    return v;
}

bool mlua_opt_bool(lua_State *L, int idx, const char *key, bool def) {
    int ty = opt_field(L, idx, key);
    if (ty == LUA_TNIL) {
        if (lua_istable(L, idx)) lua_pop(L, 1);
        return def;
    }
    if (ty != LUA_TBOOLEAN) luaL_error(L, "option '%s' must be true or false, got %s", key, luaL_typename(L, -1));
    bool v = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

const char *mlua_opt_string(lua_State *L, int idx, const char *key, const char *def) {
    int ty = opt_field(L, idx, key);
    if (ty == LUA_TNIL) {
        if (lua_istable(L, idx)) lua_pop(L, 1);
        return def;
    }
    if (ty != LUA_TSTRING) luaL_error(L, "option '%s' must be a string, got %s", key, luaL_typename(L, -1));
    const char *s = lua_tostring(L, -1);
    lua_pop(L, 1); /* the table keeps the string alive */
    return s;
}

void mlua_check_options(lua_State *L, int idx, const char *fn, const char *const *allowed) {
    if (lua_isnoneornil(L, idx)) return;
    if (!lua_istable(L, idx)) luaL_error(L, "%s: options must be a table, got %s", fn, luaL_typename(L, idx));
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            luaL_error(L, "%s: options must be given by name ({stride = 2}), found a %s key", fn,
                       luaL_typename(L, -1));
        }
        const char *k = lua_tostring(L, -1);
        bool ok = false;
        for (int i = 0; allowed[i]; i++) ok |= strcmp(allowed[i], k) == 0;
        if (!ok) {
            luaL_Buffer b;
            luaL_buffinit(L, &b);
            for (int i = 0; allowed[i]; i++) {
                if (i) luaL_addstring(&b, ", ");
                luaL_addstring(&b, allowed[i]);
            }
            luaL_pushresult(&b);
            luaL_error(L, "%s: unknown option '%s' (known: %s)", fn, k, lua_tostring(L, -1));
        }
    }
}

/* ------------------------------------------------------------ registration */
void mlua_register(lua_State *L, const luaL_Reg *funcs, bool as_methods) {
    luaL_setfuncs(L, funcs, 0);
    if (as_methods) {
        luaL_getmetatable(L, MLUA_TENSOR);
        lua_getfield(L, -1, "__methods");
        luaL_setfuncs(L, funcs, 0);
        lua_pop(L, 2);
    }
}

void mlua_subtable(lua_State *L, const char *name) {
    if (lua_getfield(L, -1, name) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name);
    }
}

/* ------------------------------------------------------------ memory */
static int64_t gc_threshold = (int64_t)256 << 20;

void mlua_memory_pressure(lua_State *L) {
    ml_memory_stats st;
    ml_memory_get(&st);
    if (st.live_bytes <= gc_threshold) return;
    lua_gc(L, LUA_GCCOLLECT);
    ml_memory_get(&st);
    int64_t next = st.live_bytes * 2;
    gc_threshold = next > ((int64_t)256 << 20) ? next : ((int64_t)256 << 20);
}

/* ------------------------------------------------------------ Lua values <-> JSON */
#define JSON_MAX_DEPTH 64

typedef struct {
    const char *fn;
    char *err;
    size_t errn;
} json_ctx;

static cJSON *json_fail(json_ctx *c, cJSON *partial, const char *msg, const char *detail) {
    cJSON_Delete(partial);
    if (!c->err[0]) snprintf(c->err, c->errn, "%s: %s%s", c->fn, msg, detail ? detail : "");
    return NULL;
}

static cJSON *to_json(lua_State *L, int idx, int depth, json_ctx *c) {
    idx = lua_absindex(L, idx);
    if (depth > JSON_MAX_DEPTH) return json_fail(c, NULL, "tables nested too deeply (or a cycle)", NULL);
    if (!lua_checkstack(L, 4)) return json_fail(c, NULL, "out of Lua stack space", NULL);
    switch (lua_type(L, idx)) {
    case LUA_TNIL: return cJSON_CreateNull();
    case LUA_TBOOLEAN: return cJSON_CreateBool(lua_toboolean(L, idx));
    case LUA_TNUMBER: {
        lua_Number v = lua_tonumber(L, idx);
        if (v != v || v == HUGE_VAL || v == -HUGE_VAL) return json_fail(c, NULL, "NaN and infinity have no JSON form", NULL);
        return cJSON_CreateNumber(v);
    }
    case LUA_TSTRING: return cJSON_CreateString(lua_tostring(L, idx));
    case LUA_TTABLE: {
        lua_Integer n = (lua_Integer)lua_rawlen(L, idx), count = 0;
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            count++;
            lua_pop(L, 1);
        }
        bool array = n > 0;
        if (array && count != n) return json_fail(c, NULL, "a table mixes list entries and named entries", NULL);
        cJSON *out = array ? cJSON_CreateArray() : cJSON_CreateObject();
        if (!out) return json_fail(c, NULL, "out of memory", NULL);
        if (array) {
            for (lua_Integer i = 1; i <= n; i++) {
                lua_rawgeti(L, idx, i);
                cJSON *v = to_json(L, -1, depth + 1, c);
                lua_pop(L, 1);
                if (!v) return json_fail(c, out, "", NULL);
                cJSON_AddItemToArray(out, v);
            }
            return out;
        }
        lua_pushnil(L);
        while (lua_next(L, idx)) {
            int kt = lua_type(L, -2);
            if (kt != LUA_TSTRING && kt != LUA_TNUMBER) {
                lua_pop(L, 2);
                return json_fail(c, out, "keys must be strings or numbers, got a ", luaL_typename(L, -2));
            }
            lua_pushvalue(L, -2); /* a copy, so lua_tostring does not disturb lua_next */
            const char *k = lua_tostring(L, -1);
            cJSON *v = to_json(L, -2, depth + 1, c);
            if (!v) {
                lua_pop(L, 3);
                return json_fail(c, out, "", NULL);
            }
            cJSON_AddItemToObject(out, k, v);
            lua_pop(L, 2);
        }
        return out;
    }
    default: {
        ml_tensor *t = mlua_to_tensor(L, idx);
        double v;
        if (t && ml_numel(t) == 1 && ml_item(t, &v) == 0) return cJSON_CreateNumber(v);
        return json_fail(c, NULL, "cannot encode a ", t ? "tensor of more than one element" : luaL_typename(L, idx));
    }
    }
}

cJSON *mlua_to_json(lua_State *L, int idx, const char *fn, char *err, size_t errn) {
    json_ctx c = {fn, err, errn};
    err[0] = 0;
    int top = lua_gettop(L);
    cJSON *j = to_json(L, idx, 0, &c);
    lua_settop(L, top);
    return j;
}

cJSON *mlua_check_json(lua_State *L, int idx, const char *fn) {
    char err[256];
    cJSON *j = mlua_to_json(L, idx, fn, err, sizeof err);
    if (!j) luaL_error(L, "%s", err);
    return j;
}

static void push_json(lua_State *L, const cJSON *j, int depth) {
    if (depth > JSON_MAX_DEPTH) luaL_error(L, "json: nested deeper than %d", JSON_MAX_DEPTH);
    luaL_checkstack(L, 3, "json: nested too deeply");
    if (cJSON_IsNull(j)) lua_pushnil(L);
    else if (cJSON_IsBool(j)) lua_pushboolean(L, cJSON_IsTrue(j));
    else if (cJSON_IsNumber(j)) {
        double v = j->valuedouble;
        if (v == (double)(lua_Integer)v && v > -9e15 && v < 9e15) lua_pushinteger(L, (lua_Integer)v);
        else lua_pushnumber(L, v);
    } else if (cJSON_IsString(j)) lua_pushstring(L, j->valuestring);
    else if (cJSON_IsArray(j)) {
        lua_createtable(L, cJSON_GetArraySize(j), 0);
        int i = 0;
        for (const cJSON *e = j->child; e; e = e->next) {
            push_json(L, e, depth + 1);
            lua_rawseti(L, -2, ++i);
        }
    } else {
        lua_newtable(L);
        for (const cJSON *e = j->child; e; e = e->next) {
            push_json(L, e, depth + 1);
            lua_setfield(L, -2, e->string);
        }
    }
}

void mlua_push_json(lua_State *L, const cJSON *j) { push_json(L, j, 0); }
