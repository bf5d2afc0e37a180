/* image.h -- pictures: float tensors in [0, 1] to 8-bit pixels and back,
 * PNG files, resampling, and the comparison grid of clean and adversarial
 * examples (one row per example: clean | adversarial | perturbation, with
 * captions under each, as Figure 5 of Puigcerver et al. 2022).
 *
 * Pixels are 8-bit, channels interleaved (HWC); tensors are [C, H, W]
 * (C = 1 or 3) or [H, W] float32. A value v becomes round(255 v), and byte
 * b becomes b / 255, so 8-bit images round-trip exactly. */
#ifndef ML_PLOT_IMAGE_H
#define ML_PLOT_IMAGE_H

#include <stdbool.h>
#include <stdint.h>

#include "../tensor.h"

/* A tensor to malloc'd bytes. Values outside [0, 1] are an error naming how
 * many and their range, unless `clamp`; NaN is always an error. */
int ml_image_to_bytes(ml_tensor *t, bool clamp, uint8_t **data, int *h, int *w, int *c);
/* Bytes to a new [C, H, W] float32 tensor. */
ml_tensor *ml_image_from_bytes(const uint8_t *data, int h, int w, int c);
int ml_image_save(ml_tensor *t, const char *path, bool clamp);
ml_tensor *ml_image_load(const char *path); /* [C, H, W], C = 1 or 3 */
/* A new image of nh x nw pixels: box averages when shrinking, nearest
 * pixels when growing. malloc'd; NULL with the error set on failure. */
uint8_t *ml_image_resample(const uint8_t *src, int h, int w, int c, int nh, int nw);

typedef struct {
    ml_tensor *clean;              /* [N, C, H, W] or [N, H, W], values in [0, 1] */
    ml_tensor *adversarial;        /* the same shape, or NULL (then one panel a row) */
    const char *const *captions;   /* N x panels lines under the panels (NULL entries: none), or NULL */
    const uint8_t *caption_colors; /* N x panels colour indices (ML_COLOR_*), or NULL */
    const char *const *headers;    /* a title above each column of panels, or NULL */
    int scale;                     /* image pixels become scale x scale; 0 picks one (small images grow) */
    bool clamp;                    /* clip values outside [0, 1] instead of failing */
} ml_image_grid_spec;

/* Panels a row: 3 with an adversarial batch (clean, adversarial, and the
 * perturbation scaled so its largest |value| spans the range: grey is 0),
 * else 1. */
int ml_image_grid_panels(const ml_image_grid_spec *spec);
/* The grid as RGB bytes (HWC, *c = 3). boxes, when not NULL, receives
 * N x panels x {x, y, w, h}: where each image was drawn (0-based pixels). */
int ml_image_grid(const ml_image_grid_spec *spec, uint8_t **rgb, int *h, int *w, int *boxes);

#endif
