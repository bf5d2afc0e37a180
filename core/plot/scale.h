/* scale.h -- axes of a plot: data to position, nice round ticks, log ticks,
 * and the short number formats of tick labels and values. */
#ifndef ML_PLOT_SCALE_H
#define ML_PLOT_SCALE_H

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    double lo, hi; /* lo < hi; both > 0 on a log axis */
    bool log;
    double step;   /* tick step of a linear axis widened to it, else 0 (chosen by ml_axis_ticks) */
} ml_axis;

#define ML_MAX_TICKS 64

/* Where v lies along the axis: 0 at lo, 1 at hi (outside for values outside). */
double ml_axis_frac(const ml_axis *a, double v);
/* Axis limits for data in [lo, hi] (finite, lo <= hi): a single value is
 * widened (by 10% or to +-1 around 0; a decade each way on a log axis);
 * `extend` widens a linear axis outward to the nice tick step for about
 * `target` ticks (so an accuracy curve reads 0 .. 1). */
ml_axis ml_axis_auto(double lo, double hi, bool log, bool extend, int target);
/* About `target` ticks inside the axis: multiples of a nice step (1, 2 or 5
 * times a power of ten), or powers of ten (and 2x, 5x when a log axis spans
 * less than a decade). Returns the count (<= ML_MAX_TICKS); *step is the
 * linear step (0 for decades). */
int ml_axis_ticks(const ml_axis *a, int target, double *ticks, double *step);
/* Tick label: as many decimals as the step needs, exponent form for very
 * large or small values. */
void ml_tick_label(double v, double step, char *buf, size_t n);
/* A value in `digits` significant digits, with a compact exponent (1e-5). */
void ml_format_number(double v, int digits, char *buf, size_t n);
/* 1, 2 or 5 times a power of ten, close to span / target. */
double ml_nice_step(double span, int target);

#endif
