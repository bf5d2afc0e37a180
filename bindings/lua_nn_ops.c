/* lua_nn_ops.c -- softmax, normalisation, dropout and losses. */
#include <string.h>

#include "lua_util.h"
#include "areas.h"

static int l_softmax(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    return mlua_push_tensor(L, ml_softmax(x, mlua_opt_dim(L, 2, "softmax", -1)));
}

static int l_log_softmax(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    return mlua_push_tensor(L, ml_log_softmax(x, mlua_opt_dim(L, 2, "log_softmax", -1)));
}

/* ml.attention(qkv [B, T, 3D], heads) -> [B, T, D] */
static int l_attention(lua_State *L) {
    ml_tensor *qkv = mlua_check_tensor(L, 1);
    lua_Integer heads = luaL_checkinteger(L, 2);
    if (heads < 1 || heads > 1 << 20) return luaL_error(L, "attention: heads must be a positive integer, got %d", (int)heads);
    return mlua_push_tensor(L, ml_attention(qkv, (int)heads));
}

static ml_tensor *opt_tensor(lua_State *L, int idx) { return lua_isnoneornil(L, idx) ? NULL : mlua_check_tensor(L, idx); }

/* ml.batch_norm(x, running_mean, running_var, [weight], [bias],
 *   [{training = false, momentum = 0.1, eps = 1e-5, residual = nil, relu = false}]) */
static int l_batch_norm(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    ml_tensor *rm = opt_tensor(L, 2), *rv = opt_tensor(L, 3), *w = opt_tensor(L, 4), *b = opt_tensor(L, 5);
    static const char *const known[] = {"training", "momentum", "eps", "residual", "relu", NULL};
    mlua_check_options(L, 6, "batch_norm", known);
    bool training = mlua_opt_bool(L, 6, "training", false), relu = mlua_opt_bool(L, 6, "relu", false);
    double mom = mlua_opt_number(L, 6, "momentum", 0.1), eps = mlua_opt_number(L, 6, "eps", 1e-5);
    ml_tensor *res = NULL;
    if (lua_istable(L, 6)) {
        lua_getfield(L, 6, "residual");
        res = lua_isnil(L, -1) ? NULL : mlua_check_tensor(L, -1);
        lua_pop(L, 1); /* the options table keeps it alive */
    }
    return mlua_push_tensor(L, ml_batch_norm_act(x, w, b, rm, rv, training, mom, eps, res, relu));
}

/* ml.layer_norm(x, normalized (count of trailing dims, or a shape table), [weight], [bias], [{eps = 1e-5}]) */
static int l_layer_norm(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    int dims;
    if (lua_istable(L, 2)) {
        dims = (int)lua_rawlen(L, 2);
        for (int i = 0; i < dims; i++) {
            lua_rawgeti(L, 2, i + 1);
            lua_Integer s = luaL_checkinteger(L, -1);
            lua_pop(L, 1);
            int d = x->ndim - dims + i;
            if (d < 0 || x->shape[d] != s)
                luaL_error(L, "layer_norm: normalized shape does not match the last %d dimensions of %s", dims, ML_SHAPE_STR(x));
        }
    } else {
        dims = (int)luaL_optinteger(L, 2, 1);
    }
    ml_tensor *w = opt_tensor(L, 3), *b = opt_tensor(L, 4);
    static const char *const known[] = {"eps", NULL};
    mlua_check_options(L, 5, "layer_norm", known);
    return mlua_push_tensor(L, ml_layer_norm(x, dims, w, b, mlua_opt_number(L, 5, "eps", 1e-5)));
}

/* ml.dropout(x, p, [training = true]) */
static int l_dropout(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    double p = luaL_checknumber(L, 2);
    bool training = lua_isnoneornil(L, 3) ? true : lua_toboolean(L, 3);
    return mlua_push_tensor(L, ml_dropout(x, p, training));
}

