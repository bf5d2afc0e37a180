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
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", p, (long)getpid());
    CHECK(access(tmp, F_OK) != 0);
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

TEST(refuses_corrupt_files) {
    char p[512];
    path_in(p, "bad.safetensors");
    CHECK_FAILS(ml_st_open("/nonexistent/x.safetensors") != NULL, "cannot open /nonexistent/x.safetensors");
    write_bytes(p, "abc", 3);
    CHECK_FAILS(ml_st_open(p) != NULL, "too short");
    unsigned char huge[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    write_bytes(p, huge, 8);
    CHECK_FAILS(ml_st_open(p) != NULL, "implausible");
    unsigned char len20[8] = {20, 0, 0, 0, 0, 0, 0, 0};
    write_bytes(p, len20, 8);
    CHECK_FAILS(ml_st_open(p) != NULL, "truncated");
    const char *notjson = "\x08\0\0\0\0\0\0\0{not js}";
    write_bytes(p, notjson, 16);
    CHECK_FAILS(ml_st_open(p) != NULL, "not a JSON object");
    /* a valid file cut short */
    char good[512];
    path_in(good, "good.safetensors");
    int64_t s[1] = {100};
    ml_tensor *t = ml_zeros(ML_F32, 1, s);
    const char *n[1] = {"t"};
    ml_st_save(good, 1, n, &t, 0, NULL, NULL);
    FILE *f = fopen(good, "rb");
    unsigned char buf[1024];
    size_t len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    write_bytes(p, buf, len - 10);
    CHECK_FAILS(ml_st_open(p) != NULL, "truncated");
    CHECK_FAILS(ml_st_open(p) != NULL, p); /* the message names the file */
    /* wrong byte count for the shape */
    const char *hdr = "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}";
    size_t hl = strlen(hdr);
    unsigned char b2[256] = {0};
    b2[0] = (unsigned char)hl;
    memcpy(b2 + 8, hdr, hl);
    write_bytes(p, b2, 8 + hl + 8);
    CHECK_FAILS(ml_st_open(p) != NULL, "8 bytes for 3 elements");
    const char *hdr2 = "{\"t\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    hl = strlen(hdr2);
    memset(b2, 0, sizeof b2);
    b2[0] = (unsigned char)hl;
    memcpy(b2 + 8, hdr2, hl);
    write_bytes(p, b2, 8 + hl + 4);
    CHECK_FAILS(ml_st_open(p) != NULL, "unsupported dtype Q7");
    /* saving refuses duplicate names and an unwritable path */
    const char *dup[2] = {"a", "a"};
    ml_tensor *two[2] = {t, t};
    CHECK_FAILS(ml_st_save(good, 2, dup, two, 0, NULL, NULL) == 0, "duplicate tensor name 'a'");
    CHECK_FAILS(ml_st_save("/nonexistent/dir/x.safetensors", 1, n, &t, 0, NULL, NULL) == 0, "cannot write");
    ml_release(t);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/moelab-test-st-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    RUN(round_trip_bit_exact);
    RUN(reads_pytorch_reference_file);
    RUN(refuses_corrupt_files);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary();
}
