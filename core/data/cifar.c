/* cifar.c -- CIFAR-10 binary batches: records of 1 label byte + 3072 pixel
 * bytes (R, G, B planes of 32x32). Any number of data_batch_*.bin files. */
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "dataset.h"

#define REC 3073

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static const char *const cifar_names[10] = {"airplane", "automobile", "bird", "cat", "deer",
                                            "dog", "frog", "horse", "ship", "truck"};

/* Class names from batches.meta.txt (one per line) when it has ten, else the
 * standard ones. */
static int read_meta(const char *dir, ml_dataset *d) {
    char path[1024], line[256];
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    FILE *f = fopen(path, "r");
    char *names[10];
    int n = 0;
    if (f) {
        while (n < 10 && fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = 0;
            if (!line[0]) continue;
            if (!(names[n] = strdup(line))) break;
            n++;
        }
        fclose(f);
    }
    int rc = ml_dataset_set_class_names(d, n == 10 ? (const char *const *)names : cifar_names, 10);
    for (int i = 0; i < n; i++) free(names[i]);
    return rc;
}

/* Reads the given files (full paths) into one dataset. Sizes are checked
 * before allocating; every record's label is checked. */
static ml_dataset *read_files(const char *dir, char **files, int nf, const char *name) {
    int64_t total = 0, *records = calloc((size_t)nf, sizeof *records);
    if (!records) return ml_fail("cifar10: out of memory");
    for (int i = 0; i < nf; i++) {
        struct stat st;
        if (stat(files[i], &st) != 0) {
            free(records);
            return ml_fail("cifar10: cannot open %s: %s", files[i], strerror(errno));
        }
        if (!S_ISREG(st.st_mode) || st.st_size == 0 || st.st_size % REC != 0) {
            free(records);
            if (!S_ISREG(st.st_mode)) return ml_fail("cifar10: %s is not a regular file", files[i]);
            return ml_fail("cifar10: %s: size %lld is not a positive multiple of the 3073-byte record (truncated or "
                           "not a CIFAR-10 binary batch)", files[i], (long long)st.st_size);
        }
        records[i] = st.st_size / REC;
        total += records[i];
    }
    ml_dataset *d = ml_dataset_new_images(name, total, 3, 32, 32, 10);
    unsigned char *rec = malloc(REC);
    if (!d || !rec) {
        if (d) ml_fail("cifar10: out of memory");
        goto fail;
    }
    int64_t k = 0;
    for (int i = 0; i < nf; i++) {
        FILE *f = fopen(files[i], "rb");
        if (!f) {
            ml_fail("cifar10: cannot open %s: %s", files[i], strerror(errno));
            goto fail;
        }
        for (int64_t r = 0; r < records[i]; r++, k++) {
            if (r % 1024 == 0 && ml_interrupted()) {
                fclose(f);
                goto fail;
            }
            if (fread(rec, 1, REC, f) != REC) {
                ml_fail("cifar10: %s: cannot read record %" PRId64 " (the file changed while reading?)", files[i], r + 1);
                fclose(f);
                goto fail;
            }
            if (rec[0] > 9) {
                ml_fail("cifar10: %s: record %" PRId64 " has label %u (expected 0..9)", files[i], r + 1, rec[0]);
                fclose(f);
                goto fail;
            }
            d->labels[k] = rec[0];
            memcpy(d->u8 + k * 3072, rec + 1, 3072);
        }
        fclose(f);
    }
    if (read_meta(dir, d)) goto fail;
    free(rec);
    free(records);
    return d;
fail:
    free(rec);
    free(records);
    ml_dataset_release(d);
    return NULL;
}

#define MAX_BATCHES 256

int ml_data_cifar10(const char *dir, ml_dataset **train, ml_dataset **test) {
    *train = *test = NULL;
    DIR *dp = opendir(dir);
    if (!dp) return ml_failc("cifar10: cannot open directory %s: %s", dir, strerror(errno));
    char *files[MAX_BATCHES];
    int nf = 0, rc = 0;
    struct dirent *e;
    while ((e = readdir(dp))) {
        size_t len = strlen(e->d_name);
        if (strncmp(e->d_name, "data_batch_", 11) || len <= 4 || strcmp(e->d_name + len - 4, ".bin")) continue;
        if (nf == MAX_BATCHES) {
            rc = ml_failc("cifar10: %s has more than %d data_batch_*.bin files", dir, MAX_BATCHES);
            break;
        }
        size_t n = strlen(dir) + len + 2;
        if (!(files[nf] = malloc(n))) {
            rc = ml_failc("cifar10: out of memory");
            break;
        }
        snprintf(files[nf++], n, "%s/%s", dir, e->d_name);
    }
    closedir(dp);
    if (!rc && nf == 0) rc = ml_failc("cifar10: no data_batch_*.bin files in %s", dir);
    if (!rc) {
        qsort(files, (size_t)nf, sizeof *files, cmp_str);
        *train = read_files(dir, files, nf, "cifar10-train");
        if (!*train) rc = -1;
    }
    for (int i = 0; i < nf; i++) free(files[i]);
    if (rc) return -1;
    char tpath[1024];
    snprintf(tpath, sizeof tpath, "%s/test_batch.bin", dir);
    char *tf[1] = {tpath};
    *test = read_files(dir, tf, 1, "cifar10-test");
    if (!*test) {
        ml_dataset_release(*train);
        *train = NULL;
        return -1;
    }
    return 0;
}
