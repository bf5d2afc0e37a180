/* Routing traces through the C API (core/nn/trace.h): a forward's trace read
 * by layer, the same trace forced back (identical output), a file round trip,
 * pack/unpack beside other tensors, compatibility checks and bad traces. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"

static ml_module *small_vmoe(void) {
    cJSON *c = cJSON_Parse("{\"classes\": 10, \"dim\": 16, \"depth\": 2, \"heads\": 2, \"mlp\": 32, \"experts\": 4}");
    ml_module *m = ml_zoo_build("vmoe", c);
    if (m) ml_module_set_training(m, false);
    return m;
}

static ml_trace *traced_forward(ml_module *m, ml_tensor *x, const ml_trace *routing, ml_tensor **y) {
    ml_ctx ctx = {.trace = true, .routing = routing};
    *y = ml_module_forward(m, x, &ctx);
    ml_trace *t = *y ? ml_ctx_take_trace(&ctx) : NULL;
    ml_ctx_clear(&ctx);
    return t;
}

TEST(read_by_layer_and_force_back) {
    ml_seed(4);
    ml_module *m = small_vmoe();
    int64_t xs[4] = {3, 1, 28, 28};
    ml_tensor *x = ml_rand(4, xs), *y = NULL, *y2 = NULL;
    ml_trace *t = traced_forward(m, x, NULL, &y);
    CHECK(t && t->n == 1);
    const ml_trace_layer *l = ml_trace_find(t, "blocks.1.mlp");
    CHECK(l && l == &t->layers[0] && l->kind == ML_TRACE_TOKEN && l->E == 4 && l->K == 2 && l->T == 3 * 50);
    CHECK(ml_trace_find(t, "blocks.0.mlp") == NULL && ml_trace_index(t, "nope") == -1);
    /* the load counts the kept choices; the gates are the probabilities at the experts */
    double load = 0;
    for (int e = 0; e < l->E; e++) load += ml_f32(l->load)[e];
    CHECK(load == (double)(l->T * l->K - ml_trace_dropped(l)));
    const int64_t *ex = ml_i64(l->experts);
    CHECK(ml_f32(l->gates)[1] == ml_f32(l->probs)[ex[1]]);
    CHECK(!l->probs->grad_fn && !l->logits->grad_fn);
    /* forced back: the same output, bit for bit, and the same routing */
    ml_trace *t2 = traced_forward(m, x, t, &y2);
    CHECK(y2 && test_close_ratio(y2, y, 0, 1e-30) == 0);
    CHECK(t2 && ml_trace_same_routing(t, t2) && ml_trace_check_compatible("test", t, t2) == 0);
    /* a trace of another batch size is refused, naming the layer */
    int64_t xs2[4] = {2, 1, 28, 28};
    ml_tensor *x2 = ml_rand(4, xs2), *y3 = NULL;
    ml_trace *t3 = traced_forward(m, x2, NULL, &y3);
    CHECK_FAILS(ml_trace_check_compatible("test", t, t3) == 0, "layer 'blocks.1.mlp' routed 150 items in one trace and 100");
    CHECK(!ml_trace_same_routing(t, t3));
    ml_ctx ctx = {.routing = t};
    ml_tensor *bad = NULL;
    CHECK_FAILS((bad = ml_module_forward(m, x2, &ctx)) != NULL, "has 150 items, this forward routes 100 (another batch size?)");
    ml_release(bad);
    ml_ctx_clear(&ctx);
    ml_release(x);
    ml_release(x2);
    ml_release(y);
    ml_release(y2);
    ml_release(y3);
    ml_trace_free(t);
    ml_trace_free(t2);
    ml_trace_free(t3);
    ml_module_release(m);
}

TEST(trace_grad_keeps_history) {
    ml_seed(5);
    ml_module *m = small_vmoe();
    int64_t xs[4] = {2, 1, 28, 28};
    ml_tensor *x = ml_rand(4, xs);
    ml_requires_grad_(x, true);
    ml_ctx ctx = {.trace = true, .trace_grad = true};
    ml_tensor *y = ml_module_forward(m, x, &ctx);
    ml_trace *t = ml_ctx_take_trace(&ctx);
    ml_ctx_clear(&ctx);
    CHECK(y && t->n == 1 && t->layers[0].probs->grad_fn && t->layers[0].gates->grad_fn);
    ml_tensor *s = ml_sum(t->layers[0].gates, ML_ALL_DIMS, false), *g = NULL;
    CHECK(s && ml_grad(s, NULL, 1, &x, &g, false) == 0);
    double total = 0;
    for (int64_t i = 0; g && i < ml_numel(g); i++) total += fabs(ml_f32(g)[i]);
    CHECK(total > 0);
    ml_release(s);
    ml_release(g);
    ml_release(y);
    ml_release(x);
    ml_trace_free(t);
    ml_module_release(m);
}

