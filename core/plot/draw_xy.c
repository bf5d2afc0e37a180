/* draw_xy.c -- plots over x-y axes: lines, scatter and hist. A frame of
 * y tick labels | axes | canvas | legend, with the title, the y label above
 * and the x tick labels, x label and note line below:
 *
 *              accuracy                     <- title
 *     acc                                   <- ylabel
 *     1.0 ┤⠉⠑⠢⢄            ── clean         <- legend in the right margin
 *         │    ⠉⠢⡀         ── pgd
 *     0.0 ┤       ⠈⠢⠤⠤
 *         └┬────┬────┬
 *          0   0.1  0.2                     <- x tick labels
 *                eps                        <- xlabel
 *     (2 non-finite points skipped)         <- note */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "internal.h"
#include "scale.h"

typedef struct {
    uint32_t vline, hline, ytick, xtick, corner;
} axis_glyphs;
static const axis_glyphs box_axes = {0x2502, 0x2500, 0x2524, 0x252C, 0x2514};
static const axis_glyphs ascii_axes = {'|', '-', '+', '+', '+'};

/* ASCII markers of the series (a braille canvas tells them apart by colour). */
static const char markers[ML_PLOT_SERIES_COLORS] = {'*', '+', 'o', 'x', '#', '@', '%', '&'};

typedef struct {
    double lo, hi;
    bool any;
} span;

static void span_add(span *s, double v) {
    if (!s->any || v < s->lo) s->lo = v;
    if (!s->any || v > s->hi) s->hi = v;
    s->any = true;
}

static double series_x(const ml_series *s, int64_t j) { return s->x ? s->x[j] : (double)(j + 1); }

/* ------------------------------------------------------------ hist */
typedef struct {
    double lo, hi;  /* bin range */
    double *height; /* per bin: count, or density */
    double top;     /* largest height */
    int64_t skipped;
} bins;

static int count_bins(const ml_plot *p, bins *b) {
    span data = {0};
    b->skipped = 0;
    for (int64_t i = 0; i < p->nvalues; i++) {
        if (isfinite(p->values[i])) span_add(&data, p->values[i]);
        else b->skipped++;
    }
    if (p->has_lim[ML_AXIS_X]) b->lo = p->lim[ML_AXIS_X][0], b->hi = p->lim[ML_AXIS_X][1];
    else if (!data.any) b->lo = 0, b->hi = 1;
    else if (data.lo == data.hi) b->lo = data.lo - 0.5, b->hi = data.hi + 0.5;
    else b->lo = data.lo, b->hi = data.hi;
    b->height = calloc((size_t)p->bins, sizeof *b->height);
    if (!b->height) return ml_failc("hist: out of memory for %d bins", p->bins);
    int64_t counted = 0;
    for (int64_t i = 0; i < p->nvalues; i++) {
        double v = p->values[i];
        if (!isfinite(v) || v < b->lo || v > b->hi) continue;
        double k = (v - b->lo) / (b->hi - b->lo) * p->bins; /* NaN when the span overflows */
        b->height[k >= 0 && k < p->bins ? (int)k : k >= p->bins ? p->bins - 1 : 0] += 1;
        counted++;
    }
    double scale = p->density && counted ? p->bins / ((b->hi - b->lo) * (double)counted) : 1;
    b->top = 0;
    for (int k = 0; k < p->bins; k++) {
        b->height[k] *= scale;
        if (b->height[k] > b->top) b->top = b->height[k];
    }
    return 0;
}

/* ------------------------------------------------------------ canvas geometry */
/* The axis limits map to the middles of the outer cells, where the tick
 * marks are, so a value at a tick is drawn level with it (in pixels,
 * exactly on the tick's line); dots outside that box are not drawn. */
typedef struct {
    ml_surface *s;
    ml_axis x, y;
    int64_t ox, oy;    /* absolute dot coordinates of the canvas's top-left dot */
    double x0, x1, y0, y1; /* the limits' box in canvas dots */
} canvas;

static double dot_x(const canvas *c, double v) { return c->x0 + ml_axis_frac(&c->x, v) * (c->x1 - c->x0); }
static double dot_y(const canvas *c, double v) { return c->y1 - ml_axis_frac(&c->y, v) * (c->y1 - c->y0); }