static ml_reduction opt_reduction(lua_State *L, int idx, const char *fn) {
    const char *r = mlua_opt_string(L, idx, "reduction", "mean");
    if (!strcmp(r, "mean")) return ML_MEAN;
    if (!strcmp(r, "sum")) return ML_SUM;
    if (!strcmp(r, "none")) return ML_NONE;
    luaL_error(L, "%s: unknown reduction '%s' (use \"mean\", \"sum\" or \"none\")", fn, r);
    return ML_MEAN;
}

/* ml.cross_entropy(logits, labels (1-based), [{reduction = "mean", label_smoothing = 0}]) */
static int l_cross_entropy(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1), *labels = mlua_to_tensor(L, 2);
    if (x->dtype == ML_I64 && labels && labels->dtype == ML_F32)
        luaL_error(L, "cross_entropy: the logits (argument 1) are int64 and the labels (argument 2) float32: "
                      "the arguments look swapped; use ml.cross_entropy(logits, labels)");
    if (x->dtype != ML_F32)
        luaL_error(L, "cross_entropy: the logits (argument 1) must be float32, got %s", ml_dtype_name(x->dtype));
    if (labels && labels->dtype != ML_I64)
        luaL_error(L, "cross_entropy: the labels (argument 2) must be int64 class indices 1..K, got %s "
                      "(use labels:long())", ml_dtype_name(labels->dtype));
    static const char *const known[] = {"reduction", "label_smoothing", NULL};
    mlua_check_options(L, 3, "cross_entropy", known);
    ml_reduction red = opt_reduction(L, 3, "cross_entropy");
    double eps = mlua_opt_number(L, 3, "label_smoothing", 0);
    ml_tensor *y = mlua_index_to_core(L, 2, "cross_entropy");
    ml_tensor *out = ml_cross_entropy(x, y, red, eps);
    ml_release(y);
    return mlua_push_tensor(L, out);
}

static int l_nll_loss(lua_State *L) {
    ml_tensor *x = mlua_check_tensor(L, 1);
    static const char *const known[] = {"reduction", NULL};
    mlua_check_options(L, 3, "nll_loss", known);
    ml_reduction red = opt_reduction(L, 3, "nll_loss");
    ml_tensor *y = mlua_index_to_core(L, 2, "nll_loss");
    ml_tensor *out = ml_nll_loss(x, y, red);
    ml_release(y);
    return mlua_push_tensor(L, out);
}

/* ml.kl_div(clean_logits, adv_logits, [{reduction = "mean"}]) -- the TRADES term */
static int l_kl_div(lua_State *L) {
    ml_tensor *a = mlua_check_tensor(L, 1), *b = mlua_check_tensor(L, 2);
    static const char *const known[] = {"reduction", NULL};
    mlua_check_options(L, 3, "kl_div", known);
    return mlua_push_tensor(L, ml_kl_div(a, b, opt_reduction(L, 3, "kl_div")));
}

static int l_mse(lua_State *L) {
    ml_tensor *a = mlua_check_tensor(L, 1), *b = mlua_check_tensor(L, 2);
    static const char *const known[] = {"reduction", NULL};
    mlua_check_options(L, 3, "mse", known);
    return mlua_push_tensor(L, ml_mse(a, b, opt_reduction(L, 3, "mse")));
}

static int l_bce(lua_State *L) {
    ml_tensor *a = mlua_check_tensor(L, 1), *b = mlua_check_tensor(L, 2);
    static const char *const known[] = {"reduction", NULL};
    mlua_check_options(L, 3, "bce_with_logits", known);
    return mlua_push_tensor(L, ml_bce_with_logits(a, b, opt_reduction(L, 3, "bce_with_logits")));
}

static const luaL_Reg methods[] = {{"softmax", l_softmax},         {"log_softmax", l_log_softmax},
                                   {"batch_norm", l_batch_norm},   {"layer_norm", l_layer_norm},
                                   {"dropout", l_dropout},         {"cross_entropy", l_cross_entropy},
                                   {"nll_loss", l_nll_loss},       {"kl_div", l_kl_div},
                                   {"mse", l_mse},                 {"bce_with_logits", l_bce},
                                   {"attention", l_attention},     {NULL, NULL}};

void mlua_open_nn_ops(lua_State *L) { mlua_register(L, methods, true); }
