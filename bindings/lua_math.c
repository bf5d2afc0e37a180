/* lua_math.c -- pointwise math, comparisons, reductions and matrix products. */
#include <math.h>
#include <string.h>

#include "lua_util.h"
#include "areas.h"

/* ------------------------------------------------------------ unary */
#define UNARY(name, OP) \
    static int lm_##name(lua_State *L) { return mlua_push_tensor(L, ml_unary(OP, mlua_check_tensor(L, 1))); }
UNARY(neg, ML_NEG)
UNARY(exp, ML_EXP)
UNARY(log, ML_LOG)
UNARY(sqrt, ML_SQRT)
UNARY(abs, ML_ABS)
UNARY(sign, ML_SIGN)
UNARY(relu, ML_RELU)
UNARY(gelu, ML_GELU)
UNARY(sigmoid, ML_SIGMOID)
UNARY(tanh, ML_TANH)
UNARY(softplus, ML_SOFTPLUS)
UNARY(sin, ML_SIN)
UNARY(cos, ML_COS)
UNARY(floor, ML_FLOOR)
UNARY(ceil, ML_CEIL)
UNARY(round, ML_ROUND)
UNARY(square, ML_SQUARE)
UNARY(reciprocal, ML_RECIPROCAL)
UNARY(erf, ML_ERF)
UNARY(log1p, ML_LOG1P)
UNARY(expm1, ML_EXPM1)

/* ------------------------------------------------------------ binary */
/* Both operands as tensors (numbers become 0-d tensors). */
static int binary(lua_State *L, ml_tensor *(*f)(ml_tensor *, ml_tensor *)) {
    bool oa, ob;
    ml_tensor *a = mlua_check_tensorish(L, 1, &oa);
    ml_tensor *b = mlua_check_tensorish(L, 2, &ob);
    ml_tensor *r = f(a, b);
    if (oa) ml_release(a);
    if (ob) ml_release(b);
    return mlua_push_tensor(L, r);
}
static int lm_minimum(lua_State *L) { return binary(L, ml_minimum); }
static int lm_maximum(lua_State *L) { return binary(L, ml_maximum); }

static int lm_clamp(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    /* tensor bounds: clamp(x, lo_t, hi_t) = minimum(maximum(x, lo), hi) */
    if (mlua_to_tensor(L, 2) || mlua_to_tensor(L, 3)) {
        ml_tensor *r = ml_retain(t), *lo = mlua_to_tensor(L, 2), *hi = mlua_to_tensor(L, 3);
        bool owned_lo = false, owned_hi = false;
        if (!lo && !lua_isnoneornil(L, 2)) lo = mlua_check_tensorish(L, 2, &owned_lo);
        if (!hi && !lua_isnoneornil(L, 3)) hi = mlua_check_tensorish(L, 3, &owned_hi);
        if (lo) {
            ml_tensor *n = ml_maximum(r, lo);
            ml_release(r);
            r = n;
        }
        if (r && hi) {
            ml_tensor *n = ml_minimum(r, hi);
            ml_release(r);
            r = n;
        }
        if (owned_lo) ml_release(lo);
        if (owned_hi) ml_release(hi);
        return mlua_push_tensor(L, r);
    }
    double lo = lua_isnoneornil(L, 2) ? -INFINITY : luaL_checknumber(L, 2);
    double hi = lua_isnoneornil(L, 3) ? INFINITY : luaL_checknumber(L, 3);
    return mlua_push_tensor(L, ml_clamp(t, lo, hi));
}

static int lm_where(lua_State *L) {
    ml_tensor *c = mlua_check_tensor(L, 1);
    bool oa, ob;
    ml_tensor *a = mlua_check_tensorish(L, 2, &oa);
    ml_tensor *b = mlua_check_tensorish(L, 3, &ob);
    ml_tensor *r = ml_where(c, a, b);
    if (oa) ml_release(a);
    if (ob) ml_release(b);
    return mlua_push_tensor(L, r);
}

static int compare(lua_State *L, ml_cmp_op op) {
    ml_tensor *a = mlua_check_tensor(L, 1);
    if (lua_type(L, 2) == LUA_TNUMBER) return mlua_push_tensor(L, ml_cmp_scalar(op, a, lua_tonumber(L, 2)));
    return mlua_push_tensor(L, ml_cmp(op, a, mlua_check_tensor(L, 2)));
}
static int lm_eq(lua_State *L) { return compare(L, ML_EQ); }
static int lm_ne(lua_State *L) { return compare(L, ML_NE); }
static int lm_lt(lua_State *L) { return compare(L, ML_LT); }
static int lm_le(lua_State *L) { return compare(L, ML_LE); }
static int lm_gt(lua_State *L) { return compare(L, ML_GT); }
static int lm_ge(lua_State *L) { return compare(L, ML_GE); }