/* Clips the segment to the limits' box (Liang-Barsky); false when nothing is left. */
static bool clip(const canvas *c, double *x0, double *y0, double *x1, double *y1) {
    double t0 = 0, t1 = 1, dx = *x1 - *x0, dy = *y1 - *y0;
    double p[4] = {-dx, dx, -dy, dy};
    double q[4] = {*x0 - c->x0, c->x1 - *x0, *y0 - c->y0, c->y1 - *y0};
    for (int i = 0; i < 4; i++) {
        if (p[i] == 0) {
            if (q[i] < 0) return false;
            continue;
        }
        double t = q[i] / p[i];
        if (p[i] < 0) {
            if (t > t1) return false;
            if (t > t0) t0 = t;
        } else {
            if (t < t0) return false;
            if (t < t1) t1 = t;
        }
    }
    double ax = *x0 + t0 * dx, ay = *y0 + t0 * dy, bx = *x0 + t1 * dx, by = *y0 + t1 * dy;
    *x0 = ax, *y0 = ay, *x1 = bx, *y1 = by;
    return isfinite(ax) && isfinite(ay) && isfinite(bx) && isfinite(by); /* 1e308 over a span of 1e-300 */
}

static void segment(const canvas *c, double x0, double y0, double x1, double y1, int series) {
    if (!clip(c, &x0, &y0, &x1, &y1)) return;
    int64_t ax = llround(x0), ay = llround(y0), bx = llround(x1), by = llround(y1);
    int64_t dx = llabs(bx - ax), dy = -llabs(by - ay), sx = ax < bx ? 1 : -1, sy = ay < by ? 1 : -1, err = dx + dy;
    for (;;) { /* Bresenham */
        c->s->dot(c->s, c->ox + ax, c->oy + ay, series);
        if (ax == bx && ay == by) break;
        int64_t e2 = 2 * err;
        if (e2 >= dy) err += dy, ax += sx;
        if (e2 <= dx) err += dx, ay += sy;
    }
}

static bool inside(const canvas *c, double x, double y) {
    return x > c->x0 - 0.5 && y > c->y0 - 0.5 && x < c->x1 + 0.5 && y < c->y1 + 0.5;
}

static void draw_series(const ml_plot *p, const canvas *c) {
    for (int k = 0; k < p->nseries; k++) {
        const ml_series *s = &p->series[k];
        for (int64_t j = 0; j < s->n; j++) {
            double x = series_x(s, j), y = s->y[j];
            if (!isfinite(x) || !isfinite(y)) continue;
            double px = dot_x(c, x), py = dot_y(c, y);
            if (!isfinite(px) || !isfinite(py)) continue; /* finite data beyond what doubles can map */
            if (p->kind == ML_PLOT_SCATTER) {
                if (inside(c, px, py)) c->s->mark(c->s, c->ox + llround(px), c->oy + llround(py), k);
                continue;
            }
            bool prev = j > 0 && isfinite(series_x(s, j - 1)) && isfinite(s->y[j - 1]);
            bool next = j + 1 < s->n && isfinite(series_x(s, j + 1)) && isfinite(s->y[j + 1]);
            if (prev && isfinite(dot_x(c, series_x(s, j - 1))) && isfinite(dot_y(c, s->y[j - 1])))
                segment(c, dot_x(c, series_x(s, j - 1)), dot_y(c, s->y[j - 1]), px, py, k);
            else if (!next && inside(c, px, py)) c->s->dot(c->s, c->ox + llround(px), c->oy + llround(py), k);
        }
    }
}

/* Histogram columns in block glyphs: eighths of a cell in height. */
static void draw_bins(const ml_plot *p, const bins *b, const canvas *c, int row0, int col0, int pw, int ph) {
    ml_surface *s = c->s;
    for (int col = 0; col < pw; col++) {
        /* the bins under this column (several when bins outnumber columns) */
        int k0 = (int)((int64_t)col * p->bins / pw), k1 = (int)(((int64_t)col + 1) * p->bins / pw);
        if (k1 <= k0) k1 = k0 + 1;
        double h = 0;
        for (int k = k0; k < k1 && k < p->bins; k++)
            if (b->height[k] > h) h = b->height[k];
        double f = ml_axis_frac(&c->y, h);
        int64_t eighths = !(f > 0) ? 0 : f >= 1 ? (int64_t)ph * 8 : llround(f * ph * 8);
        if (s->ascii) {
            int64_t full = (eighths + 4) / 8;
            for (int64_t i = 0; i < full; i++) s->put(s, row0 + ph - 1 - (int)i, col0 + col, '#', ML_COLOR_SERIES);
            if (full == 0 && h > 0) s->put(s, row0 + ph - 1, col0 + col, '.', ML_COLOR_SERIES);
            continue;
        }
        for (int64_t i = 0; eighths > 0; i++, eighths -= 8)
            s->put(s, row0 + ph - 1 - (int)i, col0 + col, eighths >= 8 ? 0x2588 : 0x2580 + (uint32_t)eighths,
                   ML_COLOR_SERIES);
    }
}

