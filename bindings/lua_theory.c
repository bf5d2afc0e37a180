/* lua_theory.c -- ml.theory: linear experts, Theorem 1, spectral norms,
 * pseudo-inverses, subspace data (1-based expert ids at the Lua level). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lua_util.h"
#include "theory/theory.h"
#include "areas.h"

static void push_list(lua_State *L, const double *v, int n) {
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushnumber(L, v[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

static ml_tensor *double_tensor(const double *v, int ndim, const int64_t *shape) {
    ml_tensor *t = ml_empty(ML_F32, ndim, shape);
    if (t)
        for (int64_t i = 0, n = ml_numel(t); i < n; i++) ml_f32(t)[i] = (float)v[i];
    return t;
}

static void push_linexp(lua_State *L, const ml_linexp *r) {
    int64_t D = r->D, ws[2] = {r->E, r->D};
    mlua_push_tensor(L, double_tensor(r->w, 1, &D));
    lua_setfield(L, -2, "w_dense");
    mlua_push_tensor(L, double_tensor(r->wi, 2, ws));
    lua_setfield(L, -2, "w_experts");
    lua_pushnumber(L, r->dense_lipschitz);
    lua_setfield(L, -2, "dense_lipschitz");
    push_list(L, r->expert_lipschitz, r->E);
    lua_setfield(L, -2, "expert_lipschitz");
    lua_createtable(L, r->E, 0);
    for (int e = 0; e < r->E; e++) {
        lua_pushinteger(L, r->count[e]);
        lua_rawseti(L, -2, e + 1);
    }
    lua_setfield(L, -2, "counts");
    lua_pushinteger(L, r->rank);
    lua_setfield(L, -2, "rank");
    lua_pushinteger(L, r->E);
    lua_setfield(L, -2, "experts");
    push_list(L, r->xty_norm, r->E);
    lua_setfield(L, -2, "xty_norms");
    lua_pushnumber(L, r->xty_all);
    lua_setfield(L, -2, "xty_norm");
}

static int read_common(lua_State *L, ml_tensor **X, ml_tensor **y, ml_tensor **assign, int *E, double *rcond,
                       const char *fn) {
    *X = mlua_check_tensor(L, 1);
    *y = mlua_check_tensor(L, 2);
    static const char *const known[] = {"experts", "rcond", NULL};
    mlua_check_options(L, 4, fn, known);
    *E = (int)mlua_opt_integer(L, 4, "experts", 0);
    *rcond = mlua_opt_number(L, 4, "rcond", 0);
    *assign = mlua_index_to_core(L, 3, fn);
    return 0;
}

/* ml.theory.linear_experts(X, y, assign, [{experts = E, rcond}]) */
static int l_linear_experts(lua_State *L) {
    ml_tensor *X, *y, *a;
    int E;
    double rcond;
    read_common(L, &X, &y, &a, &E, &rcond, "linear_experts");
    ml_linexp r;
    int rc = ml_theory_linear_experts(X, y, a, E, rcond, &r);
    ml_release(a);
    if (rc) return mlua_error(L);
    lua_newtable(L);
    push_linexp(L, &r);
    ml_linexp_free(&r);
    return 1;
}

