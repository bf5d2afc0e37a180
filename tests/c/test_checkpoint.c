/* Checkpoints in C only: a zoo model and its optimizer state round trip bit
 * for bit; every kind of corrupt or crafted file is refused with its reason. */
#include <stdlib.h>
#include <string.h>

#include "testlib.h"

static char dir[256];

static void path_in(char *out, const char *name) { snprintf(out, 512, "%s/%s", dir, name); }

static ml_module *zoo(const char *name, const char *json) {
    ml_module *m = ml_zoo_build(name, cJSON_Parse(json));
    if (!m) fprintf(stderr, "zoo %s: %s\n", name, ml_last_error());
    return m;
}

typedef struct {
    ml_tensor **ps;
    int n;
} param_list;

static int add_param(void *ud, const char *path, ml_param *p, ml_module *owner) {
    param_list *l = ud;
    l->ps[l->n++] = p->t;
    return 0;
}

static ml_optim *adam_over(ml_module *m) {
    static ml_tensor *ps[4096];
    param_list l = {ps, 0};
    ml_module_visit_params(m, false, add_param, &l);
    ml_optim_opts o = {.kind = ML_OPT_ADAM, .lr = 0.01};
    return ml_optim_new(&o, l.n, ps);
}

static void train_step(ml_module *m, ml_optim *o, ml_tensor *x, ml_tensor *y) {
    ml_optim_zero_grad(o);
    ml_tensor *logits = ml_module_forward(m, x, NULL);
    ml_tensor *loss = ml_cross_entropy(logits, y, ML_MEAN, 0);
    CHECK(loss && ml_backward(loss, NULL, false) == 0 && ml_optim_step(o) == 0);
    ml_release(loss);
    ml_release(logits);
}

typedef struct {
    ml_module *other;
    int differ, compared;
} cmp_walk;