/* ------------------------------------------------------------ frame */
static ml_axis axis_of(const ml_plot *p, ml_plot_axis which, span data, bool extend, int target) {
    bool lg = which <= ML_AXIS_Y && p->log[which];
    if (p->has_lim[which]) return (ml_axis){p->lim[which][0], p->lim[which][1], lg, 0};
    if (!data.any) return lg ? (ml_axis){1, 10, true, 0} : (ml_axis){0, 1, false, 0};
    return ml_axis_auto(data.lo, data.hi, lg, extend && !lg, target);
}

static int legend_width(const ml_plot *p, int width) {
    int longest = 0;
    for (int k = 0; k < p->nseries; k++)
        if (p->series[k].name && ml_utf8_len(p->series[k].name) > longest) longest = ml_utf8_len(p->series[k].name);
    if (longest == 0) return 0;
    if (longest > width / 4) longest = width / 4;
    return longest < 1 ? 0 : 1 + 3 + longest; /* gap, marker and space, name */
}

static void draw_legend(const ml_plot *p, ml_surface *s, ml_region r, int row, int col, int w, int rows) {
    int line = 0;
    for (int k = 0; k < p->nseries && line < rows; k++) {
        const ml_series *se = &p->series[k];
        if (!se->name) continue;
        uint8_t color = (uint8_t)(ML_COLOR_SERIES + k % ML_PLOT_SERIES_COLORS);
        uint32_t m = s->ascii ? (uint32_t)markers[k % ML_PLOT_SERIES_COLORS] : p->kind == ML_PLOT_SCATTER ? 0x2022 : 0x2500;
        s->put(s, r.row + row + line, r.col + col, m, color);
        if (p->kind != ML_PLOT_SCATTER) s->put(s, r.row + row + line, r.col + col + 1, m, color);
        ml_put_text(s, r, row + line, col + 3, se->name, w - 3, ML_COLOR_DEFAULT);
        line++;
    }
}

