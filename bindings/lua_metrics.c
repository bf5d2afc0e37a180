/* lua_metrics.c -- the C side of ml.metrics (core/analysis): routing
 * changes, the dissection, expert load and the expert x class matrix,
 * pathway IoU, accuracy counts, measured FLOPs and the certified routing
 * radius. These are the private ml.metrics._* primitives; lua/moelab/metrics.lua
 * builds the public functions (rows, options, help texts) on them. Labels,
 * predictions and expert ids are 1-based here, 0-based in the core. */
#include <string.h>

#include "areas.h"
#include "lua_nn.h"
#include "lua_trace.h"
#include "lua_util.h"

static void set_number(lua_State *L, const char *key, double v) {
    lua_pushnumber(L, v);
    lua_setfield(L, -2, key);
}

static void set_integer(lua_State *L, const char *key, lua_Integer v) {
    lua_pushinteger(L, v);
    lua_setfield(L, -2, key);
}

static void set_string(lua_State *L, const char *key, const char *v) {
    lua_pushstring(L, v);
    lua_setfield(L, -2, key);
}

/* A new table for a layer's results: its name, kind, items and items per sample. */
static void push_layer_head(lua_State *L, const char *layer, ml_trace_kind kind, int64_t items, int64_t per_sample) {
    lua_createtable(L, 0, 12);
    set_string(L, "layer", layer);
    set_string(L, "kind", ml_trace_kind_name(kind));
    set_integer(L, "items", items);
    set_integer(L, "per_sample", per_sample);
}

/* Takes over t (NULL: nothing is set). */
static void set_tensor(lua_State *L, const char *key, ml_tensor *t) {
    if (!t) return;
    mlua_push_tensor(L, t);
    lua_setfield(L, -2, key);
}

/* 1-based labels (a tensor or a table) -> 0-based int64, owned by Lua. */
static ml_tensor *labels(lua_State *L, int idx, const char *fn) {
    ml_tensor *y = mlua_index_to_core(L, idx, fn);
    mlua_push_tensor(L, y);
    lua_replace(L, idx);
    return y;
}

/* ml.metrics._routing_change(clean, other, batch) -> {layers = {...}, sample_changed = float [batch]} */
static int l_routing_change(lua_State *L) {
    const char *fn = "routing_change";
    ml_trace *a = mlua_check_trace(L, 1), *b = mlua_check_trace(L, 2);
    int64_t batch = luaL_checkinteger(L, 3);
    ml_route_change rc;
    if (ml_route_change_compute(fn, a, b, batch, &rc)) return mlua_error(L);
    lua_createtable(L, 0, 2);
    lua_createtable(L, rc.n, 0);
    for (int i = 0; i < rc.n; i++) {
        ml_route_change_layer *l = &rc.layers[i];
        push_layer_head(L, l->layer, l->kind, l->T, l->per_sample);
        set_number(L, "mean_iou", l->mean_iou);
        set_number(L, "rate", l->rate);
        set_number(L, "mean_tv", l->mean_tv);
        set_integer(L, "changed", l->changed);
        set_integer(L, "samples_changed", l->samples_changed);
        set_tensor(L, "iou", ml_retain(l->iou));
        if (l->tv) set_tensor(L, "tv", ml_retain(l->tv));
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "layers");
    ml_tensor *changed = ml_empty(ML_F32, 1, &batch);
    for (int64_t s = 0; changed && s < batch; s++) ml_f32(changed)[s] = rc.sample_changed[s];
    ml_route_change_free(&rc);
    if (!changed) return mlua_error(L);
    set_tensor(L, "sample_changed", changed);
    return 1;
}

/* ml.metrics._dissect(clean, adversarial, y, pred_adv) -> {n, counts = {n1, n2, n3, n4}, router_robustness,
 * moe_robustness, cases = int64 [B] of 1..4} (labels and predictions 1-based) */
static int l_dissect(lua_State *L) {
    const char *fn = "dissection";
    ml_trace *a = mlua_check_trace(L, 1), *b = mlua_check_trace(L, 2);
    ml_tensor *y = labels(L, 3, fn), *pred = labels(L, 4, fn);
    ml_route_change rc;
    if (ml_route_change_compute(fn, a, b, y->shape[0], &rc)) return mlua_error(L);
    ml_dissection d;
    int status = ml_dissect(fn, &rc, y, pred, &d);
    ml_route_change_free(&rc);
    if (status) return mlua_error(L);
    lua_createtable(L, 0, 5);
    set_integer(L, "n", d.n);
    lua_createtable(L, 4, 0);
    for (int c = 1; c <= 4; c++) {
        lua_pushinteger(L, d.count[c]);
        lua_rawseti(L, -2, c);
    }
    lua_setfield(L, -2, "counts");
    set_number(L, "router_robustness", d.router_robustness);
    set_number(L, "moe_robustness", d.moe_robustness);
    set_tensor(L, "cases", ml_retain(d.cases));
    ml_dissection_free(&d);
    return 1;
}

/* ml.metrics._load(trace, layer, threshold) -> {load, share, top (1-based), top_share, collapsed, items, E} */
static int l_load(lua_State *L) {
    ml_trace *t = mlua_check_trace(L, 1);
    int i = mlua_check_trace_layer(L, t, 2, "expert_load");
    ml_expert_load x;
    if (ml_expert_load_compute(&t->layers[i], luaL_checknumber(L, 3), &x)) return mlua_error(L);
    lua_createtable(L, 0, 7);
    set_tensor(L, "load", ml_retain(x.load));
    set_tensor(L, "share", ml_retain(x.share));
    set_integer(L, "top", x.top + 1);
    set_number(L, "top_share", x.top_share);
    lua_pushboolean(L, x.collapsed);
    lua_setfield(L, -2, "collapsed");
    set_integer(L, "items", x.items);
    set_integer(L, "E", x.E);
    ml_expert_load_free(&x);
    return 1;
}