static int compare_cb(void *ud, const char *path, ml_param *p, ml_module *owner) {
    cmp_walk *w = ud;
    ml_module *m = w->other;
    /* walk the dotted path through the other model's children */
    char buf[ML_PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    char *save = NULL, *tok = strtok_r(buf, ".", &save), *next;
    ml_tensor *t = NULL;
    while (tok && m) {
        next = strtok_r(NULL, ".", &save);
        if (!next) t = ml_module_param(m, tok);
        else m = ml_module_child(m, tok);
        tok = next;
    }
    w->compared++;
    if (!t || !ml_same_shape(t, p->t) || t->dtype != p->t->dtype ||
        memcmp(t->dtype == ML_F32 ? (void *)ml_f32(t) : (void *)ml_i64(t),
               p->t->dtype == ML_F32 ? (void *)ml_f32(p->t) : (void *)ml_i64(p->t),
               (size_t)ml_numel(t) * ml_dtype_size(t->dtype)))
        w->differ++;
    return 0;
}

/* Same parameters and buffers, bit for bit. */
static bool same_state(ml_module *a, ml_module *b) {
    cmp_walk w = {b, 0, 0};
    ml_module_visit_params(a, true, compare_cb, &w);
    return w.differ == 0 && w.compared > 0;
}

static void round_trip(const char *name, const char *cfg, int64_t c, int64_t hw) {
    char p[512];
    path_in(p, "zoo.safetensors");
    ml_seed(7);
    ml_module *m = zoo(name, cfg);
    CHECK(m != NULL);
    if (!m) return;
    ml_optim *o = adam_over(m);
    int64_t xs[4] = {4, c, hw, hw}, ys[1] = {4};
    ml_tensor *x = ml_rand(4, xs), *y = ml_randint(0, 10, 1, ys);
    train_step(m, o, x, y);
    const char *keys[1] = {"note"}, *values[1] = {"trained one step"};
    ml_checkpoint_meta meta = {.has_epoch = true, .epoch = 3, .n = 1, .keys = keys, .values = values};
    CHECK(ml_checkpoint_save(p, m, o, &meta) == 0);
    ml_checkpoint *ck = ml_checkpoint_load(p, true);
    CHECK(ck != NULL);
    if (ck) {
        CHECK(ck->epoch == 3 && ck->optim_steps == 1 && ck->optim_lr == 0.01);
        CHECK(strcmp(ml_st_meta_get(ck->file, "note"), "trained one step") == 0);
        CHECK(strcmp(ml_st_meta_get(ck->file, "moelab.format"), "1") == 0);
        cJSON *c1 = ml_module_config(m), *c2 = ml_module_config(ck->model);
        CHECK(cJSON_Compare(c1, c2, true));
        cJSON_Delete(c1);
        cJSON_Delete(c2);
        CHECK(same_state(m, ck->model) && same_state(ck->model, m));
        CHECK(!ck->model->training);
        /* same outputs in eval mode */
        ml_module_set_training(m, false);
        bool gm = ml_grad_set(false);
        ml_tensor *a = ml_module_forward(m, x, NULL), *b = ml_module_forward(ck->model, x, NULL);
        CHECK(a && b && test_close_ratio(b, a, 0, 1e-30) == 0);
        ml_release(a);
        ml_release(b);
        ml_grad_set(gm);
        /* the restored optimizer takes the same next step (on one thread: the
         * same numbers then do not depend on how two threads share the work) */
        int threads = ml_num_threads();
        ml_set_num_threads(1);
        ml_optim *o2 = adam_over(ck->model);
        CHECK(ml_checkpoint_restore_optim(ck, o2, NULL) == 0 && ml_optim_steps(o2) == 1);
        ml_module_set_training(m, true);
        ml_module_set_training(ck->model, true);
        ml_seed(11);
        train_step(m, o, x, y);
        ml_seed(11);
        train_step(ck->model, o2, x, y);
        CHECK(same_state(m, ck->model));
        ml_set_num_threads(threads);
        ml_optim_free(o2);
        ml_checkpoint_free(ck);
    }
    ml_release(x);
    ml_release(y);
    ml_optim_free(o);
    ml_module_release(m);
}

TEST(zoo_models_and_optimizer_round_trip) {
    round_trip("cnn", "{\"family\": \"moe_cnn\", \"experts\": 2, \"width\": 0.5, \"input\": [1, 28, 28]}", 1, 28);
    round_trip("resnet18", "{\"width\": 0.25}", 3, 32);
    round_trip("vmoe", "{\"dim\": 16, \"depth\": 2, \"heads\": 2, \"mlp\": 32, \"experts\": 4, \"input\": [1, 28, 28]}", 1, 28);
}

/* A checkpoint of Linear(4, 3) written by hand: tensors and metadata as given. */
static void write_linear(const char *p, const char *wname, int64_t wr, int64_t wc, const char *extra, int nmeta,
                         const char **mk, const char **mv) {
    int64_t ws[2] = {wr, wc}, bs[1] = {3};
    ml_tensor *w = ml_zeros(ML_F32, 2, ws), *b = ml_full(ML_F32, 1, bs, 0.5);
    const char *names[3] = {wname, "bias", extra};
    ml_tensor *ts[3] = {w, b, b};
    CHECK(ml_st_save(p, extra ? 3 : 2, names, ts, nmeta, mk, mv) == 0);
    ml_release(w);
    ml_release(b);
}

static const char *linear_cfg = "{\"type\":\"Linear\",\"in\":4,\"out\":3,\"bias\":true}";

TEST(refuses_bad_checkpoints) {
    char p[512];
    path_in(p, "bad.safetensors");
    const char *mk[4] = {"moelab.format", "moelab.config", "moelab.epoch", "moelab.optim_steps"};
    const char *mv[4] = {"1", linear_cfg, "2", "5"};
    /* the reference: loads */
    write_linear(p, "weight", 3, 4, NULL, 2, mk, mv);
    ml_checkpoint *c = ml_checkpoint_load(p, true);
    CHECK(c && c->epoch == -1 && c->optim_steps == -1 && isnan(c->optim_lr));
    ml_checkpoint_free(c);

    write_linear(p, "weight", 3, 4, NULL, 1, mk, mv);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "has no moelab model config in its metadata");
    const char *v2[2] = {"2", linear_cfg};
    write_linear(p, "weight", 3, 4, NULL, 2, mk, v2);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "has format '2'; this moelab reads format 1");
    const char *vjson[2] = {"1", "{\"type\": "};
    write_linear(p, "weight", 3, 4, NULL, 2, mk, vjson);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "the model config is not a JSON object");
    /* loading never runs code: only registered module types are built */
    const char *vlua[2] = {"1", "{\"type\": \"Lambda\", \"fn\": \"os.exit(3)\"}"};
    write_linear(p, "weight", 3, 4, NULL, 2, mk, vlua);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "cannot rebuild the model: model config: unknown module type 'Lambda'");
    const char *vepoch[3] = {"1", linear_cfg, "two"};
    write_linear(p, "weight", 3, 4, NULL, 3, mk, vepoch);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "metadata moelab.epoch is 'two', not a non-negative integer");

    /* a config asking for far more than the file holds: stopped while building */
    const char *vhuge[2] = {"1", "{\"type\":\"Linear\",\"in\":100000,\"out\":100000,\"bias\":true}"};
    write_linear(p, "weight", 3, 4, NULL, 2, mk, vhuge);
    ml_memory_stats before, after;
    ml_memory_get(&before);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "the model config asks for more memory than the file's tensors");
    ml_memory_get(&after);
    CHECK(after.peak_bytes - before.peak_bytes < (8 << 20)); /* not the 40 GB it asked for */
    CHECK(after.live_bytes == before.live_bytes);

    /* names: a tensor the model lacks, a tensor the file lacks */
    write_linear(p, "weight", 3, 4, "extra.w", 2, mk, mv);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "load_state_dict: 1 entries of");
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "are not in the model ('extra.w')");
    c = ml_checkpoint_load(p, false);
    CHECK(c && ml_f32(ml_module_param(c->model, "bias"))[2] == 0.5f);
    ml_checkpoint_free(c);
    write_linear(p, "weights", 3, 4, NULL, 2, mk, mv);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "1 entries of the model are missing from");
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "(first: 'weight')");
    write_linear(p, "weight", 4, 3, NULL, 2, mk, mv);
    CHECK_FAILS(ml_checkpoint_load(p, false) != NULL, "'weight' has shape [3, 4] in the model but [4, 3] in");

    /* F32 bytes relabelled I32 (same size): refused, not loaded as integers */
    write_linear(p, "weight", 3, 4, NULL, 2, mk, mv);
    FILE *f = fopen(p, "r+b");
    char head[512];
    size_t got = fread(head, 1, sizeof head - 1, f);
    head[got] = 0;
    char *at = strstr(head + 8, "\"weight\":{\"dtype\":\"F32\""); /* after the 8-byte length */
    CHECK(at != NULL);
    if (at) {
        fseek(f, (long)(at - head) + (long)strlen("\"weight\":{\"dtype\":\""), SEEK_SET);
        fwrite("I32", 1, 3, f);
    }
    fclose(f);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "'weight' is float32 in the model but I32 in");
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, p);

    /* optimizer entries */
    write_linear(p, "weight", 3, 4, "optim.bias.s1", 2, mk, mv);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "has optimizer entries but no moelab.optim_steps");
    const char *mk4[4] = {mk[0], mk[1], mk[3], mk[2]}, *mv4[4] = {"1", linear_cfg, "5", "2"};
    write_linear(p, "weight", 3, 4, "optim.bias.s3", 3, mk4, mv4);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "'optim.bias.s3' is not an optimizer entry");
    write_linear(p, "weight", 3, 4, "optim.weight.s1", 3, mk4, mv4);
    CHECK_FAILS(ml_checkpoint_load(p, true) != NULL, "optimizer entry 'optim.weight.s1' has a shape other than");
    write_linear(p, "weight", 3, 4, "optim.bias.s2", 3, mk4, mv4);
    c = ml_checkpoint_load(p, true);
    CHECK(c && c->optim_steps == 5 && c->epoch == -1);
    if (c) {
        ml_optim *o = adam_over(c->model);
        CHECK(ml_checkpoint_restore_optim(c, o, NULL) == 0 && ml_optim_steps(o) == 5);
        ml_tensor *s1, *s2;
        ml_optim_state(o, 1, &s1, &s2); /* bias: no s1 saved, s2 = 0.5 */
        CHECK(s1 == NULL && s2 && ml_f32(s2)[0] == 0.5f);
        ml_optim_free(o);
    }
    ml_checkpoint_free(c);
}

