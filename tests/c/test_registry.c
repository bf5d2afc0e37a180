/* The house of core/nn: option tables (options.h) read, write and check
 * configs; the registry (registry.h) rebuilds every built-in type from its
 * config; errors carry a kind (error.h), so that module.c locates an error
 * once and leaves interrupts alone without reading the message. */
#include <stddef.h>
#include <string.h>

#include "nn/registry.h"
#include "testlib.h"

typedef struct {
    int n;
    double x;
    bool flag;
    int mode;
    const cJSON *sub;
} demo_opts;

static const ml_option demo_list[] = {
    {.key = "n", .type = ML_OPT_INT, .offset = offsetof(demo_opts, n), .min = 1, .max = 10, .required = true, .help = "n"},
    {.key = "x", .type = ML_OPT_NUMBER, .offset = offsetof(demo_opts, x), .def = 0.5, .min = 0, .max = INFINITY, .help = "x"},
    {.key = "flag", .type = ML_OPT_BOOL, .offset = offsetof(demo_opts, flag), .def = 1, .help = "flag"},
    {.key = "mode", .type = ML_OPT_CHOICE, .offset = offsetof(demo_opts, mode), .def = 1, .choices = "fast|exact|lazy",
     .help = "mode"},
    {.key = "sub", .type = ML_OPT_CONFIG, .offset = offsetof(demo_opts, sub), .def_text = "none", .help = "sub"},
};
static const ml_options demo = ML_OPTIONS("Demo", demo_list);

