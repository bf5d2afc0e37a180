/* core/analysis against hand-made traces and known layers: IoU and rates
 * (identical 0, disjoint 1, dropped choices as defined), total variation,
 * the dissection's counts, pathway IoU, expert load and the expert x class
 * matrix, accuracy counts, measured FLOPs of known layers, the router-space
 * radius and its exactness for a single linear router; bad input. */
#include <float.h>
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

/* A one-layer trace: experts and kept flags [T, K] (0-based), probs [T, E] or NULL. */
static ml_trace *hand_trace(const char *name, ml_trace_kind kind, int64_t T, int K, int E, const int64_t *sel,
                            const int64_t *kept, const float *probs) {
    int64_t es[2] = {T, K}, ps[2] = {T, E};
    ml_tensor *ex = ml_from_data(ML_I64, 2, es, sel), *kp = kept ? ml_from_data(ML_I64, 2, es, kept) : NULL;
    ml_tensor *p = probs ? ml_from_data(ML_F32, 2, ps, probs) : NULL;
    ml_trace *t = ml_trace_new();
    ml_trace_entry e = {name, kind, E, ex, NULL, p, NULL, kp, NULL};
    if (ml_trace_add(t, &e, false)) {
        ml_trace_free(t);
        t = NULL;
    }
    ml_release(ex);
    ml_release(kp);
    ml_release(p);
    return t;
}

TEST(iou_of_items) {
    int64_t a[2] = {0, 1}, b[2] = {1, 0}, c[2] = {2, 3}, d[2] = {0, 2};
    int64_t all[2] = {1, 1}, none[2] = {0, 0}, first[2] = {1, 0};
    CHECK(ml_trace_selection_iou(a, all, b, all, 2) == 1.0);           /* same set, other order */
    CHECK(ml_trace_selection_iou(a, all, c, all, 2) == 0.0);           /* disjoint */
    CHECK_NEAR(ml_trace_selection_iou(a, all, d, all, 2), 1.0 / 3, 1e-15);
    CHECK(ml_trace_selection_iou(a, none, c, none, 2) == 1.0);         /* dropped everywhere both times: unchanged */
    CHECK(ml_trace_selection_iou(a, none, a, all, 2) == 0.0);          /* dropped before, routed after */
    CHECK(ml_trace_selection_iou(a, first, a, all, 2) == 0.5);         /* expert 1 dropped: {0} vs {0, 1} */
    CHECK(ml_trace_selection_iou(c, first, d, first, 2) == 0.0);       /* the dropped choice does not count */
}

TEST(rate_identical_disjoint_dropped) {
    /* 4 items of 2 samples, K = 2 of E = 4 */
    int64_t sel[8] = {0, 1, 2, 3, 1, 2, 0, 3}, other[8] = {2, 3, 0, 1, 0, 3, 1, 2};
    int64_t kept[8] = {1, 1, 1, 1, 1, 1, 0, 0};
    float p[16] = {0.5f, 0.3f, 0.1f, 0.1f, 0.1f, 0.1f, 0.4f, 0.4f, 0.2f, 0.3f, 0.3f, 0.2f, 0.25f, 0.25f, 0.25f, 0.25f};
    float q[16] = {0.0f, 0.0f, 0.5f, 0.5f, 0.5f, 0.5f, 0.0f, 0.0f, 0.2f, 0.3f, 0.3f, 0.2f, 0.25f, 0.25f, 0.25f, 0.25f};
    ml_trace *t = hand_trace("moe", ML_TRACE_TOKEN, 4, 2, 4, sel, kept, p);
    ml_trace *same = hand_trace("moe", ML_TRACE_TOKEN, 4, 2, 4, sel, kept, p);
    ml_trace *dis = hand_trace("moe", ML_TRACE_TOKEN, 4, 2, 4, other, kept, q);
    ml_route_change rc;
    CHECK(ml_route_change_compute("test", t, same, 2, &rc) == 0);
    CHECK(rc.n == 1 && rc.layers[0].rate == 0 && rc.layers[0].mean_iou == 1 && rc.layers[0].changed == 0);
    CHECK(rc.layers[0].mean_tv == 0 && rc.layers[0].per_sample == 2 && !rc.sample_changed[0] && !rc.sample_changed[1]);
    ml_route_change_free(&rc);
    CHECK(ml_route_change_compute("test", t, dis, 2, &rc) == 0);
    /* items 0..2 disjoint (IoU 0); item 3 dropped in both (IoU 1) */
    CHECK_NEAR(rc.layers[0].rate, 0.75, 1e-12);
    CHECK(ml_f32(rc.layers[0].iou)[0] == 0 && ml_f32(rc.layers[0].iou)[3] == 1 && rc.layers[0].changed == 3);
    CHECK(rc.sample_changed[0] && rc.sample_changed[1] && rc.layers[0].samples_changed == 2);
    /* TV: item 0 moves 0.8 of its mass, item 1 0.8, items 2 and 3 nothing */
    CHECK_NEAR(ml_f32(rc.layers[0].tv)[0], 0.8, 1e-6);
    CHECK_NEAR(ml_f32(rc.layers[0].tv)[2], 0.0, 1e-12);
    CHECK_NEAR(rc.layers[0].mean_tv, 0.4, 1e-6);
    ml_route_change_free(&rc);
    ml_trace_free(t);
    ml_trace_free(same);
    ml_trace_free(dis);
}

