/* draw_bars.c -- labelled horizontal bars and one-line sparklines, both
 * drawn with block elements (eighths of a cell) or ASCII:
 *
 *     clean      ████████████▋ 0.93          loss ▇▆▅▃▂▂▁▁ 0.12
 *     pgd-10     ███▏          0.24 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "internal.h"
#include "scale.h"

static int64_t bars_skipped(const ml_plot *p) {
    int64_t n = 0;
    for (int i = 0; i < p->nbars; i++) n += !isfinite(p->bar_value[i]);
    return n;
}

int ml_bars_natural_height(const ml_plot *p) {
    return (p->text[ML_PLOT_TITLE] ? 1 : 0) + p->nbars + (bars_skipped(p) ? 1 : 0);
}

/* One bar from cell position `from` to `to` (in eighths of a cell from the
 * bar area's left edge): full blocks, a left-aligned partial block at the
 * right end of a bar growing right, a right-aligned one at the left end of a
 * bar growing left (Unicode has only the right half and eighth). */
static void bar(ml_surface *s, int row, int col0, int64_t from, int64_t to) {
    bool right = to >= from;
    int64_t a = right ? from : to, b = right ? to : from;
    for (int64_t e = a - a % 8; e < b; e += 8) {
        int64_t lo = e > a ? e : a, hi = e + 8 < b ? e + 8 : b, filled = hi - lo;
        uint32_t cp;
        if (filled >= 8) cp = s->ascii ? '#' : 0x2588;
        else if (s->ascii) cp = filled >= 4 ? '#' : ' ';
        else if (right) cp = 0x2590 - (uint32_t)filled; /* U+258F one eighth .. U+2589 seven */
        else cp = filled >= 4 ? 0x2590 : 0x2595;        /* right half, right eighth */
        if (cp != ' ') s->put(s, row, col0 + (int)(e / 8), cp, ML_COLOR_SERIES);
    }
}

int ml_draw_bars(const ml_plot *p, ml_surface *s, ml_region r) {
    int64_t skipped = bars_skipped(p);
    const char *title = p->text[ML_PLOT_TITLE];
    int top = title ? 1 : 0, rows = r.h - top - (skipped ? 1 : 0);
    if (rows < 1) return ml_failc("bars: %d lines are too few for this plot", r.h);
    int shown = p->nbars <= rows ? p->nbars : rows - 1;
    int lw = 0, vw = 0;
    double lo = 0, hi = 0;
    char value[32];
    for (int i = 0; i < p->nbars; i++) {
        int len = ml_utf8_len(p->bar_label[i]);
        if (len > lw) lw = len;
        ml_format_number(p->bar_value[i], 4, value, sizeof value);
        if ((int)strlen(value) > vw) vw = (int)strlen(value);
        if (isfinite(p->bar_value[i])) {
            if (p->bar_value[i] < lo) lo = p->bar_value[i];
            if (p->bar_value[i] > hi) hi = p->bar_value[i];
        }
    }
    if (lw > r.w / 3) lw = r.w / 3;
    if (p->has_lim[ML_AXIS_X]) lo = p->lim[ML_AXIS_X][0], hi = p->lim[ML_AXIS_X][1];
    if (lo == hi) hi = lo + 1;
    int col0 = lw + (lw ? 1 : 0), bw = r.w - col0 - 1 - vw;
    if (bw < 1) return ml_failc("bars: %d columns are too few for these labels and values", r.w);
    if (title) ml_put_centered(s, r, 0, 0, r.w, title, ML_COLOR_DEFAULT);
    double zero = (0 - lo) / (hi - lo);
    int64_t z8 = 8 * llround((zero > 1 ? 1 : zero >= 0 ? zero : 0) * bw); /* the zero line on a cell edge */
    for (int i = 0; i < shown; i++) {
        int row = top + i;
        double v = p->bar_value[i];
        ml_put_text(s, r, row, 0, p->bar_label[i], lw, ML_COLOR_DEFAULT);
        if (isfinite(v)) {
            double f = (v - lo) / (hi - lo);
            bar(s, r.row + row, r.col + col0, z8, llround((f > 1 ? 1 : f >= 0 ? f : 0) * bw * 8));
        }
        ml_format_number(v, 4, value, sizeof value);
        ml_put_text(s, r, row, r.w - (int)strlen(value), value, vw, ML_COLOR_DEFAULT);
    }
    if (shown < p->nbars) {
        char more[48];
        snprintf(more, sizeof more, "(+%d more)", p->nbars - shown);
        ml_put_text(s, r, top + shown, 0, more, r.w, ML_COLOR_NOTE);
    }
    ml_put_note(s, r, top + shown + (shown < p->nbars), skipped, "value");
    return 0;
}

/* ------------------------------------------------------------ spark */
static const char spark_ascii[8] = {'_', '.', '-', '=', '+', '*', '#', '@'};

int ml_draw_spark(const ml_plot *p, ml_surface *s, ml_region r) {
    const ml_series *se = &p->series[0];
    const char *title = p->text[ML_PLOT_TITLE];
    int tw = title ? ml_utf8_len(title) + 1 : 0;
    char last[32] = "";
    int64_t skipped = 0;
    for (int64_t j = 0; j < se->n; j++) skipped += !isfinite(se->y[j]);
    for (int64_t j = se->n - 1; j >= 0; j--)
        if (isfinite(se->y[j])) {
            ml_format_number(se->y[j], 3, last, sizeof last);
            break;
        }
    int lastw = last[0] ? (int)strlen(last) + 1 : 0;
    if (r.w - tw - lastw < 1) lastw = 0;
    if (r.w - tw - lastw < 1) tw = 0;
    int avail = r.w - tw - lastw;
    if (avail < 1) return ml_failc("spark: %d columns are too few", r.w);
    int m = se->n < avail ? (int)se->n : avail;
    /* column c shows the mean of the finite points it covers */
    double *col = malloc(sizeof *col * (size_t)m);
    if (!col) return ml_failc("spark: out of memory");
    double lo = INFINITY, hi = -INFINITY;
    for (int c = 0; c < m; c++) {
        int64_t a = (int64_t)c * se->n / m, b = ((int64_t)c + 1) * se->n / m;
        double sum = 0;
        int64_t k = 0;
        for (int64_t j = a; j < b; j++)
            if (isfinite(se->y[j])) sum += se->y[j], k++;
        col[c] = k ? sum / (double)k : NAN;
        if (k && col[c] < lo) lo = col[c];
        if (k && col[c] > hi) hi = col[c];
    }
    if (p->has_lim[ML_AXIS_Y]) lo = p->lim[ML_AXIS_Y][0], hi = p->lim[ML_AXIS_Y][1];
    if (title) ml_put_text(s, r, 0, 0, title, tw - 1, ML_COLOR_DEFAULT);
    for (int c = 0; c < m; c++) {
        if (isnan(col[c])) continue;
        double t = hi > lo ? (col[c] - lo) / (hi - lo) * 8 : 3;
        int level = t >= 7 ? 7 : t >= 0 ? (int)t : 0; /* NaN (an overflowing span) reads as the lowest */
        s->put(s, r.row, r.col + tw + c, s->ascii ? (uint32_t)spark_ascii[level] : 0x2581 + (uint32_t)level,
               ML_COLOR_SERIES);
    }
    if (lastw) ml_put_text(s, r, 0, tw + m + 1, last, lastw - 1, ML_COLOR_DEFAULT);
    if (r.h > 1) ml_put_note(s, r, 1, skipped, "point");
    free(col);
    return 0;
}