TEST(option_tables) {
    demo_opts o;
    cJSON *c = cJSON_Parse("{\"type\": \"Demo\", \"n\": 3, \"mode\": \"lazy\", \"sub\": {\"a\": 1}}");
    CHECK(ml_options_read(&demo, c, &o, false) == 0);
    CHECK(o.n == 3 && o.x == 0.5 && o.flag && o.mode == 2 && cJSON_IsObject(o.sub));
    cJSON *w = ml_options_config(&demo, &o);
    char *text = w ? cJSON_PrintUnformatted(w) : NULL;
    CHECK(text && !strcmp(text, "{\"type\":\"Demo\",\"n\":3,\"x\":0.5,\"flag\":true,\"mode\":\"lazy\",\"sub\":{\"a\":1}}"));
    cJSON_free(text);
    cJSON_Delete(w);
    cJSON_Delete(c);
    /* bad values, named */
    const char *bad[][2] = {
        {"{\"x\": 1}", "Demo: option 'n' is required"},
        {"{\"n\": 2.5}", "Demo: option 'n' must be an integer"},
        {"{\"n\": 11}", "Demo: n = 11 must be between 1 and 10"},
        {"{\"n\": 1, \"x\": -1}", "Demo: x = -1 must be >= 0"},
        {"{\"n\": 1, \"flag\": 0}", "Demo: option 'flag' must be true or false"},
        {"{\"n\": 1, \"mode\": \"slow\"}", "Demo: mode must be \"fast\" or \"exact\" or \"lazy\", got \"slow\""},
        {"{\"n\": 1, \"nn\": 1}", "Demo: unknown option 'nn' (known: n, x, flag, mode, sub)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *b = cJSON_Parse(bad[i][0]);
        CHECK_FAILS(ml_options_read(&demo, b, &o, false) == 0, bad[i][1]);
        cJSON_Delete(b);
    }
    cJSON *other = cJSON_Parse("{\"n\": 1, \"legacy\": true}");
    CHECK(ml_options_read(&demo, other, &o, true) == 0); /* old configs with extra keys still load */
    /* one option, recorded into the config with its default (the zoo's complete configs) */
    CHECK(ml_option_read_key(&demo, "mode", other, &o.mode, true, "zoo") == 0 && o.mode == 1);
    CHECK(!strcmp(cJSON_GetObjectItem(other, "mode")->valuestring, "exact"));
    cJSON_Delete(other);
    char def[64];
    ml_option_default_text(&demo_list[3], def, sizeof def);
    CHECK(!strcmp(def, "\"exact\""));
    ml_option_default_text(&demo_list[0], def, sizeof def);
    CHECK(!strcmp(def, "required"));
}

/* A minimal config for each built-in type: every one rebuilds to the same config. */
TEST(registry_round_trips) {
    const char *configs[] = {
        "{\"type\": \"Linear\", \"in\": 3, \"out\": 2}",
        "{\"type\": \"Conv2d\", \"in\": 2, \"out\": 3, \"kernel\": 3}",
        "{\"type\": \"Router\", \"dim\": 4, \"experts\": 3}",
        "{\"type\": \"TokenMoE\", \"dim\": 4, \"experts\": 3, \"k\": 1}",
        "{\"type\": \"SmoothMoE\", \"dim\": 4, \"experts\": 2}",
        "{\"type\": \"MoEConv2d\", \"in\": 2, \"out\": 4}",
        "{\"type\": \"MaskedConv2d\", \"in\": 2, \"out\": 4, \"ratio\": 0.25}",
        "{\"type\": \"BasicBlock\", \"in\": 2, \"out\": 4, \"stride\": 2, \"conv\": \"moe\"}",
        "{\"type\": \"Sequential\", \"modules\": [{\"type\": \"Identity\"}]}",
        "{\"type\": \"Model\", \"model\": \"vmoe\", \"dim\": 8, \"depth\": 2, \"heads\": 2, \"experts\": 2}",
    };
    for (size_t i = 0; i < sizeof configs / sizeof configs[0]; i++) {
        cJSON *c = cJSON_Parse(configs[i]);
        ml_module *m = ml_module_from_config(c);
        cJSON *c1 = m ? ml_module_config(m) : NULL;
        ml_module *m2 = c1 ? ml_module_from_config(c1) : NULL;
        cJSON *c2 = m2 ? ml_module_config(m2) : NULL;
        char *s1 = c1 ? cJSON_PrintUnformatted(c1) : NULL, *s2 = c2 ? cJSON_PrintUnformatted(c2) : NULL;
        CHECK(s1 && s2 && !strcmp(s1, s2));
        if (!m) fprintf(stderr, "  %s: %s\n", configs[i], ml_last_error());
        cJSON_free(s1);
        cJSON_free(s2);
        cJSON_Delete(c);
        cJSON_Delete(c1);
        cJSON_Delete(c2);
        ml_module_release(m);
        ml_module_release(m2);
    }
    int n = ml_module_kind_count(), with_options = 0;
    CHECK(n == 24); /* layers 7, cnn 6, transformer 4, moe 3, moe_conv 2, zoo 2 */
    for (int i = 0; i < n; i++) {
        const ml_module_kind *k = ml_module_kind_at(i);
        CHECK(ml_module_kind_find(k->name) == k);
        if (k->options) {
            with_options++;
            CHECK(!strcmp(k->options->type, k->name));
        }
    }
    CHECK(with_options == 5);
    cJSON *c = cJSON_Parse("{\"type\": \"Gadget\"}");
    CHECK_FAILS(ml_module_from_config(c) != NULL, "model config: unknown module type 'Gadget'");
    cJSON_Delete(c);
}

/* A module whose forward fails with the given kind of error. */
static ml_error_kind fail_kind;
static ml_tensor *failing_forward(void *ud, ml_tensor *x, ml_ctx *ctx, bool training) {
    if (fail_kind == ML_ERR_INTERRUPTED) {
        ml_interrupt_request();
        ml_interrupted();
        ml_interrupt_clear();
        return NULL;
    }
    return fail_kind == ML_ERR_MEMORY ? ml_fail_oom("failing") : ml_fail("failing: bad input");
}

TEST(error_kinds) {
    ml_fail("x: bad");
    CHECK(ml_last_error_kind() == ML_ERR_USER);
    ml_fail_oom("x");
    CHECK(ml_last_error_kind() == ML_ERR_MEMORY && !strcmp(ml_last_error(), "x: out of memory"));
    ml_fail_internal("x: invariant %d", 3);
    CHECK(ml_last_error_kind() == ML_ERR_INTERNAL);
    ml_error_clear();
    CHECK(ml_last_error_kind() == ML_ERR_NONE);
    ml_interrupt_request();
    CHECK(ml_interrupted() && ml_last_error_kind() == ML_ERR_INTERRUPTED);
    ml_interrupt_clear();
    ml_error_locate("in a: ");
    CHECK(!strcmp(ml_last_error(), "interrupted")); /* an interrupt is not located */
    ml_fail("f: bad");
    ml_error_locate("in a: ");
    ml_error_locate("in b: ");
    CHECK(!strcmp(ml_last_error(), "in a: f: bad")); /* located once, where it happened */
    /* through nested modules: the innermost path, once; interrupts untouched */
    ml_module *outer = ml_nn_sequential(), *inner = ml_nn_sequential();
    ml_nn_sequential_add(inner, ml_nn_lambda("Failing", failing_forward, NULL, NULL));
    ml_nn_sequential_add(outer, inner);
    int64_t s[1] = {2};
    ml_tensor *x = ml_zeros(ML_F32, 1, s);
    ml_ctx ctx = {0};
    fail_kind = ML_ERR_USER;
    CHECK_FAILS(ml_module_forward(outer, x, &ctx) != NULL, "in 0.0 (Lambda): failing: bad input");
    fail_kind = ML_ERR_MEMORY;
    CHECK_FAILS(ml_module_forward(outer, x, &ctx) != NULL, "in 0.0 (Lambda): failing: out of memory");
    fail_kind = ML_ERR_INTERRUPTED;
    ml_tensor *y = NULL;
    ml_error_clear();
    y = ml_module_forward(outer, x, &ctx);
    CHECK(!y && !strcmp(ml_last_error(), "interrupted") && ml_last_error_kind() == ML_ERR_INTERRUPTED);
    ml_ctx_clear(&ctx);
    ml_release(x);
    ml_module_release(outer);
}

int main(void) {
    RUN(option_tables);
    RUN(registry_round_trips);
    RUN(error_kinds);
    return test_summary();
}