TEST(total_variation_bounded) {
    ml_seed(3);
    int64_t ps[2] = {64, 8};
    ml_tensor *la = ml_randn(2, ps), *lb = ml_randn(2, ps);
    ml_mul_scalar_(la, 20);
    ml_mul_scalar_(lb, 20);
    ml_tensor *pa = ml_softmax(la, 1), *pb = ml_softmax(lb, 1);
    int64_t sel[64];
    for (int i = 0; i < 64; i++) sel[i] = i % 8;
    ml_trace *a = hand_trace("m", ML_TRACE_SMOOTH, 64, 1, 8, sel, NULL, ml_f32(pa));
    ml_trace *b = hand_trace("m", ML_TRACE_SMOOTH, 64, 1, 8, sel, NULL, ml_f32(pb));
    ml_route_change rc;
    CHECK(ml_route_change_compute("test", a, b, 64, &rc) == 0);
    double worst = 0;
    for (int i = 0; i < 64; i++) worst = fmax(worst, ml_f32(rc.layers[0].tv)[i]);
    CHECK(worst <= 1.0 && worst > 0.9 && rc.layers[0].mean_tv > 0 && rc.layers[0].mean_tv <= 1.0);
    CHECK(rc.layers[0].rate == 0); /* same top-1 selections: the rate sees no change, the TV does */
    ml_route_change_free(&rc);
    ml_trace_free(a);
    ml_trace_free(b);
    ml_release(la);
    ml_release(lb);
    ml_release(pa);
    ml_release(pb);
}

TEST(bad_traces) {
    int64_t sel[4] = {0, 1, 1, 0};
    ml_trace *a = hand_trace("blocks.1.mlp", ML_TRACE_TOKEN, 4, 1, 2, sel, NULL, NULL);
    ml_trace *b = hand_trace("blocks.3.mlp", ML_TRACE_TOKEN, 4, 1, 2, sel, NULL, NULL);
    ml_trace *c = hand_trace("blocks.1.mlp", ML_TRACE_TOKEN, 2, 1, 2, sel, NULL, NULL);
    ml_route_change rc;
    CHECK_FAILS(ml_route_change_compute("routing_change", a, b, 2, &rc) == 0,
                "routing_change: layer 1 is 'blocks.1.mlp' in one trace and 'blocks.3.mlp' in the other");
    CHECK_FAILS(ml_route_change_compute("routing_change", a, c, 2, &rc) == 0,
                "routed 4 items in one trace and 2 in the other (different batch sizes?)");
    CHECK_FAILS(ml_route_change_compute("routing_change", a, a, 3, &rc) == 0,
                "routing_change: layer 'blocks.1.mlp' routed 4 items, not a multiple of the batch size 3");
    CHECK_FAILS(ml_route_change_compute("routing_change", a, a, 0, &rc) == 0, "batch size must be at least 1, got 0");
    ml_trace_free(a);
    ml_trace_free(b);
    ml_trace_free(c);
}