/* ml.metrics._class_matrix(trace, layer, y (1-based), classes) -> float [E, classes] */
static int l_class_matrix(lua_State *L) {
    const char *fn = "expert_class";
    ml_trace *t = mlua_check_trace(L, 1);
    int i = mlua_check_trace_layer(L, t, 2, fn);
    lua_Integer classes = luaL_checkinteger(L, 4);
    ml_tensor *y = labels(L, 3, fn);
    return mlua_push_tensor(L, ml_expert_class_matrix(fn, &t->layers[i], y, classes));
}

/* ml.metrics._expert_channels(moe_conv_layer) -> float [E, C] of 0/1 */
static int l_expert_channels(lua_State *L) {
    return mlua_push_tensor(L, ml_pathway_expert_channels("pathway", mlua_check_module(L, 1)));
}

/* ml.metrics._static_mask(masked_conv_layer) -> float [C] of 0/1 */
static int l_static_mask(lua_State *L) { return mlua_push_tensor(L, ml_masked_conv_mask("pathway", mlua_check_module(L, 1))); }

/* ml.metrics._pathway(trace, layer, expert_channels, mask) -> float [T] IoU */
static int l_pathway(lua_State *L) {
    ml_trace *t = mlua_check_trace(L, 1);
    int i = mlua_check_trace_layer(L, t, 2, "pathway");
    return mlua_push_tensor(L, ml_pathway_iou("pathway", &t->layers[i], mlua_check_tensor(L, 3), mlua_check_tensor(L, 4)));
}

/* ml.metrics._accuracy(logits, y (1-based)) -> correct, predictions (1-based) */
static int l_accuracy(lua_State *L) {
    ml_tensor *logits = mlua_check_tensor(L, 1), *y = labels(L, 2, "accuracy"), *pred;
    int64_t correct;
    if (ml_accuracy_count("accuracy", logits, y, &correct, &pred)) return mlua_error(L);
    lua_pushinteger(L, correct);
    mlua_push_tensor(L, mlua_index_from_core(pred));
    ml_release(pred);
    return 2;
}

/* ml.metrics._precision_at_1(logits, targets) -> hits */
static int l_precision(lua_State *L) {
    int64_t hits;
    if (ml_precision_at_1("accuracy", mlua_check_tensor(L, 1), mlua_check_tensor(L, 2), &hits)) return mlua_error(L);
    lua_pushinteger(L, hits);
    return 1;
}

/* ml.metrics._flops(model, x) -> {flops, per_input, params, active, batch} */
static int l_flops(lua_State *L) {
    ml_flops_count c;
    if (ml_flops_measure(mlua_check_module(L, 1), mlua_check_tensor(L, 2), &c)) return mlua_error(L);
    lua_createtable(L, 0, 5);
    set_integer(L, "flops", c.flops);
    set_number(L, "per_input", c.flops_per_input);
    set_integer(L, "params", c.params);
    set_integer(L, "active", c.active_params);
    set_integer(L, "batch", c.batch);
    return 1;
}

/* ml.metrics._radius(model, x, "l2" | "linf") -> {layers = {{layer, kind, items, per_sample, radius, router_radius,
 * sample_radius, exact, note}}, trace, batch, input_size} */
static int l_radius(lua_State *L) {
    ml_module *m = mlua_check_module(L, 1);
    ml_tensor *x = mlua_check_tensor(L, 2);
    const char *nn = luaL_optstring(L, 3, "linf");
    if (strcmp(nn, "l2") && strcmp(nn, "linf")) return luaL_error(L, "routing_radius: norm must be \"linf\" or \"l2\", got \"%s\"", nn);
    ml_radius r;
    if (ml_routing_radius("routing_radius", m, x, strcmp(nn, "l2") ? ML_RADIUS_LINF : ML_RADIUS_L2, &r))
        return mlua_error(L);
    lua_createtable(L, 0, 4);
    lua_createtable(L, r.n, 0);
    for (int i = 0; i < r.n; i++) {
        ml_radius_layer *l = &r.layers[i];
        push_layer_head(L, l->layer, l->kind, l->T, l->per_sample);
        set_tensor(L, "radius", ml_retain(l->radius));
        set_tensor(L, "router_radius", ml_retain(l->router_radius));
        set_tensor(L, "sample_radius", ml_retain(l->sample_radius));
        lua_pushboolean(L, l->exact);
        lua_setfield(L, -2, "exact");
        set_string(L, "note", l->note);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "layers");
    set_integer(L, "batch", r.batch);
    set_integer(L, "input_size", r.input_size);
    ml_trace *t = r.trace;
    r.trace = NULL;
    ml_radius_free(&r);
    mlua_push_trace(L, t);
    lua_setfield(L, -2, "trace");
    return 1;
}

void mlua_open_metrics(lua_State *L) {
    static const luaL_Reg functions[] = {{"_routing_change", l_routing_change}, {"_dissect", l_dissect},
                                         {"_load", l_load}, {"_class_matrix", l_class_matrix},
                                         {"_expert_channels", l_expert_channels}, {"_static_mask", l_static_mask},
                                         {"_pathway", l_pathway}, {"_accuracy", l_accuracy},
                                         {"_precision_at_1", l_precision}, {"_flops", l_flops}, {"_radius", l_radius},
                                         {NULL, NULL}};
    mlua_subtable(L, "metrics");
    luaL_setfuncs(L, functions, 0);
    lua_pop(L, 1);
}
