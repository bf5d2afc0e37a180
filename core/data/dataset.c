/* dataset.c -- dataset objects, subsets, batches with augmentation. */
#include "dataset.h"
#include "../rng.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ml_dataset *ml_dataset_retain(ml_dataset *d) {
    if (d) d->refcount++;
    return d;
}

void ml_dataset_release(ml_dataset *d) {
    if (!d || --d->refcount > 0) return;
    free(d->u8);
    free(d->f32);
    free(d->labels);
    if (d->class_names)
        for (int i = 0; i < d->num_classes; i++) free(d->class_names[i]);
    free(d->class_names);
    free(d);
}

static ml_dataset *alloc_dataset(const char *name, int64_t n, int c, int h, int w, int classes, bool features) {
    if (n < 0 || c < 1 || h < 1 || w < 1 || classes < 1)
        return ml_fail("%s: invalid dataset shape (%" PRId64 " examples of %dx%dx%d, %d classes)", name, n, c, h, w, classes);
    /* sizes from files and options: every product checked */
    size_t per, values, bytes, label_bytes, elem = features ? sizeof(float) : 1;
    if (__builtin_mul_overflow((size_t)c, (size_t)h, &per) || __builtin_mul_overflow(per, (size_t)w, &per) ||
        __builtin_mul_overflow(per, (size_t)(n ? n : 1), &values) || __builtin_mul_overflow(values, elem, &bytes) ||
        __builtin_mul_overflow((size_t)(n ? n : 1), sizeof(int64_t), &label_bytes) || bytes > (size_t)INT64_MAX)
    {
        if (features && h == 1 && w == 1)
            return ml_fail("%s: %" PRId64 " examples of %d features are too many to hold in memory", name, n, c);
        return ml_fail("%s: %" PRId64 " images of %dx%dx%d are too many to hold in memory", name, n, c, h, w);
    }
    ml_dataset *d = calloc(1, sizeof *d);
    if (!d) return ml_fail("%s: out of memory", name);
    d->refcount = 1;
    snprintf(d->name, sizeof d->name, "%s", name);
    d->n = n;
    d->c = c;
    d->h = h;
    d->w = w;
    d->features = features;
    d->num_classes = classes;
    if (features) d->f32 = malloc(bytes);
    else d->u8 = malloc(bytes);
    d->labels = malloc(label_bytes);
    if ((features ? (void *)d->f32 : (void *)d->u8) == NULL || !d->labels) {
        ml_dataset_release(d);
        return ml_fail("%s: out of memory for %" PRId64 " examples (%zu bytes)", name, n, bytes + label_bytes);
    }
    return d;
}

ml_dataset *ml_dataset_new_images(const char *name, int64_t n, int c, int h, int w, int classes) {
    return alloc_dataset(name, n, c, h, w, classes, false);
}

int ml_dataset_set_class_names(ml_dataset *d, const char *const *names, int n) {
    if (n != d->num_classes) return ml_failc("%s: %d class names for %d classes", d->name, n, d->num_classes);
    char **copy = calloc((size_t)n, sizeof *copy);
    if (!copy) return ml_failc("%s: out of memory", d->name);
    for (int i = 0; i < n; i++)
        if (!(copy[i] = strdup(names[i]))) {
            for (int k = 0; k < i; k++) free(copy[k]);
            free(copy);
            return ml_failc("%s: out of memory", d->name);
        }
    if (d->class_names)
        for (int i = 0; i < d->num_classes; i++) free(d->class_names[i]);
    free(d->class_names);
    d->class_names = copy;
    return 0;
}

ml_dataset *ml_dataset_subset(const ml_dataset *d, const int64_t *idx, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= d->n)
            return ml_fail("subset: index %" PRId64 " is out of range for %s of %" PRId64 " examples (indices are 1-based)",
                           idx[i] + 1, d->name, d->n);
    ml_dataset *s = alloc_dataset(d->name, n, d->c, d->h, d->w, d->num_classes, d->features);
    if (!s) return NULL;
    size_t per = (size_t)d->c * (size_t)d->h * (size_t)d->w;
    for (int64_t i = 0; i < n; i++) {
        if (d->features) memcpy(s->f32 + (size_t)i * per, d->f32 + (size_t)idx[i] * per, per * sizeof(float));
        else memcpy(s->u8 + (size_t)i * per, d->u8 + (size_t)idx[i] * per, per);
        s->labels[i] = d->labels[idx[i]];
    }
    if (d->class_names && ml_dataset_set_class_names(s, (const char *const *)d->class_names, d->num_classes)) {
        ml_dataset_release(s);
        return NULL;
    }
    return s;
}

