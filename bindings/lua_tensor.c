/* lua_tensor.c -- the Tensor userdata: creation, shape, views, indexing,
 * conversion, printing, and the Lua operators. */
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lua_util.h"
#include "print.h"
#include "rng.h"
#include "areas.h"

static ml_dtype check_dtype(lua_State *L, int idx, ml_dtype def) {
    if (lua_isnoneornil(L, idx)) return def;
    const char *s = luaL_checkstring(L, idx);
    if (!strcmp(s, "float") || !strcmp(s, "float32")) return ML_F32;
    if (!strcmp(s, "long") || !strcmp(s, "int64")) return ML_I64;
    luaL_error(L, "unknown dtype '%s' (use \"float32\" or \"int64\")", s);
    return def;
}

/* A trailing dtype string after a shape: ml.zeros(2, 3, "int64"). */
static ml_dtype trailing_dtype(lua_State *L, ml_dtype def) {
    int top = lua_gettop(L);
    return lua_type(L, top) == LUA_TSTRING ? check_dtype(L, top, def) : def;
}

/* ------------------------------------------------------------ creation */
static int l_tensor(lua_State *L) {
    ml_dtype dt = check_dtype(L, 2, ML_F32);
    if (lua_type(L, 1) == LUA_TNUMBER) {
        ml_tensor *t = ml_full(dt, 0, NULL, lua_tonumber(L, 1));
        return mlua_push_tensor(L, t);
    }
    ml_tensor *src = mlua_to_tensor(L, 1);
    if (src) return mlua_push_tensor(L, ml_to_dtype(src, lua_isnoneornil(L, 2) ? src->dtype : dt));
    if (!lua_istable(L, 1))
        return luaL_argerror(L, 1, lua_pushfstring(L, "table or number expected, got %s", luaL_typename(L, 1)));
    return mlua_push_tensor(L, mlua_table_to_tensor(L, 1, dt));
}

static int shape_arg(lua_State *L, int idx, int64_t *shape, const char *fn) {
    int nd = mlua_check_shape(L, idx, shape, fn);
    for (int d = 0; d < nd; d++)
        if (shape[d] < 0) luaL_error(L, "%s: size %d is negative (%I)", fn, d + 1, (LUAI_UACINT)shape[d]);
    return nd;
}

static int l_zeros(lua_State *L) {
    int64_t s[ML_MAX_DIMS];
    int nd = shape_arg(L, 1, s, "zeros");
    return mlua_push_tensor(L, ml_zeros(trailing_dtype(L, ML_F32), nd, s));
}

static int l_ones(lua_State *L) {
    int64_t s[ML_MAX_DIMS];
    int nd = shape_arg(L, 1, s, "ones");
    return mlua_push_tensor(L, ml_full(trailing_dtype(L, ML_F32), nd, s, 1.0));
}

static int l_full(lua_State *L) {
    int64_t s[ML_MAX_DIMS];
    luaL_checktype(L, 1, LUA_TTABLE);
    int nd = shape_arg(L, 1, s, "full");
    double v = luaL_checknumber(L, 2);
    return mlua_push_tensor(L, ml_full(check_dtype(L, 3, ML_F32), nd, s, v));
}

static int l_arange(lua_State *L) {
    double a = luaL_checknumber(L, 1);
    ml_dtype dt = trailing_dtype(L, ML_F32);
    if (lua_type(L, 2) != LUA_TNUMBER) return mlua_push_tensor(L, ml_arange(0, a, 1, dt));
    double b = luaL_checknumber(L, 2);
    double step = lua_type(L, 3) == LUA_TNUMBER ? lua_tonumber(L, 3) : 1.0;
    return mlua_push_tensor(L, ml_arange(a, b, step, dt));
}

static int l_eye(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    lua_Integer m = luaL_optinteger(L, 2, n);
    return mlua_push_tensor(L, ml_eye(n, m));
}

static int l_rand(lua_State *L) {
    int64_t s[ML_MAX_DIMS];
    int nd = shape_arg(L, 1, s, "rand");
    return mlua_push_tensor(L, ml_rand(nd, s));
}

static int l_randn(lua_State *L) {
    int64_t s[ML_MAX_DIMS];
    int nd = shape_arg(L, 1, s, "randn");
    return mlua_push_tensor(L, ml_randn(nd, s));
}

