/* image.c -- see image.h. */
#include "image.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../io/png.h"
#include "../io/png_write.h"
#include "font.h"
#include "plot.h"

#define MAX_SIDE 1000000
#define MAX_PIXELS (64 * 1024 * 1024)

/* Shape checks shared by one image and a batch: sets c, h, w from the last
 * dimensions ([H, W] or [C, H, W] after `lead` leading dimensions). */
static int image_shape(const char *fn, const ml_tensor *t, int lead, int *c, int *h, int *w) {
    const char *want = lead ? "[N, C, H, W] (C = 1 or 3) or [N, H, W]" : "[C, H, W] (C = 1 or 3) or [H, W]";
    if (t->dtype != ML_F32) return ml_failc("%s: expects a float32 tensor with values in [0, 1], got %s", fn, ml_dtype_name(t->dtype));
    int nd = t->ndim - lead;
    if (nd != 2 && nd != 3) return ml_failc("%s: expects %s, got shape %s", fn, want, ML_SHAPE_STR(t));
    int64_t cc = nd == 3 ? t->shape[lead] : 1, hh = t->shape[t->ndim - 2], ww = t->shape[t->ndim - 1];
    if ((cc != 1 && cc != 3) || hh < 1 || ww < 1 || hh > MAX_SIDE || ww > MAX_SIDE)
        return ml_failc("%s: expects %s, got shape %s", fn, want, ML_SHAPE_STR(t));
    if (hh * ww > MAX_PIXELS) return ml_failc("%s: a %lldx%lld image is too large", fn, (long long)hh, (long long)ww);
    *c = (int)cc, *h = (int)hh, *w = (int)ww;
    return 0;
}

/* Fails naming fn when any of n values is NaN, or outside [0, 1] unless
 * clamp (then they are clipped on conversion). */
static int check_range(const char *fn, const float *v, int64_t n, bool clamp) {
    int64_t outside = 0, nan = 0;
    double lo = 0, hi = 1;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(v[i])) nan++;
        else if (v[i] < 0 || v[i] > 1) {
            outside++;
            if (v[i] < lo) lo = v[i];
            if (v[i] > hi) hi = v[i];
        }
    }
    if (nan) return ml_failc("%s: %lld value%s NaN", fn, (long long)nan, nan == 1 ? " is" : "s are");
    if (outside && !clamp)
        return ml_failc("%s: %lld value%s outside [0, 1] (from %g to %g); clamp = true clips them", fn,
                        (long long)outside, outside == 1 ? " is" : "s are", lo, hi);
    return 0;
}

/* Planar floats [C, H, W] (checked) to interleaved bytes, clipped to [0, 1]. */
static void to_bytes(const float *v, int c, int h, int w, uint8_t *out) {
    size_t plane = (size_t)h * (size_t)w;
    for (int k = 0; k < c; k++)
        for (size_t i = 0; i < plane; i++) {
            float x = v[(size_t)k * plane + i];
            x = x < 0 ? 0 : x > 1 ? 1 : x;
            out[i * (size_t)c + (size_t)k] = (uint8_t)lroundf(x * 255);
        }
}

int ml_image_to_bytes(ml_tensor *t, bool clamp, uint8_t **data, int *h, int *w, int *c) {
    *data = NULL;
    if (image_shape("image", t, 0, c, h, w)) return -1;
    ml_tensor *tc = ml_contiguous(t);
    if (!tc) return -1;
    size_t n = (size_t)*h * (size_t)*w * (size_t)*c;
    uint8_t *out = NULL;
    int rc = check_range("image", ml_f32(tc), (int64_t)n, clamp);
    if (rc == 0 && !(out = malloc(n))) rc = ml_failc("image: out of memory");
    if (rc == 0) to_bytes(ml_f32(tc), *c, *h, *w, out);
    ml_release(tc);
    *data = out;
    return rc;
}

ml_tensor *ml_image_from_bytes(const uint8_t *data, int h, int w, int c) {
    int64_t shape[3] = {c, h, w};
    ml_tensor *t = ml_empty(ML_F32, 3, shape);
    if (!t) return NULL;
    float *v = ml_f32(t);
    size_t plane = (size_t)h * (size_t)w;
    for (int k = 0; k < c; k++)
        for (size_t i = 0; i < plane; i++) v[(size_t)k * plane + i] = data[i * (size_t)c + (size_t)k] / 255.0f;
    return t;
}

int ml_image_save(ml_tensor *t, const char *path, bool clamp) {
    uint8_t *data;
    int h, w, c;
    if (ml_image_to_bytes(t, clamp, &data, &h, &w, &c)) return -1;
    int rc = ml_png_write(path, data, h, w, c);
    free(data);
    return rc;
}

