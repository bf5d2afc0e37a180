/* safetensors: round trip, reading PyTorch's files, refusing corrupt ones. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testlib.h"
#include "rng.h"

static char dir[256];

static void write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    fwrite(p, 1, n, f);
    fclose(f);
}

static void path_in(char *out, const char *name) { snprintf(out, 512, "%s/%s", dir, name); }

TEST(round_trip_bit_exact) {
    char p[512];
    path_in(p, "rt.safetensors");
    ml_seed(3);
    int64_t s1[3] = {2, 3, 4}, s2[1] = {5};
    ml_tensor *a = ml_randn(3, s1), *b = ml_randint(-5, 5, 1, s2), *c = ml_scalar(2.5);
    ml_tensor *at = ml_transpose(a, 0, 2); /* non-contiguous: written as its values */
    const char *names[3] = {"w", "idx", "scale"};
    ml_tensor *ts[3] = {at, b, c};
    const char *mk[1] = {"config"}, *mv[1] = {"{\"model\": \"mlp\"}"};
    CHECK(ml_st_save(p, 3, names, ts, 1, mk, mv) == 0);
    ml_st_file *f = ml_st_open(p);
    CHECK(f != NULL);
    if (f) {
        CHECK(ml_st_count(f) == 3);
        ml_tensor *w = ml_st_get(f, "w"), *i = ml_st_get(f, "idx"), *s = ml_st_get(f, "scale");
        CHECK(w && ml_same_shape(w, at) && test_close_ratio(w, at, 0, 1e-30) == 0);
        CHECK(i && i->dtype == ML_I64 && test_close_ratio(i, b, 0, 1e-30) == 0);
        CHECK(s && s->ndim == 0 && ml_f32(s)[0] == 2.5f);
        CHECK(strcmp(ml_st_meta_get(f, "config"), mv[0]) == 0);
        CHECK(ml_st_get(f, "missing") == NULL);
        ml_release(w); ml_release(i); ml_release(s);
        ml_st_close(f);
    }
    /* no temporary file left behind */
    char cmd[700];
    snprintf(cmd, sizeof cmd, "ls %s/rt.safetensors.tmp.* >/dev/null 2>&1", dir);
    CHECK(system(cmd) != 0);
    ml_release(at); ml_release(a); ml_release(b); ml_release(c);
}

TEST(reads_pytorch_reference_file) {
    ml_st_file *f = ml_st_open("tests/vectors/ops.safetensors");
    CHECK(f != NULL);
    if (!f) return;
    CHECK(ml_st_count(f) == 190);
    CHECK(strstr(ml_st_meta_get(f, "cases"), "\"conv2d\"") != NULL);
    ml_tensor *labels = ml_st_get(f, "cross_entropy.labels");
    CHECK(labels && labels->dtype == ML_I64 && labels->shape[0] == 6);
    /* matmul.out == matmul.in.0 @ matmul.in.1 */
    ml_tensor *a = ml_st_get(f, "matmul.in.0"), *b = ml_st_get(f, "matmul.in.1"), *o = ml_st_get(f, "matmul.out");
    ml_tensor *m = ml_matmul(a, b);
    CHECK(test_close_ratio(m, o, 1e-5, 1e-6) <= 1);
    ml_release(labels); ml_release(a); ml_release(b); ml_release(o); ml_release(m);
    ml_st_close(f);
}

/* Writes 8-byte length (hlen, or the header's length when hlen < 0), the
 * header text and `data` bytes of zeros to p. */
static void st_file(const char *p, const char *header, long long hlen, size_t data) {
    size_t n = strlen(header);
    unsigned char *buf = calloc(8 + n + data + 1, 1);
    uint64_t len = hlen < 0 ? (uint64_t)n : (uint64_t)hlen;
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(len >> (8 * i));
    memcpy(buf + 8, header, n);
    write_bytes(p, buf, 8 + n + data);
    free(buf);
}

/* The header must open and fail with `reason` (and the message names the file). */
static void refuses(const char *header, size_t data, const char *reason) {
    char p[512];
    path_in(p, "bad.safetensors");
    st_file(p, header, -1, data);
    CHECK_FAILS(ml_st_open(p) != NULL, reason);
    CHECK_FAILS(ml_st_open(p) != NULL, p);
}

#define T4(name, b, e) "\"" name "\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[" #b "," #e "]}"

