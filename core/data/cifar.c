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

/* Class names from batches.meta.txt (one per line) when present. */
static void read_meta(const char *dir, ml_dataset *d) {
    char path[1024], line[256];
    snprintf(path, sizeof path, "%s/batches.meta.txt", dir);
    FILE *f = fopen(path, "r");
    char *names[10];
    int n = 0;
    if (f) {
        while (n < 10 && fgets(line, sizeof line, f)) {
            line[strcspn(line, "\r\n")] = 0;
            if (!line[0]) continue;
            names[n++] = strdup(line);
        }
        fclose(f);
    }
    if (n == 10) ml_dataset_set_class_names(d, (const char *const *)names, 10);
    else ml_dataset_set_class_names(d, cifar_names, 10);
    for (int i = 0; i < n; i++) free(names[i]);
}

/* Reads the given files (full paths) into one dataset. */
static ml_dataset *read_files(const char *dir, char **files, int nf, const char *name) {
    int64_t total = 0;
    for (int i = 0; i < nf; i++) {
        struct stat st;
        if (stat(files[i], &st) != 0) return ml_fail("cifar10: cannot open %s: %s", files[i], strerror(errno));
        if (st.st_size % REC != 0)
            return ml_fail("cifar10: %s: size %lld is not a multiple of the 3073-byte record (truncated or not a "
                           "CIFAR-10 binary batch)", files[i], (long long)st.st_size);
        total += st.st_size / REC;
    }
    ml_dataset *d = ml_dataset_new_images(name, total, 3, 32, 32, 10);
    if (!d) return NULL;
    unsigned char *rec = malloc(REC);
    int64_t k = 0;
    for (int i = 0; i < nf; i++) {
        FILE *f = fopen(files[i], "rb");
        if (!f) {
            ml_fail("cifar10: cannot open %s: %s", files[i], strerror(errno));
            goto fail;
        }
        while (fread(rec, 1, REC, f) == REC) {
            if (rec[0] > 9) {
                ml_fail("cifar10: %s: record %" PRId64 " has label %u (expected 0..9)", files[i], k + 1, rec[0]);
                fclose(f);
                goto fail;
            }
            d->labels[k] = rec[0];
            memcpy(d->u8 + k * 3072, rec + 1, 3072);
            k++;
        }
        fclose(f);
    }
    free(rec);
    read_meta(dir, d);
    return d;
fail:
    free(rec);
    ml_dataset_release(d);
    return NULL;
}

int ml_data_cifar10(const char *dir, ml_dataset **train, ml_dataset **test) {
    *train = *test = NULL;
    DIR *dp = opendir(dir);
    if (!dp) return ml_failc("cifar10: cannot open directory %s: %s", dir, strerror(errno));
    char *files[256];
    int nf = 0;
    struct dirent *e;
    while ((e = readdir(dp)) && nf < 256) {
        size_t len = strlen(e->d_name);
        if (!strncmp(e->d_name, "data_batch_", 11) && len > 4 && !strcmp(e->d_name + len - 4, ".bin")) {
            char path[1024];
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            files[nf++] = strdup(path);
        }
    }
    closedir(dp);
    char tpath[1024];
    snprintf(tpath, sizeof tpath, "%s/test_batch.bin", dir);
    if (nf == 0) return ml_failc("cifar10: no data_batch_*.bin files in %s", dir);
    qsort(files, (size_t)nf, sizeof *files, cmp_str);
    *train = read_files(dir, files, nf, "cifar10-train");
    for (int i = 0; i < nf; i++) free(files[i]);
    if (!*train) return -1;
    char *tf[1] = {tpath};
    *test = read_files(dir, tf, 1, "cifar10-test");
    if (!*test) {
        ml_dataset_release(*train);
        *train = NULL;
        return -1;
    }
    return 0;
}