/* ml.randint(high, shape) -> 1..high; ml.randint(low, high, shape) -> low..high
 * (inclusive, as Lua's math.random). */
static int l_randint(lua_State *L) {
    lua_Integer lo = 1, hi;
    int shape_idx;
    if (lua_type(L, 2) == LUA_TNUMBER && lua_istable(L, 3)) {
        lo = luaL_checkinteger(L, 1);
        hi = luaL_checkinteger(L, 2);
        shape_idx = 3;
    } else {
        hi = luaL_checkinteger(L, 1);
        shape_idx = 2;
    }
    if (!lua_istable(L, shape_idx)) luaL_error(L, "randint: expected a shape table, e.g. ml.randint(1, 10, {4})");
    int64_t s[ML_MAX_DIMS];
    int nd = shape_arg(L, shape_idx, s, "randint");
    if (hi < lo) luaL_error(L, "randint: high (%I) is less than low (%I)", (LUAI_UACINT)hi, (LUAI_UACINT)lo);
    if (hi == LUA_MAXINTEGER) luaL_error(L, "randint: high must be below math.maxinteger");
    return mlua_push_tensor(L, ml_randint(lo, hi + 1, nd, s));
}

static int l_seed(lua_State *L) {
    ml_seed((uint64_t)luaL_checkinteger(L, 1));
    return 0;
}

static int l_zeros_like(lua_State *L) { return mlua_push_tensor(L, ml_zeros_like(mlua_check_tensor(L, 1))); }
static int l_ones_like(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    return mlua_push_tensor(L, ml_full(t->dtype, t->ndim, t->shape, 1.0));
}
static int l_rand_like(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    return mlua_push_tensor(L, ml_rand(t->ndim, t->shape));
}
static int l_randn_like(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    return mlua_push_tensor(L, ml_randn(t->ndim, t->shape));
}

/* ------------------------------------------------------------ queries */
static void push_shape(lua_State *L, const ml_tensor *t) {
    lua_createtable(L, t->ndim, 0);
    for (int d = 0; d < t->ndim; d++) {
        lua_pushinteger(L, t->shape[d]);
        lua_rawseti(L, -2, d + 1);
    }
}

static int l_shape(lua_State *L) {
    push_shape(L, mlua_check_tensor(L, 1));
    return 1;
}

static int l_size(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) {
        push_shape(L, t);
        return 1;
    }
    int d = mlua_check_dim(L, 2, "size"), dd;
    if (ml_dim_check("size", t, d, &dd) || t->ndim == 0) {
        if (t->ndim == 0) ml_fail("size: a 0-dimensional tensor has no dimension %d", d + 1);
        return mlua_error(L);
    }
    lua_pushinteger(L, t->shape[dd]);
    return 1;
}

static int l_numel(lua_State *L) {
    lua_pushinteger(L, ml_numel(mlua_check_tensor(L, 1)));
    return 1;
}

static int l_dim(lua_State *L) {
    lua_pushinteger(L, mlua_check_tensor(L, 1)->ndim);
    return 1;
}

static int l_dtype(lua_State *L) {
    lua_pushstring(L, ml_dtype_name(mlua_check_tensor(L, 1)->dtype));
    return 1;
}

static int l_is_contiguous(lua_State *L) {
    lua_pushboolean(L, ml_is_contiguous(mlua_check_tensor(L, 1)));
    return 1;
}

static void push_number(lua_State *L, const ml_tensor *t, double v) {
    if (t->dtype == ML_I64) lua_pushinteger(L, (lua_Integer)v);
    else lua_pushnumber(L, v);
}

static int l_item(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    double v;
    if (ml_item(t, &v)) return mlua_error(L);
    push_number(L, t, v);
    return 1;
}

static void totable_rec(lua_State *L, const ml_tensor *t, int d, int64_t *idx) {
    lua_createtable(L, (int)t->shape[d], 0);
    for (int64_t i = 0; i < t->shape[d]; i++) {
        idx[d] = i;
        if (d == t->ndim - 1) push_number(L, t, ml_get(t, idx));
        else totable_rec(L, t, d + 1, idx);
        lua_rawseti(L, -2, i + 1);
    }
}