int ml_draw_xy(const ml_plot *p, ml_surface *s, ml_region r) {
    const char *fn = ml_plot_kind_name(p->kind);
    bool hist = p->kind == ML_PLOT_HIST;
    bins b = {0};
    span xs = {0}, ys = {0};
    int64_t skipped = 0;
    if (hist) {
        if (count_bins(p, &b)) return -1;
        xs = (span){b.lo, b.hi, true};
        ys = (span){0, b.top, true};
        skipped = b.skipped;
    } else {
        for (int k = 0; k < p->nseries; k++)
            for (int64_t j = 0; j < p->series[k].n; j++) {
                double x = series_x(&p->series[k], j), y = p->series[k].y[j];
                if (!isfinite(x) || !isfinite(y)) {
                    skipped++;
                    continue;
                }
                span_add(&xs, x);
                span_add(&ys, y);
            }
    }
    const char *title = p->text[ML_PLOT_TITLE], *xlabel = p->text[ML_PLOT_XLABEL], *ylabel = p->text[ML_PLOT_YLABEL];
    if (hist && !ylabel) ylabel = p->density ? "density" : "count";
    int top = (title ? 1 : 0) + (ylabel ? 1 : 0);
    int bottom = 2 + (xlabel ? 1 : 0) + (skipped ? 1 : 0);
    int ph = r.h - top - bottom;
    int legend = hist ? 0 : legend_width(p, r.w);
    /* y ticks first: their labels set the left margin */
    int ytarget = ph / 4 > 2 ? ph / 4 : 2;
    ml_axis ya = axis_of(p, ML_AXIS_Y, ys, true, ytarget);
    double yt[ML_MAX_TICKS], ystep;
    int ny = ml_axis_ticks(&ya, ytarget, yt, &ystep);
    char ylab[ML_MAX_TICKS][32];
    int lw = 1;
    for (int i = 0; i < ny; i++) {
        ml_tick_label(yt[i], ystep, ylab[i], sizeof ylab[i]);
        int len = (int)strlen(ylab[i]);
        if (len > lw) lw = len;
    }
    int pw = r.w - lw - 1 - legend;
    if (ph < 1 || pw < 2) {
        free(b.height);
        return ml_failc("%s: %dx%d cells is too small for this plot (the canvas would be %dx%d)", fn, r.w, r.h,
                        pw < 0 ? 0 : pw, ph < 0 ? 0 : ph);
    }
    int xtarget = pw / 10 > 2 ? pw / 10 : 2;
    ml_axis xa = axis_of(p, ML_AXIS_X, xs, false, xtarget); /* x spans the data: a sweep ends where it ends */
    double xt[ML_MAX_TICKS], xstep;
    int nx = ml_axis_ticks(&xa, xtarget, xt, &xstep);

    const axis_glyphs *g = s->ascii ? &ascii_axes : &box_axes;
    int col0 = lw + 1, axis_row = top + ph;
    double mx = s->dx / 2, my = s->dy / 2; /* the dots at the middles of cells (in pixels: where axis lines run) */
    canvas c = {s, xa, ya, (int64_t)(r.col + col0) * s->dx, (int64_t)(r.row + top) * s->dy,
                mx, mx + (double)(pw - 1) * s->dx, my, my + (double)(ph - 1) * s->dy};
    if (title) { /* centred over the canvas, or over the whole width when longer */
        if (ml_utf8_len(title) <= pw) ml_put_centered(s, r, 0, col0, pw, title, ML_COLOR_DEFAULT);
        else ml_put_centered(s, r, 0, 0, r.w, title, ML_COLOR_DEFAULT);
    }
    if (ylabel) ml_put_text(s, r, top - 1, 0, ylabel, r.w, ML_COLOR_DEFAULT);
    /* y axis and its labels */
    for (int i = 0; i < ph; i++) s->put(s, r.row + top + i, r.col + lw, g->vline, ML_COLOR_AXIS);
    int last_row = -1;
    for (int i = 0; i < ny; i++) {
        double dy = dot_y(&c, yt[i]);
        int row = isfinite(dy) ? (int)(llround(dy) / s->dy) : -1;
        if (row == last_row || row < 0 || row >= ph) continue;
        last_row = row;
        s->put(s, r.row + top + row, r.col + lw, g->ytick, ML_COLOR_AXIS);
        ml_put_text(s, r, top + row, lw - (int)strlen(ylab[i]), ylab[i], lw, ML_COLOR_DEFAULT);
    }
    /* x axis and its labels, each centred under its tick, none overlapping */
    s->put(s, r.row + axis_row, r.col + lw, g->corner, ML_COLOR_AXIS);
    for (int i = 0; i < pw; i++) s->put(s, r.row + axis_row, r.col + col0 + i, g->hline, ML_COLOR_AXIS);
    int last_end = -1;
    for (int i = 0; i < nx; i++) {
        double dx = dot_x(&c, xt[i]);
        int col = isfinite(dx) ? (int)(llround(dx) / s->dx) : -1;
        if (col < 0 || col >= pw) continue;
        s->put(s, r.row + axis_row, r.col + col0 + col, g->xtick, ML_COLOR_AXIS);
        char label[32];
        ml_tick_label(xt[i], xstep, label, sizeof label);
        int len = (int)strlen(label), start = col0 + col - (len - 1) / 2;
        if (start < 0) start = 0;
        if (start + len > r.w) start = r.w - len;
        if (start <= last_end) continue;
        ml_put_text(s, r, axis_row + 1, start, label, len, ML_COLOR_DEFAULT);
        last_end = start + len;
    }
    if (xlabel) ml_put_centered(s, r, axis_row + 2, col0, pw, xlabel, ML_COLOR_DEFAULT);
    ml_put_note(s, r, r.h - 1, skipped, hist ? "value" : "point");
    if (legend) draw_legend(p, s, r, top, r.w - legend + 1, legend - 1, ph);
    if (hist) draw_bins(p, &b, &c, r.row + top, r.col + col0, pw, ph);
    else draw_series(p, &c);
    free(b.height);
    return 0;
}