TEST(dissection_counts) {
    /* 6 samples, 2 tokens each; routing changes in samples 1, 2 (0-based) */
    int64_t sel[12] = {0, 1, 1, 0, 0, 1, 0, 0, 1, 1, 0, 1}, adv[12] = {0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 1};
    ml_trace *a = hand_trace("moe", ML_TRACE_TOKEN, 12, 1, 2, sel, NULL, NULL);
    ml_trace *b = hand_trace("moe", ML_TRACE_TOKEN, 12, 1, 2, adv, NULL, NULL);
    int64_t y[6] = {0, 1, 2, 3, 4, 5}, pred[6] = {0, 1, 9, 3, 0, 0}, n = 6;
    ml_tensor *yt = ml_from_data(ML_I64, 1, &n, y), *pt = ml_from_data(ML_I64, 1, &n, pred);
    ml_route_change rc;
    ml_dissection d;
    CHECK(ml_route_change_compute("dissection", a, b, 6, &rc) == 0);
    CHECK(ml_dissect("dissection", &rc, yt, pt, &d) == 0);
    /* sample 0 kept+right, 1 changed+right, 2 changed+fooled, 3 kept+right, 4 and 5 kept+fooled */
    CHECK(d.count[1] == 2 && d.count[2] == 1 && d.count[3] == 2 && d.count[4] == 1);
    CHECK(d.count[1] + d.count[2] + d.count[3] + d.count[4] == d.n && d.n == 6);
    CHECK_NEAR(d.router_robustness, 4.0 / 6, 1e-12);
    CHECK_NEAR(d.moe_robustness, 3.0 / 6, 1e-12);
    CHECK(ml_i64(d.cases)[2] == 4 && ml_i64(d.cases)[1] == 2 && ml_i64(d.cases)[4] == 3);
    ml_dissection_free(&d);
    int64_t n5 = 5;
    ml_tensor *short_y = ml_from_data(ML_I64, 1, &n5, y);
    CHECK_FAILS(ml_dissect("dissection", &rc, short_y, pt, &d) == 0, "dissection: the labels must be int64 [6]");
    ml_route_change_free(&rc);
    ml_release(short_y);
    ml_release(yt);
    ml_release(pt);
    ml_trace_free(a);
    ml_trace_free(b);
}

TEST(load_collapse_and_class_matrix) {
    /* 20 samples: 19 to expert 1 (0-based), 1 to expert 0 */
    int64_t sel[20];
    for (int i = 0; i < 20; i++) sel[i] = i == 7 ? 0 : 1;
    ml_trace *t = hand_trace("conv", ML_TRACE_CHANNEL, 20, 1, 3, sel, NULL, NULL);
    ml_expert_load x;
    CHECK(ml_expert_load_compute(&t->layers[0], 0.95, &x) == 0);
    CHECK(x.top == 1 && x.top_share == 0.95 && x.collapsed && ml_f32(x.load)[1] == 19 && ml_f32(x.share)[2] == 0);
    ml_expert_load_free(&x);
    CHECK(ml_expert_load_compute(&t->layers[0], 0.96, &x) == 0 && !x.collapsed);
    ml_expert_load_free(&x);
    int64_t y[20], n = 20;
    for (int i = 0; i < 20; i++) y[i] = i % 2;
    ml_tensor *yt = ml_from_data(ML_I64, 1, &n, y);
    ml_tensor *m = ml_expert_class_matrix("expert_class", &t->layers[0], yt, 3);
    /* expert 0 got sample 7 (class 1); expert 1 the 10 of class 0 and 9 of class 1 */
    CHECK(m && m->shape[0] == 3 && m->shape[1] == 3 && ml_f32(m)[0 * 3 + 1] == 1 && ml_f32(m)[1 * 3 + 0] == 10 &&
          ml_f32(m)[1 * 3 + 1] == 9 && ml_f32(m)[2 * 3 + 2] == 0);
    y[3] = 5;
    ml_tensor *bad = ml_from_data(ML_I64, 1, &n, y);
    CHECK_FAILS(ml_expert_class_matrix("expert_class", &t->layers[0], bad, 3) != NULL,
                "expert_class: label 6 of sample 4 is outside 1..3");
    ml_release(m);
    ml_release(bad);
    ml_release(yt);
    ml_trace_free(t);
}

