/* cells.c -- the text surface: a grid of cells (code point + colour index).
 * Canvas dots become braille patterns (2x4 dots a cell, U+2800 + mask) or,
 * in ASCII, the marker character of their series, one dot a cell. */
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "internal.h"

typedef struct {
    ml_surface base;
    ml_cells *cells;
    uint8_t *mask; /* braille dots set in each cell */
} text_surface;

/* bit of dot (x, y) inside a braille cell: columns 0-1, rows 0-3 */
static const uint8_t braille_bit[4][2] = {{0x01, 0x08}, {0x02, 0x10}, {0x04, 0x20}, {0x40, 0x80}};
static const char markers[ML_PLOT_SERIES_COLORS] = {'*', '+', 'o', 'x', '#', '@', '%', '&'};

static void text_put(ml_surface *s, int row, int col, uint32_t cp, uint8_t color) {
    text_surface *t = (text_surface *)s;
    if (row < 0 || col < 0 || row >= s->height || col >= s->width) return;
    size_t i = (size_t)row * (size_t)s->width + (size_t)col;
    t->cells->cp[i] = cp;
    t->cells->color[i] = color;
    t->mask[i] = 0;
}

static void text_dot(ml_surface *s, int64_t x, int64_t y, int series) {
    text_surface *t = (text_surface *)s;
    if (x < 0 || y < 0 || x >= (int64_t)s->width * s->dx || y >= (int64_t)s->height * s->dy) return;
    size_t i = (size_t)(y / s->dy) * (size_t)s->width + (size_t)(x / s->dx);
    uint8_t color = (uint8_t)(ML_COLOR_SERIES + series % ML_PLOT_SERIES_COLORS);
    if (s->ascii) {
        t->cells->cp[i] = (uint32_t)markers[series % ML_PLOT_SERIES_COLORS];
    } else {
        if (t->cells->cp[i] < 0x2800 || t->cells->cp[i] > 0x28ff) t->mask[i] = 0; /* a blank cell */
        t->mask[i] |= braille_bit[y % 4][x % 2];
        t->cells->cp[i] = 0x2800 + t->mask[i];
    }
    t->cells->color[i] = color; /* the last series drawn in a cell colours it */
}

void ml_cells_free(ml_cells *c) {
    if (!c) return;
    free(c->cp);
    free(c->color);
    free(c);
}

static ml_cells *cells_new(int width, int height) {
    ml_cells *c = calloc(1, sizeof *c);
    size_t n = (size_t)width * (size_t)height;
    if (c) {
        c->width = width, c->height = height;
        c->cp = malloc(n * sizeof *c->cp);
        c->color = calloc(n, 1);
    }
    if (!c || !c->cp || !c->color) {
        ml_cells_free(c);
        return ml_fail("plot: out of memory for %dx%d cells", width, height);
    }
    for (size_t i = 0; i < n; i++) c->cp[i] = ' ';
    return c;
}

ml_cells *ml_plot_render(const ml_plot *p, int width, int height, bool ascii) {
    if (!p) return ml_fail("plot: no plot");
    const char *fn = ml_plot_kind_name(p->kind);
    if (width < 1 || height < 1 || width > ML_PLOT_MAX_CELLS || height > ML_PLOT_MAX_CELLS)
        return ml_fail("%s: size %dx%d must be between 1 and %d cells each way", fn, width, height, ML_PLOT_MAX_CELLS);
    if (ml_plot_check(p)) return NULL;
    ml_cells *c = cells_new(width, height);
    if (!c) return NULL;
    uint8_t *mask = calloc((size_t)width * (size_t)height, 1);
    if (!mask) {
        ml_cells_free(c);
        return ml_fail("plot: out of memory for %dx%d cells", width, height);
    }
    text_surface t = {{width, height, ascii ? 1 : 2, ascii ? 1 : 4, ascii, text_put, text_dot, text_dot}, c, mask};
    int rc = ml_plot_draw(p, &t.base, (ml_region){0, 0, width, height});
    free(mask);
    if (rc) {
        ml_cells_free(c);
        return NULL;
    }
    return c;
}

char *ml_cells_text(const ml_cells *c) {
    size_t cap = (size_t)c->width * (size_t)c->height * 4 + (size_t)c->height + 1;
    char *out = malloc(cap), *o = out;
    if (!out) return ml_fail("plot: out of memory for the text");
    for (int row = 0; row < c->height; row++) {
        const uint32_t *line = c->cp + (size_t)row * (size_t)c->width;
        int end = c->width;
        while (end > 0 && line[end - 1] == ' ') end--;
        for (int col = 0; col < end; col++) o += ml_utf8_encode(line[col], o);
        if (row + 1 < c->height) *o++ = '\n';
    }
    *o = 0;
    return out;
}
