/* plot.c -- the plot description: building, checking, freeing. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "internal.h"

static const char *kind_names[] = {"lines", "scatter", "hist", "bars", "heatmap", "spark", "grid"};

const char *ml_plot_kind_name(ml_plot_kind kind) {
    return (unsigned)kind < sizeof kind_names / sizeof kind_names[0] ? kind_names[kind] : "?";
}

ml_plot *ml_plot_new(ml_plot_kind kind) {
    if ((unsigned)kind > ML_PLOT_GRID) return ml_fail("plot: unknown kind %d", (int)kind);
    ml_plot *p = calloc(1, sizeof *p);
    if (!p) return ml_fail("plot: out of memory");
    p->refcount = 1;
    p->kind = kind;
    p->bins = 10;
    return p;
}

ml_plot *ml_plot_retain(ml_plot *p) {
    if (p) p->refcount++;
    return p;
}

static void free_labels(char **labels, int64_t n) {
    if (!labels) return;
    for (int64_t i = 0; i < n; i++) free(labels[i]);
    free(labels);
}

void ml_plot_release(ml_plot *p) {
    if (!p || --p->refcount > 0) return;
    for (int i = 0; i < 3; i++) free(p->text[i]);
    for (int i = 0; i < p->nseries; i++) {
        free(p->series[i].name);
        free(p->series[i].x);
        free(p->series[i].y);
    }
    free(p->series);
    free(p->values);
    free_labels(p->bar_label, p->nbars);
    free(p->bar_value);
    free(p->matrix);
    free_labels(p->tick_label[ML_AXIS_X], p->cols);
    free_labels(p->tick_label[ML_AXIS_Y], p->rows);
    for (int i = 0; i < p->nchild; i++) ml_plot_release(p->child[i]);
    free(p->child);
    free(p);
}

ml_plot_kind ml_plot_get_kind(const ml_plot *p) { return p->kind; }

/* strdup that reports failure through ml_fail; NULL text gives NULL. */
static int copy_text(const char *fn, const char *text, char **out) {
    *out = NULL;
    if (!text) return 0;
    *out = strdup(text);
    return *out ? 0 : ml_failc("%s: out of memory", fn);
}

/* A copy of n doubles (n >= 1, checked for overflow). */
static double *copy_doubles(const char *fn, const double *v, int64_t n) {
    if ((uint64_t)n > SIZE_MAX / sizeof(double)) return ml_fail("%s: %lld values are too many", fn, (long long)n);
    double *d = malloc((size_t)n * sizeof *d);
    if (!d) return ml_fail("%s: out of memory for %lld values", fn, (long long)n);
    memcpy(d, v, (size_t)n * sizeof *d);
    return d;
}

static int check_kind(const char *fn, const ml_plot *p, unsigned kinds) {
    if (!p) return ml_failc("%s: no plot", fn);
    if (!(kinds & (1u << p->kind))) return ml_failc("%s: not available for a %s plot", fn, ml_plot_kind_name(p->kind));
    return 0;
}
#define KIND(k) (1u << (k))

int ml_plot_set_label(ml_plot *p, ml_plot_text which, const char *text) {
    if (!p) return ml_failc("plot label: no plot");
    if ((unsigned)which > ML_PLOT_YLABEL) return ml_failc("plot label: unknown label %d", (int)which);
    char *copy;
    if (copy_text("plot label", text, &copy)) return -1;
    free(p->text[which]);
    p->text[which] = copy;
    return 0;
}

static const char *axis_name(ml_plot_axis axis) { return axis == ML_AXIS_X ? "x" : axis == ML_AXIS_Y ? "y" : "z"; }

int ml_plot_set_limits(ml_plot *p, ml_plot_axis axis, double lo, double hi) {
    if (!p) return ml_failc("plot limits: no plot");
    if ((unsigned)axis > ML_AXIS_Z) return ml_failc("plot limits: unknown axis %d", (int)axis);
    if (!isfinite(lo) || !isfinite(hi) || !(lo < hi))
        return ml_failc("plot: bad %slim {%g, %g} (need two finite numbers, the first smaller)", axis_name(axis), lo, hi);
    p->has_lim[axis] = true;
    p->lim[axis][0] = lo;
    p->lim[axis][1] = hi;
    return 0;
}

