/* draw_heatmap.c -- a matrix as shaded cells, with row labels on the left,
 * column labels above and the scale below:
 *
 *               experts
 *            1 2 3 4              <- column labels (those that fit)
 *     layer1 ██▓▓··░░
 *     layer2 ▒▒▓▓██··
 *            0 ·░▒▓█ 0.5          <- the scale: low value, shades, high value
 *
 * A matrix larger than the region is shown in blocks (the mean of the finite
 * values of each block). Colour indices carry 16 levels for colour output. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "internal.h"
#include "scale.h"

static const uint32_t shades_box[5] = {0x00B7, 0x2591, 0x2592, 0x2593, 0x2588}; /* · ░ ▒ ▓ █ */
static const char shades_ascii[9] = {'.', ':', '-', '=', '+', '*', '#', '%', '@'};

static int64_t heat_skipped(const ml_plot *p) {
    int64_t n = 0;
    for (int64_t i = 0; i < p->rows * p->cols; i++) n += !isfinite(p->matrix[i]);
    return n;
}

int ml_heatmap_natural_height(const ml_plot *p) {
    int64_t h = (p->text[ML_PLOT_TITLE] ? 1 : 0) + 2 + p->rows + (heat_skipped(p) ? 1 : 0);
    return h > ML_PLOT_MAX_CELLS ? ML_PLOT_MAX_CELLS : (int)h;
}

/* The label of row or column i (1-based numbers by default) into buf. */
static const char *label(const ml_plot *p, ml_plot_axis axis, int64_t i, char *buf, size_t n) {
    if (p->tick_label[axis]) return p->tick_label[axis][i];
    snprintf(buf, n, "%lld", (long long)i + 1);
    return buf;
}

/* Glyph and colour of a value at fraction t in [0, 1] of the scale. */
static void shade(const ml_surface *s, double t, uint32_t *cp, uint8_t *color) {
    t = t > 1 ? 1 : t >= 0 ? t : 0; /* NaN (an overflowing span) reads as the lowest */
    int k = s->ascii ? (int)(t * 9) : (int)(t * 5);
    *cp = s->ascii ? (uint32_t)shades_ascii[k > 8 ? 8 : k] : shades_box[k > 4 ? 4 : k];
    int level = (int)(t * ML_PLOT_HEAT_LEVELS);
    *color = (uint8_t)(ML_COLOR_HEAT + (level >= ML_PLOT_HEAT_LEVELS ? ML_PLOT_HEAT_LEVELS - 1 : level));
}

/* Mean of the finite values of a block of the matrix (NaN when none). */
static double block_mean(const ml_plot *p, int64_t r0, int64_t r1, int64_t c0, int64_t c1) {
    double sum = 0;
    int64_t n = 0;
    for (int64_t i = r0; i < r1; i++)
        for (int64_t j = c0; j < c1; j++) {
            double v = p->matrix[i * p->cols + j];
            if (isfinite(v)) sum += v, n++;
        }
    return n ? sum / (double)n : NAN;
}

int ml_draw_heatmap(const ml_plot *p, ml_surface *s, ml_region r) {
    char buf[32];
    int64_t skipped = heat_skipped(p);
    const char *title = p->text[ML_PLOT_TITLE];
    int top = title ? 1 : 0;
    int lw = 0, longest_col = 0;
    for (int64_t i = 0; i < p->rows; i++) {
        int len = ml_utf8_len(label(p, ML_AXIS_Y, i, buf, sizeof buf));
        if (len > lw) lw = len;
    }
    for (int64_t j = 0; j < p->cols; j++) {
        int len = ml_utf8_len(label(p, ML_AXIS_X, j, buf, sizeof buf));
        if (len > longest_col) longest_col = len;
    }
    if (lw > r.w / 3) lw = r.w / 3;
    int col0 = lw + 1, avail_w = r.w - col0;
    int avail_h = r.h - top - 2 - (skipped ? 1 : 0);
    if (avail_w < 1 || avail_h < 1) return ml_failc("heatmap: %dx%d cells is too small for this plot", r.w, r.h);
    int dc = p->cols < avail_w ? (int)p->cols : avail_w, dr = p->rows < avail_h ? (int)p->rows : avail_h;
    int cw = avail_w / dc, widest = longest_col + 1 > 2 ? longest_col + 1 : 2;
    if (cw > widest) cw = widest;
    /* the scale: fixed limits, or the finite range of the matrix */
    double lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < p->rows * p->cols; i++)
        if (isfinite(p->matrix[i])) {
            if (p->matrix[i] < lo) lo = p->matrix[i];
            if (p->matrix[i] > hi) hi = p->matrix[i];
        }
    if (p->has_lim[ML_AXIS_Z]) lo = p->lim[ML_AXIS_Z][0], hi = p->lim[ML_AXIS_Z][1];
    if (!(lo <= hi)) lo = 0, hi = 1; /* nothing finite */
    if (title) ml_put_centered(s, r, 0, 0, r.w, title, ML_COLOR_DEFAULT);
    /* column labels: those that fit, each at the left edge of its column */
    int last_end = -1;
    for (int j = 0; j < dc; j++) {
        const char *text = label(p, ML_AXIS_X, (int64_t)j * p->cols / dc, buf, sizeof buf);
        int start = col0 + j * cw, len = ml_utf8_len(text);
        if (start <= last_end || start + len > r.w) continue;
        ml_put_text(s, r, top, start, text, len, ML_COLOR_DEFAULT);
        last_end = start + len;
    }
    for (int i = 0; i < dr; i++) {
        int64_t r0 = (int64_t)i * p->rows / dr, r1 = ((int64_t)i + 1) * p->rows / dr;
        ml_put_text(s, r, top + 1 + i, 0, label(p, ML_AXIS_Y, r0, buf, sizeof buf), lw, ML_COLOR_DEFAULT);
        for (int j = 0; j < dc; j++) {
            double v = block_mean(p, r0, r1, (int64_t)j * p->cols / dc, ((int64_t)j + 1) * p->cols / dc);
            if (isnan(v)) continue;
            uint32_t cp;
            uint8_t color;
            shade(s, hi > lo ? (v - lo) / (hi - lo) : 0.5, &cp, &color);
            for (int k = 0; k < cw; k++) s->put(s, r.row + top + 1 + i, r.col + col0 + j * cw + k, cp, color);
        }
    }
    /* the scale line: low value, every shade once, high value */
    char lo_text[32], hi_text[32];
    ml_format_number(lo, 3, lo_text, sizeof lo_text);
    ml_format_number(hi, 3, hi_text, sizeof hi_text);
    int levels = s->ascii ? 9 : 5, row = top + 1 + dr;
    int need = (int)strlen(lo_text) + 1 + levels + 1 + (int)strlen(hi_text);
    int col = col0 + need <= r.w ? col0 : 0;
    col += ml_put_text(s, r, row, col, lo_text, r.w, ML_COLOR_DEFAULT) + 1;
    for (int k = 0; k < levels && col < r.w; k++, col++) {
        uint32_t cp;
        uint8_t color;
        shade(s, (k + 0.5) / levels, &cp, &color);
        s->put(s, r.row + row, r.col + col, cp, color);
    }
    ml_put_text(s, r, row, col + 1, hi_text, r.w, ML_COLOR_DEFAULT);
    ml_put_note(s, r, row + 1, skipped, "cell");
    return 0;
}