/* A per-layer-routed MoEConv2d and a MaskedConv2d of the given sizes. */
static ml_module *moe_conv(int in, int out, int experts, double ratio) {
    ml_moe_conv_opts o;
    ml_moe_conv_defaults(&o);
    o.in = in, o.out = out, o.kernel = 3, o.stride = 1, o.padding = 1, o.experts = experts, o.ratio = ratio;
    o.router = ML_MOE_ROUTER_LAYER, o.mask = false;
    return ml_nn_moe_conv2d(&o);
}

static ml_module *masked_conv(int in, int out, double ratio) {
    ml_masked_conv_opts o = {.in = in, .out = out, .kernel = 3, .stride = 1, .padding = 1, .ratio = ratio};
    return ml_nn_masked_conv2d(&o);
}

TEST(pathway_iou) {
    ml_seed(2);
    ml_module *conv = moe_conv(3, 8, 2, 0.5);
    ml_tensor *ch = ml_pathway_expert_channels("pathway", conv);
    /* two experts of 4 channels each: a partition of the 8 */
    CHECK(ch && ch->shape[0] == 2 && ch->shape[1] == 8);
    float sum0 = 0, overlap = 0;
    for (int c = 0; ch && c < 8; c++) {
        sum0 += ml_f32(ch)[c];
        overlap += ml_f32(ch)[c] * ml_f32(ch)[8 + c];
    }
    CHECK(sum0 == 4 && overlap == 0);
    int64_t sel[3] = {0, 1, 0}, C = 8;
    ml_trace *t = hand_trace("conv", ML_TRACE_CHANNEL, 3, 1, 2, sel, NULL, NULL);
    ml_tensor *mask = ml_narrow(ch, 0, 0, 1), *m1 = ml_reshape(mask, 1, &C), *mc = ml_contiguous(m1);
    ml_tensor *iou = ml_pathway_iou("pathway", &t->layers[0], ch, mc);
    /* the mask is expert 0's pathway: IoU 1 with itself, 0 with expert 1's */
    CHECK(iou && ml_f32(iou)[0] == 1 && ml_f32(iou)[1] == 0 && ml_f32(iou)[2] == 1);
    ml_tensor *half = ml_zeros(ML_F32, 1, &C);
    ml_f32(half)[0] = ml_f32(half)[1] = 1; /* the first two channels of expert 0 */
    ml_tensor *iou2 = ml_pathway_iou("pathway", &t->layers[0], ch, half);
    CHECK(iou2 && ml_f32(iou2)[0] == 0.5f && ml_f32(iou2)[1] == 0);
    int64_t six = 6;
    ml_tensor *wrong = ml_zeros(ML_F32, 1, &six);
    CHECK_FAILS(ml_pathway_iou("pathway", &t->layers[0], ch, wrong) != NULL,
                "pathway: the mask of layer 'conv' must be float [8] (one entry per output channel)");
    ml_module *lin = ml_nn_linear(2, 2, true);
    CHECK_FAILS(ml_pathway_expert_channels("pathway", lin) != NULL, "pathway: a MoEConv2d is needed, got a Linear");
    ml_module *masked = masked_conv(3, 8, 0.25);
    ml_tensor *sm = ml_masked_conv_mask("pathway", masked);
    float kept = 0;
    for (int c = 0; sm && c < 8; c++) kept += ml_f32(sm)[c];
    CHECK(sm && kept == 2);
    ml_release(sm);
    ml_module_release(masked);
    ml_module_release(lin);
    ml_release(wrong);
    ml_release(half);
    ml_release(iou2);
    ml_release(iou);
    ml_release(mask);
    ml_release(m1);
    ml_release(mc);
    ml_release(ch);
    ml_trace_free(t);
    ml_module_release(conv);
}

TEST(accuracy_counts) {
    int64_t ls[2] = {3, 3}, n = 3;
    float logits[9] = {1, 2, 0, 5, 5, 0, 0, 0, 1};
    int64_t y[3] = {1, 0, 0};
    float targets[9] = {0, 1, 1, 0, 0, 1, 1, 0, 0};
    ml_tensor *lt = test_tensor(2, ls, logits), *yt = ml_from_data(ML_I64, 1, &n, y), *tt = test_tensor(2, ls, targets);
    int64_t correct = -1, hits = -1;
    ml_tensor *pred = NULL;
    CHECK(ml_accuracy_count("accuracy", lt, yt, &correct, &pred) == 0 && correct == 2);
    CHECK(pred && ml_i64(pred)[1] == 0 && ml_i64(pred)[2] == 2); /* a tie goes to the lowest class */
    CHECK(ml_precision_at_1("accuracy", lt, tt, &hits) == 0 && hits == 1);
    y[2] = 3;
    ml_tensor *bad = ml_from_data(ML_I64, 1, &n, y);
    CHECK_FAILS(ml_accuracy_count("accuracy", lt, bad, &correct, NULL) == 0,
                "accuracy: label 4 of sample 3 is outside 1..3 (the model has 3 classes)");
    ml_release(pred);
    ml_release(bad);
    ml_release(lt);
    ml_release(yt);
    ml_release(tt);
}

