/* layout.c -- one entry point for every kind, the natural heights, and the
 * grid (plots side by side or in rows). */
#include <stdlib.h>

#include "../error.h"
#include "internal.h"

#define GRID_GAP 2 /* blank columns between plots of a row */

static int grid_columns(const ml_plot *p) {
    return p->columns && p->columns < p->nchild ? p->columns : p->nchild;
}

static int grid_column_width(const ml_plot *p, int width) {
    int cols = grid_columns(p);
    return (width - (cols - 1) * GRID_GAP) / cols;
}

/* The height of grid row `row`: the largest natural height of its plots, or
 * 0 when one of them fills any height. */
static int grid_row_height(const ml_plot *p, int row, int colw) {
    int cols = grid_columns(p), h = 0;
    for (int i = row * cols; i < p->nchild && i < (row + 1) * cols; i++) {
        int n = ml_plot_natural_height(p->child[i], colw);
        if (n == 0) return 0;
        if (n > h) h = n;
    }
    return h;
}

int ml_plot_natural_height(const ml_plot *p, int width) {
    switch (p->kind) {
    case ML_PLOT_SPARK:
        return 1;
    case ML_PLOT_BARS:
        return ml_bars_natural_height(p);
    case ML_PLOT_HEATMAP:
        return ml_heatmap_natural_height(p);
    case ML_PLOT_GRID: {
        if (!p->nchild) return 0;
        int cols = grid_columns(p), rows = (p->nchild + cols - 1) / cols;
        int colw = grid_column_width(p, width), total = (p->text[ML_PLOT_TITLE] ? 1 : 0) + rows - 1;
        for (int r = 0; r < rows; r++) {
            int h = grid_row_height(p, r, colw);
            if (h == 0) return 0;
            total += h;
        }
        return total;
    }
    default:
        return 0;
    }
}

static int draw_grid(const ml_plot *p, ml_surface *s, ml_region r) {
    int cols = grid_columns(p), rows = (p->nchild + cols - 1) / cols;
    int colw = grid_column_width(p, r.w);
    if (colw < 1) return ml_failc("grid: %d plots side by side do not fit in %d columns", cols, r.w);
    int top = 0;
    if (p->text[ML_PLOT_TITLE]) ml_put_centered(s, r, top++, 0, r.w, p->text[ML_PLOT_TITLE], ML_COLOR_DEFAULT);
    int *height = calloc((size_t)rows, sizeof *height);
    if (!height) return ml_failc("grid: out of memory");
    int fixed = 0, flexible = 0, avail = r.h - top - (rows - 1);
    for (int i = 0; i < rows; i++) {
        height[i] = grid_row_height(p, i, colw);
        fixed += height[i];
        flexible += height[i] == 0;
    }
    int share = flexible ? (avail - fixed) / flexible : 0, extra = flexible ? (avail - fixed) % flexible : 0;
    if (fixed > avail || (flexible && share < 1)) {
        free(height);
        return ml_failc("grid: %d rows of plots do not fit in %d lines", rows, r.h);
    }
    int y = top, rc = 0;
    for (int i = 0; i < rows && rc == 0; i++) {
        int h = height[i] ? height[i] : share + (extra-- > 0);
        for (int j = 0; j < cols && i * cols + j < p->nchild && rc == 0; j++) {
            ml_region cell = {r.row + y, r.col + j * (colw + GRID_GAP), colw, h};
            rc = ml_plot_draw(p->child[i * cols + j], s, cell);
            if (rc) ml_error_prefix("grid: plot %d: ", i * cols + j + 1);
        }
        y += h + 1;
    }
    free(height);
    return rc;
}

int ml_plot_draw(const ml_plot *p, ml_surface *s, ml_region r) {
    if (ml_plot_check(p)) return -1;
    switch (p->kind) {
    case ML_PLOT_LINES:
    case ML_PLOT_SCATTER:
    case ML_PLOT_HIST:
        return ml_draw_xy(p, s, r);
    case ML_PLOT_BARS:
        return ml_draw_bars(p, s, r);
    case ML_PLOT_SPARK:
        return ml_draw_spark(p, s, r);
    case ML_PLOT_HEATMAP:
        return ml_draw_heatmap(p, s, r);
    case ML_PLOT_GRID:
        return draw_grid(p, s, r);
    }
    return ml_failc("plot: unknown kind");
}
