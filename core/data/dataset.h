/* dataset.h -- in-memory datasets of images or feature vectors.
 *
 * Images are stored compactly as uint8 [N, C, H, W] and turned into float32
 * batches in [0, 1] on demand (normalisation happens inside the models, so
 * attacks work in pixel space). Feature datasets (synthetic data) store
 * float32 [N, D]. Labels are int64, 0-based in C.
 *
 * Readers: MNIST IDX (plain or .gz), CIFAR-10 binary batches, folders of PNGs
 * (root/CLASS/NAME.png), Gaussian clusters. Every reader error names the file
 * and the reason. */
#ifndef ML_DATA_DATASET_H
#define ML_DATA_DATASET_H

#include "../tensor.h"
#include "../rng.h"

typedef struct ml_dataset {
    int refcount;
    char name[64];
    int64_t n;
    int c, h, w;      /* image shape; for features c = D, h = w = 1 */
    bool features;    /* float32 feature vectors instead of uint8 images */
    uint8_t *u8;      /* [n, c*h*w] when images */
    float *f32;       /* [n, c] when features */
    int64_t *labels;  /* [n], 0-based */
    int num_classes;
    char **class_names; /* num_classes strings (may be NULL) */
} ml_dataset;

typedef struct {
    int crop_pad;  /* random crop after zero padding by this many pixels (0 = off) */
    bool flip;     /* horizontal flip with probability 1/2 */
} ml_augment;

ml_dataset *ml_dataset_retain(ml_dataset *d);
void ml_dataset_release(ml_dataset *d);
/* A new dataset of the given rows (0-based indices), copied. */
ml_dataset *ml_dataset_subset(const ml_dataset *d, const int64_t *idx, int64_t n);
/* Batch of the rows idx[0..n-1]: x float32 [n, C, H, W] in [0, 1] (or [n, D]),
 * y int64 [n]. Augmentation draws from rng (a private generator) when given,
 * else from the engine RNG. */
int ml_dataset_batch(const ml_dataset *d, const int64_t *idx, int64_t n, const ml_augment *aug, ml_rng_state *rng,
                     ml_tensor **x, ml_tensor **y);
/* Builds a dataset from tensors: x float32 [N, ...] (values kept as float32
 * features, shape remembered when 4-d) and y int64 [N]. */
ml_dataset *ml_dataset_from_tensors(const ml_tensor *x, const ml_tensor *y, int num_classes);

/* Readers. */
int ml_data_mnist(const char *dir, ml_dataset **train, ml_dataset **test);
int ml_data_cifar10(const char *dir, ml_dataset **train, ml_dataset **test);
ml_dataset *ml_data_png_folder(const char *dir);
/* n points in `classes` Gaussian clusters in dim dimensions: centres drawn
 * N(0, I), points = centre + spread * N(0, I). */
ml_dataset *ml_data_gaussian_clusters(int64_t n, int classes, int dim, double spread, uint64_t seed);

/* Internal helpers shared by the readers. */
ml_dataset *ml_dataset_new_images(const char *name, int64_t n, int c, int h, int w, int classes);
int ml_dataset_set_class_names(ml_dataset *d, const char *const *names, int n);

#endif