static ml_module_type opaque_type = {.name = "Opaque"};

TEST(refuses_bad_saves) {
    char p[512];
    path_in(p, "keep.safetensors");
    ml_module *m = ml_nn_linear(4, 3, true);
    CHECK(ml_checkpoint_save(p, m, NULL, NULL) == 0);
    const char *keys[1] = {"moelab.config"}, *values[1] = {"{}"};
    ml_checkpoint_meta meta = {.n = 1, .keys = keys, .values = values};
    CHECK_FAILS(ml_checkpoint_save(p, m, NULL, &meta) == 0, "metadata key 'moelab.config' is reserved");
    /* an optimizer over a tensor that is not the model's */
    int64_t s[1] = {3};
    ml_tensor *t = ml_zeros(ML_F32, 1, s);
    ml_requires_grad_(t, true);
    ml_optim_opts oo = {.kind = ML_OPT_SGD, .lr = 0.1};
    ml_optim *o = ml_optim_new(&oo, 1, &t);
    CHECK_FAILS(ml_checkpoint_save(p, m, o, NULL) == 0, "the optimizer's parameter 1 is not a parameter of the model");
    const char *names[1] = {"free"};
    meta = (ml_checkpoint_meta){.optim_names = names};
    path_in(p, "named.safetensors");
    CHECK(ml_checkpoint_save(p, m, o, &meta) == 0); /* with names it saves */
    ml_checkpoint *c = ml_checkpoint_load(p, true);
    CHECK(c && ml_checkpoint_restore_optim(c, o, names) == 0);
    ml_checkpoint_free(c);
    /* a module that cannot be rebuilt: refused, and the earlier file stays */
    path_in(p, "keep.safetensors");
    ml_module *opaque = ml_module_new(&opaque_type, NULL);
    CHECK_FAILS(ml_checkpoint_save(p, opaque, NULL, NULL) == 0, "a Opaque module cannot be rebuilt from data");
    c = ml_checkpoint_load(p, true);
    CHECK(c != NULL);
    ml_checkpoint_free(c);
    CHECK_FAILS(ml_checkpoint_save("/nonexistent/dir/m.safetensors", m, NULL, NULL) == 0, "cannot write");
    ml_module_release(opaque);
    ml_optim_free(o);
    ml_release(t);
    ml_module_release(m);
}