TEST(flops_of_known_layers) {
    ml_seed(1);
    int64_t xs[4] = {2, 3, 8, 8};
    ml_tensor *x = ml_rand(4, xs);
    ml_module *conv = ml_nn_conv2d(3, 16, 3, 1, 1, 1, false);
    ml_flops_count f;
    CHECK(ml_flops_measure(conv, x, &f) == 0);
    CHECK(f.flops_per_input == 2.0 * 16 * 3 * 9 * 8 * 8 && f.params == 16 * 3 * 9 && f.active_params == f.params);
    int64_t vs[2] = {5, 7};
    ml_tensor *v = ml_rand(2, vs);
    ml_module *lin = ml_nn_linear(7, 4, true);
    CHECK(ml_flops_measure(lin, v, &f) == 0 && f.flops_per_input == 2.0 * 7 * 4 && f.params == 7 * 4 + 4);
    /* a sparse MoE convolution: only the selected expert's 8 of 16 channels, plus its router */
    ml_module *moe = moe_conv(3, 16, 2, 0.5);
    ml_module_set_training(moe, false);
    CHECK(ml_flops_measure(moe, x, &f) == 0);
    CHECK(f.flops_per_input == 2.0 * 8 * 3 * 9 * 8 * 8 + 2.0 * 3 * 2);
    CHECK(f.active_params == 8 * 3 * 9 + 3 * 2 && f.params == 16 * 3 * 9 + 3 * 2);
    /* the mask form computes every channel */
    ml_moe_conv_set_mask(moe, true);
    CHECK(ml_flops_measure(moe, x, &f) == 0 && f.flops_per_input == 2.0 * 16 * 3 * 9 * 8 * 8 + 2.0 * 3 * 2);
    ml_module_release(moe);
    ml_module_release(lin);
    ml_module_release(conv);
    ml_release(v);
    ml_release(x);
}

/* The router-space radius of one item by brute force over the pairs. */
TEST(router_space_radius) {
    float logits[4] = {3.0f, 1.0f, 2.0f, -1.0f};
    int64_t sel[2] = {0, 2};
    double dn[16];
    for (int i = 0; i < 16; i++) dn[i] = 1.0 + (i % 5);
    /* pairs (0,1), (0,3), (2,1), (2,3): margins 2, 4, 1, 3 over their norms */
    double want = fmin(fmin(2.0 / dn[0 * 4 + 1], 4.0 / dn[0 * 4 + 3]), fmin(1.0 / dn[2 * 4 + 1], 3.0 / dn[2 * 4 + 3]));
    double got = ml_router_space_radius(logits, sel, 2, 4, dn);
    CHECK(got <= want && got > want * (1 - 1e-5));
    int64_t all[4] = {0, 1, 2, 3};
    CHECK(isinf(ml_router_space_radius(logits, all, 4, 4, dn)));
    float tie[4] = {1.0f, 1.0f, 0.0f, 0.0f};
    int64_t one[1] = {0};
    CHECK(ml_router_space_radius(tie, one, 1, 4, dn) == 0);
}

/* The certified radius of a lone linear router (a TokenMoE on the input)
 * is the exact distance: a step of (1 - 1e-3) r along the worst direction
 * keeps the routing, (1 + 1e-3) r changes it; in l2 and in l_inf. */