static int lm_equal(lua_State *L) { /* exact equality of shape and values */
    ml_tensor *a = mlua_check_tensor(L, 1), *b = mlua_check_tensor(L, 2);
    bool eq = ml_same_shape(a, b);
    if (eq) {
        ml_tensor *m = ml_cmp(ML_NE, a, b);
        if (!m) return mlua_error(L);
        const float *p = ml_f32(m);
        for (int64_t i = 0, n = ml_numel(m); i < n && eq; i++) eq = p[i] == 0;
        ml_release(m);
    }
    lua_pushboolean(L, eq);
    return 1;
}

static int lm_allclose(lua_State *L) {
    ml_tensor *a = mlua_check_tensor(L, 1), *b = mlua_check_tensor(L, 2);
    double rtol = luaL_optnumber(L, 3, 1e-5), atol = luaL_optnumber(L, 4, 1e-8);
    bool ok = ml_same_shape(a, b);
    if (ok) {
        ml_tensor *ca = ml_to_dtype(a, ML_F32), *cb = ml_to_dtype(b, ML_F32);
        if (!ca || !cb) {
            ml_release(ca);
            ml_release(cb);
            return mlua_error(L);
        }
        const float *x = ml_f32(ca), *y = ml_f32(cb);
        for (int64_t i = 0, n = ml_numel(ca); i < n && ok; i++) ok = fabs(x[i] - y[i]) <= atol + rtol * fabs(y[i]);
        ml_release(ca);
        ml_release(cb);
    }
    lua_pushboolean(L, ok);
    return 1;
}

/* ------------------------------------------------------------ reductions */
/* t:sum() / t:sum(dim) / t:sum(dim, keepdim) */
typedef ml_tensor *(*redfn)(ml_tensor *, int, bool);
static int reduce(lua_State *L, redfn f, const char *name) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    int d = lua_isnoneornil(L, 2) ? ML_ALL_DIMS : mlua_check_dim(L, 2, name);
    bool keep = lua_toboolean(L, 3);
    return mlua_push_tensor(L, f(t, d, keep));
}
static int lm_sum(lua_State *L) { return reduce(L, ml_sum, "sum"); }
static int lm_mean(lua_State *L) { return reduce(L, ml_mean, "mean"); }
static int lm_logsumexp(lua_State *L) { return reduce(L, ml_logsumexp, "logsumexp"); }

/* t:var([dim], [{unbiased = true, keepdim = false}]) */
static int var_std(lua_State *L, bool is_std) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    const char *name = is_std ? "std" : "var";
    int d = lua_type(L, 2) == LUA_TNUMBER ? mlua_check_dim(L, 2, name) : ML_ALL_DIMS;
    int oi = lua_type(L, 2) == LUA_TTABLE ? 2 : 3;
    static const char *const known[] = {"unbiased", "keepdim", NULL};
    mlua_check_options(L, oi, name, known);
    bool unbiased = mlua_opt_bool(L, oi, "unbiased", true), keep = mlua_opt_bool(L, oi, "keepdim", false);
    return mlua_push_tensor(L, is_std ? ml_std(t, d, unbiased, keep) : ml_var(t, d, unbiased, keep));
}
static int lm_var(lua_State *L) { return var_std(L, false); }
static int lm_std(lua_State *L) { return var_std(L, true); }

/* t:max() -> 0-d tensor; t:max(dim, [keepdim]) -> values, indices (1-based);
 * t:max(other) -> elementwise maximum. */
static int extreme(lua_State *L, bool is_max) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    const char *name = is_max ? "max" : "min";
    if (mlua_to_tensor(L, 2)) return binary(L, is_max ? ml_maximum : ml_minimum);
    ml_tensor *v, *i;
    if (lua_isnoneornil(L, 2)) {
        if ((is_max ? ml_max : ml_min)(t, ML_ALL_DIMS, false, &v, NULL)) return mlua_error(L);
        return mlua_push_tensor(L, v);
    }
    int d = mlua_check_dim(L, 2, name);
    if ((is_max ? ml_max : ml_min)(t, d, lua_toboolean(L, 3), &v, &i)) return mlua_error(L);
    mlua_push_tensor(L, v);
    ml_tensor *i1 = mlua_index_from_core(i);
    ml_release(i);
    mlua_push_tensor(L, i1);
    return 2;
}
static int lm_max(lua_State *L) { return extreme(L, true); }
static int lm_min(lua_State *L) { return extreme(L, false); }