static double draw(ml_rng_state *rng) { return rng ? ml_rng_local_uniform(rng) : ml_rng_uniform(); }

int ml_dataset_batch(const ml_dataset *d, const int64_t *idx, int64_t n, const ml_augment *aug, ml_rng_state *rng,
                     ml_tensor **xo, ml_tensor **yo) {
    *xo = *yo = NULL;
    for (int64_t i = 0; i < n; i++)
        if (idx[i] < 0 || idx[i] >= d->n)
            return ml_failc("batch: example %" PRId64 " is out of range for %s of %" PRId64 " examples", idx[i] + 1,
                            d->name, d->n);
    ml_tensor *x, *y = ml_empty(ML_I64, 1, &n);
    if (d->features && d->h == 1 && d->w == 1) {
        int64_t s[2] = {n, d->c};
        x = ml_empty(ML_F32, 2, s);
    } else {
        int64_t s[4] = {n, d->c, d->h, d->w};
        x = ml_empty(ML_F32, 4, s);
    }
    if (!x || !y) {
        ml_release(x);
        ml_release(y);
        return -1;
    }
    int64_t C = d->c, H = d->h, W = d->w, per = C * H * W;
    /* augmentation choices are drawn serially (reproducible), then applied in parallel */
    int *dy = NULL, *dx = NULL;
    bool *fl = NULL;
    bool augmenting = aug && !d->features && (aug->crop_pad > 0 || aug->flip);
    if (augmenting) {
        dy = calloc((size_t)(n ? n : 1), sizeof *dy);
        dx = calloc((size_t)(n ? n : 1), sizeof *dx);
        fl = calloc((size_t)(n ? n : 1), sizeof *fl);
        for (int64_t i = 0; i < n; i++) {
            if (aug->crop_pad > 0) {
                int span = 2 * aug->crop_pad + 1;
                dy[i] = (int)(draw(rng) * span) - aug->crop_pad;
                dx[i] = (int)(draw(rng) * span) - aug->crop_pad;
            }
            if (aug->flip) fl[i] = draw(rng) < 0.5;
        }
    }
    float *xp = ml_f32(x);
    #pragma omp parallel for schedule(static) if (n * per >= 65536)
    for (int64_t i = 0; i < n; i++) {
        float *dst = xp + i * per;
        if (d->features) {
            memcpy(dst, d->f32 + idx[i] * per, sizeof(float) * (size_t)per);
        } else if (!augmenting) {
            const uint8_t *src = d->u8 + idx[i] * per;
            for (int64_t k = 0; k < per; k++) dst[k] = (float)src[k] * (1.0f / 255.0f);
        } else {
            /* out[c, r, q] = in[c, r + dy, q' + dx] (zero outside), q' = flipped q */
            const uint8_t *src = d->u8 + idx[i] * per;
            for (int64_t c = 0; c < C; c++)
                for (int64_t r = 0; r < H; r++) {
                    int64_t sr = r + dy[i];
                    float *row = dst + (c * H + r) * W;
                    if (sr < 0 || sr >= H) {
                        memset(row, 0, sizeof(float) * (size_t)W);
                        continue;
                    }
                    for (int64_t q = 0; q < W; q++) {
                        int64_t qq = fl[i] ? W - 1 - q : q, sq = qq + dx[i];
                        row[q] = (sq < 0 || sq >= W) ? 0.0f : (float)src[(c * H + sr) * W + sq] * (1.0f / 255.0f);
                    }
                }
        }
        ml_i64(y)[i] = d->labels[idx[i]];
    }
    free(dy);
    free(dx);
    free(fl);
    *xo = x;
    *yo = y;
    return 0;
}