static int l_totable(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    int64_t idx[ML_MAX_DIMS] = {0};
    if (t->ndim == 0) {
        push_number(L, t, ml_get(t, idx));
        return 1;
    }
    if (ml_numel(t) > 50000000) luaL_error(L, "totable: %I elements is too many for a Lua table", (LUAI_UACINT)ml_numel(t));
    totable_rec(L, t, 0, idx);
    return 1;
}

/* ------------------------------------------------------------ copies, conversion */
static int l_clone(lua_State *L) { return mlua_push_tensor(L, ml_clone(mlua_check_tensor(L, 1))); }
static int l_contiguous(lua_State *L) { return mlua_push_tensor(L, ml_contiguous(mlua_check_tensor(L, 1))); }
static int l_float(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    return mlua_push_tensor(L, t->dtype == ML_F32 ? ml_retain(t) : ml_to_dtype(t, ML_F32));
}
static int l_long(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    return mlua_push_tensor(L, t->dtype == ML_I64 ? ml_retain(t) : ml_to_dtype(t, ML_I64));
}

static int l_copy(lua_State *L) {
    ml_tensor *dst = mlua_check_tensor(L, 1);
    bool owned;
    ml_tensor *src = mlua_check_tensorish(L, 2, &owned);
    int rc = ml_copy_(dst, src);
    if (owned) ml_release(src);
    if (rc) return mlua_error(L);
    lua_settop(L, 1);
    return 1;
}

static int l_fill(lua_State *L) {
    ml_tensor *dst = mlua_check_tensor(L, 1);
    if (ml_fill_(dst, luaL_checknumber(L, 2))) return mlua_error(L);
    lua_settop(L, 1);
    return 1;
}

static int l_zero(lua_State *L) {
    ml_tensor *dst = mlua_check_tensor(L, 1);
    if (ml_fill_(dst, 0)) return mlua_error(L);
    lua_settop(L, 1);
    return 1;
}

/* ------------------------------------------------------------ views */
static int l_reshape(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    int64_t s[ML_MAX_DIMS];
    int nd = mlua_check_shape(L, 2, s, "reshape");
    if (nd == 0 && !lua_istable(L, 2) && !lua_isnoneornil(L, 2))
        return luaL_argerror(L, 2, "sizes expected");
    return mlua_push_tensor(L, ml_reshape(t, nd, s));
}

static int l_flatten(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    int s = mlua_opt_dim(L, 2, "flatten", 0), e = mlua_opt_dim(L, 3, "flatten", -1);
    return mlua_push_tensor(L, ml_flatten(t, s, e));
}

static int l_permute(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    int perm[ML_MAX_DIMS], n = 0;
    if (lua_istable(L, 2)) {
        n = (int)lua_rawlen(L, 2);
        if (n > ML_MAX_DIMS) luaL_error(L, "permute: too many dimensions");
        lua_settop(L, 2);
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, 2, i + 1); /* at index 3 */
            perm[i] = mlua_check_dim(L, 3, "permute");
            lua_pop(L, 1);
        }
    } else {
        int top = lua_gettop(L);
        if (top - 1 > ML_MAX_DIMS) luaL_error(L, "permute: too many dimensions");
        for (int i = 2; i <= top; i++) perm[n++] = mlua_check_dim(L, i, "permute");
    }
    if (n != t->ndim)
        luaL_error(L, "permute: got %d dimensions for a tensor with %d (shape %s)", n, t->ndim, ML_SHAPE_STR(t));
    return mlua_push_tensor(L, ml_permute(t, perm));
}

static int l_transpose(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    int a = mlua_opt_dim(L, 2, "transpose", 0), b = mlua_opt_dim(L, 3, "transpose", 1);
    if (t->ndim < 2 && lua_isnoneornil(L, 2))
        luaL_error(L, "transpose: needs at least 2 dimensions, tensor has shape %s", ML_SHAPE_STR(t));
    return mlua_push_tensor(L, ml_transpose(t, a, b));
}

static int l_t(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    if (t->ndim != 2) luaL_error(L, "t: expects a 2-d tensor, got shape %s (use transpose(d1, d2))", ML_SHAPE_STR(t));
    return mlua_push_tensor(L, ml_transpose(t, 0, 1));
}

static int l_narrow(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    int d = mlua_check_dim(L, 2, "narrow");
    lua_Integer start = luaL_checkinteger(L, 3), len = luaL_checkinteger(L, 4);
    if (start < 1) luaL_error(L, "narrow: start %I is invalid (positions are 1-based)", (LUAI_UACINT)start);
    return mlua_push_tensor(L, ml_narrow(t, d, start - 1, len));
}