TEST(refuses_corrupt_files) {
    char p[512];
    path_in(p, "bad.safetensors");
    CHECK_FAILS(ml_st_open("/nonexistent/x.safetensors") != NULL, "cannot open /nonexistent/x.safetensors");
    CHECK_FAILS(ml_st_open(dir) != NULL, "is not a regular file");
    write_bytes(p, "abc", 3);
    CHECK_FAILS(ml_st_open(p) != NULL, "too short");
    unsigned char huge[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    write_bytes(p, huge, 8);
    CHECK_FAILS(ml_st_open(p) != NULL, "header length 72057594037927936 is over the 104857600-byte limit");
    unsigned char len20[8] = {20, 0, 0, 0, 0, 0, 0, 0};
    write_bytes(p, len20, 8);
    CHECK_FAILS(ml_st_open(p) != NULL, "truncated (header says 20 bytes of JSON, file has 0 bytes after the length)");
    refuses("{not js}", 0, "expected a string (byte 1 of the header)");
    refuses("[1, 2]", 0, "the header is not a JSON object");
    /* a valid file cut short */
    char good[512];
    path_in(good, "good.safetensors");
    int64_t s[1] = {100};
    ml_tensor *t = ml_zeros(ML_F32, 1, s);
    const char *n[1] = {"t"};
    CHECK(ml_st_save(good, 1, n, &t, 0, NULL, NULL) == 0);
    FILE *f = fopen(good, "rb");
    unsigned char buf[1024];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    write_bytes(p, buf, len - 10);
    CHECK_FAILS(ml_st_open(p) != NULL, "truncated (entry 't' ends at byte 400 of the data, the file has 390)");
    CHECK_FAILS(ml_st_open(p) != NULL, p); /* the message names the file */

    /* sizes, dtypes, shapes */
    refuses("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "8 bytes for 3 elements");
    refuses("{\"t\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "entry 't' has unsupported dtype Q7");
    refuses("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4,
            "entry 't' has a shape whose size overflows");
    refuses("{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
            "entry 't' has more than 6 dimensions");
    refuses("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "a dimension is negative");
    refuses("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0.0,4]}}", 4, "an offset is not an integer");
    refuses("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,18446744073709551616]}}", 4,
            "an offset does not fit in 64 bits");
    refuses("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "entry 't' ends (byte 0) before it begins (byte 4)");
    refuses("{\"t\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "entry 't' lacks data_offsets");
    refuses("{\"t\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "entry 't' has two dtypes");
    refuses("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "data_offsets has more than two numbers");
    /* layout: out of range, overlap, gap, bytes left over, duplicates */
    refuses("{" T4("a", 0, 4) "," T4("b", 4, 8) "}", 6, "truncated (entry 'b' ends at byte 8 of the data, the file has 6)");
    refuses("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}," T4("b", 4, 8) "}", 8,
            "entries 'a' and 'b' overlap");
    refuses("{" T4("a", 0, 4) "," T4("b", 8, 12) "}", 12, "bytes 4..8 of the data belong to no tensor (before 'b')");
    refuses("{" T4("a", 4, 8) "}", 8, "bytes 0..4 of the data belong to no tensor");
    refuses("{" T4("a", 0, 4) "}", 7, "3 bytes after the last tensor belong to no tensor");
    refuses("{" T4("a", 0, 4) "," T4("a", 4, 8) "}", 8, "tensor 'a' appears twice");
    /* the metadata */
    refuses("{\"__metadata__\":{\"k\":\"1\"},\"__metadata__\":{\"k\":\"2\"}," T4("a", 0, 4) "}", 4,
            "__metadata__ appears twice");
    refuses("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "metadata key 'k' appears twice");
    refuses("{\"__metadata__\":{\"k\":1}}", 0, "metadata value 'k' is not a string");
    /* JSON syntax */
    refuses("{" T4("a", 0, 4) "} x", 4, "unexpected text after the header's JSON object");
    refuses("{" T4("a", 0, 4), 4, "the header ends inside the header");
    refuses("{\"a\\u0000b\":{}}", 0, "a string holds a NUL character");
    refuses("{\"a\\ud800\":{}}", 0, "unpaired surrogate");
    refuses("{\"a\\q\":{}}", 0, "invalid escape \\q");
    refuses("{\"a\tb\":{}}", 0, "raw control character");
    refuses("{\"\":{}}", 0, "a tensor has an empty name");
    refuses("{\"t\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":" "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}}", 4,
            "values nested more than 64 deep");
    /* a header length that stops inside the padding: the JSON still parses,
     * but the data starts 2 bytes early, so everything is shifted */
    const char *padded = "{" T4("a", 0, 4) "}  ";
    st_file(p, padded, (long long)strlen(padded) - 2, 4);
    CHECK_FAILS(ml_st_open(p) != NULL, "2 bytes after the last tensor belong to no tensor (wrong header length?)");

    /* saving refuses duplicate names and an unwritable path */
    const char *dup[2] = {"a", "a"};
    ml_tensor *two[2] = {t, t};
    CHECK_FAILS(ml_st_save(good, 2, dup, two, 0, NULL, NULL) == 0, "duplicate tensor name 'a'");
    const char *mk[2] = {"k", "k"}, *mv[2] = {"1", "2"};
    CHECK_FAILS(ml_st_save(good, 1, n, &t, 2, mk, mv) == 0, "duplicate metadata key name 'k'");
    CHECK_FAILS(ml_st_save("/nonexistent/dir/x.safetensors", 1, n, &t, 0, NULL, NULL) == 0,
                "cannot write /nonexistent/dir/x.safetensors");
    ml_release(t);
}

/* What other writers may put in a header and a reader must accept. */
TEST(reads_what_others_write) {
    char p[512];
    path_in(p, "other.safetensors");
    /* unknown fields are skipped, escapes are decoded, whitespace and padding are fine */
    st_file(p, " {\n \"a\\\"b\\u00e9\\ud83d\\ude00\" : {\"dtype\":\"I32\",\"extra\":{\"x\":[1,-2.5e3,{\"y\":null}],\"z\":true},"
               "\"shape\":[],\"data_offsets\":[0,4]}, \"__metadata__\":{\"k\\n\":\"v\\/\"}}   ", -1, 4);
    ml_st_file *f = ml_st_open(p);
    CHECK(f != NULL);
    if (!f) return;
    CHECK(ml_st_count(f) == 1 && strcmp(ml_st_name(f, 0), "a\"b\xc3\xa9\xf0\x9f\x98\x80") == 0);
    CHECK(ml_st_meta_count(f) == 1 && strcmp(ml_st_meta_get(f, "k\n"), "v/") == 0);
    CHECK(strcmp(ml_st_dtype(f, 0), "I32") == 0);
    ml_dtype as;
    CHECK(ml_st_shape(f, 0, &as, NULL) == 0 && as == ML_I64);
    ml_tensor *t = ml_st_get_at(f, 0);
    CHECK(t && t->ndim == 0 && ml_i64(t)[0] == 0);
    ml_release(t);
    ml_st_close(f);
    /* an empty file of tensors */
    st_file(p, "{}", -1, 0);
    f = ml_st_open(p);
    CHECK(f && ml_st_count(f) == 0);
    ml_st_close(f);
}

/* 80,000 tensors: names are found by binary search, not by a scan per lookup. */
TEST(many_tensors) {
    char p[512];
    path_in(p, "many.safetensors");
    enum { N = 80000 };
    char **names = malloc(sizeof *names * N);
    ml_tensor **ts = malloc(sizeof *ts * N);
    int64_t one = 1;
    for (int i = 0; i < N; i++) {
        names[i] = malloc(24);
        snprintf(names[i], 24, "layer.%d.w", i);
        ts[i] = ml_full(ML_F32, 1, &one, (double)i);
    }
    CHECK(ml_st_save(p, N, (const char *const *)names, ts, 0, NULL, NULL) == 0);
    ml_st_file *f = ml_st_open(p);
    CHECK(f && ml_st_count(f) == N);
    int found = 0;
    for (int i = 0; f && i < N; i++) {
        int k = ml_st_find(f, names[i]);
        ml_tensor *t = k >= 0 ? ml_st_get_at(f, k) : NULL;
        found += t && ml_f32(t)[0] == (float)i;
        ml_release(t);
    }
    CHECK(found == N);
    CHECK(f && ml_st_find(f, "layer.80000.w") == -1 && ml_st_find(f, "") == -1);
    ml_st_close(f);
    for (int i = 0; i < N; i++) {
        free(names[i]);
        ml_release(ts[i]);
    }
    free(names);
    free(ts);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/moelab-test-st-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    RUN(round_trip_bit_exact);
    RUN(reads_pytorch_reference_file);
    RUN(refuses_corrupt_files);
    RUN(reads_what_others_write);
    RUN(many_tensors);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary();
}