/* 80,000 entries the model does not have: a non-strict load finds its two by
 * binary search; a strict one names the first few. */
TEST(many_entries) {
    enum { N = 80000 };
    ml_module *m = ml_nn_linear(4, 3, true);
    const char **names = malloc(sizeof *names * (N + 2));
    ml_tensor **ts = malloc(sizeof *ts * (N + 2));
    char *buf = malloc((size_t)N * 16);
    int64_t one = 1, ws[2] = {3, 4}, bs[1] = {3};
    ml_tensor *x = ml_zeros(ML_F32, 1, &one), *w = ml_full(ML_F32, 2, ws, 2), *b = ml_full(ML_F32, 1, bs, 3);
    for (int i = 0; i < N; i++) {
        snprintf(buf + 16 * i, 16, "x.%d", i);
        names[i] = buf + 16 * i;
        ts[i] = x;
    }
    names[N] = "weight", ts[N] = w;
    names[N + 1] = "bias", ts[N + 1] = b;
    CHECK(ml_module_load_state_dict(m, N + 2, names, ts, false, "the arrays") == 2);
    CHECK(ml_f32(ml_module_param(m, "weight"))[11] == 2 && ml_f32(ml_module_param(m, "bias"))[2] == 3);
    CHECK_FAILS(ml_module_load_state_dict(m, N + 2, names, ts, true, "the arrays") >= 0,
                "80000 entries of the arrays are not in the model ('x.0', 'x.1', 'x.10', ...)");
    names[0] = "bias";
    CHECK_FAILS(ml_module_load_state_dict(m, N + 2, names, ts, false, "the arrays") >= 0, "'bias' appears twice in the arrays");
    ml_release(x);
    ml_release(w);
    ml_release(b);
    free(buf);
    free(names);
    free(ts);
    ml_module_release(m);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/moelab-test-ck-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    RUN(zoo_models_and_optimizer_round_trip);
    RUN(refuses_bad_checkpoints);
    RUN(refuses_bad_saves);
    RUN(many_entries);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary();
}