static int l_select(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    int d = mlua_check_dim(L, 2, "select");
    lua_Integer i = luaL_checkinteger(L, 3);
    int dd;
    if (t->ndim > 0 && ml_dim_check("select", t, d, &dd) == 0 && i < 0) i += t->shape[dd] + 1;
    if (i == 0) luaL_error(L, "select: index 0 is invalid (indices are 1-based; -1 is the last)");
    if (i < 0) luaL_error(L, "select: index %I is out of range", (LUAI_UACINT)luaL_checkinteger(L, 3));
    return mlua_push_tensor(L, ml_select(t, d, i - 1));
}

static int l_squeeze(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    int d = lua_isnoneornil(L, 2) ? ML_ALL_DIMS : mlua_check_dim(L, 2, "squeeze");
    return mlua_push_tensor(L, ml_squeeze(t, d));
}

static int l_unsqueeze(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    return mlua_push_tensor(L, ml_unsqueeze(t, mlua_check_dim(L, 2, "unsqueeze")));
}

static int l_expand(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    int64_t s[ML_MAX_DIMS];
    int nd = mlua_check_shape(L, 2, s, "expand");
    return mlua_push_tensor(L, ml_expand(t, nd, s));
}

static int l_expand_as(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1), *o = mlua_check_tensor(L, 2);
    return mlua_push_tensor(L, ml_expand(t, o->ndim, o->shape));
}

static int l_view_as(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1), *o = mlua_check_tensor(L, 2);
    return mlua_push_tensor(L, ml_reshape(t, o->ndim, o->shape));
}

