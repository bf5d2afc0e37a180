/* lua_attack.c -- ml.attack: the attacks of core/attack as Lua functions.
 *
 * ml.attack._run(name, model, x, y, opts) -> x_adv, report is the one entry;
 * lua/moelab/attack.lua wraps it per attack (ml.attack.pgd, ...), prints the
 * progress lines and keeps the result of an attack stopped by Ctrl-C (the
 * interrupt can fire as this function returns; ml.attack._last() gives the
 * result back). Labels, targets and predictions are 1-based here, 0-based in
 * the core. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "areas.h"
#include "lua_nn.h"
#include "lua_trace.h"
#include "lua_util.h"

#define LAST_KEY "moelab.attack.last"

/* ---------------------------------------------------------------- options */
/* The options each attack reads (anything else is a clear error). */

/* The routing trace of an attack's current forward as a Lua trace (a copy
 * sharing the tensors; with keep_grad, a Lua objective can differentiate
 * through the router logits/probs/gates); empty for a model without MoE layers. */
static void push_routing(lua_State *L, const void *routing, bool keep_grad) {
    const ml_trace *t = ml_attack_routing_trace(routing);
    mlua_push_trace(L, t ? ml_trace_copy(t, keep_grad) : ml_trace_new());
}

static const char *const common_opts[] = {"eps", "norm", "seed", "clamp", "on_step", "trace", "log", "nan", NULL};
/* the gradient passes of these attacks take the router-attack switches */
#define ROUTER_SWITCHES "selection_grad", "router_noise"
/* FGSM, PGD and APGD also attack a part of an MoE (target = "router", ...) */
#define MOE_PARTS "target", "expert", "steer_steps", ROUTER_SWITCHES
static const struct {
    const char *attack;
    const char *const opts[20];
} attack_opts[] = {
    {"fgsm", {"objective", "eot", MOE_PARTS, NULL}},
    {"pgd", {"steps", "alpha", "random_start", "restarts", "early_stop", "eot", "objective", MOE_PARTS, NULL}},
    {"apgd", {"steps", "restarts", "eot", "objective", "rho", "momentum", MOE_PARTS, NULL}},
    {"apgd-ce", {"steps", "restarts", "eot", "rho", "momentum", ROUTER_SWITCHES, NULL}},
    {"apgd-dlr", {"steps", "restarts", "eot", "rho", "momentum", ROUTER_SWITCHES, NULL}},
    {"apgd-t", {"steps", "restarts", "eot", "n_targets", "rho", "momentum", ROUTER_SWITCHES, NULL}},
    {"fab-t", {"steps", "restarts", "eot", "n_targets", "alpha_max", "eta", "beta", ROUTER_SWITCHES, NULL}},
    {"fab", {"steps", "restarts", "eot", "n_targets", "alpha_max", "eta", "beta", ROUTER_SWITCHES, NULL}},
    {"square", {"queries", "p_init", NULL}},
    {"autoattack", {"version", "attacks", "state", "batch", "checks", "steps", "eot", "queries", "n_targets",
                    ROUTER_SWITCHES, NULL}},
    {"check", {"steps", "queries", "eot", NULL}},
    {"check-cheap", {"steps", "queries", "eot", NULL}},
};

static const char *const *specific_opts(const char *attack) {
    for (size_t i = 0; i < sizeof attack_opts / sizeof attack_opts[0]; i++)
        if (!strcmp(attack_opts[i].attack, attack)) return attack_opts[i].opts;
    return NULL;
}

