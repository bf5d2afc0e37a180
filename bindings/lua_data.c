/* lua_data.c -- ml.data: datasets as Lua objects (1-based examples and labels). */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lua_util.h"
#include "rng.h"
#include "areas.h"

#define MLUA_DATASET "moelab.Dataset"

static ml_dataset *check_ds(lua_State *L, int idx) {
    ml_dataset **p = luaL_checkudata(L, idx, MLUA_DATASET);
    return *p;
}

static int push_ds(lua_State *L, ml_dataset *d) {
    if (!d) return mlua_error(L);
    ml_dataset **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = d;
    luaL_setmetatable(L, MLUA_DATASET);
    return 1;
}

static int d_gc(lua_State *L) {
    ml_dataset **p = luaL_checkudata(L, 1, MLUA_DATASET);
    ml_dataset_release(*p);
    *p = NULL;
    return 0;
}

static int d_size(lua_State *L) {
    lua_pushinteger(L, check_ds(L, 1)->n);
    return 1;
}

static int d_shape(lua_State *L) {
    ml_dataset *d = check_ds(L, 1);
    lua_createtable(L, 3, 0);
    int k = 0;
    lua_pushinteger(L, d->c);
    lua_rawseti(L, -2, ++k);
    if (!(d->features && d->h == 1 && d->w == 1)) {
        lua_pushinteger(L, d->h);
        lua_rawseti(L, -2, ++k);
        lua_pushinteger(L, d->w);
        lua_rawseti(L, -2, ++k);
    }
    return 1;
}

static int d_num_classes(lua_State *L) {
    lua_pushinteger(L, check_ds(L, 1)->num_classes);
    return 1;
}