static void check_exact(ml_radius_norm norm) {
    ml_seed(norm == ML_RADIUS_L2 ? 11 : 12);
    ml_moe_opts o;
    ml_moe_defaults(&o, 6);
    o.experts = 5;
    o.k = 2;
    o.capacity_factor = 0;
    ml_module *moe = ml_nn_token_moe(&o);
    ml_module_set_training(moe, false);
    int64_t xs[2] = {7, 6};
    ml_tensor *x = ml_randn(2, xs);
    ml_radius r;
    CHECK(ml_routing_radius("test", moe, x, norm, &r) == 0);
    CHECK(r.n == 1 && r.layers[0].exact && !r.layers[0].note[0]);
    const ml_trace_layer *l = &r.trace->layers[0];
    ml_tensor *W = ml_module_param(ml_module_child(moe, "router"), "weight");
    for (int64_t t = 0; t < 7; t++) {
        double rad = ml_f32(r.layers[0].radius)[t];
        CHECK(rad > 0 && rad == ml_f32(r.layers[0].router_radius)[t]);
        /* the pair (selected i, other j) with the smallest distance */
        const int64_t *sel = ml_i64(l->experts) + t * 2;
        double best = INFINITY;
        int64_t bi = -1, bj = -1;
        for (int a = 0; a < 2; a++)
            for (int64_t j = 0; j < 5; j++) {
                if (j == sel[0] || j == sel[1]) continue;
                double m = ml_f32(l->logits)[t * 5 + sel[a]] - ml_f32(l->logits)[t * 5 + j], dn = 0;
                for (int k = 0; k < 6; k++) {
                    double d = ml_f32(W)[sel[a] * 6 + k] - ml_f32(W)[j * 6 + k];
                    dn += norm == ML_RADIUS_L2 ? d * d : fabs(d);
                }
                double dist = m / (norm == ML_RADIUS_L2 ? sqrt(dn) : dn);
                if (dist < best) best = dist, bi = sel[a], bj = j;
            }
        CHECK_NEAR(rad, best, 1e-4);
        for (int side = -1; side <= 1; side += 2) {
            ml_tensor *xp = ml_clone(x);
            double step = rad * (1 + side * 1e-3), dn = 0;
            for (int k = 0; k < 6; k++) {
                double d = ml_f32(W)[bi * 6 + k] - ml_f32(W)[bj * 6 + k];
                dn += d * d;
            }
            for (int k = 0; k < 6; k++) {
                double d = ml_f32(W)[bi * 6 + k] - ml_f32(W)[bj * 6 + k];
                double u = norm == ML_RADIUS_L2 ? d / sqrt(dn) : (d > 0 ? 1 : d < 0 ? -1 : 0);
                ml_f32(xp)[t * 6 + k] -= (float)(step * u);
            }
            ml_ctx ctx = {.trace = true};
            ml_tensor *y = ml_module_forward(moe, xp, &ctx);
            ml_trace *tp = ml_ctx_take_trace(&ctx);
            ml_ctx_clear(&ctx);
            const int64_t *s2 = ml_i64(tp->layers[0].experts) + t * 2;
            bool same = (s2[0] == sel[0] && s2[1] == sel[1]) || (s2[0] == sel[1] && s2[1] == sel[0]);
            CHECK(side < 0 ? same : !same);
            ml_trace_free(tp);
            ml_release(y);
            ml_release(xp);
        }
    }
    ml_radius_free(&r);
    ml_release(x);
    ml_module_release(moe);
}

TEST(radius_exact_for_one_router) {
    check_exact(ML_RADIUS_L2);
    check_exact(ML_RADIUS_LINF);
}

TEST(radius_errors) {
    ml_moe_opts o;
    ml_moe_defaults(&o, 4);
    ml_module *moe = ml_nn_token_moe(&o);
    int64_t xs[2] = {3, 4};
    ml_tensor *x = ml_randn(2, xs);
    ml_radius r;
    CHECK_FAILS(ml_routing_radius("routing_radius", moe, x, ML_RADIUS_L2, &r) == 0,
                "routing_radius: the model is in training mode");
    ml_module_release(moe);
    ml_release(x);
}

int main(void) {
    RUN(iou_of_items);
    RUN(rate_identical_disjoint_dropped);
    RUN(total_variation_bounded);
    RUN(bad_traces);
    RUN(dissection_counts);
    RUN(load_collapse_and_class_matrix);
    RUN(pathway_iou);
    RUN(accuracy_counts);
    RUN(flops_of_known_layers);
    RUN(router_space_radius);
    RUN(radius_exact_for_one_router);
    RUN(radius_errors);
    return test_summary();
}
