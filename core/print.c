/* print.c -- tensors as text, PyTorch-style, summarised when large.
 *
 *   tensor([[ 0.1234, -1.2000],
 *           [ 3.0000,  4.0000]])
 *   [float32 tensor of shape 2x2]
 *
 * Above opts->threshold elements only `edgeitems` entries are shown at each
 * end of every dimension, with "..." between, so printing never floods a
 * terminal. */
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "print.h"

typedef struct {
    char *s;
    size_t n, cap;
} sbuf;

static void sb_add(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_add(sbuf *b, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (k < 0) return;
    if (b->n + (size_t)k + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256) + (size_t)k;
        char *s = realloc(b->s, cap);
        if (!s) return;
        b->s = s;
        b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->s + b->n, b->cap - b->n, fmt, ap);
    va_end(ap);
    b->n += (size_t)k;
}

typedef enum { FMT_INT, FMT_FLOATINT, FMT_FIXED, FMT_SCI } fmt_kind;

typedef struct {
    const ml_tensor *t;
    const ml_print_opts *o;
    bool summarise;
    fmt_kind kind;
    int width;
    int prec;
} pctx;

/* The next shown position of dimension d after i (i = -1: the first): the
 * loops jump over the hidden middle instead of visiting it (a broadcast view
 * of 2^58 elements once took forever to print). */
static int64_t next_shown(const pctx *c, int d, int64_t i) {
    int64_t n = c->t->shape[d], e = c->o->edgeitems;
    if (!c->summarise || n <= 2 * e || i + 1 < e) return i + 1;
    return i + 1 > n - e ? i + 1 : n - e;
}

static void fmt_value(const pctx *c, double v, char *buf, size_t n) {
    if (c->kind == FMT_INT) snprintf(buf, n, "%" PRId64, (int64_t)v);
    else if (isnan(v)) snprintf(buf, n, "nan");
    else if (isinf(v)) snprintf(buf, n, v > 0 ? "inf" : "-inf");
    else if (c->kind == FMT_FLOATINT) snprintf(buf, n, "%.0f.", v);
    else if (c->kind == FMT_SCI) snprintf(buf, n, "%.*e", c->prec, v);
    else snprintf(buf, n, "%.*f", c->prec, v);
}

/* Visits every shown element (for choosing the format). */
static void scan(pctx *c, int d, int64_t *idx, double *amax, double *amin, bool *allint, bool *any) {
    const ml_tensor *t = c->t;
    if (d == t->ndim) {
        double v = ml_get(t, idx);
        if (!isfinite(v)) return;
        double a = fabs(v);
        *any = true;
        if (a > *amax) *amax = a;
        if (a > 0 && a < *amin) *amin = a;
        if (v != floor(v)) *allint = false;
        return;
    }
    for (int64_t i = next_shown(c, d, -1); i < t->shape[d]; i = next_shown(c, d, i)) {
        idx[d] = i;
        scan(c, d + 1, idx, amax, amin, allint, any);
    }
}

static void widths(pctx *c, int d, int64_t *idx) {
    const ml_tensor *t = c->t;
    if (d == t->ndim) {
        char num[64];
        fmt_value(c, ml_get(t, idx), num, sizeof num);
        int w = (int)strlen(num);
        if (w > c->width) c->width = w;
        return;
    }
    for (int64_t i = next_shown(c, d, -1); i < t->shape[d]; i = next_shown(c, d, i)) {
        idx[d] = i;
        widths(c, d + 1, idx);
    }
}

static void emit(pctx *c, sbuf *b, int d, int64_t *idx, int indent) {
    const ml_tensor *t = c->t;
    char num[64];
    if (t->ndim == 0) {
        fmt_value(c, ml_get(t, idx), num, sizeof num);
        sb_add(b, "%s", num);
        return;
    }
    sb_add(b, "[");
    int64_t n = t->shape[d];
    int col = indent + 1;
    for (int64_t prev = -1, i = next_shown(c, d, -1); i < n; prev = i, i = next_shown(c, d, i)) {
        if (i > prev + 1) { /* the hidden middle */
            if (d == t->ndim - 1) {
                sb_add(b, " ...,");
                col += 5;
            } else {
                sb_add(b, "...,");
                for (int k = 0; k <= t->ndim - d - 2; k++) sb_add(b, "\n");
                sb_add(b, "%*s", indent + 1, "");
            }
        }
        idx[d] = i;
        if (d == t->ndim - 1) {
            fmt_value(c, ml_get(t, idx), num, sizeof num);
            if (i > 0 && col + c->width + 2 > c->o->linewidth) {
                sb_add(b, "\n%*s", indent + 1, "");
                col = indent + 1;
            } else if (i > 0) {
                sb_add(b, " ");
                col++;
            }
            sb_add(b, "%*s", c->width, num);
            col += c->width;
            if (i < n - 1) {
                sb_add(b, ",");
                col++;
            }
        } else {
            emit(c, b, d + 1, idx, indent + 1);
            if (i < n - 1) {
                sb_add(b, ",");
                int blank = t->ndim - d - 2; /* blank lines between blocks, as PyTorch */
                for (int k = 0; k <= blank; k++) sb_add(b, "\n");
                sb_add(b, "%*s", indent + 1, "");
            }
        }
    }
    sb_add(b, "]");
}

char *ml_format(const ml_tensor *t, const ml_print_opts *opts) {
    ml_print_opts def = {4, 1000, 3, 80};
    if (!opts) opts = &def;
    pctx c = {.t = t, .o = opts, .prec = opts->precision};
    c.summarise = ml_numel(t) > opts->threshold;
    sbuf b = {0};
    int64_t idx[ML_MAX_DIMS] = {0};
    if (t->dtype == ML_I64) {
        c.kind = FMT_INT;
    } else {
        double amax = 0, amin = INFINITY;
        bool allint = true, any = false;
        scan(&c, 0, idx, &amax, &amin, &allint, &any);
        if (!any || (allint && amax < 1e8)) c.kind = FMT_FLOATINT;
        else if (amax >= 1e8 || (amin < 1e-4 && amax / amin > 1e3) || amax / (amin < INFINITY ? amin : 1) >= 1e5)
            c.kind = FMT_SCI;
        else c.kind = FMT_FIXED;
    }
    /* width = widest shown value */
    c.width = 1;
    if (ml_numel(t) > 0) widths(&c, 0, idx);
    sb_add(&b, "tensor(");
    if (ml_numel(t) == 0 && t->ndim > 0) sb_add(&b, "[]");
    else emit(&c, &b, 0, idx, 7);
    if (t->ndim == 0) sb_add(&b, ")\n[%s scalar", ml_dtype_name(t->dtype));
    else sb_add(&b, ")\n[%s tensor of shape ", ml_dtype_name(t->dtype));
    for (int d = 0; d < t->ndim; d++) sb_add(&b, d ? "x%" PRId64 : "%" PRId64, t->shape[d]);
    if (t->grad_fn) sb_add(&b, ", grad_fn=%s", t->grad_fn->op);
    else if (t->requires_grad) sb_add(&b, ", requires_grad");
    sb_add(&b, "]");
    if (!b.s) return strdup("tensor(?)");
    return b.s;
}