TEST(files_and_parts) {
    char path[] = "/tmp/moelab_trace_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    int64_t es[2] = {3, 2}, ps[2] = {3, 4};
    int64_t sel[6] = {0, 1, 3, 2, 1, 0}, kept[6] = {1, 1, 1, 0, 1, 1};
    ml_tensor *ex = ml_from_data(ML_I64, 2, es, sel), *kp = ml_from_data(ML_I64, 2, es, kept);
    ml_tensor *logits = ml_randn(2, ps), *probs = ml_softmax(logits, 1);
    double aux[ML_AUX_COUNT] = {0.25, NAN, 1.5, NAN};
    ml_trace *t = ml_trace_new();
    ml_trace_entry e = {"blocks.1.mlp", ML_TRACE_TOKEN, 0, ex, NULL, probs, logits, kp, aux};
    CHECK(ml_trace_add(t, &e, false) == 0);
    ml_trace_entry c = {"conv", ML_TRACE_CHANNEL, 4, ml_narrow(ex, 1, 0, 1), NULL, NULL, NULL, NULL, NULL};
    CHECK(ml_trace_add(t, &c, false) == 0);
    ml_release(c.experts);
    CHECK(ml_f32(t->layers[0].load)[0] == 2 && ml_f32(t->layers[0].load)[2] == 0 && ml_trace_dropped(&t->layers[0]) == 1);
    CHECK(ml_f32(t->layers[1].gates)[0] == 1.0f && ml_i64(t->layers[1].kept)[2] == 1);
    CHECK(ml_trace_save(path, t) == 0);
    ml_trace *u = ml_trace_load(path);
    CHECK(u && u->n == 2 && ml_trace_same_routing(t, u) && !strcmp(u->layers[1].name, "conv"));
    CHECK(u && u->layers[0].aux[0] == 0.25 && isnan(u->layers[0].aux[1]) && u->layers[1].kind == ML_TRACE_CHANNEL);
    CHECK(u && test_close_ratio(u->layers[0].probs, probs, 0, 1e-30) == 0 && !u->layers[1].probs);
    /* two traces in one file beside another tensor (an adversarial set) */
    ml_trace_parts a, b;
    CHECK(ml_trace_pack(t, "clean.", &a) == 0 && ml_trace_pack(u, "adv.", &b) == 0);
    int n = a.n + b.n + 1;
    const char **names = calloc((size_t)n, sizeof *names);
    ml_tensor **ts = calloc((size_t)n, sizeof *ts);
    for (int i = 0; i < a.n; i++) names[i] = a.names[i], ts[i] = a.tensors[i];
    for (int i = 0; i < b.n; i++) names[a.n + i] = b.names[i], ts[a.n + i] = b.tensors[i];
    names[n - 1] = "x_adv";
    ts[n - 1] = logits;
    const char *mk[2] = {a.meta_key, b.meta_key}, *mv[2] = {a.meta_value, b.meta_value};
    CHECK(ml_st_save(path, n, names, ts, 2, mk, mv) == 0);
    ml_st_file *f = ml_st_open(path);
    ml_trace *ca = f ? ml_trace_unpack(f, "clean.") : NULL, *cb = f ? ml_trace_unpack(f, "adv.") : NULL;
    CHECK(ca && cb && ml_trace_same_routing(ca, t) && ml_trace_same_routing(cb, t));
    CHECK_FAILS(f && ml_trace_unpack(f, "other.") != NULL, "metadata 'other.trace' is missing");
    ml_st_close(f);
    CHECK_FAILS(ml_trace_load(path) != NULL, "no routing trace in it");
    free(names);
    free(ts);
    ml_trace_parts_free(&a);
    ml_trace_parts_free(&b);
    ml_trace_free(ca);
    ml_trace_free(cb);
    ml_trace_free(u);
    ml_trace_free(t);
    ml_release(ex);
    ml_release(kp);
    ml_release(logits);
    ml_release(probs);
    unlink(path);
}

TEST(bad_layers) {
    int64_t es[2] = {2, 2}, ps[2] = {2, 3};
    int64_t dup[4] = {0, 0, 1, 2}, out_of_range[4] = {0, 3, 1, 2};
    ml_tensor *d = ml_from_data(ML_I64, 2, es, dup), *o = ml_from_data(ML_I64, 2, es, out_of_range);
    ml_tensor *probs = ml_rand(2, ps), *wrong = ml_rand(2, es);
    ml_trace *t = ml_trace_new();
    ml_trace_entry e = {"l", ML_TRACE_TOKEN, 0, d, NULL, probs, NULL, NULL, NULL};
    CHECK_FAILS(ml_trace_add(t, &e, false) == 0, "trace of layer 'l': item 1 selects expert 0 twice");
    e.experts = o;
    CHECK_FAILS(ml_trace_add(t, &e, false) == 0, "item 1 selects expert 3 of 3");
    e.experts = d;
    e.probs = NULL;
    CHECK_FAILS(ml_trace_add(t, &e, false) == 0, "the number of experts is unknown");
    e.E = 3;
    e.experts = o;
    e.logits = wrong;
    CHECK_FAILS(ml_trace_add(t, &e, false) == 0, "logits must be float32 [2, 3], got float32 [2, 2]");
    ml_trace_kind k;
    CHECK_FAILS(ml_trace_kind_parse("test", "dense", &k) == 0, "test: unknown layer kind 'dense'");
    CHECK(ml_trace_kind_parse("test", "global", &k) == 0 && k == ML_TRACE_GLOBAL);
    CHECK(t->n == 0);
    ml_trace_free(t);
    ml_release(d);
    ml_release(o);
    ml_release(probs);
    ml_release(wrong);
}

int main(void) {
    RUN(read_by_layer_and_force_back);
    RUN(trace_grad_keeps_history);
    RUN(files_and_parts);
    RUN(bad_layers);
    return test_summary();
}
