/* idx.c -- MNIST in the IDX format, plain or gzip-compressed (zlib reads both).
 *
 * Sizes in a header are checked against the file before anything is
 * allocated for them (a plain file must have exactly those bytes; a gzip file
 * cannot inflate to more than 1032 times its size), a file must end where its
 * header says, and reading a gzip file to its end makes zlib check the CRC
 * and length in its trailer. */
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

typedef struct {
    gzFile gz;
    const char *path;
    uint64_t size; /* bytes on disk */
} idx_file;

static int idx_open(idx_file *f, const char *path) {
    f->path = path;
    f->gz = NULL;
    struct stat st;
    if (stat(path, &st) != 0) return ml_failc("mnist: cannot open %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return ml_failc("mnist: %s is not a regular file", path);
    f->size = (uint64_t)st.st_size;
    f->gz = gzopen(path, "rb");
    if (!f->gz) return ml_failc("mnist: cannot open %s: %s", path, strerror(errno ? errno : ENOMEM));
    return 0;
}

static int read_error(const idx_file *f) {
    int err;
    const char *msg = gzerror(f->gz, &err);
    size_t pl = strlen(f->path);
    if (msg && !strncmp(msg, f->path, pl) && !strncmp(msg + pl, ": ", 2)) msg += pl + 2; /* zlib prefixes the path */
    return ml_failc("mnist: %s: corrupt file (%s)", f->path, msg && msg[0] ? msg : "read error");
}

/* Reads exactly n bytes; fails naming the file on truncation or a zlib error. */
static int read_exact(const idx_file *f, void *buf, uint64_t n, const char *what) {
    uint64_t got = 0;
    while (got < n) {
        if (ml_interrupted()) return -1;
        unsigned chunk = n - got > (1u << 30) ? (1u << 30) : (unsigned)(n - got);
        int r = gzread(f->gz, (char *)buf + got, chunk);
        if (r < 0) return read_error(f);
        if (r == 0) break;
        got += (uint64_t)r;
    }
    if (got < n)
        return ml_failc("mnist: %s: truncated (expected %" PRIu64 " bytes of %s, got %" PRIu64 ")", f->path, n, what, got);
    return 0;
}

/* The data must end here: reading on to the end of a gzip stream is also what
 * makes zlib check its CRC-32 and length (a changed byte fails here). */
static int read_end(const idx_file *f) {
    char extra;
    int r = gzread(f->gz, &extra, 1);
    if (r < 0) return read_error(f);
    if (r > 0) return ml_failc("mnist: %s: the file goes on after the data its header describes", f->path);
    return 0;
}

/* The payload a header announces must fit the file: exactly, for a plain file;
 * within deflate's largest ratio (1032:1), for a gzip one. */
static int check_payload(const idx_file *f, uint64_t header, uint64_t payload, const char *what) {
    bool gz = !gzdirect(f->gz);
    if (!gz && f->size != header + payload)
        return ml_failc("mnist: %s: %s take %" PRIu64 " bytes but the file has %" PRIu64 " after its header%s", f->path,
                        what, payload, f->size - header, f->size < header + payload ? " (truncated)" : "");
    if (gz && payload > 1032 * f->size + 65536)
        return ml_failc("mnist: %s: %s take %" PRIu64 " bytes, more than a %" PRIu64 "-byte gzip file can hold "
                        "(truncated or corrupt)", f->path, what, payload, f->size);
    return 0;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static ml_dataset *read_split(const char *dir, const char *prefix, const char *name, char *ipath, size_t ipath_n) {
    char lpath[1024], ibase[64], lbase[64];
    snprintf(ibase, sizeof ibase, "%s-images-idx3-ubyte", prefix);
    snprintf(lbase, sizeof lbase, "%s-labels-idx1-ubyte", prefix);
    if (find_file(dir, ibase, ipath, ipath_n) || find_file(dir, lbase, lpath, sizeof lpath)) return NULL;
    idx_file fi = {0}, fl = {0};
    ml_dataset *d = NULL;
    unsigned char *lab = NULL;
    if (idx_open(&fi, ipath) || idx_open(&fl, lpath)) goto fail;
    unsigned char h[16], lh[8];
    if (read_exact(&fi, h, 16, "header")) goto fail;
    uint32_t magic = be32(h), n = be32(h + 4), rows = be32(h + 8), cols = be32(h + 12);
    if (magic != 0x00000803) {
        ml_fail("mnist: %s: bad magic 0x%08x, expected 0x00000803 (images)", ipath, magic);
        goto fail;
    }
    if (rows == 0 || cols == 0 || rows > 4096 || cols > 4096 || n > 100000000) {
        ml_fail("mnist: %s: implausible dimensions %u x %u x %u", ipath, n, rows, cols);
        goto fail;
    }
    uint64_t bytes = (uint64_t)n * rows * cols;
    if (check_payload(&fi, 16, bytes, "the images")) goto fail;
    if (read_exact(&fl, lh, 8, "header")) goto fail;
    uint32_t lmagic = be32(lh), ln = be32(lh + 4);
    if (lmagic != 0x00000801) {
        ml_fail("mnist: %s: bad magic 0x%08x, expected 0x00000801 (labels)", lpath, lmagic);
        goto fail;
    }
    if (ln != n) {
        ml_fail("mnist: %s has %u labels but %s has %u images", lpath, ln, ipath, n);
        goto fail;
    }
    if (check_payload(&fl, 8, n, "the labels")) goto fail;
    d = ml_dataset_new_images(name, n, 1, (int)rows, (int)cols, 10);
    lab = malloc(n ? n : 1);
    if (!d || !lab) {
        if (d) ml_fail("mnist: out of memory for %u labels", n);
        goto fail;
    }
    if (read_exact(&fi, d->u8, bytes, "pixels") || read_end(&fi) || read_exact(&fl, lab, n, "labels") || read_end(&fl))
        goto fail;
    for (uint32_t i = 0; i < n; i++) {
        if (lab[i] > 9) {
            ml_fail("mnist: %s: label %u of example %u is not a digit 0..9", lpath, lab[i], i + 1);
            goto fail;
        }
        d->labels[i] = lab[i];
    }
    static const char *const digits[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    if (ml_dataset_set_class_names(d, digits, 10)) goto fail;
    free(lab);
    gzclose(fi.gz);
    gzclose(fl.gz);
    return d;
fail:
    free(lab);
    ml_dataset_release(d);
    if (fi.gz) gzclose(fi.gz);
    if (fl.gz) gzclose(fl.gz);
    return NULL;
}

int ml_data_mnist(const char *dir, ml_dataset **train, ml_dataset **test) {
    char trpath[1024], tepath[1024];
    *test = NULL;
    *train = read_split(dir, "train", "mnist-train", trpath, sizeof trpath);
    if (!*train) return -1;
    *test = read_split(dir, "t10k", "mnist-test", tepath, sizeof tepath);
    if (*test && ((*test)->h != (*train)->h || (*test)->w != (*train)->w)) {
        ml_fail("mnist: the training images (%s) are %dx%d but the test images (%s) are %dx%d", trpath, (*train)->h,
                (*train)->w, tepath, (*test)->h, (*test)->w);
        ml_dataset_release(*test);
        *test = NULL;
    }
    if (!*test) {
        ml_dataset_release(*train);
        *train = NULL;
        return -1;
    }
    return 0;
}