ml_tensor *ml_image_load(const char *path) {
    uint8_t *data;
    int h, w, c;
    if (ml_png_read(path, &data, &h, &w, &c)) return NULL;
    ml_tensor *t = ml_image_from_bytes(data, h, w, c);
    free(data);
    return t;
}

uint8_t *ml_image_resample(const uint8_t *src, int h, int w, int c, int nh, int nw) {
    if (nh < 1 || nw < 1 || nh > MAX_SIDE || nw > MAX_SIDE || (int64_t)nh * nw > MAX_PIXELS)
        return ml_fail("image: cannot resample %dx%d to %dx%d", h, w, nh, nw);
    uint8_t *out = malloc((size_t)nh * (size_t)nw * (size_t)c);
    if (!out) return ml_fail("image: out of memory resampling to %dx%d", nh, nw);
    for (int i = 0; i < nh; i++) {
        int y0 = (int)((int64_t)i * h / nh), y1 = (int)(((int64_t)i + 1) * h / nh);
        if (y1 <= y0) y1 = y0 + 1;
        for (int j = 0; j < nw; j++) {
            int x0 = (int)((int64_t)j * w / nw), x1 = (int)(((int64_t)j + 1) * w / nw);
            if (x1 <= x0) x1 = x0 + 1;
            for (int k = 0; k < c; k++) {
                uint32_t sum = 0;
                for (int y = y0; y < y1; y++)
                    for (int x = x0; x < x1; x++) sum += src[((size_t)y * (size_t)w + (size_t)x) * (size_t)c + (size_t)k];
                uint32_t n = (uint32_t)((y1 - y0) * (x1 - x0));
                out[((size_t)i * (size_t)nw + (size_t)j) * (size_t)c + (size_t)k] = (uint8_t)((sum + n / 2) / n);
            }
        }
    }
    return out;
}

/* ------------------------------------------------------------ the comparison grid */
#define MARGIN 8      /* around the grid */
#define GAP 8         /* between panels and rows */
#define CAPTION_GAP 2 /* between an image and its caption */
#define MAX_CAPTION 40

int ml_image_grid_panels(const ml_image_grid_spec *spec) { return spec->adversarial ? 3 : 1; }

/* The first MAX_CAPTION code points of s into out (out holds 4 bytes each). */
static void cut_caption(const char *s, char *out) {
    int n = 0;
    while (s && *s) {
        bool start = ((unsigned char)*s & 0xc0) != 0x80;
        if (start && n == MAX_CAPTION) break;
        n += start;
        *out++ = *s++;
    }
    *out = 0;
}

static int caption_width(const char *s) {
    char cut[MAX_CAPTION * 4 + 1];
    cut_caption(s, cut);
    int n = 0;
    for (const char *p = cut; *p; p++) n += ((unsigned char)*p & 0xc0) != 0x80;
    return n * ML_FONT_CELL_W;
}

/* Draws image i of a planar [N, C, H, W] batch (values in bytes) at (x, y), scaled. */
static void blit(uint8_t *rgb, int gw, const uint8_t *img, int c, int h, int w, int scale, int x, int y) {
    for (int yy = 0; yy < h * scale; yy++)
        for (int xx = 0; xx < w * scale; xx++) {
            const uint8_t *s = img + ((size_t)(yy / scale) * (size_t)w + (size_t)(xx / scale)) * (size_t)c;
            uint8_t *d = rgb + ((size_t)(y + yy) * (size_t)gw + (size_t)(x + xx)) * 3;
            d[0] = s[0], d[1] = s[c == 3 ? 1 : 0], d[2] = s[c == 3 ? 2 : 0];
        }
}

