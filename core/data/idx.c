/* idx.c -- MNIST in the IDX format, plain or gzip-compressed (zlib reads both). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "dataset.h"

/* Finds <dir>/<base> or <dir>/<base>.gz; path receives the one that exists. */
static int find_file(const char *dir, const char *base, char *path, size_t n) {
    struct stat st;
    snprintf(path, n, "%s/%s", dir, base);
    if (stat(path, &st) == 0) return 0;
    snprintf(path, n, "%s/%s.gz", dir, base);
    if (stat(path, &st) == 0) return 0;
    return ml_failc("mnist: cannot find %s/%s or %s/%s.gz", dir, base, dir, base);
}

/* Reads exactly n bytes; fails naming the file on truncation. */
static int read_exact(gzFile f, const char *path, void *buf, size_t n, const char *what) {
    size_t got = 0;
    while (got < n) {
        unsigned chunk = n - got > (1u << 30) ? (1u << 30) : (unsigned)(n - got);
        int r = gzread(f, (char *)buf + got, chunk);
        if (r < 0) {
            int err;
            const char *msg = gzerror(f, &err);
            return ml_failc("mnist: %s: corrupt file (%s)", path, msg);
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    if (got < n)
        return ml_failc("mnist: %s: truncated (expected %zu bytes of %s, got %zu)", path, n, what, got);
    return 0;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static ml_dataset *read_split(const char *dir, const char *prefix, const char *name) {
    char ipath[1024], lpath[1024], ibase[64], lbase[64];
    snprintf(ibase, sizeof ibase, "%s-images-idx3-ubyte", prefix);
    snprintf(lbase, sizeof lbase, "%s-labels-idx1-ubyte", prefix);
    if (find_file(dir, ibase, ipath, sizeof ipath) || find_file(dir, lbase, lpath, sizeof lpath)) return NULL;
    gzFile fi = gzopen(ipath, "rb"), fl = fi ? gzopen(lpath, "rb") : NULL;
    ml_dataset *d = NULL;
    if (!fi || !fl) {
        ml_fail("mnist: cannot open %s: %s", fi ? lpath : ipath, strerror(errno));
        goto done;
    }
    unsigned char h[16];
    if (read_exact(fi, ipath, h, 16, "header")) goto done;
    uint32_t magic = be32(h), n = be32(h + 4), rows = be32(h + 8), cols = be32(h + 12);
    if (magic != 0x00000803) {
        ml_fail("mnist: %s: bad magic 0x%08x, expected 0x00000803 (images)", ipath, magic);
        goto done;
    }
    if (rows == 0 || cols == 0 || rows > 4096 || cols > 4096 || n > 100000000) {
        ml_fail("mnist: %s: implausible dimensions %u x %u x %u", ipath, n, rows, cols);
        goto done;
    }
    unsigned char lh[8];
    if (read_exact(fl, lpath, lh, 8, "header")) goto done;
    uint32_t lmagic = be32(lh), ln = be32(lh + 4);
    if (lmagic != 0x00000801) {
        ml_fail("mnist: %s: bad magic 0x%08x, expected 0x00000801 (labels)", lpath, lmagic);
        goto done;
    }
    if (ln != n) {
        ml_fail("mnist: %s has %u labels but %s has %u images", lpath, ln, ipath, n);
        goto done;
    }
    d = ml_dataset_new_images(name, n, 1, (int)rows, (int)cols, 10);
    if (!d) goto done;
    size_t bytes = (size_t)n * rows * cols;
    unsigned char *lab = malloc(n ? n : 1);
    if (!lab || read_exact(fi, ipath, d->u8, bytes, "pixels") || read_exact(fl, lpath, lab, n, "labels")) {
        free(lab);
        ml_dataset_release(d);
        d = NULL;
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        if (lab[i] > 9) {
            ml_fail("mnist: %s: label %u of example %u is not a digit 0..9", lpath, lab[i], i + 1);
            free(lab);
            ml_dataset_release(d);
            d = NULL;
            goto done;
        }
        d->labels[i] = lab[i];
    }
    free(lab);
    static const char *const digits[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    ml_dataset_set_class_names(d, digits, 10);
done:
    if (fi) gzclose(fi);
    if (fl) gzclose(fl);
    return d;
}

int ml_data_mnist(const char *dir, ml_dataset **train, ml_dataset **test) {
    *train = read_split(dir, "train", "mnist-train");
    if (!*train) return -1;
    *test = read_split(dir, "t10k", "mnist-test");
    if (!*test) {
        ml_dataset_release(*train);
        *train = NULL;
        return -1;
    }
    return 0;
}