static int d_classes(lua_State *L) {
    ml_dataset *d = check_ds(L, 1);
    lua_createtable(L, d->num_classes, 0);
    for (int i = 0; i < d->num_classes; i++) {
        if (d->class_names) lua_pushstring(L, d->class_names[i]);
        else lua_pushfstring(L, "%d", i + 1);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

static int d_labels(lua_State *L) {
    ml_dataset *d = check_ds(L, 1);
    ml_tensor *t = ml_from_data(ML_I64, 1, &d->n, d->labels);
    ml_tensor *one_based = t ? mlua_index_from_core(t) : NULL;
    ml_release(t);
    return mlua_push_tensor(L, one_based);
}

static void read_augment(lua_State *L, int opts, ml_augment *a) {
    memset(a, 0, sizeof *a);
    if (!lua_istable(L, opts)) return;
    if (lua_getfield(L, opts, "augment") == LUA_TTABLE) {
        int t = lua_gettop(L);
        static const char *const known[] = {"crop", "flip", NULL};
        mlua_check_options(L, t, "augment", known);
        a->crop_pad = (int)mlua_opt_integer(L, t, "crop", 0);
        a->flip = mlua_opt_bool(L, t, "flip", false);
        if (a->crop_pad < 0) luaL_error(L, "augment: crop padding must be >= 0");
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "augment: expected a table like {crop = 4, flip = true}");
    }
    lua_pop(L, 1);
}

/* Gathers the examples idx (0-based, n of them) and pushes x, y (labels 1-based). */
static int push_batch(lua_State *L, ml_dataset *d, const int64_t *idx, int64_t n, int opts) {
    ml_augment a;
    read_augment(L, opts, &a);
    ml_rng_state st, *rng = NULL;
    if (lua_istable(L, opts) && lua_getfield(L, opts, "seed") != LUA_TNIL) {
        ml_rng_local_seed(&st, (uint64_t)luaL_checkinteger(L, -1));
        rng = &st;
    }
    if (lua_istable(L, opts)) lua_pop(L, 1);
    ml_tensor *x, *y;
    if (ml_dataset_batch(d, idx, n, &a, rng, &x, &y)) return mlua_error(L);
    ml_tensor *labels = mlua_index_from_core(y);
    ml_release(y);
    mlua_push_tensor(L, x);
    mlua_push_tensor(L, labels);
    return 2;
}

/* ds:batch(i, n, [{augment, seed}]) -> x, y: examples i .. i+n-1 (the last batch may be shorter) */
static int d_batch(lua_State *L) {
    ml_dataset *d = check_ds(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2), n = luaL_optinteger(L, 3, 1);
    if (i < 1 || i > d->n)
        luaL_error(L, "batch: start %d is out of range for %s of %d examples (1-based)", (int)i, d->name, (int)d->n);
    if (n < 1) luaL_error(L, "batch: size must be positive, got %d", (int)n);
    if (i + n - 1 > d->n) n = d->n - i + 1;
    int64_t *idx = lua_newuserdatauv(L, sizeof *idx * (size_t)n, 0);
    for (int64_t k = 0; k < n; k++) idx[k] = i - 1 + k;
    return push_batch(L, d, idx, n, 4);
}

/* ds:batch_of(indices (1-based int64 tensor or table), [{augment, seed}]) -> x, y */
static int d_batch_of(lua_State *L) {
    ml_dataset *d = check_ds(L, 1);
    ml_tensor *idx = mlua_index_to_core(L, 2, "batch_of");
    int64_t n = ml_numel(idx);
    int64_t *copy = lua_newuserdatauv(L, sizeof *copy * (size_t)(n ? n : 1), 0);
    memcpy(copy, ml_i64(idx), sizeof *copy * (size_t)n);
    ml_release(idx);
    return push_batch(L, d, copy, n, 3);
}

/* ds:get(i) -> x [C, H, W], label */
static int d_get(lua_State *L) {
    ml_dataset *d = check_ds(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    if (i < 1 || i > d->n) luaL_error(L, "get: example %d is out of range (1..%d)", (int)i, (int)d->n);
    int64_t k = i - 1;
    ml_tensor *x, *y;
    if (ml_dataset_batch(d, &k, 1, NULL, NULL, &x, &y)) return mlua_error(L);
    ml_tensor *x0 = ml_select(x, 0, 0);
    lua_Integer label = ml_i64(y)[0] + 1;
    ml_release(x);
    ml_release(y);
    mlua_push_tensor(L, x0);
    lua_pushinteger(L, label);
    return 2;
}

/* ds:subset(from, to) or ds:subset(indices) -> a new dataset */
static int d_subset(lua_State *L) {
    ml_dataset *d = check_ds(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) {
        lua_Integer a = luaL_checkinteger(L, 2), b = luaL_optinteger(L, 3, d->n);
        if (a < 1 || b > d->n || a > b)
            luaL_error(L, "subset: range %d..%d is invalid for %d examples", (int)a, (int)b, (int)d->n);
        int64_t n = b - a + 1;
        int64_t *idx = lua_newuserdatauv(L, sizeof *idx * (size_t)n, 0);
        for (int64_t k = 0; k < n; k++) idx[k] = a - 1 + k;
        return push_ds(L, ml_dataset_subset(d, idx, n));
    }
    ml_tensor *idx = mlua_index_to_core(L, 2, "subset");
    ml_dataset *s = ml_dataset_subset(d, ml_i64(idx), ml_numel(idx));
    ml_release(idx);
    return push_ds(L, s);
}

/* ds:stats() -> {mean = {...}, std = {...}} per channel, over pixels in [0, 1] */
static int d_stats(lua_State *L) {
    ml_dataset *d = check_ds(L, 1);
    int64_t per = (int64_t)d->h * d->w;
    lua_newtable(L);
    lua_createtable(L, d->c, 0);
    lua_createtable(L, d->c, 0);
    for (int c = 0; c < d->c; c++) {
        double s = 0, ss = 0;
        for (int64_t i = 0; i < d->n; i++)
            for (int64_t p = 0; p < per; p++) {
                int64_t k = (i * d->c + c) * per + p;
                double v = d->features ? d->f32[k] : d->u8[k] / 255.0;
                s += v;
                ss += v * v;
            }
        double cnt = (double)d->n * (double)per, m = s / cnt;
        lua_pushnumber(L, m);
        lua_rawseti(L, -3, c + 1);
        lua_pushnumber(L, sqrt(ss / cnt - m * m > 0 ? ss / cnt - m * m : 0));
        lua_rawseti(L, -2, c + 1);
    }
    lua_setfield(L, -3, "std");
    lua_setfield(L, -2, "mean");
    return 1;
}

static int d_name(lua_State *L) {
    lua_pushstring(L, check_ds(L, 1)->name);
    return 1;
}

static int d_tostring(lua_State *L) {
    ml_dataset *d = check_ds(L, 1);
    if (d->features && d->h == 1 && d->w == 1)
        lua_pushfstring(L, "Dataset(%s: %d examples, %d features, %d classes)", d->name, (int)d->n, d->c, d->num_classes);
    else
        lua_pushfstring(L, "Dataset(%s: %d images of %dx%dx%d, %d classes)", d->name, (int)d->n, d->c, d->h, d->w,
                        d->num_classes);
    return 1;
}

static int push_split(lua_State *L, ml_dataset *train, ml_dataset *test) {
    lua_createtable(L, 0, 2);
    push_ds(L, train);
    lua_setfield(L, -2, "train");
    push_ds(L, test);
    lua_setfield(L, -2, "test");
    return 1;
}

static int l_mnist(lua_State *L) {
    ml_dataset *tr, *te;
    if (ml_data_mnist(luaL_optstring(L, 1, "data/mnist-10k"), &tr, &te)) return mlua_error(L);
    return push_split(L, tr, te);
}

static int l_cifar10(lua_State *L) {
    ml_dataset *tr, *te;
    if (ml_data_cifar10(luaL_optstring(L, 1, "data/cifar10"), &tr, &te)) return mlua_error(L);
    return push_split(L, tr, te);
}

static int l_png_folder(lua_State *L) { return push_ds(L, ml_data_png_folder(luaL_checkstring(L, 1))); }

/* An option that the core takes as an int: a Lua error outside 1..INT_MAX. */
static int opt_count(lua_State *L, int idx, const char *fn, const char *key, lua_Integer def) {
    lua_Integer v = mlua_opt_integer(L, idx, key, def);
    if (v < 1 || v > INT_MAX) luaL_error(L, "%s: %s must be in 1..%d, got %I", fn, key, INT_MAX, v);
    return (int)v;
}

/* ml.data.gaussian_clusters{n = 1000, classes = 2, dim = 2, spread = 0.5, seed = 0} */
static int l_gaussian(lua_State *L) {
    static const char *const known[] = {"n", "classes", "dim", "spread", "seed", NULL};
    mlua_check_options(L, 1, "gaussian_clusters", known);
    int classes = opt_count(L, 1, "gaussian_clusters", "classes", 2), dim = opt_count(L, 1, "gaussian_clusters", "dim", 2);
    return push_ds(L, ml_data_gaussian_clusters(mlua_opt_integer(L, 1, "n", 1000), classes, dim,
                                                mlua_opt_number(L, 1, "spread", 0.5),
                                                (uint64_t)mlua_opt_integer(L, 1, "seed", 0)));
}

/* ml.data.from_tensors(x, y (1-based labels), [classes]) */
static int l_from_tensors(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    ml_tensor *y = mlua_index_to_core(L, 2, "from_tensors");
    lua_Integer classes = luaL_optinteger(L, 3, 0);
    if (classes < 0 || classes > INT_MAX) {
        ml_release(y);
        return luaL_error(L, "from_tensors: classes must be in 0..%d (0: from the labels), got %I", INT_MAX, classes);
    }
    ml_dataset *d = ml_dataset_from_tensors(x, y, (int)classes);
    ml_release(y);
    return push_ds(L, d);
}

/* ml.randperm(n, [{seed = s}]) -> int64 tensor, a permutation of 1..n */
static int l_randperm(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    if (n < 0) luaL_error(L, "randperm: n must be >= 0, got %d", (int)n);
    ml_rng_state st;
    bool local = lua_istable(L, 2) && lua_getfield(L, 2, "seed") != LUA_TNIL;
    if (local) ml_rng_local_seed(&st, (uint64_t)luaL_checkinteger(L, -1));
    int64_t len = n;
    ml_tensor *t = ml_empty(ML_I64, 1, &len);
    if (!t) return mlua_error(L);
    ml_rng_permutation(local ? &st : NULL, n, ml_i64(t));
    ml_tensor *one_based = mlua_index_from_core(t);
    ml_release(t);
    return mlua_push_tensor(L, one_based);
}

static const luaL_Reg ds_methods[] = {{"size", d_size},       {"shape", d_shape},     {"num_classes", d_num_classes},
                                      {"classes", d_classes}, {"labels", d_labels},   {"batch", d_batch},
                                      {"batch_of", d_batch_of}, {"get", d_get},       {"subset", d_subset},
                                      {"stats", d_stats},     {"name", d_name},       {NULL, NULL}};

void mlua_open_data(lua_State *L) {
    luaL_newmetatable(L, MLUA_DATASET);
    lua_newtable(L);
    luaL_setfuncs(L, ds_methods, 0);
    lua_setfield(L, -2, "__index");
    const luaL_Reg meta[] = {{"__gc", d_gc}, {"__len", d_size}, {"__tostring", d_tostring}, {NULL, NULL}};
    luaL_setfuncs(L, meta, 0);
    lua_pop(L, 1);
    mlua_subtable(L, "data");
    const luaL_Reg f[] = {{"mnist", l_mnist},
                          {"cifar10", l_cifar10},
                          {"png_folder", l_png_folder},
                          {"gaussian_clusters", l_gaussian},
                          {"from_tensors", l_from_tensors},
                          {NULL, NULL}};
    luaL_setfuncs(L, f, 0);
    lua_pop(L, 1);
    lua_pushcfunction(L, l_randperm);
    lua_setfield(L, -2, "randperm");
}