int ml_image_grid(const ml_image_grid_spec *spec, uint8_t **rgb_out, int *h_out, int *w_out, int *boxes) {
    *rgb_out = NULL;
    const char *fn = "image.grid";
    ml_tensor *clean = spec->clean, *adv = spec->adversarial;
    if (!clean) return ml_failc("%s: no clean images", fn);
    int c = 0, h = 0, w = 0;
    if (clean->ndim < 3) return ml_failc("%s: clean images must be a batch [N, C, H, W] or [N, H, W], got %s", fn, ML_SHAPE_STR(clean));
    if (image_shape(fn, clean, 1, &c, &h, &w)) return -1;
    if (adv && !ml_same_shape(adv, clean))
        return ml_failc("%s: adversarial images %s and clean images %s differ in shape", fn, ML_SHAPE_STR(adv), ML_SHAPE_STR(clean));
    if (adv && adv->dtype != ML_F32) return ml_failc("%s: adversarial images must be float32", fn);
    int64_t n = clean->shape[0];
    if (n < 1 || n > 1000) return ml_failc("%s: %lld examples (1 to 1000 fit in a grid)", fn, (long long)n);
    int panels = ml_image_grid_panels(spec);
    int scale = spec->scale ? spec->scale : (96 / (h > w ? h : w) > 1 ? 96 / (h > w ? h : w) : 1);
    if (scale < 1 || scale > 64) return ml_failc("%s: scale must be between 1 and 64, got %d", fn, scale);
    /* column width: the scaled image or the widest caption or header */
    int colw = w * scale, header = 0;
    for (int64_t i = 0; i < n * panels && spec->captions; i++)
        if (caption_width(spec->captions[i]) > colw) colw = caption_width(spec->captions[i]);
    for (int k = 0; k < panels && spec->headers; k++) {
        if (caption_width(spec->headers[k]) > colw) colw = caption_width(spec->headers[k]);
        if (spec->headers[k]) header = ML_FONT_CELL_H + CAPTION_GAP;
    }
    int caption = spec->captions ? CAPTION_GAP + ML_FONT_CELL_H : 0;
    int64_t rowh = (int64_t)h * scale + caption;
    int64_t gw = 2 * MARGIN + (int64_t)panels * colw + (panels - 1) * GAP;
    int64_t gh = 2 * MARGIN + header + n * rowh + (n - 1) * GAP;
    if (gw > 16384 || gh > 65536 || gw * gh > MAX_PIXELS)
        return ml_failc("%s: the grid would be %lldx%lld pixels; use a smaller scale or fewer examples", fn, (long long)gw,
                        (long long)gh);
    size_t img = (size_t)h * (size_t)w * (size_t)c;
    uint8_t *rgb = malloc((size_t)(gw * gh * 3)), *pix = malloc(img * 3);
    float *delta = adv ? malloc(img * sizeof *delta) : NULL;
    ml_tensor *cc = ml_contiguous(clean), *ac = adv ? ml_contiguous(adv) : NULL;
    int rc = 0;
    if (!rgb || !pix || (adv && !delta) || !cc || (adv && !ac)) rc = ml_failc("%s: out of memory", fn);
    if (rc == 0) rc = check_range("image.grid: clean images", ml_f32(cc), ml_numel(cc), spec->clamp);
    if (rc == 0 && ac) rc = check_range("image.grid: adversarial images", ml_f32(ac), ml_numel(ac), spec->clamp);
    if (rc == 0) memset(rgb, 255, (size_t)(gw * gh * 3));
    uint8_t ink[3];
    ml_plot_palette(ML_COLOR_DEFAULT, ink);
    for (int k = 0; rc == 0 && k < panels && spec->headers; k++)
        if (spec->headers[k])
            ml_font_draw(rgb, (int)gw, (int)gh, MARGIN + k * (colw + GAP) + (colw - caption_width(spec->headers[k])) / 2,
                         MARGIN, spec->headers[k], 1, ink);
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        const float *cv = ml_f32(cc) + (size_t)i * img, *av = adv ? ml_f32(ac) + (size_t)i * img : NULL;
        int y = MARGIN + header + (int)(i * (rowh + GAP));
        for (int k = 0; rc == 0 && k < panels; k++) {
            const float *src = k == 0 ? cv : av;
            if (k == 2) { /* the perturbation, its largest |value| at the ends of the range */
                float amp = 0;
                for (size_t j = 0; j < img; j++) {
                    delta[j] = av[j] - cv[j];
                    if (fabsf(delta[j]) > amp) amp = fabsf(delta[j]);
                }
                for (size_t j = 0; j < img; j++) delta[j] = amp > 0 ? 0.5f + delta[j] / (2 * amp) : 0.5f;
                src = delta;
            }
            to_bytes(src, c, h, w, pix);
            int x = MARGIN + k * (colw + GAP) + (colw - w * scale) / 2;
            blit(rgb, (int)gw, pix, c, h, w, scale, x, y);
            if (boxes) {
                int *b = boxes + (i * panels + k) * 4;
                b[0] = x, b[1] = y, b[2] = w * scale, b[3] = h * scale;
            }
            const char *text = spec->captions ? spec->captions[i * panels + k] : NULL;
            if (text) {
                uint8_t color[3];
                ml_plot_palette(spec->caption_colors ? spec->caption_colors[i * panels + k] : ML_COLOR_DEFAULT, color);
                char cut[MAX_CAPTION * 4 + 1];
                cut_caption(text, cut);
                int tw = caption_width(cut);
                ml_font_draw(rgb, (int)gw, (int)gh, MARGIN + k * (colw + GAP) + (colw - tw) / 2,
                             y + h * scale + CAPTION_GAP, cut, 1, color);
            }
        }
    }
    free(pix);
    free(delta);
    ml_release(cc);
    ml_release(ac);
    if (rc) {
        free(rgb);
        return -1;
    }
    *rgb_out = rgb;
    *h_out = (int)gh;
    *w_out = (int)gw;
    return 0;
}