/* Collects a Lua list of tensors into a malloc'd array (borrowed pointers). */
static ml_tensor **tensor_list(lua_State *L, int idx, int *n, const char *fn) {
    if (!lua_istable(L, idx) || mlua_to_tensor(L, idx))
        luaL_error(L, "%s: expects a table of tensors as its first argument", fn);
    *n = (int)lua_rawlen(L, idx);
    if (*n == 0) luaL_error(L, "%s: the table of tensors is empty", fn);
    ml_tensor **ts = lua_newuserdatauv(L, sizeof *ts * (size_t)*n, 0); /* freed by the GC */
    for (int i = 0; i < *n; i++) {
        lua_rawgeti(L, idx, i + 1);
        ts[i] = mlua_to_tensor(L, -1);
        if (!ts[i]) luaL_error(L, "%s: element %d of the table is a %s, not a tensor", fn, i + 1, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    return ts;
}

static int l_cat(lua_State *L) {
    int n, d = mlua_opt_dim(L, 2, "cat", 0);
    ml_tensor **ts = tensor_list(L, 1, &n, "cat");
    return mlua_push_tensor(L, ml_cat(n, ts, d));
}

static int l_stack(lua_State *L) {
    int n, d = mlua_opt_dim(L, 2, "stack", 0);
    ml_tensor **ts = tensor_list(L, 1, &n, "stack");
    return mlua_push_tensor(L, ml_stack(n, ts, d));
}

/* ------------------------------------------------------------ metamethods */
static int l_gc(lua_State *L) {
    ml_tensor **p = luaL_checkudata(L, 1, MLUA_TENSOR);
    ml_release(*p);
    *p = NULL;
    return 0;
}

static int l_tostring(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    char *s = ml_format(t, NULL);
    lua_pushstring(L, s);
    free(s);
    return 1;
}

/* A position of a dimension of size n from Lua (1-based; -1 is the last),
 * as 0-based; fails naming the entry. allow_end lets it be n + 1 (the end of
 * an empty range). */
static int64_t table_position(lua_State *L, lua_Integer i, int64_t n, int entry, int dim, bool allow_end) {
    lua_Integer orig = i;
    if (i < 0 && i >= -n) i += n + 1;
    if (i < 1 || i > n + (allow_end ? 1 : 0))
        luaL_error(L, "index: entry %d: position %I is out of range for dimension %d of size %I (1-based; -1 is the last)",
                   entry, (LUAI_UACINT)orig, dim, (LUAI_UACINT)n);
    return i - 1;
}

/* t[{i, {a, b}, {}, ...}] as in Torch7: an integer selects (that dimension
 * goes), a range {a, b} narrows to a..b inclusive ({a}: a..a, {}: all), one
 * entry per leading dimension. Parsed (raising Lua errors, holding no C
 * reference) before the view is built. */
typedef struct {
    int n;
    int64_t first[ML_MAX_DIMS], len[ML_MAX_DIMS];
    bool sel[ML_MAX_DIMS];
    bool all_ints; /* every dimension got an integer: the result is a number */
} table_index;

static void table_parse(lua_State *L, const ml_tensor *t, int idx, table_index *ti) {
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    if (n > t->ndim)
        luaL_error(L, "index: %I entries for a tensor with %d dimensions (shape %s)", (LUAI_UACINT)n, t->ndim,
                   ML_SHAPE_STR(t));
    ti->n = (int)n;
    ti->all_ints = n == t->ndim;
    int64_t *first = ti->first, *len = ti->len;
    bool *sel = ti->sel;
    bool *all_ints = &ti->all_ints;
    for (int k = 0; k < n; k++) {
        int64_t size = t->shape[k];
        int type = lua_rawgeti(L, idx, k + 1);
        if (type == LUA_TNUMBER) {
            int ok;
            lua_Integer i = lua_tointegerx(L, -1, &ok);
            if (!ok) luaL_error(L, "index: entry %d (%s) is not an integer", k + 1, lua_tostring(L, -1));
            sel[k] = true;
            first[k] = table_position(L, i, size, k + 1, k + 1, false);
            len[k] = 1;
        } else if (type == LUA_TTABLE) {
            lua_Integer m = (lua_Integer)lua_rawlen(L, -1);
            if (m > 2) luaL_error(L, "index: entry %d: a range is {first, last}, got %I numbers", k + 1, (LUAI_UACINT)m);
            lua_Integer bounds[2] = {1, -1};
            for (int j = 0; j < m; j++) {
                lua_rawgeti(L, -1, j + 1);
                int ok;
                bounds[j] = lua_tointegerx(L, -1, &ok);
                if (!ok) luaL_error(L, "index: entry %d: the range {first, last} needs integers, got %s", k + 1,
                                    luaL_typename(L, -1));
                lua_pop(L, 1);
            }
            if (m == 1) bounds[1] = bounds[0];
            sel[k] = false;
            *all_ints = false;
            first[k] = table_position(L, bounds[0], size, k + 1, k + 1, true);
            int64_t last = size == 0 && m == 0 ? -1 : table_position(L, bounds[1], size, k + 1, k + 1, true);
            if (last >= size) luaL_error(L, "index: entry %d: last position %I is out of range for dimension %d of size %I",
                                         k + 1, (LUAI_UACINT)bounds[1], k + 1, (LUAI_UACINT)size);
            if (last < first[k] - 1)
                luaL_error(L, "index: entry %d: the range {%I, %I} ends before it starts", k + 1,
                           (LUAI_UACINT)bounds[0], (LUAI_UACINT)bounds[1]);
            len[k] = last - first[k] + 1;
        } else {
            luaL_error(L, "index: entry %d must be an integer or a range {first, last}, got %s", k + 1,
                       luaL_typename(L, -1));
        }
        lua_pop(L, 1);
    }
}

/* The view of a parsed index: narrow every dimension, then select from the last to the first. */
static ml_tensor *table_view(ml_tensor *t, const table_index *ti) {
    ml_tensor *v = ml_retain(t);
    for (int k = 0; k < ti->n && v; k++) {
        ml_tensor *next = ml_narrow(v, k, ti->first[k], ti->len[k]);
        ml_release(v);
        v = next;
    }
    for (int k = ti->n - 1; k >= 0 && v; k--) {
        if (!ti->sel[k]) continue;
        ml_tensor *next = ml_select(v, k, 0);
        ml_release(v);
        v = next;
    }
    return v;
}

/* t[i]: the i-th slice along dimension 1 (a view), or a number for 1-d;
 * t[{...}]: see table_view. */
static int l_index(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) {
        int ok;
        lua_Integer i = lua_tointegerx(L, 2, &ok);
        if (!ok) luaL_error(L, "index: %s is not an integer", lua_tostring(L, 2));
        if (t->ndim == 0) luaL_error(L, "index: cannot index a 0-dimensional tensor (use :item())");
        if (i < 0) i += t->shape[0] + 1;
        if (i < 1 || i > t->shape[0])
            luaL_error(L, "index: %I is out of range for dimension 1 of size %I (indices are 1-based)",
                       (LUAI_UACINT)lua_tointeger(L, 2), (LUAI_UACINT)t->shape[0]);
        if (t->ndim == 1) {
            int64_t ix = i - 1;
            push_number(L, t, ml_get(t, &ix));
            return 1;
        }
        return mlua_push_tensor(L, ml_select(t, 0, i - 1));
    }
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *k = lua_tostring(L, 2);
        if (!strcmp(k, "grad")) {
            if (t->grad) mlua_push_tensor(L, ml_retain(t->grad));
            else lua_pushnil(L);
            return 1;
        }
        luaL_getmetatable(L, MLUA_TENSOR);
        lua_getfield(L, -1, "__methods");
        lua_getfield(L, -1, k);
        return 1;
    }
    if (lua_istable(L, 2) && !mlua_to_tensor(L, 2)) {
        table_index ti;
        table_parse(L, t, 2, &ti);
        ml_tensor *v = table_view(t, &ti);
        if (!v) return mlua_error(L);
        if (ti.all_ints) {
            int64_t zero[ML_MAX_DIMS] = {0};
            double x = ml_get(v, zero);
            ml_release(v);
            push_number(L, t, x);
            return 1;
        }
        return mlua_push_tensor(L, v);
    }
    return luaL_error(L, "index: cannot index a tensor with a %s (use t[i], t[{i, j}], t[{{first, last}}] or a method)",
                      luaL_typename(L, 2));
}