static int arg_extreme(lua_State *L, bool is_max) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    const char *name = is_max ? "argmax" : "argmin";
    int d = lua_isnoneornil(L, 2) ? ML_ALL_DIMS : mlua_check_dim(L, 2, name);
    ml_tensor *i = (is_max ? ml_argmax : ml_argmin)(t, d, lua_toboolean(L, 3));
    if (!i) return mlua_error(L);
    ml_tensor *i1 = mlua_index_from_core(i);
    ml_release(i);
    return mlua_push_tensor(L, i1);
}
static int lm_argmax(lua_State *L) { return arg_extreme(L, true); }
static int lm_argmin(lua_State *L) { return arg_extreme(L, false); }

/* t:norm([p = 2], [dim], [keepdim]); p may be math.huge or "inf" */
static int lm_norm(lua_State *L) {
    ml_tensor *t = mlua_check_tensor(L, 1);
    double p = 2.0;
    if (lua_type(L, 2) == LUA_TSTRING) {
        const char *s = lua_tostring(L, 2);
        if (!strcmp(s, "inf") || !strcmp(s, "linf")) p = INFINITY;
        else if (!strcmp(s, "fro")) p = 2.0;
        else luaL_error(L, "norm: unknown p '%s' (use a number, math.huge or \"inf\")", s);
    } else if (!lua_isnoneornil(L, 2)) {
        p = luaL_checknumber(L, 2);
    }
    int d = lua_isnoneornil(L, 3) ? ML_ALL_DIMS : mlua_check_dim(L, 3, "norm");
    return mlua_push_tensor(L, ml_norm(t, p, d, lua_toboolean(L, 4)));
}

/* ------------------------------------------------------------ linear algebra */
static int lm_matmul(lua_State *L) {
    return mlua_push_tensor(L, ml_matmul(mlua_check_tensor(L, 1), mlua_check_tensor(L, 2)));
}
static int lm_bmm(lua_State *L) {
    return mlua_push_tensor(L, ml_bmm(mlua_check_tensor(L, 1), mlua_check_tensor(L, 2)));
}
static int lm_linear(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1), *w = mlua_check_tensor(L, 2);
    ml_tensor *b = lua_isnoneornil(L, 3) ? NULL : mlua_check_tensor(L, 3);
    return mlua_push_tensor(L, ml_linear(x, w, b));
}
static int lm_dot(lua_State *L) {
    ml_tensor *a = mlua_check_tensor(L, 1), *b = mlua_check_tensor(L, 2);
    if (a->ndim != 1 || b->ndim != 1)
        luaL_error(L, "dot: expects two 1-d tensors, got %s and %s", ML_SHAPE_STR(a), ML_SHAPE_STR(b));
    return mlua_push_tensor(L, ml_matmul(a, b));
}

static int lm_flops(lua_State *L) {
    if (lua_toboolean(L, 1)) ml_flops_reset();
    lua_pushinteger(L, ml_flops());
    return 1;
}

static const luaL_Reg methods[] = {
    {"neg", lm_neg},         {"exp", lm_exp},           {"log", lm_log},
    {"sqrt", lm_sqrt},       {"abs", lm_abs},           {"sign", lm_sign},
    {"relu", lm_relu},       {"gelu", lm_gelu},         {"sigmoid", lm_sigmoid},
    {"tanh", lm_tanh},       {"softplus", lm_softplus}, {"sin", lm_sin},
    {"cos", lm_cos},         {"floor", lm_floor},       {"ceil", lm_ceil},
    {"round", lm_round},     {"square", lm_square},     {"reciprocal", lm_reciprocal},
    {"erf", lm_erf},         {"log1p", lm_log1p},       {"expm1", lm_expm1},
    {"minimum", lm_minimum}, {"maximum", lm_maximum},   {"clamp", lm_clamp},
    {"where", lm_where},     {"eq", lm_eq},             {"ne", lm_ne},
    {"lt", lm_lt},           {"le", lm_le},             {"gt", lm_gt},
    {"ge", lm_ge},           {"equal", lm_equal},       {"allclose", lm_allclose},
    {"sum", lm_sum},         {"mean", lm_mean},         {"var", lm_var},
    {"std", lm_std},         {"max", lm_max},           {"min", lm_min},
    {"argmax", lm_argmax},   {"argmin", lm_argmin},     {"norm", lm_norm},
    {"logsumexp", lm_logsumexp}, {"matmul", lm_matmul}, {"bmm", lm_bmm},
    {"linear", lm_linear},   {"dot", lm_dot},           {NULL, NULL}};

static const luaL_Reg functions[] = {{"flops", lm_flops}, {NULL, NULL}};

void mlua_open_math(lua_State *L) {
    mlua_register(L, methods, true);
    mlua_register(L, functions, false);
}