ml_dataset *ml_dataset_from_tensors(const ml_tensor *x, const ml_tensor *y, int num_classes) {
    if (x->dtype != ML_F32 || x->ndim < 2) return ml_fail("dataset: x must be a float32 tensor [N, ...], got %s", ML_SHAPE_STR(x));
    if (y->dtype != ML_I64 || y->ndim != 1 || y->shape[0] != x->shape[0])
        return ml_fail("dataset: y must be int64 [%" PRId64 "], got %s %s", x->shape[0], ml_dtype_name(y->dtype), ML_SHAPE_STR(y));
    if (x->ndim != 2 && x->ndim != 4) return ml_fail("dataset: x must be [N, D] or [N, C, H, W], got %s", ML_SHAPE_STR(x));
    for (int k = 1; k < x->ndim; k++)
        if (x->shape[k] < 1 || x->shape[k] > INT32_MAX)
            return ml_fail("dataset: x has shape %s; each size but the first must be in 1..%d", ML_SHAPE_STR(x), INT32_MAX);
    int c = (int)x->shape[1], h = 1, w = 1;
    if (x->ndim == 4) {
        h = (int)x->shape[2];
        w = (int)x->shape[3];
    }
    int64_t n = x->shape[0];
    ml_tensor *xc = ml_contiguous((ml_tensor *)x), *yc = ml_contiguous((ml_tensor *)y);
    int maxl = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t l = ml_i64(yc)[i];
        if (l < 0) {
            ml_release(xc);
            ml_release(yc);
            return ml_fail("dataset: label %" PRId64 " of example %" PRId64 " is not positive (labels are 1-based)", l + 1, i + 1);
        }
        if (l >= INT32_MAX) {
            ml_release(xc);
            ml_release(yc);
            return ml_fail("dataset: label %" PRId64 " of example %" PRId64 " is too large", l + 1, i + 1);
        }
        if (l > maxl) maxl = (int)l;
    }
    if (num_classes <= 0) num_classes = maxl + 1;
    if (maxl >= num_classes) {
        ml_release(xc);
        ml_release(yc);
        return ml_fail("dataset: label %d exceeds the %d classes", maxl + 1, num_classes);
    }
    ml_dataset *d = alloc_dataset("tensors", n, c, h, w, num_classes, true);
    if (d) {
        memcpy(d->f32, ml_f32(xc), sizeof(float) * (size_t)ml_numel(xc));
        memcpy(d->labels, ml_i64(yc), sizeof(int64_t) * (size_t)n);
    }
    ml_release(xc);
    ml_release(yc);
    return d;
}

ml_dataset *ml_data_gaussian_clusters(int64_t n, int classes, int dim, double spread, uint64_t seed) {
    if (n < 1 || classes < 1 || dim < 1)
        return ml_fail("gaussian_clusters: n, classes and dim must be positive (got %" PRId64 ", %d, %d)", n, classes, dim);
    if (classes > n) return ml_fail("gaussian_clusters: %d classes for %" PRId64 " points (at most one class a point)", classes, n);
    if (!(spread >= 0) || isinf(spread)) return ml_fail("gaussian_clusters: spread must be finite and >= 0, got %g", spread);
    size_t centre_bytes;
    if (__builtin_mul_overflow((size_t)classes * sizeof(double), (size_t)dim, &centre_bytes))
        return ml_fail("gaussian_clusters: %d classes of %d dimensions are too many", classes, dim);
    ml_dataset *d = alloc_dataset("gaussian_clusters", n, dim, 1, 1, classes, true);
    if (!d) return NULL;
    double *centres = malloc(centre_bytes);
    if (!centres) {
        ml_dataset_release(d);
        return ml_fail("gaussian_clusters: out of memory for %d centres of %d dimensions", classes, dim);
    }
    ml_rng_state st;
    ml_rng_local_seed(&st, seed);
    /* Box-Muller on the private generator */
    for (int64_t k = 0; k < (int64_t)classes * dim; k++) {
        if (k % 65536 == 0 && ml_interrupted()) goto interrupted;
        double u = ml_rng_local_uniform(&st), v = ml_rng_local_uniform(&st);
        centres[k] = sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
    }
    for (int64_t i = 0; i < n; i++) {
        if (i % 4096 == 0 && ml_interrupted()) goto interrupted;
        int64_t c = i % classes;
        d->labels[i] = c;
        for (int j = 0; j < dim; j++) {
            double u = ml_rng_local_uniform(&st), v = ml_rng_local_uniform(&st);
            double z = sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
            d->f32[i * dim + j] = (float)(centres[c * dim + j] + spread * z);
        }
    }
    free(centres);
    return d;
interrupted:
    free(centres);
    ml_dataset_release(d);
    return NULL;
}
