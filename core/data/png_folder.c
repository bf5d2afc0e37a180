/* png_folder.c -- a dataset from root/CLASS/NAME.png (classes sorted by name).
 * Files not ending in .png are skipped; every image must have the size and
 * channel count of the first one. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../io/png.h"
#include "dataset.h"

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void free_list(char **l, int n) {
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

/* Sorted names in dir; when dirs_only, subdirectories, else *.png files.
 * NULL + error when dir cannot be read. */
static char **list(const char *dir, bool dirs_only, int *n) {
    DIR *dp = opendir(dir);
    *n = 0;
    if (!dp) return ml_fail("png_folder: cannot open directory %s: %s", dir, strerror(errno));
    int cap = 64;
    char **names = malloc(sizeof *names * (size_t)cap);
    struct dirent *e;
    while (names && (e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        size_t plen = strlen(dir) + strlen(e->d_name) + 2;
        char *path = malloc(plen);
        if (!path) goto oom;
        snprintf(path, plen, "%s/%s", dir, e->d_name);
        struct stat st;
        int ok_stat = stat(path, &st) == 0;
        free(path);
        if (!ok_stat) continue;
        size_t len = strlen(e->d_name);
        bool ok = dirs_only ? S_ISDIR(st.st_mode)
                            : S_ISREG(st.st_mode) && len > 4 && !strcasecmp(e->d_name + len - 4, ".png");
        if (!ok) continue;
        if (*n == INT32_MAX / 2) {
            closedir(dp);
            free_list(names, *n);
            return ml_fail("png_folder: %s has too many entries", dir);
        }
        if (*n == cap) {
            char **more = realloc(names, sizeof *names * (size_t)(cap * 2));
            if (!more) goto oom;
            names = more;
            cap *= 2;
        }
        if (!(names[*n] = strdup(e->d_name))) goto oom;
        (*n)++;
    }
    closedir(dp);
    if (!names) return ml_fail("png_folder: out of memory listing %s", dir);
    qsort(names, (size_t)*n, sizeof *names, cmp_str);
    return names;
oom:
    closedir(dp);
    free_list(names, *n);
    return ml_fail("png_folder: out of memory listing %s", dir);
}

ml_dataset *ml_data_png_folder(const char *dir) {
    int nc;
    char **classes = list(dir, true, &nc);
    if (!classes) return NULL;
    if (nc == 0) {
        free(classes);
        return ml_fail("png_folder: %s has no class subdirectories (expected root/<class>/*.png)", dir);
    }
    int64_t total = 0;
    int *counts = calloc((size_t)nc, sizeof *counts);
    char ***files = calloc((size_t)nc, sizeof *files);
    ml_dataset *d = NULL;
    uint8_t *img = NULL;
    if (!counts || !files) {
        ml_fail("png_folder: out of memory");
        goto fail;
    }
    /* pass 1: the files of every class */
    for (int k = 0; k < nc; k++) {
        size_t n = strlen(dir) + strlen(classes[k]) + 2;
        char *sub = malloc(n);
        if (!sub) {
            ml_fail("png_folder: out of memory");
            goto fail;
        }
        snprintf(sub, n, "%s/%s", dir, classes[k]);
        files[k] = list(sub, false, &counts[k]);
        free(sub);
        if (!files[k]) goto fail;
        total += counts[k];
    }
    if (total == 0) {
        ml_fail("png_folder: no .png files under %s", dir);
        goto fail;
    }
    /* pass 2: the images, all of the first one's size */
    int64_t i = 0;
    int H = 0, W = 0, C = 0;
    for (int k = 0; k < nc; k++)
        for (int j = 0; j < counts[k]; j++) {
            if (ml_interrupted()) goto fail;
            size_t n = strlen(dir) + strlen(classes[k]) + strlen(files[k][j]) + 3;
            char *path = malloc(n);
            if (!path) {
                ml_fail("png_folder: out of memory");
                goto fail;
            }
            snprintf(path, n, "%s/%s/%s", dir, classes[k], files[k][j]);
            int h, w, c;
            int bad = ml_png_read(path, &img, &h, &w, &c);
            if (!bad && !d) {
                H = h, W = w, C = c;
                d = ml_dataset_new_images("png_folder", total, C, H, W, nc);
                bad = d == NULL;
            } else if (!bad && (h != H || w != W || c != C)) {
                ml_fail("png_folder: %s is %dx%d with %d channel(s), but the first image is %dx%d with %d", path, w, h,
                        c, W, H, C);
                bad = 1;
            }
            free(path);
            if (bad) goto fail;
            /* HWC -> CHW */
            uint8_t *dst = d->u8 + i * (int64_t)C * H * W;
            for (int ch = 0; ch < C; ch++)
                for (int p = 0; p < H * W; p++) dst[ch * H * W + p] = img[p * C + ch];
            free(img);
            img = NULL;
            d->labels[i++] = k;
        }
    if (ml_dataset_set_class_names(d, (const char *const *)classes, nc)) goto fail;
    goto done;
fail:
    ml_dataset_release(d);
    d = NULL;
done:
    free(img);
    for (int k = 0; files && k < nc; k++)
        if (files[k]) free_list(files[k], counts[k]);
    free(files);
    free(counts);
    free_list(classes, nc);
    return d;
}
