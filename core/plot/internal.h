/* internal.h -- what the files of core/plot share: the plot description and
 * the drawing surface every kind is laid out on.
 *
 * Layout happens once, in cells, for both outputs: a surface takes text
 * cells (code points, including box drawing and block elements) and canvas
 * dots. The text surface (cells.c) turns dots into braille masks or ASCII
 * markers; the pixel surface (raster.c) draws glyphs with the bitmap font,
 * box drawing as lines, blocks as rectangles, and dots as pixels. */
#ifndef ML_PLOT_INTERNAL_H
#define ML_PLOT_INTERNAL_H

#include "plot.h"

typedef struct {
    char *name; /* NULL: no legend entry */
    double *x;  /* NULL: 1..n */
    double *y;
    int64_t n;
} ml_series;

struct ml_plot {
    int refcount;
    ml_plot_kind kind;
    char *text[3]; /* title, xlabel, ylabel */
    bool has_lim[3];
    double lim[3][2];
    bool log[2];
    /* lines, scatter, spark */
    ml_series *series;
    int nseries;
    /* hist */
    double *values;
    int64_t nvalues;
    int bins;
    bool density;
    /* bars */
    char **bar_label;
    double *bar_value;
    int nbars;
    /* heatmap */
    double *matrix;
    int64_t rows, cols;
    char **tick_label[2]; /* [ML_AXIS_X] columns, [ML_AXIS_Y] rows */
    /* grid */
    ml_plot **child;
    int nchild;
    int columns;
};

/* ------------------------------------------------------------ surfaces */
typedef struct ml_surface ml_surface;
struct ml_surface {
    int width, height; /* in cells */
    int dx, dy;        /* canvas dots per cell */
    bool ascii;        /* text glyphs restricted to ASCII */
    /* a glyph in a cell (clipped to the surface) */
    void (*put)(ml_surface *s, int row, int col, uint32_t cp, uint8_t color);
    /* a line dot and a scatter marker at absolute dot coordinates */
    void (*dot)(ml_surface *s, int64_t x, int64_t y, int series);
    void (*mark)(ml_surface *s, int64_t x, int64_t y, int series);
};

typedef struct {
    int row, col, w, h;
} ml_region;

/* Lays p out on s inside r. Returns 0, or -1 with the error set when r is
 * too small for it. */
int ml_plot_draw(const ml_plot *p, ml_surface *s, ml_region r);
int ml_draw_xy(const ml_plot *p, ml_surface *s, ml_region r);      /* lines, scatter, hist */
int ml_draw_bars(const ml_plot *p, ml_surface *s, ml_region r);
int ml_draw_spark(const ml_plot *p, ml_surface *s, ml_region r);
int ml_draw_heatmap(const ml_plot *p, ml_surface *s, ml_region r);
int ml_heatmap_natural_height(const ml_plot *p);
int ml_bars_natural_height(const ml_plot *p);

/* ------------------------------------------------------------ text helpers (surface.c) */
/* Next code point of a UTF-8 string (invalid bytes read as '?'); advances *s. */
uint32_t ml_utf8_next(const char **s);
/* Number of code points (= cells) of a UTF-8 string. */
int ml_utf8_len(const char *s);
/* Writes text at (row, col) of r, at most maxw cells (and never past r);
 * returns the cells written. */
int ml_put_text(ml_surface *s, ml_region r, int row, int col, const char *text, int maxw, uint8_t color);
/* Text centred in columns [col, col + w) of row. */
void ml_put_centered(ml_surface *s, ml_region r, int row, int col, int w, const char *text, uint8_t color);
/* "(3 non-finite points skipped)" on the row, when skipped > 0 (shorter
 * when the region is narrow). */
void ml_put_note(ml_surface *s, ml_region r, int row, int64_t skipped, const char *what);

#endif
