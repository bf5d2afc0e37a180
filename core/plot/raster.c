/* raster.c -- the pixel surface: the same layout as the terminal's, drawn
 * in RGB. A cell is 6x12 pixels times the scale; text uses the bitmap font,
 * box drawing becomes lines through the cell's middle, block elements
 * rectangles, heatmap cells solid colour, and canvas dots single pixels (a
 * line is as thick as the scale), so curves are drawn at pixel resolution. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../io/png_write.h"
#include "font.h"
#include "internal.h"

#define MAX_SIDE 16384             /* pixels each way */
#define MAX_PIXELS (64 * 1024 * 1024) /* pixels in all */

void ml_plot_palette(uint8_t color, uint8_t rgb[3]) {
    static const uint8_t series[ML_PLOT_SERIES_COLORS][3] = {
        {31, 119, 180}, {214, 39, 40}, {44, 160, 44}, {230, 140, 20},
        {148, 103, 189}, {23, 170, 190}, {140, 86, 75}, {227, 119, 194}};
    /* the heat scale: dark violet, blue, teal, green, yellow */
    static const uint8_t heat[5][3] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    const uint8_t *c;
    static const uint8_t text[3] = {30, 30, 30}, grey[3] = {120, 120, 120}, good[3] = {30, 150, 30},
                         bad[3] = {210, 30, 30};
    if (color >= ML_COLOR_SERIES && color < ML_COLOR_SERIES + ML_PLOT_SERIES_COLORS) c = series[color - ML_COLOR_SERIES];
    else if (color == ML_COLOR_AXIS || color == ML_COLOR_NOTE) c = grey;
    else if (color == ML_COLOR_GOOD) c = good;
    else if (color == ML_COLOR_BAD) c = bad;
    else if (color >= ML_COLOR_HEAT && color < ML_COLOR_HEAT + ML_PLOT_HEAT_LEVELS) {
        double t = (double)(color - ML_COLOR_HEAT) / (ML_PLOT_HEAT_LEVELS - 1) * 4;
        int k = t >= 4 ? 3 : (int)t;
        double f = t - k;
        for (int i = 0; i < 3; i++) rgb[i] = (uint8_t)lround(heat[k][i] * (1 - f) + heat[k + 1][i] * f);
        return;
    } else c = text;
    memcpy(rgb, c, 3);
}

typedef struct {
    ml_surface base;
    uint8_t *rgb;
    int w, h;   /* pixels */
    int scale;  /* line thickness */
    int cw, ch; /* cell size in pixels */
    int margin; /* blank pixels around the plot */
} pixel_surface;

static void fill(pixel_surface *p, int x0, int y0, int x1, int y1, const uint8_t color[3]) {
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > p->w) x1 = p->w;
    if (y1 > p->h) y1 = p->h;
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) memcpy(p->rgb + ((size_t)y * (size_t)p->w + (size_t)x) * 3, color, 3);
}

/* Box drawing: the arms (left, right, up, down) of each character used. */
static int box_arms(uint32_t cp) {
    enum { L = 1, R = 2, U = 4, D = 8 };
    switch (cp) {
    case 0x2500: return L | R;         /* ─ */
    case 0x2502: return U | D;         /* │ */
    case 0x250C: return R | D;         /* ┌ */
    case 0x2510: return L | D;         /* ┐ */
    case 0x2514: return U | R;         /* └ */
    case 0x2518: return U | L;         /* ┘ */
    case 0x251C: return U | D | R;     /* ├ */
    case 0x2524: return U | D | L;     /* ┤ */
    case 0x252C: return L | R | D;     /* ┬ */
    case 0x2534: return L | R | U;     /* ┴ */
    case 0x253C: return L | R | U | D; /* ┼ */
    default: return 0;
    }
}

static void disc(pixel_surface *p, int cx, int cy, int radius, const uint8_t color[3]) {
    for (int dy = -radius; dy <= radius; dy++)
        for (int dx = -radius; dx <= radius; dx++)
            if (dx * dx + dy * dy <= radius * radius + radius) fill(p, cx + dx, cy + dy, cx + dx + 1, cy + dy + 1, color);
}