static int l_newindex(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer i = luaL_checkinteger(L, 2);
        if (t->ndim == 0) luaL_error(L, "index: cannot index a 0-dimensional tensor");
        if (i < 0) i += t->shape[0] + 1;
        if (i < 1 || i > t->shape[0])
            luaL_error(L, "index: %I is out of range for dimension 1 of size %I (indices are 1-based)",
                       (LUAI_UACINT)lua_tointeger(L, 2), (LUAI_UACINT)t->shape[0]);
        ml_tensor *row = ml_select(t, 0, i - 1);
        if (!row) return mlua_error(L);
        int rc;
        if (lua_type(L, 3) == LUA_TNUMBER) {
            rc = ml_fill_(row, lua_tonumber(L, 3));
        } else {
            bool owned;
            ml_tensor *src = mlua_to_tensor(L, 3);
            owned = false;
            if (!src) {
                ml_release(row);
                src = mlua_check_tensorish(L, 3, &owned);
                row = ml_select(t, 0, i - 1);
            }
            rc = ml_copy_(row, src);
            if (owned) ml_release(src);
        }
        ml_release(row);
        if (rc) return mlua_error(L);
        return 0;
    }
    if (lua_istable(L, 2) && !mlua_to_tensor(L, 2)) {
        table_index ti;
        table_parse(L, t, 2, &ti);
        bool owned = false;
        ml_tensor *src = NULL;
        if (lua_type(L, 3) != LUA_TNUMBER) src = mlua_check_tensorish(L, 3, &owned); /* may raise: no view yet */
        ml_tensor *v = table_view(t, &ti);
        int rc = v ? (src ? ml_copy_(v, src) : ml_fill_(v, lua_tonumber(L, 3))) : -1;
        ml_release(v);
        if (owned) ml_release(src);
        if (rc) return mlua_error(L);
        return 0;
    }
    if (lua_type(L, 2) == LUA_TSTRING && !strcmp(lua_tostring(L, 2), "grad")) {
        ml_tensor *g = lua_isnil(L, 3) ? NULL : mlua_check_tensor(L, 3);
        if (g && !ml_same_shape(g, t))
            luaL_error(L, "grad: shape %s does not match the tensor's %s", ML_SHAPE_STR(g), ML_SHAPE_STR(t));
        ml_tensor *old = t->grad;
        t->grad = g ? ml_clone(g) : NULL;
        ml_release(old);
        return 0;
    }
    return luaL_error(L, "cannot set field '%s' of a tensor", luaL_tolstring(L, 2, NULL));
}

static int l_len(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    lua_pushinteger(L, t->ndim ? t->shape[0] : 0);
    return 1;
}