/* ml.theory.theorem1(X, y, assign, [{experts, rcond}]) */
static int l_theorem1(lua_State *L) {
    ml_tensor *X, *y, *a;
    int E;
    double rcond;
    read_common(L, &X, &y, &a, &E, &rcond, "theorem1");
    ml_linexp le;
    ml_thm1 t;
    int rc = ml_theory_theorem1(X, y, a, E, rcond, &le, &t);
    ml_release(a);
    if (rc) return mlua_error(L);
    lua_newtable(L);
    push_linexp(L, &le);
    lua_pushnumber(L, t.eps1);
    lua_setfield(L, -2, "eps1");
    lua_pushnumber(L, t.eps2);
    lua_setfield(L, -2, "eps2");
    lua_pushnumber(L, t.lhs);
    lua_setfield(L, -2, "lhs");
    lua_pushnumber(L, t.rhs);
    lua_setfield(L, -2, "rhs");
    lua_pushboolean(L, t.holds);
    lua_setfield(L, -2, "holds");
    push_list(L, t.delta, le.E);
    lua_setfield(L, -2, "delta");
    push_list(L, t.proj_norm, le.E);
    lua_setfield(L, -2, "proj_norm");
    push_list(L, t.diff, le.E);
    lua_setfield(L, -2, "diff");
    lua_createtable(L, le.E, 0);
    for (int e = 0; e < le.E; e++) {
        lua_pushinteger(L, t.dims[e]);
        lua_rawseti(L, -2, e + 1);
    }
    lua_setfield(L, -2, "dims");
    ml_thm1_free(&t);
    ml_linexp_free(&le);
    return 1;
}

static int l_spectral_norm(lua_State *L) {
    double s = ml_theory_spectral_norm(mlua_check_tensor(L, 1));
    if (isnan(s)) return mlua_error(L);
    lua_pushnumber(L, s);
    return 1;
}

static int l_pinv(lua_State *L) {
    ml_tensor *A = mlua_check_tensor(L, 1);
    return mlua_push_tensor(L, ml_theory_pinv(A, luaL_optnumber(L, 2, 0)));
}

/* ml.theory.subspace_data{n = 100, dim = 32, sub_dim = 4, experts = 4, alignment = 0, noise = 0,
 *   mirror = false, seed = 0} -> X, y, assign (1-based), betas [E, D] */
static int l_subspace_data(lua_State *L) {
    static const char *const known[] = {"n", "dim", "sub_dim", "experts", "alignment", "noise", "mirror", "shared",
                                        "balanced", "seed", "mode", NULL};
    mlua_check_options(L, 1, "subspace_data", known);
    ml_subspace_opts o;
    o.n = mlua_opt_integer(L, 1, "n", 100);
    o.D = (int)mlua_opt_integer(L, 1, "dim", 32);
    o.d = (int)mlua_opt_integer(L, 1, "sub_dim", 4);
    o.E = (int)mlua_opt_integer(L, 1, "experts", 4);
    o.alignment = mlua_opt_number(L, 1, "alignment", 0);
    o.noise = mlua_opt_number(L, 1, "noise", 0);
    o.mirror = mlua_opt_bool(L, 1, "mirror", false);
    o.shared = mlua_opt_bool(L, 1, "shared", false);
    o.balanced = mlua_opt_bool(L, 1, "balanced", false);
    o.seed = (uint64_t)mlua_opt_integer(L, 1, "seed", 0);
    const char *mode = mlua_opt_string(L, 1, "mode", "rotate");
    if (strcmp(mode, "rotate") && strcmp(mode, "overlap"))
        return luaL_error(L, "subspace_data: unknown mode '%s' (rotate or overlap)", mode);
    o.overlap = !strcmp(mode, "overlap");
    ml_tensor *X, *y, *a, *b;
    if (ml_theory_subspace_data(&o, &X, &y, &a, &b)) return mlua_error(L);
    mlua_push_tensor(L, X);
    mlua_push_tensor(L, y);
    mlua_push_tensor(L, mlua_index_from_core(a));
    ml_release(a);
    mlua_push_tensor(L, b);
    return 4;
}

void mlua_open_theory(lua_State *L) {
    mlua_subtable(L, "theory");
    const luaL_Reg f[] = {{"linear_experts", l_linear_experts}, {"theorem1", l_theorem1},
                          {"spectral_norm", l_spectral_norm},   {"pinv", l_pinv},
                          {"subspace_data", l_subspace_data},   {NULL, NULL}};
    luaL_setfuncs(L, f, 0);
    lua_pop(L, 1);
}