static void pixel_put(ml_surface *s, int row, int col, uint32_t cp, uint8_t color) {
    pixel_surface *p = (pixel_surface *)s;
    if (cp == ' ' || row < 0 || col < 0 || row >= s->height || col >= s->width) return;
    uint8_t rgb[3];
    ml_plot_palette(color, rgb);
    int x0 = p->margin + col * p->cw, y0 = p->margin + row * p->ch, t = p->scale;
    if (color >= ML_COLOR_HEAT) { /* a heatmap cell: its colour says it all */
        fill(p, x0, y0, x0 + p->cw, y0 + p->ch, rgb);
        return;
    }
    int arms = box_arms(cp);
    if (arms) {
        int cx = x0 + p->cw / 2 - t / 2, cy = y0 + p->ch / 2 - t / 2;
        if (arms & 1) fill(p, x0, cy, cx + t, cy + t, rgb);
        if (arms & 2) fill(p, cx, cy, x0 + p->cw, cy + t, rgb);
        if (arms & 4) fill(p, cx, y0, cx + t, cy + t, rgb);
        if (arms & 8) fill(p, cx, cy, cx + t, y0 + p->ch, rgb);
    } else if (cp >= 0x2581 && cp <= 0x2588) { /* lower eighths */
        int e = (int)(cp - 0x2580);
        fill(p, x0, y0 + p->ch - p->ch * e / 8, x0 + p->cw, y0 + p->ch, rgb);
    } else if (cp >= 0x2589 && cp <= 0x258F) { /* left eighths: U+2589 is 7/8 */
        int e = (int)(0x2590 - cp);
        fill(p, x0, y0, x0 + p->cw * e / 8, y0 + p->ch, rgb);
    } else if (cp == 0x2590) { /* right half */
        fill(p, x0 + p->cw / 2, y0, x0 + p->cw, y0 + p->ch, rgb);
    } else if (cp == 0x2595) { /* right eighth */
        fill(p, x0 + p->cw - p->cw / 8, y0, x0 + p->cw, y0 + p->ch, rgb);
    } else if (cp >= 0x2591 && cp <= 0x2593) { /* shades */
        fill(p, x0, y0, x0 + p->cw, y0 + p->ch, rgb);
    } else if (cp > 0x2800 && cp <= 0x28FF) { /* braille: 2x4 dots */
        static const uint8_t bit[4][2] = {{0x01, 0x08}, {0x02, 0x10}, {0x04, 0x20}, {0x40, 0x80}};
        for (int y = 0; y < 4; y++)
            for (int x = 0; x < 2; x++)
                if ((cp - 0x2800) & bit[y][x])
                    disc(p, x0 + p->cw * (2 * x + 1) / 4, y0 + p->ch * (2 * y + 1) / 8, t, rgb);
    } else if (cp == 0x2022) { /* bullet: a scatter legend */
        disc(p, x0 + p->cw / 2, y0 + p->ch / 2, 2 * t, rgb);
    } else {
        ml_font_draw_glyph(p->rgb, p->w, p->h, x0, y0, cp, p->scale, rgb);
    }
}

static void pixel_dot(ml_surface *s, int64_t x, int64_t y, int series) {
    pixel_surface *p = (pixel_surface *)s;
    uint8_t rgb[3];
    ml_plot_palette((uint8_t)(ML_COLOR_SERIES + series % ML_PLOT_SERIES_COLORS), rgb);
    int t = p->scale, x0 = p->margin + (int)x - t / 2, y0 = p->margin + (int)y - t / 2;
    fill(p, x0, y0, x0 + t, y0 + t, rgb);
}

static void pixel_mark(ml_surface *s, int64_t x, int64_t y, int series) {
    pixel_surface *p = (pixel_surface *)s;
    uint8_t rgb[3];
    ml_plot_palette((uint8_t)(ML_COLOR_SERIES + series % ML_PLOT_SERIES_COLORS), rgb);
    disc(p, p->margin + (int)x, p->margin + (int)y, 2 * p->scale, rgb);
}

int ml_plot_raster(const ml_plot *p, int width, int height, int scale, uint8_t **rgb, int *h, int *w) {
    *rgb = NULL;
    if (!p) return ml_failc("plot: no plot");
    const char *fn = ml_plot_kind_name(p->kind);
    if (width < 1 || height < 1 || width > ML_PLOT_MAX_CELLS || height > ML_PLOT_MAX_CELLS)
        return ml_failc("%s: size %dx%d must be between 1 and %d cells each way", fn, width, height, ML_PLOT_MAX_CELLS);
    if (scale < 1 || scale > 16) return ml_failc("%s: png scale must be between 1 and 16, got %d", fn, scale);
    int margin = ML_FONT_CELL_W * scale;
    int64_t pw = (int64_t)width * ML_FONT_CELL_W * scale + 2 * margin, ph = (int64_t)height * ML_FONT_CELL_H * scale + 2 * margin;
    if (pw > MAX_SIDE || ph > MAX_SIDE || pw * ph > MAX_PIXELS)
        return ml_failc("%s: a %lldx%lld pixel image is too large (%dx%d cells at scale %d)", fn, (long long)pw,
                        (long long)ph, width, height, scale);
    if (ml_plot_check(p)) return -1;
    uint8_t *buf = malloc((size_t)(pw * ph * 3));
    if (!buf) return ml_failc("%s: out of memory for a %lldx%lld image", fn, (long long)pw, (long long)ph);
    memset(buf, 255, (size_t)(pw * ph * 3)); /* white */
    int cw = ML_FONT_CELL_W * scale, ch = ML_FONT_CELL_H * scale;
    pixel_surface s = {{width, height, cw, ch, false, pixel_put, pixel_dot, pixel_mark}, buf, (int)pw, (int)ph, scale, cw, ch,
                       margin};
    if (ml_plot_draw(p, &s.base, (ml_region){0, 0, width, height})) {
        free(buf);
        return -1;
    }
    *rgb = buf;
    *h = (int)ph;
    *w = (int)pw;
    return 0;
}

int ml_plot_write_png(const ml_plot *p, const char *path, int width, int height, int scale) {
    uint8_t *rgb;
    int h, w;
    if (ml_plot_raster(p, width, height, scale, &rgb, &h, &w)) return -1;
    int rc = ml_png_write(path, rgb, h, w, 3);
    free(rgb);
    return rc;
}
