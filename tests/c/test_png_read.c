/* The PNG reader on files built chunk by chunk: good images load pixel for
 * pixel; changed pixels under a stale zlib checksum, too little or too much
 * image data, and sizes the file cannot hold are refused with the reason. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "testlib.h"

static char dir[256];

typedef struct {
    unsigned char *p;
    size_t n;
} bytes;

static void put(bytes *b, const void *src, size_t n) {
    b->p = realloc(b->p, b->n + n);
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void put32(bytes *b, uint32_t v) {
    unsigned char x[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16), (unsigned char)(v >> 8), (unsigned char)v};
    put(b, x, 4);
}

static void chunk(bytes *b, const char *type, const void *data, size_t n) {
    put32(b, (uint32_t)n);
    put(b, type, 4);
    if (n) put(b, data, n);
    uLong crc = crc32(0, (const Bytef *)type, 4);
    if (n) crc = crc32(crc, data, (uInt)n);
    put32(b, (uint32_t)crc);
}

/* A PNG of w x h, 8-bit, color type ct (0 gray, 2 RGB), with the given IDAT
 * payloads (already compressed). */
static void png_file(const char *path, uint32_t w, uint32_t h, int ct, int depth, const bytes *idat, int n_idat) {
    bytes b = {0};
    put(&b, "\x89PNG\r\n\x1a\n", 8);
    unsigned char ihdr[13] = {0};
    for (int i = 0; i < 4; i++) ihdr[i] = (unsigned char)(w >> (24 - 8 * i)), ihdr[4 + i] = (unsigned char)(h >> (24 - 8 * i));
    ihdr[8] = (unsigned char)depth;
    ihdr[9] = (unsigned char)ct;
    chunk(&b, "IHDR", ihdr, 13);
    for (int i = 0; i < n_idat; i++) chunk(&b, "IDAT", idat[i].p, idat[i].n);
    chunk(&b, "IEND", NULL, 0);
    FILE *f = fopen(path, "wb");
    fwrite(b.p, 1, b.n, f);
    fclose(f);
    free(b.p);
}

static bytes deflate_bytes(const unsigned char *raw, size_t n) {
    bytes z = {malloc(compressBound(n)), compressBound(n)};
    uLongf len = z.n;
    compress2(z.p, &len, raw, n, 9);
    z.n = len;
    return z;
}

/* Raw scanlines of a w x h RGB gradient: a filter byte (0) and the pixels per row. */
static unsigned char *scanlines(uint32_t w, uint32_t h, size_t *n) {
    *n = (size_t)h * (1 + 3 * (size_t)w);
    unsigned char *raw = calloc(*n, 1);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < 3 * w; x++) raw[y * (1 + 3 * w) + 1 + x] = (unsigned char)(7 * y + x);
    return raw;
}

TEST(good_image_loads) {
    char p[512];
    snprintf(p, sizeof p, "%s/good.png", dir);
    size_t n;
    unsigned char *raw = scanlines(5, 4, &n);
    bytes z = deflate_bytes(raw, n);
    /* the stream split over three IDAT chunks, as encoders do */
    bytes parts[3] = {{z.p, 3}, {z.p + 3, z.n - 7}, {z.p + z.n - 4, 4}};
    png_file(p, 5, 4, 2, 8, parts, 3);
    uint8_t *img;
    int h, w, c;
    CHECK(ml_png_read(p, &img, &h, &w, &c) == 0);
    if (img) {
        CHECK(h == 4 && w == 5 && c == 3);
        int same = 0;
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 15; x++) same += img[y * 15 + x] == (unsigned char)(7 * y + x);
        CHECK(same == 60);
        free(img);
    }
    free(z.p);
    free(raw);
}

TEST(refuses_bad_image_data) {
    char p[512];
    snprintf(p, sizeof p, "%s/bad.png", dir);
    size_t n;
    unsigned char *raw = scanlines(5, 4, &n);
    bytes good = deflate_bytes(raw, n);
    raw[20] ^= 0x55; /* one changed pixel ... */
    bytes changed = deflate_bytes(raw, n);
    memcpy(changed.p + changed.n - 4, good.p + good.n - 4, 4); /* ... under the old checksum */
    uint8_t *img = NULL;
    int h, w, c;
    png_file(p, 5, 4, 2, 8, &changed, 1);
    CHECK_FAILS(ml_png_read(p, &img, &h, &w, &c) == 0, "bad.png: corrupt or truncated file (IDAT: incorrect data check)");
    /* the same with the checksum in an IDAT chunk of its own, read only after the last row */
    bytes split[2] = {{changed.p, changed.n - 4}, {changed.p + changed.n - 4, 4}};
    png_file(p, 5, 4, 2, 8, split, 2);
    CHECK_FAILS(ml_png_read(p, &img, &h, &w, &c) == 0, "incorrect data check");
    /* too little and too much image data */
    bytes half = deflate_bytes(raw, n / 2), more;
    png_file(p, 5, 4, 2, 8, &half, 1);
    CHECK_FAILS(ml_png_read(p, &img, &h, &w, &c) == 0, "bad.png: corrupt or truncated file (Not enough image data)");
    unsigned char *longer = calloc(n + 64, 1);
    memcpy(longer, raw, n);
    more = deflate_bytes(longer, n + 64);
    png_file(p, 5, 4, 2, 8, &more, 1);
    CHECK_FAILS(ml_png_read(p, &img, &h, &w, &c) == 0, "Too much image data");
    /* sizes: a header claiming more than the file can hold, more than supported, 16 bits */
    png_file(p, 8000, 8000, 0, 8, &good, 1);
    CHECK_FAILS(ml_png_read(p, &img, &h, &w, &c) == 0, "a 8000x8000 image cannot come from a");
    png_file(p, 20000, 4, 0, 8, &good, 1); /* libpng stops it at the header (user limits) */
    CHECK_FAILS(ml_png_read(p, &img, &h, &w, &c) == 0, "corrupt or truncated file (Invalid IHDR data)");
    png_file(p, 5, 4, 2, 16, &good, 1);
    CHECK_FAILS(ml_png_read(p, &img, &h, &w, &c) == 0, "16-bit images are not supported");
    CHECK_FAILS(ml_png_read(dir, &img, &h, &w, &c) == 0, "is not a regular file");
    CHECK(img == NULL);
    free(good.p);
    free(changed.p);
    free(half.p);
    free(more.p);
    free(longer);
    free(raw);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/moelab-test-png-XXXXXX");
    if (!mkdtemp(dir)) return 1;
    RUN(good_image_loads);
    RUN(refuses_bad_image_data);
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return test_summary();
}
