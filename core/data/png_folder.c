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

/* Sorted names in dir; when dirs_only, subdirectories, else *.png files. */
static char **list(const char *dir, bool dirs_only, int *n) {
    DIR *dp = opendir(dir);
    *n = 0;
    if (!dp) {
        ml_fail("png_folder: cannot open directory %s: %s", dir, strerror(errno));
        return NULL;
    }
    int cap = 64;
    char **names = malloc(sizeof *names * (size_t)cap);
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (e->d_name[0] == '.') continue;
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        size_t len = strlen(e->d_name);
        bool ok = dirs_only ? S_ISDIR(st.st_mode)
                            : S_ISREG(st.st_mode) && len > 4 && !strcasecmp(e->d_name + len - 4, ".png");
        if (!ok) continue;
        if (*n == cap) {
            cap *= 2;
            names = realloc(names, sizeof *names * (size_t)cap);
        }
        names[(*n)++] = strdup(e->d_name);
    }
    closedir(dp);
    qsort(names, (size_t)*n, sizeof *names, cmp_str);
    return names;
}

static void free_list(char **l, int n) {
    for (int i = 0; i < n; i++) free(l[i]);
    free(l);
}

ml_dataset *ml_data_png_folder(const char *dir) {
    int nc;
    char **classes = list(dir, true, &nc);
    if (!classes) return NULL;
    if (nc == 0) {
        free(classes);
        return ml_fail("png_folder: %s has no class subdirectories (expected root/<class>/*.png)", dir);
    }
    /* pass 1: count files */
    int64_t total = 0;
    int *counts = calloc((size_t)nc, sizeof *counts);
    char ***files = calloc((size_t)nc, sizeof *files);
    for (int k = 0; k < nc; k++) {
        char sub[2048];
        snprintf(sub, sizeof sub, "%s/%s", dir, classes[k]);
        files[k] = list(sub, false, &counts[k]);
        total += counts[k];
    }
    ml_dataset *d = NULL;
    if (total == 0) {
        ml_fail("png_folder: no .png files under %s", dir);
        goto done;
    }
    int64_t i = 0;
    int H = 0, W = 0, C = 0;
    for (int k = 0; k < nc; k++)
        for (int j = 0; j < counts[k]; j++) {
            char path[4096];
            snprintf(path, sizeof path, "%s/%s/%s", dir, classes[k], files[k][j]);
            uint8_t *img;
            int h, w, c;
            if (ml_png_read(path, &img, &h, &w, &c)) {
                ml_dataset_release(d);
                d = NULL;
                goto done;
            }
            if (!d) {
                H = h, W = w, C = c;
                d = ml_dataset_new_images("png_folder", total, C, H, W, nc);
                if (!d) {
                    free(img);
                    goto done;
                }
            } else if (h != H || w != W || c != C) {
                ml_fail("png_folder: %s is %dx%d with %d channel(s), but the first image is %dx%d with %d", path, w, h,
                        c, W, H, C);
                free(img);
                ml_dataset_release(d);
                d = NULL;
                goto done;
            }
            /* HWC -> CHW */
            uint8_t *dst = d->u8 + i * (int64_t)C * H * W;
            for (int ch = 0; ch < C; ch++)
                for (int p = 0; p < H * W; p++) dst[ch * H * W + p] = img[p * C + ch];
            free(img);
            d->labels[i++] = k;
        }
    ml_dataset_set_class_names(d, (const char *const *)classes, nc);
done:
    for (int k = 0; k < nc; k++) free_list(files[k], counts[k]);
    free(files);
    free(counts);
    free_list(classes, nc);
    return d;
}