static void check_known(lua_State *L, int idx, const char *fn) {
    if (lua_isnoneornil(L, idx)) return;
    if (!lua_istable(L, idx)) luaL_error(L, "%s: options must be a table, got %s", fn, luaL_typename(L, idx));
    const char *const *spec = specific_opts(fn);
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "%s: options must be given by name", fn);
        const char *k = lua_tostring(L, -1);
        bool ok = false;
        for (int i = 0; common_opts[i]; i++) ok |= !strcmp(common_opts[i], k);
        for (int i = 0; spec && spec[i]; i++) ok |= !strcmp(spec[i], k);
        if (ok) continue;
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (int i = 0; common_opts[i]; i++) {
            if (i) luaL_addstring(&b, ", ");
            luaL_addstring(&b, common_opts[i]);
        }
        for (int i = 0; spec && spec[i]; i++) {
            luaL_addstring(&b, ", ");
            luaL_addstring(&b, spec[i]);
        }
        luaL_pushresult(&b);
        luaL_error(L, "%s: unknown option '%s' (known: %s)", fn, k, lua_tostring(L, -1));
    }
}

/* Pushes opts[key] (nil when absent); returns its type. */
static int field(lua_State *L, int idx, const char *key) {
    if (lua_isnoneornil(L, idx)) {
        lua_pushnil(L);
        return LUA_TNIL;
    }
    return lua_getfield(L, idx, key);
}