int ml_plot_set_log(ml_plot *p, ml_plot_axis axis, bool on) {
    if (check_kind("plot log scale", p, KIND(ML_PLOT_LINES) | KIND(ML_PLOT_SCATTER))) return -1;
    if (axis != ML_AXIS_X && axis != ML_AXIS_Y) return ml_failc("plot log scale: only x and y can be logarithmic");
    p->log[axis] = on;
    return 0;
}

int ml_plot_add_series(ml_plot *p, const char *name, const double *x, int64_t nx, const double *y, int64_t ny) {
    const char *fn = p ? ml_plot_kind_name(p->kind) : "plot";
    if (check_kind("add series", p, KIND(ML_PLOT_LINES) | KIND(ML_PLOT_SCATTER) | KIND(ML_PLOT_SPARK))) return -1;
    const char *what = name ? name : "";
    if (ny < 1 || !y) return ml_failc("%s: series '%s' is empty", fn, what);
    if (x && nx != ny) return ml_failc("%s: series '%s' has %lld x values and %lld y values", fn, what, (long long)nx, (long long)ny);
    if (p->kind == ML_PLOT_SPARK && p->nseries == 1) return ml_failc("spark: a sparkline shows one series");
    if (p->nseries >= 1 << 20) return ml_failc("%s: too many series", fn);
    ml_series s = {0};
    s.n = ny;
    if (copy_text(fn, name, &s.name)) return -1;
    ml_series *grown = NULL;
    if (!(s.y = copy_doubles(fn, y, ny))) goto fail;
    if (x && !(s.x = copy_doubles(fn, x, nx))) goto fail;
    if (!(grown = realloc(p->series, sizeof *grown * (size_t)(p->nseries + 1)))) {
        ml_failc("%s: out of memory", fn);
        goto fail;
    }
    p->series = grown;
    p->series[p->nseries++] = s;
    return 0;
fail:
    free(s.name), free(s.x), free(s.y);
    return -1;
}

int ml_plot_set_hist(ml_plot *p, const double *values, int64_t n, int bins, bool density) {
    if (check_kind("hist", p, KIND(ML_PLOT_HIST))) return -1;
    if (n < 1 || !values) return ml_failc("hist: no values");
    if (bins < 1 || bins > 100000) return ml_failc("hist: bins must be between 1 and 100000, got %d", bins);
    double *v = copy_doubles("hist", values, n);
    if (!v) return -1;
    free(p->values);
    p->values = v;
    p->nvalues = n;
    p->bins = bins;
    p->density = density;
    return 0;
}

int ml_plot_add_bar(ml_plot *p, const char *label, double value) {
    if (check_kind("bars", p, KIND(ML_PLOT_BARS))) return -1;
    if (p->nbars >= 1 << 20) return ml_failc("bars: too many bars");
    char *copy;
    if (copy_text("bars", label ? label : "", &copy)) return -1;
    char **labels = realloc(p->bar_label, sizeof *labels * (size_t)(p->nbars + 1));
    if (labels) p->bar_label = labels;
    double *values = labels ? realloc(p->bar_value, sizeof *values * (size_t)(p->nbars + 1)) : NULL;
    if (!values) {
        free(copy);
        return ml_failc("bars: out of memory");
    }
    p->bar_value = values;
    p->bar_label[p->nbars] = copy;
    p->bar_value[p->nbars++] = value;
    return 0;
}

int ml_plot_set_matrix(ml_plot *p, int64_t rows, int64_t cols, const double *values) {
    if (check_kind("heatmap", p, KIND(ML_PLOT_HEATMAP))) return -1;
    if (rows < 1 || cols < 1 || !values)
        return ml_failc("heatmap: the matrix is empty (%lld x %lld)", (long long)rows, (long long)cols);
    if (p->matrix) return ml_failc("heatmap: the matrix is already set");
    if (rows > INT64_MAX / cols) return ml_failc("heatmap: %lld x %lld values are too many", (long long)rows, (long long)cols);
    double *m = copy_doubles("heatmap", values, rows * cols);
    if (!m) return -1;
    p->matrix = m;
    p->rows = rows;
    p->cols = cols;
    return 0;
}

