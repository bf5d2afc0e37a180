/* scale.c -- see scale.h. */
#include "scale.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

double ml_axis_frac(const ml_axis *a, double v) {
    if (a->log) return (log10(v) - log10(a->lo)) / (log10(a->hi) - log10(a->lo));
    return (v - a->lo) / (a->hi - a->lo);
}

double ml_nice_step(double span, int target) {
    if (target < 1) target = 1;
    double raw = span / target;
    double mag = pow(10, floor(log10(raw)));
    double f = raw / mag;
    double nice = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
    return nice * mag;
}

ml_axis ml_axis_auto(double lo, double hi, bool log, bool extend, int target) {
    ml_axis a = {lo, hi, log, 0};
    if (log) {
        if (lo == hi) a.lo = lo / 10, a.hi = hi * 10;
        return a;
    }
    if (lo == hi) {
        double d = lo == 0 ? 1 : fabs(lo) * 0.1;
        a.lo = lo - d, a.hi = hi + d;
        return a;
    }
    if (extend && isfinite(a.hi - a.lo)) {
        double step = ml_nice_step(a.hi - a.lo, target);
        /* the small slack keeps a limit that already is a multiple of the step */
        a.lo = floor(a.lo / step + 1e-9) * step;
        a.hi = ceil(a.hi / step - 1e-9) * step;
        a.step = step; /* the ticks keep it: recomputed over the wider span it could double */
    }
    return a;
}

/* Linear ticks: multiples of a nice step inside [lo, hi]. */
static int linear_ticks(double lo, double hi, double step, double *ticks, double *step_out) {
    *step_out = step;
    if (!isfinite(step) || !(step > 0) || !isfinite(lo / step) || !isfinite(hi / step)) return 0; /* a span past doubles */
    double k0 = ceil(lo / step - 1e-9), k1 = floor(hi / step + 1e-9);
    int n = 0;
    for (double k = k0; k <= k1 && n < ML_MAX_TICKS; k++) {
        double v = k * step;
        if (fabs(v) < step * 1e-9) v = 0; /* no "-0" and no 1e-17 */
        ticks[n++] = v;
    }
    return n;
}

int ml_axis_ticks(const ml_axis *a, int target, double *ticks, double *step) {
    if (target < 2) target = 2;
    if (!a->log) return linear_ticks(a->lo, a->hi, a->step > 0 ? a->step : ml_nice_step(a->hi - a->lo, target), ticks, step);
    *step = 0;
    double l0 = log10(a->lo), l1 = log10(a->hi);
    int k0 = (int)ceil(l0 - 1e-9), k1 = (int)floor(l1 + 1e-9);
    int decades = k1 - k0 + 1;
    int n = 0;
    if (decades >= 2) {
        int stride = (decades + target - 1) / target;
        for (int k = k0; k <= k1 && n < ML_MAX_TICKS; k++)
            if (((k % stride) + stride) % stride == 0) ticks[n++] = pow(10, k);
        if (n >= 2) return n;
        n = 0;
        for (int k = k0; k <= k1 && n < ML_MAX_TICKS; k++) ticks[n++] = pow(10, k);
        return n;
    }
    /* less than two decades: 1, 2 and 5 times the powers of ten inside */
    static const double mult[3] = {1, 2, 5};
    for (int k = (int)floor(l0) - 1; k <= (int)ceil(l1) && n < ML_MAX_TICKS; k++)
        for (int m = 0; m < 3 && n < ML_MAX_TICKS; m++) {
            double v = mult[m] * pow(10, k);
            if (v >= a->lo * (1 - 1e-9) && v <= a->hi * (1 + 1e-9)) ticks[n++] = v;
        }
    if (n >= 2) return n;
    /* a narrow range (3 .. 4): plain linear ticks, placed on the log scale */
    return linear_ticks(a->lo, a->hi, ml_nice_step(a->hi - a->lo, target), ticks, step);
}

/* "1e+06" -> "1e6", "1e-05" -> "1e-5" */
static void compact_exponent(char *buf) {
    char *e = strchr(buf, 'e');
    if (!e) return;
    char *p = e + 1, *q = e + 1;
    if (*p == '+') p++;
    else if (*p == '-') *q++ = *p++;
    while (*p == '0' && p[1]) p++;
    memmove(q, p, strlen(p) + 1);
}

void ml_format_number(double v, int digits, char *buf, size_t n) {
    if (isnan(v)) {
        snprintf(buf, n, "nan");
        return;
    }
    if (isinf(v)) {
        snprintf(buf, n, v > 0 ? "inf" : "-inf");
        return;
    }
    if (v == 0) v = 0; /* -0 prints as 0 */
    snprintf(buf, n, "%.*g", digits, v);
    compact_exponent(buf);
}

void ml_tick_label(double v, double step, char *buf, size_t n) {
    if (step <= 0) { /* log decades: 0.001 .. 10000 plainly, else 1e-5 */
        double e = log10(fabs(v));
        if (v != 0 && (e < -3.5 || e > 4.5)) snprintf(buf, n, "%.0e", v), compact_exponent(buf);
        else ml_format_number(v, 6, buf, n);
        return;
    }
    int decimals = (int)ceil(-log10(step) - 1e-9);
    if (decimals < 0) decimals = 0;
    if (decimals > 4 || fabs(v) >= 1e6) { /* exponent form with the digits the step needs */
        int digits = v == 0 ? 1 : (int)floor(log10(fabs(v) / step) + 1e-9) + 1;
        ml_format_number(v, digits < 1 ? 1 : digits > 15 ? 15 : digits, buf, n);
        return;
    }
    if (v == 0) v = 0;
    snprintf(buf, n, "%.*f", decimals, v);
}