/* a op b where either side may be a number */
typedef ml_tensor *(*binfn)(ml_tensor *, ml_tensor *);
static int arith(lua_State *L, binfn f, ml_tensor *(*scal)(ml_tensor *, double),
                 ml_tensor *(*rscal)(double, ml_tensor *)) {
    ml_tensor *a = mlua_to_tensor(L, 1), *b = mlua_to_tensor(L, 2);
    if (a && b) return mlua_push_tensor(L, f(a, b));
    if (a && lua_type(L, 2) == LUA_TNUMBER) return mlua_push_tensor(L, scal(a, lua_tonumber(L, 2)));
    if (b && lua_type(L, 1) == LUA_TNUMBER) return mlua_push_tensor(L, rscal(lua_tonumber(L, 1), b));
    return luaL_error(L, "arithmetic on a tensor and a %s", luaL_typename(L, a ? 2 : 1));
}

static ml_tensor *sub_s(ml_tensor *a, double s) { return ml_add_scalar(a, -s); }
static ml_tensor *div_s(ml_tensor *a, double s) { return ml_mul_scalar(a, 1.0 / s); }
static ml_tensor *radd_s(double s, ml_tensor *a) { return ml_add_scalar(a, s); }
static ml_tensor *rmul_s(double s, ml_tensor *a) { return ml_mul_scalar(a, s); }

static int l_add(lua_State *L) { return arith(L, ml_add, ml_add_scalar, radd_s); }
static int l_sub(lua_State *L) { return arith(L, ml_sub, sub_s, ml_rsub_scalar); }
static int l_mul(lua_State *L) { return arith(L, ml_mul, ml_mul_scalar, rmul_s); }
static int l_div(lua_State *L) { return arith(L, ml_div, div_s, ml_rdiv_scalar); }
static int l_pow(lua_State *L) { return arith(L, ml_pow, ml_pow_scalar, ml_rpow_scalar); }
static int l_unm(lua_State *L) { return mlua_push_tensor(L, ml_neg(mlua_check_tensor(L, 1))); }

static const luaL_Reg functions[] = {
    {"tensor", l_tensor},     {"zeros", l_zeros},         {"ones", l_ones},
    {"full", l_full},         {"arange", l_arange},       {"eye", l_eye},
    {"rand", l_rand},         {"randn", l_randn},         {"randint", l_randint},
    {"seed", l_seed},         {"zeros_like", l_zeros_like}, {"ones_like", l_ones_like},
    {"rand_like", l_rand_like}, {"randn_like", l_randn_like}, {"cat", l_cat},
    {"stack", l_stack},       {NULL, NULL}};

static const luaL_Reg methods[] = {
    {"shape", l_shape},         {"size", l_size},           {"numel", l_numel},
    {"dim", l_dim},             {"dtype", l_dtype},         {"is_contiguous", l_is_contiguous},
    {"item", l_item},           {"totable", l_totable},     {"clone", l_clone},
    {"contiguous", l_contiguous}, {"float", l_float},       {"long", l_long},
    {"copy", l_copy},           {"fill", l_fill},           {"zero", l_zero},
    {"reshape", l_reshape},     {"view", l_reshape},        {"flatten", l_flatten},
    {"permute", l_permute},     {"transpose", l_transpose}, {"t", l_t},
    {"narrow", l_narrow},       {"select", l_select},       {"squeeze", l_squeeze},
    {"unsqueeze", l_unsqueeze}, {"expand", l_expand},       {"expand_as", l_expand_as},
    {"view_as", l_view_as},     {"add", l_add},             {"sub", l_sub},
    {"mul", l_mul},             {"div", l_div},             {"pow", l_pow},
    {NULL, NULL}};

void mlua_open_tensor(lua_State *L) {
    /* the metatable and its method table */
    luaL_newmetatable(L, MLUA_TENSOR);
    lua_newtable(L);
    lua_setfield(L, -2, "__methods");
    const luaL_Reg meta[] = {{"__gc", l_gc},       {"__tostring", l_tostring}, {"__index", l_index},
                             {"__newindex", l_newindex}, {"__len", l_len},   {"__add", l_add},
                             {"__sub", l_sub},     {"__mul", l_mul},           {"__div", l_div},
                             {"__pow", l_pow},     {"__unm", l_unm},           {NULL, NULL}};
    luaL_setfuncs(L, meta, 0);
    lua_pushstring(L, "Tensor");
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
    mlua_register(L, functions, false);
    mlua_register(L, methods, true);
}