int ml_plot_set_tick_labels(ml_plot *p, ml_plot_axis axis, int64_t n, const char *const *labels) {
    if (check_kind("heatmap labels", p, KIND(ML_PLOT_HEATMAP))) return -1;
    if (axis != ML_AXIS_X && axis != ML_AXIS_Y) return ml_failc("heatmap labels: for rows (y) or columns (x)");
    if (!p->matrix) return ml_failc("heatmap labels: set the matrix first");
    int64_t want = axis == ML_AXIS_X ? p->cols : p->rows;
    if (n != want)
        return ml_failc("heatmap: %lld %s labels for a matrix with %lld %s", (long long)n,
                        axis == ML_AXIS_X ? "column" : "row", (long long)want, axis == ML_AXIS_X ? "columns" : "rows");
    char **copy = calloc((size_t)n, sizeof *copy);
    if (!copy) return ml_failc("heatmap labels: out of memory");
    for (int64_t i = 0; i < n; i++)
        if (copy_text("heatmap labels", labels[i] ? labels[i] : "", &copy[i])) {
            free_labels(copy, i);
            return -1;
        }
    free_labels(p->tick_label[axis], want);
    p->tick_label[axis] = copy;
    return 0;
}

int ml_plot_add_child(ml_plot *grid, ml_plot *child) {
    if (check_kind("grid", grid, KIND(ML_PLOT_GRID))) return -1;
    if (!child || child == grid) return ml_failc("grid: a grid holds other plots");
    if (grid->nchild >= 1024) return ml_failc("grid: at most 1024 plots");
    ml_plot **c = realloc(grid->child, sizeof *c * (size_t)(grid->nchild + 1));
    if (!c) return ml_failc("grid: out of memory");
    grid->child = c;
    grid->child[grid->nchild++] = ml_plot_retain(child);
    return 0;
}

int ml_plot_set_columns(ml_plot *grid, int columns) {
    if (check_kind("grid", grid, KIND(ML_PLOT_GRID))) return -1;
    if (columns < 1) return ml_failc("grid: cols must be at least 1, got %d", columns);
    grid->columns = columns;
    return 0;
}

/* ------------------------------------------------------------ checking */
static int check_log(const ml_plot *p, ml_plot_axis axis) {
    if (!p->log[axis]) return 0;
    const char *fn = ml_plot_kind_name(p->kind), *name = axis_name(axis);
    if (p->has_lim[axis] && p->lim[axis][0] <= 0)
        return ml_failc("%s: %slim {%g, %g} on a log scale must be positive", fn, name, p->lim[axis][0], p->lim[axis][1]);
    for (int i = 0; i < p->nseries; i++) {
        const ml_series *s = &p->series[i];
        for (int64_t j = 0; j < s->n; j++) {
            double v = axis == ML_AXIS_X ? (s->x ? s->x[j] : (double)(j + 1)) : s->y[j];
            if (isfinite(v) && v <= 0)
                return ml_failc("%s: log scale on %s, but series '%s' has %s = %g at point %lld", fn, name,
                                s->name ? s->name : "", name, v, (long long)j + 1);
        }
    }
    return 0;
}

int ml_plot_check(const ml_plot *p) {
    if (!p) return ml_failc("plot: no plot");
    const char *fn = ml_plot_kind_name(p->kind);
    switch (p->kind) {
    case ML_PLOT_LINES:
    case ML_PLOT_SCATTER:
    case ML_PLOT_SPARK:
        if (p->nseries == 0) return ml_failc("%s: no series to plot", fn);
        return check_log(p, ML_AXIS_X) || check_log(p, ML_AXIS_Y) ? -1 : 0;
    case ML_PLOT_HIST:
        return p->nvalues ? 0 : ml_failc("hist: no values");
    case ML_PLOT_BARS:
        return p->nbars ? 0 : ml_failc("bars: no bars");
    case ML_PLOT_HEATMAP:
        return p->matrix ? 0 : ml_failc("heatmap: no matrix");
    case ML_PLOT_GRID:
        if (!p->nchild) return ml_failc("grid: no plots");
        for (int i = 0; i < p->nchild; i++)
            if (ml_plot_check(p->child[i])) return -1;
        return 0;
    }
    return ml_failc("plot: unknown kind");
}
