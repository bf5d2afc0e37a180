/* plot.h -- plots as values: a description (series, axes, limits, labels,
 * kind) rendered into a cell buffer for a terminal, or into RGB pixels.
 *
 * A plot is built once and rendered at any size, as often as wanted (a live
 * dashboard redraws the same description at a fixed rate): rendering reads
 * the description and never changes it. The core knows no terminal codes:
 * a rendered plot is a grid of cells, each a Unicode code point and a colour
 * index (below); bindings turn colour indices into ANSI codes, raster.c into
 * RGB through ml_plot_palette().
 *
 *     ml_plot *p = ml_plot_new(ML_PLOT_LINES);
 *     ml_plot_add_series(p, "clean", x, n, y, n);       // copies the data
 *     ml_plot_set_label(p, ML_PLOT_TITLE, "accuracy");
 *     ml_cells *c = ml_plot_render(p, 60, 16, false);   // braille canvas
 *     char *text = ml_cells_text(c);                     // UTF-8, no colour
 *     ...
 *     free(text); ml_cells_free(c); ml_plot_release(p);
 *
 * Kinds: lines and scatter (x-y series with axes, ticks and a legend), hist
 * (a histogram of values), bars (labelled horizontal bars), heatmap (a
 * matrix with row and column labels and a shaded scale), spark (a one-line
 * sparkline) and grid (plots side by side or in rows).
 *
 * Non-finite points are never drawn; a plot says how many it skipped in a
 * note line. Errors (empty series, mismatched lengths, bad limits, log of
 * non-positive data, a size too small) return NULL / -1 with ml_fail. */
#ifndef ML_PLOT_H
#define ML_PLOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    ML_PLOT_LINES,
    ML_PLOT_SCATTER,
    ML_PLOT_HIST,
    ML_PLOT_BARS,
    ML_PLOT_HEATMAP,
    ML_PLOT_SPARK,
    ML_PLOT_GRID,
} ml_plot_kind;

typedef enum { ML_PLOT_TITLE, ML_PLOT_XLABEL, ML_PLOT_YLABEL } ml_plot_text;
/* X and Y are the axes; Z is a heatmap's value scale. */
typedef enum { ML_AXIS_X, ML_AXIS_Y, ML_AXIS_Z } ml_plot_axis;

/* Colour indices of rendered cells. Series i uses ML_COLOR_SERIES + i % 8;
 * heatmap level l (0..15, low to high) uses ML_COLOR_HEAT + l. */
enum {
    ML_COLOR_DEFAULT = 0,
    ML_COLOR_SERIES = 1, /* 1..8 */
    ML_COLOR_AXIS = 9,
    ML_COLOR_NOTE = 10,
    ML_COLOR_GOOD = 11, /* picture captions: a correct prediction */
    ML_COLOR_BAD = 12,  /* a wrong one */
    ML_COLOR_HEAT = 16, /* 16..31 */
};
#define ML_PLOT_SERIES_COLORS 8
#define ML_PLOT_HEAT_LEVELS 16
/* Largest size rendered, in cells, so that sizes never overflow. */
#define ML_PLOT_MAX_CELLS 10000

typedef struct ml_plot ml_plot;

/* ------------------------------------------------------------ description */
ml_plot *ml_plot_new(ml_plot_kind kind); /* refcount 1 */
ml_plot *ml_plot_retain(ml_plot *p);     /* returns p */
void ml_plot_release(ml_plot *p);        /* NULL is fine */
ml_plot_kind ml_plot_get_kind(const ml_plot *p);
const char *ml_plot_kind_name(ml_plot_kind kind);

/* Title, axis labels (UTF-8; each code point takes one cell). NULL clears. */
int ml_plot_set_label(ml_plot *p, ml_plot_text which, const char *text);
/* Fixed limits lo < hi, both finite (positive on a log axis). */
int ml_plot_set_limits(ml_plot *p, ml_plot_axis axis, double lo, double hi);
int ml_plot_set_log(ml_plot *p, ml_plot_axis axis, bool on);
/* lines, scatter, spark: a series of ny points, copied. x NULL means
 * 1, 2, ..., ny; otherwise nx must equal ny. name may be NULL (no legend
 * entry). A spark holds exactly one series. */
int ml_plot_add_series(ml_plot *p, const char *name, const double *x, int64_t nx, const double *y, int64_t ny);
/* hist: n values (copied) counted into `bins` equal bins over their finite
 * range (or the x limits); density scales counts to unit area. */
int ml_plot_set_hist(ml_plot *p, const double *values, int64_t n, int bins, bool density);
/* bars: one labelled bar (drawn in the order added). */
int ml_plot_add_bar(ml_plot *p, const char *label, double value);
/* heatmap: rows x cols values, row-major (copied). */
int ml_plot_set_matrix(ml_plot *p, int64_t rows, int64_t cols, const double *values);
/* heatmap: labels of the rows (ML_AXIS_Y) or columns (ML_AXIS_X); n must
 * match the matrix. Without them rows and columns are numbered from 1. */
int ml_plot_set_tick_labels(ml_plot *p, ml_plot_axis axis, int64_t n, const char *const *labels);
/* grid: appends a plot (retained), laid out in `columns` per row (default:
 * all side by side). */
int ml_plot_add_child(ml_plot *grid, ml_plot *child);
int ml_plot_set_columns(ml_plot *grid, int columns);

/* Checks the whole description (data present, log axes over positive data,
 * limits usable); render calls it too. Returns 0 or -1 with the error set. */
int ml_plot_check(const ml_plot *p);
/* The height a plot needs at this width (bars, heatmap, spark, a grid of
 * such), or 0 when it fills whatever height it gets (lines, scatter, hist). */
int ml_plot_natural_height(const ml_plot *p, int width);

/* ------------------------------------------------------------ rendering to cells */
typedef struct {
    int width, height; /* in cells */
    uint32_t *cp;      /* width*height code points, row-major */
    uint8_t *color;    /* colour index of each cell (ML_COLOR_*) */
} ml_cells;

/* Renders at width x height cells: a braille canvas (2x4 dots a cell) and
 * Unicode box drawing and blocks, or pure ASCII when `ascii`. */
ml_cells *ml_plot_render(const ml_plot *p, int width, int height, bool ascii);
void ml_cells_free(ml_cells *c);
/* The cells as UTF-8 lines joined by '\n' (no final newline), trailing
 * blanks of each line dropped. malloc'd; NULL on failure. */
char *ml_cells_text(const ml_cells *c);
/* Writes cp as UTF-8 into out (up to 4 bytes); returns the byte count. */
int ml_utf8_encode(uint32_t cp, char *out);

/* ------------------------------------------------------------ rendering to pixels */
/* The RGB colour of a colour index (white background, dark text). */
void ml_plot_palette(uint8_t color, uint8_t rgb[3]);
/* The plot laid out as at width x height cells, drawn in pixels: each cell
 * is 6*scale x 12*scale pixels, with a margin of 6*scale pixels all round
 * (cell (row, col) starts at pixel (margin + col*6*scale, margin +
 * row*12*scale)); lines at pixel resolution, text in the built-in bitmap
 * font, on white. *rgb is malloc'd h*w*3 bytes (HWC). */
int ml_plot_raster(const ml_plot *p, int width, int height, int scale, uint8_t **rgb, int *h, int *w);
/* ml_plot_raster written as a PNG file. */
int ml_plot_write_png(const ml_plot *p, const char *path, int width, int height, int scale);

#endif