static double opt_num(lua_State *L, int idx, const char *fn, const char *key, double def) {
    int t = field(L, idx, key);
    double v = def;
    if (t != LUA_TNIL) {
        if (t != LUA_TNUMBER) luaL_error(L, "%s: %s must be a number, got %s", fn, key, luaL_typename(L, -1));
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

static int opt_int(lua_State *L, int idx, const char *fn, const char *key, int def, int min, const char *what) {
    int t = field(L, idx, key);
    lua_Integer v = def;
    if (t != LUA_TNIL) {
        int ok = 0;
        v = lua_tointegerx(L, -1, &ok);
        if (!ok || v < min || v > 1 << 30)
            luaL_error(L, "%s: %s must be %s, got %s", fn, key, what, luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
    return (int)v;
}

static bool opt_bool(lua_State *L, int idx, const char *fn, const char *key, bool def) {
    int t = field(L, idx, key);
    bool v = def;
    if (t != LUA_TNIL) {
        if (t != LUA_TBOOLEAN) luaL_error(L, "%s: %s must be true or false, got %s", fn, key, luaL_typename(L, -1));
        v = lua_toboolean(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* A string option; the string stays valid while the options table lives. */
static const char *opt_str(lua_State *L, int idx, const char *fn, const char *key, const char *def) {
    int t = field(L, idx, key);
    const char *v = def;
    if (t != LUA_TNIL) {
        if (t != LUA_TSTRING) luaL_error(L, "%s: %s must be a string, got %s", fn, key, luaL_typename(L, -1));
        v = lua_tostring(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* ---------------------------------------------------------------- callbacks */
typedef struct {
    lua_State *L;
    int on_step; /* stack index of the function, or 0 */
    int log;
} callbacks;

static int step_cb(void *ud, const ml_attack_step_info *in) {
    callbacks *c = ud;
    lua_State *L = c->L;
    int top = lua_gettop(L);
    lua_pushvalue(L, c->on_step);
    lua_pushinteger(L, in->step);
    lua_createtable(L, 0, 10);
    lua_pushstring(L, in->attack);
    lua_setfield(L, -2, "attack");
    lua_pushinteger(L, in->step);
    lua_setfield(L, -2, "step");
    lua_pushinteger(L, in->total);
    lua_setfield(L, -2, "total");
    lua_pushinteger(L, in->run + 1);
    lua_setfield(L, -2, "run");
    mlua_push_tensor(L, ml_alias(in->loss));
    lua_setfield(L, -2, "loss");
    mlua_push_tensor(L, ml_alias(in->success));
    lua_setfield(L, -2, "success");
    mlua_push_tensor(L, ml_alias(in->x_adv));
    lua_setfield(L, -2, "x_adv");
    if (in->index) {
        mlua_push_tensor(L, mlua_index_from_core(in->index));
        lua_setfield(L, -2, "index");
    }
    if (in->routing) {
        push_routing(L, in->routing, false);
        lua_setfield(L, -2, "trace");
    }
    int rc = 0;
    if (lua_pcall(L, 2, 1, 0) != LUA_OK) {
        rc = ml_interrupt_pending() ? 1 : -1;
        if (rc < 0) ml_fail("on_step: %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
    } else if (lua_type(L, -1) == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
        rc = 1;
    }
    lua_settop(L, top);
    return rc;
}

static void log_cb(void *ud, const char *line) {
    callbacks *c = ud;
    lua_State *L = c->L;
    int top = lua_gettop(L);
    lua_pushvalue(L, c->log);
    lua_pushstring(L, line);
    lua_pcall(L, 1, 0, 0); /* a failing printer must not stop an evaluation */
    lua_settop(L, top);
}

/* A Lua objective: fn(logits, trace, y) -> float tensor [B] (differentiable). */
typedef struct {
    lua_State *L;
    int ref;
} lua_objective;

static ml_tensor *lua_objective_loss(ml_objective *o, const ml_objective_input *in) {
    lua_objective *lo = o->ud;
    lua_State *L = lo->L;
    int top = lua_gettop(L);
    lua_rawgeti(L, LUA_REGISTRYINDEX, lo->ref);
    mlua_push_tensor(L, ml_retain(in->logits));
    if (in->routing) push_routing(L, in->routing, true);
    else lua_pushnil(L);
    if (in->y->dtype == ML_I64) mlua_push_tensor(L, mlua_index_from_core((ml_tensor *)in->y));
    else mlua_push_tensor(L, ml_retain((ml_tensor *)in->y));
    if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
        if (ml_interrupt_pending()) ml_fail("interrupted");
        else ml_fail("objective: %s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error in the Lua objective");
        lua_settop(L, top);
        return NULL;
    }
    ml_tensor *l = mlua_to_tensor(L, -1);
    if (!l) ml_fail("objective: the Lua function returned a %s, not a tensor of losses", luaL_typename(L, -1));
    else ml_retain(l);
    lua_settop(L, top);
    return l;
}

static void lua_objective_free(void *ud) {
    lua_objective *lo = ud;
    luaL_unref(lo->L, LUA_REGISTRYINDEX, lo->ref);
    free(lo);
}

/* ---------------------------------------------------------------- the call */
/* Everything the call owns, released by __gc (so a Lua error cannot leak it). */
typedef struct {
    ml_tensor *y, *target;
    ml_objective *objective;
    ml_tensor *x_adv;
    ml_attack_report rep;
} run_state;

static int run_state_gc(lua_State *L) {
    run_state *s = luaL_checkudata(L, 1, "moelab.AttackRun");
    ml_release(s->y);
    ml_release(s->target);
    ml_objective_free(s->objective);
    ml_release(s->x_adv);
    ml_attack_report_clear(&s->rep);
    memset(s, 0, sizeof *s);
    return 0;
}

static ml_tensor *labels_to_core(lua_State *L, int idx, const char *fn, const char *what, bool multilabel) {
    ml_tensor *t = mlua_to_tensor(L, idx);
    if (!t) luaL_error(L, "%s: %s must be a tensor, got %s", fn, what, luaL_typename(L, idx));
    if (multilabel) {
        if (t->dtype != ML_F32)
            luaL_error(L, "%s: %s must be a float tensor [B, classes] of 0/1 targets, got %s", fn, what,
                       ml_dtype_name(t->dtype));
        return ml_retain(t);
    }
    if (t->dtype != ML_I64 || t->ndim != 1)
        luaL_error(L, "%s: %s must be an int64 tensor [B] of class indices 1..classes (use :long()), got a %s tensor %s",
                   fn, what, ml_dtype_name(t->dtype), ML_SHAPE_STR(t));
    return mlua_index_to_core(L, idx, fn);
}

static ml_attack_norm check_norm(lua_State *L, const char *fn, const char *s) {
    if (!strcmp(s, "linf") || !strcmp(s, "Linf") || !strcmp(s, "inf")) return ML_NORM_LINF;
    if (!strcmp(s, "l2") || !strcmp(s, "L2")) return ML_NORM_L2;
    luaL_error(L, "%s: unknown norm '%s' (use \"linf\" or \"l2\")", fn, s);
    return ML_NORM_LINF;
}

static void set_num(lua_State *L, const char *k, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, k);
}

static void set_int(lua_State *L, const char *k, int64_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void push_cost(lua_State *L, const ml_attack_cost *c) {
    lua_createtable(L, 0, 6);
    set_int(L, "forwards", c->forwards);
    set_int(L, "backwards", c->backwards);
    set_int(L, "forward_examples", c->forward_examples);
    set_int(L, "backward_examples", c->backward_examples);
    set_int(L, "queries", c->forward_examples);
    set_num(L, "seconds", c->seconds);
}

static void push_doctor(lua_State *L, const ml_doctor_report *d) {
    lua_createtable(L, 0, 10);
    lua_createtable(L, d->n_flags, 0);
    for (int i = 0; i < d->n_flags; i++) {
        lua_createtable(L, 0, 3);
        lua_pushstring(L, d->flags[i].name);
        lua_setfield(L, -2, "name");
        lua_pushstring(L, d->flags[i].message);
        lua_setfield(L, -2, "message");
        lua_pushstring(L, d->flags[i].remedy);
        lua_setfield(L, -2, "remedy");
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "flags");
    lua_pushboolean(L, d->n_flags == 0);
    lua_setfield(L, -2, "ok");
    set_num(L, "clean_accuracy", d->clean_accuracy);
    set_int(L, "zero_gradients", d->zero_gradients);
    set_num(L, "output_spread", d->output_spread);
    if (!isnan(d->eps_zero_accuracy)) set_num(L, "eps_zero_accuracy", d->eps_zero_accuracy);
    if (!isnan(d->eps_one_accuracy)) set_num(L, "eps_one_accuracy", d->eps_one_accuracy);
    if (!isnan(d->white_box_accuracy)) set_num(L, "white_box_accuracy", d->white_box_accuracy);
    if (!isnan(d->square_accuracy)) set_num(L, "square_accuracy", d->square_accuracy);
    if (d->n_eps > 0) {
        lua_createtable(L, d->n_eps, 0);
        for (int i = 0; i < d->n_eps; i++) {
            lua_createtable(L, 0, 2);
            set_num(L, "eps", d->eps_grid[i]);
            set_num(L, "robust_accuracy", d->eps_accuracy[i]);
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "eps_curve");
    }
}

static void push_report(lua_State *L, const ml_attack_report *r, const ml_attack_opts *o, bool doctor) {
    lua_createtable(L, 0, 24);
    lua_pushstring(L, r->attack);
    lua_setfield(L, -2, "attack");
    lua_pushstring(L, r->objective);
    lua_setfield(L, -2, "objective");
    set_int(L, "n", r->n);
    set_num(L, "eps", o->eps);
    lua_pushstring(L, ml_attack_norm_name(o->norm));
    lua_setfield(L, -2, "norm");
    set_int(L, "seed", (int64_t)r->seed);
    mlua_push_tensor(L, ml_retain(r->success));
    lua_setfield(L, -2, "success");
    mlua_push_tensor(L, ml_retain(r->loss));
    lua_setfield(L, -2, "loss");
    mlua_push_tensor(L, ml_retain(r->norm));
    lua_setfield(L, -2, "perturbation");
    mlua_push_tensor(L, ml_retain(r->steps));
    lua_setfield(L, -2, "steps");
    mlua_push_tensor(L, mlua_index_from_core(r->pred_clean));
    lua_setfield(L, -2, "pred_clean");
    mlua_push_tensor(L, mlua_index_from_core(r->pred_adv));
    lua_setfield(L, -2, "pred_adv");
    set_num(L, "clean_accuracy", r->clean_accuracy);
    set_num(L, "robust_accuracy", r->robust_accuracy);
    set_num(L, "robust_accuracy_8bit", r->robust_accuracy_8bit);
    double s = 0;
    for (int64_t i = 0; i < r->n; i++) s += ml_f32(r->success)[i];
    set_num(L, "success_rate", r->n ? s / (double)r->n : 0);
    push_cost(L, &r->cost);
    lua_setfield(L, -2, "cost");
    lua_pushboolean(L, r->interrupted);
    lua_setfield(L, -2, "interrupted");
    lua_pushboolean(L, r->stopped);
    lua_setfield(L, -2, "stopped");
    if (r->n_parts > 0) {
        lua_pushboolean(L, r->resumed);
        lua_setfield(L, -2, "resumed");
        lua_createtable(L, r->n_parts, 0);
        for (int i = 0; i < r->n_parts; i++) {
            const ml_attack_part *p = &r->parts[i];
            lua_createtable(L, 0, 4);
            lua_pushstring(L, p->name);
            lua_setfield(L, -2, "name");
            if (!isnan(p->robust_accuracy)) set_num(L, "robust_accuracy", p->robust_accuracy);
            set_int(L, "broken", p->broken);
            push_cost(L, &p->cost);
            lua_setfield(L, -2, "cost");
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "attacks");
    }
    if (r->broken_by) {
        lua_createtable(L, (int)r->n, 0);
        for (int64_t i = 0; i < r->n; i++) {
            int64_t k = ml_i64(r->broken_by)[i];
            lua_pushstring(L, k == -2 ? "clean" : k == -1 ? "robust" : r->parts[k].name);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        lua_setfield(L, -2, "broken_by");
    }
    if (doctor || r->doctor.n_flags > 0) {
        push_doctor(L, &r->doctor);
        lua_setfield(L, -2, "doctor");
    }
    lua_pushstring(L, ml_moe_target_name(r->moe_target));
    lua_setfield(L, -2, "target");
    lua_pushstring(L, r->selection_ste ? "ste" : "model");
    lua_setfield(L, -2, "selection_grad");
    lua_pushboolean(L, r->router_noise);
    lua_setfield(L, -2, "router_noise");
    if (r->n_layers > 0) {
        lua_createtable(L, r->n_layers, 0);
        for (int i = 0; i < r->n_layers; i++) {
            const ml_attack_layer *l = &r->layers[i];
            lua_createtable(L, 0, 4);
            lua_pushstring(L, l->name);
            lua_setfield(L, -2, "layer");
            set_num(L, "change", l->change);
            if (l->steer >= 0) {
                set_int(L, "expert", l->steer + 1);
                set_num(L, "steered", l->steered);
            }
            lua_rawseti(L, -2, i + 1);
        }
        lua_setfield(L, -2, "routing");
        set_int(L, "routing_changed", r->routing_changed);
    }
    set_int(L, "prediction_changed", r->prediction_changed);
}

/* ml.attack._run(name, model, x, y, [opts]) -> x_adv, report */
static int l_run(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    if (!ml_attack_known(name))
        luaL_error(L, "attack: unknown attack '%s' (use fgsm, pgd, apgd, apgd-ce, apgd-dlr, apgd-t, fab-t, square, "
                   "autoattack or check)", name);
    const char *fn = !strcmp(name, "fab") ? "fab-t" : name;
    ml_module *model = mlua_to_module(L, 2);
    if (!model) luaL_error(L, "%s: model must be a module (wrap a function with ml.nn.Lambda), got %s", fn,
                           luaL_typename(L, 2));
    ml_tensor *x = mlua_to_tensor(L, 3);
    if (!x) luaL_error(L, "%s: x must be a tensor (a batch of pixels in [0, 1]), got %s", fn, luaL_typename(L, 3));
    check_known(L, 5, fn);
    lua_settop(L, 5);

    ml_attack_opts o;
    ml_attack_opts_default(&o);
    o.index_base = 1;
    bool cheap_check = !strcmp(name, "check-cheap");
    if (field(L, 5, "eps") == LUA_TNIL && !cheap_check)
        luaL_error(L, "%s: eps is required (a number >= 0, e.g. 8/255 on CIFAR, 0.3 on MNIST)", fn);
    lua_pop(L, 1);
    o.eps = opt_num(L, 5, fn, "eps", 0);
    o.norm = check_norm(L, fn, opt_str(L, 5, fn, "norm", "linf"));
    if (field(L, 5, "seed") != LUA_TNIL) {
        int ok = 0;
        lua_Integer seed = lua_tointegerx(L, -1, &ok);
        if (!ok) luaL_error(L, "%s: seed must be an integer, got %s", fn, luaL_tolstring(L, -1, NULL));
        o.seed = (uint64_t)seed;
    }
    lua_pop(L, 1);
    o.clamp = opt_bool(L, 5, fn, "clamp", true);
    const char *nan = opt_str(L, 5, fn, "nan", "stop");
    if (strcmp(nan, "stop") && strcmp(nan, "continue"))
        luaL_error(L, "%s: nan must be \"stop\" or \"continue\", got \"%s\"", fn, nan);
    o.nan_continue = !strcmp(nan, "continue");
    o.trace = opt_bool(L, 5, fn, "trace", false);
    o.steps = opt_int(L, 5, fn, "steps", -1, 1, "a positive integer");
    o.alpha = opt_num(L, 5, fn, "alpha", NAN);
    o.random_start = opt_bool(L, 5, fn, "random_start", false);
    o.restarts = opt_int(L, 5, fn, "restarts", 1, 1, "an integer >= 1");
    o.early_stop = opt_bool(L, 5, fn, "early_stop", false);
    o.eot = opt_int(L, 5, fn, "eot", 1, 1, "an integer >= 1");
    o.n_targets = opt_int(L, 5, fn, "n_targets", 9, 1, "an integer >= 1");
    o.rho = opt_num(L, 5, fn, "rho", 0.75);
    o.momentum = opt_num(L, 5, fn, "momentum", 0.75);
    o.alpha_max = opt_num(L, 5, fn, "alpha_max", 0.1);
    o.fab_eta = opt_num(L, 5, fn, "eta", 1.05);
    o.fab_beta = opt_num(L, 5, fn, "beta", 0.9);
    o.queries = opt_int(L, 5, fn, "queries", 5000, 1, "an integer >= 1");
    o.p_init = opt_num(L, 5, fn, "p_init", 0.8);
    o.version = opt_str(L, 5, fn, "version", "standard");
    o.state_path = opt_str(L, 5, fn, "state", NULL);
    o.batch = opt_int(L, 5, fn, "batch", 250, 0, "an integer >= 0");
    o.checks = opt_bool(L, 5, fn, "checks", true);
    o.router_noise = opt_bool(L, 5, fn, "router_noise", false);
    const char *sel = opt_str(L, 5, fn, "selection_grad", "model");
    if (strcmp(sel, "model") && strcmp(sel, "ste"))
        luaL_error(L, "%s: selection_grad must be \"model\" (the gradient the model defines, through the gates) or "
                   "\"ste\" (straight-through), got '%s'", fn, sel);
    o.selection_ste = !strcmp(sel, "ste");
    if (field(L, 5, "target") == LUA_TSTRING && ml_moe_target_parse(fn, lua_tostring(L, -1), &o.moe_target))
        return mlua_error(L);
    lua_pop(L, 1);
    o.steer_steps = opt_int(L, 5, fn, "steer_steps", 0, 1, "a positive integer");
    int et = field(L, 5, "expert");
    if (et == LUA_TSTRING && !strcmp(lua_tostring(L, -1), "weakest")) {
        o.steer_expert = -1;
    } else if (et != LUA_TNIL) {
        int ok = 0;
        lua_Integer e = lua_tointegerx(L, -1, &ok);
        if (!ok || e < 1 || e > 1 << 20)
            luaL_error(L, "%s: expert must be an expert number (1-based) or \"weakest\", got %s", fn,
                       luaL_tolstring(L, -1, NULL));
        o.steer_expert = (int)e - 1;
    }
    lua_pop(L, 1);
    if (field(L, 5, "attacks") != LUA_TNIL) {
        if (!lua_istable(L, -1)) luaL_error(L, "%s: attacks must be a list of attack names", fn);
        int n = (int)lua_rawlen(L, -1);
        if (n < 1 || n > ML_ATTACK_MAX_PARTS)
            luaL_error(L, "%s: attacks must list 1 to %d attack names", fn, ML_ATTACK_MAX_PARTS);
        for (int i = 0; i < n; i++) {
            lua_rawgeti(L, -1, i + 1);
            if (!lua_isstring(L, -1)) luaL_error(L, "%s: attacks[%d] must be an attack name", fn, i + 1);
            o.attacks[i] = lua_tostring(L, -1); /* kept alive by the options table */
            lua_pop(L, 1);
        }
        o.n_attacks = n;
    }
    lua_pop(L, 1);

    /* what this call owns, in a userdata collected even if an error is raised below */
    run_state *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    luaL_setmetatable(L, "moelab.AttackRun");
    int st_idx = lua_gettop(L);

    int ot = field(L, 5, "objective");
    if (ot == LUA_TSTRING) {
        if (!(st->objective = ml_objective_new(lua_tostring(L, -1)))) {
            lua_pushfstring(L, "%s: %s", fn, ml_last_error());
            return lua_error(L);
        }
    } else if (ot == LUA_TFUNCTION) {
        lua_objective *lo = malloc(sizeof *lo);
        if (!lo) return luaL_error(L, "%s: out of memory", fn);
        lo->L = L;
        lua_pushvalue(L, -1);
        lo->ref = luaL_ref(L, LUA_REGISTRYINDEX);
        if (!(st->objective = ml_objective_custom("lua", lua_objective_loss, lo, lua_objective_free, true))) {
            lua_objective_free(lo);
            return mlua_error(L);
        }
    } else if (ot != LUA_TNIL) {
        return luaL_error(L, "%s: objective must be a name (%s) or a function (logits, trace, y) -> losses [B], got %s",
                          fn, ml_objective_names(), luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    o.objective = st->objective;
    bool multilabel = st->objective && st->objective->multilabel;
    if (lua_isnoneornil(L, 4)) luaL_error(L, "%s: labels y are missing", fn);
    st->y = labels_to_core(L, 4, fn, "y", multilabel);
    /* target: a part of an MoE (a name, read above) or target classes (a tensor) */
    int tt = field(L, 5, "target");
    if (tt != LUA_TNIL && tt != LUA_TSTRING) {
        if (!mlua_to_tensor(L, -1))
            luaL_error(L, "%s: target must be \"model\", \"router\", \"experts\", \"steer_then_break\" or a tensor "
                       "of target classes, got %s", fn, luaL_typename(L, -1));
        st->target = labels_to_core(L, lua_gettop(L), fn, "target", false);
    }
    lua_pop(L, 1);
    o.target = st->target;
    if (et != LUA_TNIL && o.moe_target != ML_TARGET_STEER_THEN_BREAK &&
        !(st->objective && !strcmp(st->objective->name, "routing_steer")))
        luaL_error(L, "%s: expert applies to target = \"steer_then_break\" and objective = \"routing_steer\"", fn);

    callbacks cb = {L, 0, 0};
    if (field(L, 5, "on_step") != LUA_TNIL) {
        if (!lua_isfunction(L, -1)) luaL_error(L, "%s: on_step must be a function (step, info)", fn);
        cb.on_step = lua_gettop(L);
        o.on_step = step_cb;
        o.on_step_ud = &cb;
    } else {
        lua_pop(L, 1);
    }
    if (field(L, 5, "log") != LUA_TNIL) {
        if (!lua_isfunction(L, -1)) luaL_error(L, "%s: log must be a function (line)", fn);
        cb.log = lua_gettop(L);
        o.log = log_cb;
        o.log_ud = &cb;
    } else {
        lua_pop(L, 1);
    }

    st->x_adv = ml_attack_run(name, model, x, st->y, &o, &st->rep);
    if (!st->x_adv) return mlua_error(L);
    mlua_push_tensor(L, ml_retain(st->x_adv));
    push_report(L, &st->rep, &o, !strncmp(name, "check", 5));
    /* keep the result where the Lua side finds it if Ctrl-C fires on return */
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, -3);
    lua_rawseti(L, -2, 1);
    lua_pushvalue(L, -2);
    lua_rawseti(L, -2, 2);
    lua_setfield(L, LUA_REGISTRYINDEX, LAST_KEY);
    lua_pushcfunction(L, run_state_gc);
    lua_pushvalue(L, st_idx);
    lua_call(L, 1, 0);
    return 2;
}

/* ml.attack._last() -> x_adv, report of the last attack (then forgets them) */
static int l_last(lua_State *L) {
    if (lua_getfield(L, LUA_REGISTRYINDEX, LAST_KEY) != LUA_TTABLE) return 0;
    lua_rawgeti(L, -1, 1);
    lua_rawgeti(L, -2, 2);
    lua_pushnil(L);
    lua_setfield(L, LUA_REGISTRYINDEX, LAST_KEY);
    return 2;
}

/* ml.attack.loss(name, logits, y, [{target = t, clean = logits}]) -> losses [B] */
static int l_loss(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    ml_tensor *z = mlua_check_tensor(L, 2);
    static const char *const known[] = {"target", "clean", NULL};
    mlua_check_options(L, 4, "loss", known);
    lua_settop(L, 4);
    run_state *st = lua_newuserdatauv(L, sizeof *st, 0);
    memset(st, 0, sizeof *st);
    luaL_setmetatable(L, "moelab.AttackRun");
    if (!(st->objective = ml_objective_new(name))) return mlua_error(L);
    if (lua_isnoneornil(L, 3)) luaL_error(L, "loss: labels y are missing");
    st->y = labels_to_core(L, 3, "loss", "y", st->objective->multilabel);
    if (field(L, 4, "target") != LUA_TNIL) st->target = labels_to_core(L, lua_gettop(L), "loss", "target", false);
    lua_pop(L, 1);
    ml_tensor *clean = NULL;
    if (field(L, 4, "clean") != LUA_TNIL) clean = mlua_check_tensor(L, -1);
    return mlua_push_tensor(L, ml_objective_apply(st->objective, z, st->y, st->target, clean, 1));
}

/* ml.attack.objectives() -> the names of the built-in objectives */
static int l_objectives(lua_State *L) {
    lua_pushstring(L, ml_objective_names());
    return 1;
}

void mlua_open_attack(lua_State *L) {
    luaL_newmetatable(L, "moelab.AttackRun");
    lua_pushcfunction(L, run_state_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    mlua_subtable(L, "attack");
    const luaL_Reg f[] = {{"_run", l_run},
                          {"_last", l_last},
                          {"loss", l_loss},
                          {"objectives", l_objectives},
                          {NULL, NULL}};
    luaL_setfuncs(L, f, 0);
    lua_pop(L, 1);
}
