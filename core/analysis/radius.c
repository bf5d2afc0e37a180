/* radius.c -- the certified routing radius (radius.h). */
#include "radius.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "bound.h"
#include "router.h"

#define MARGIN_ALLOWANCE 0x1p-20

double ml_router_space_radius(const float *logits, const int64_t *sel, int K, int E, const double *dn) {
    double best = INFINITY;
    for (int a = 0; a < K; a++) {
        int64_t i = sel[a];
        for (int64_t j = 0; j < E; j++) {
            bool selected = false;
            for (int c = 0; c < K && !selected; c++) selected = sel[c] == j;
            if (selected) continue;
            double si = logits[i], sj = logits[j];
            double m = si - sj - MARGIN_ALLOWANCE * (fabs(si) + fabs(sj));
            double r = m <= 0 ? 0 : dn[i * E + j] > 0 ? m / dn[i * E + j] : INFINITY;
            best = fmin(best, r);
        }
    }
    return best;
}

/* ||w_i - w_j||_q for every pair of router rows (q = 2, or 1 for l_inf). */
static double *pair_norms(const ml_tensor *W, bool l1) {
    ml_tensor *wc = ml_contiguous((ml_tensor *)W);
    int64_t E = W->shape[0], D = W->shape[1];
    double *dn = wc ? malloc(sizeof *dn * (size_t)(E * E)) : NULL;
    for (int64_t i = 0; dn && i < E; i++)
        for (int64_t j = 0; j < E; j++) {
            double s = 0;
            for (int64_t k = 0; k < D; k++) {
                double d = (double)ml_f32(wc)[i * D + k] - (double)ml_f32(wc)[j * D + k];
                s += l1 ? fabs(d) : d * d;
            }
            dn[i * E + j] = l1 ? s : sqrt(s);
        }
    if (wc && !dn) ml_fail("out of memory");
    ml_release(wc);
    return dn;
}

/* A radius as float, rounded towards 0 (the certificate must not grow). */
static float down(double r) {
    float f = (float)r;
    return (double)f > r ? nextafterf(f, 0.0f) : f;
}

void ml_radius_free(ml_radius *r) {
    for (int i = 0; r->layers && i < r->n; i++) {
        ml_release(r->layers[i].radius);
        ml_release(r->layers[i].router_radius);
        ml_release(r->layers[i].sample_radius);
    }
    free(r->layers);
    ml_trace_free(r->trace);
    memset(r, 0, sizeof *r);
}

/* The largest eps found with the router deviation of item t of sample s
 * below rz (a verified value: the certificate holds at it). */
typedef struct {
    const ml_bound *b;
    int layer;
    int64_t s;
    ml_radius_norm norm;
    const double *const *rz;
    const double *batch_radius;
    double *dz; /* [items per sample] scratch */
    bool failed;
} inverse;

static bool holds(inverse *v, int64_t t, double rz, double eps) {
    if (ml_bound_router_deviation(v->b, v->layer, v->s, v->norm, eps, v->rz, v->batch_radius, v->dz)) {
        v->failed = true;
        return false;
    }
    return v->dz[t] < rz;
}

static double invert(inverse *v, int64_t t, double rz) {
    if (!(rz > 0)) return 0;
    /* the gain at a tiny eps: exact for a chain of linear maps, a good start otherwise */
    double e0 = 1e-9;
    while (!holds(v, t, rz, e0))
        if (v->failed || (e0 *= 1e-3) < 1e-18) return 0;
    double g = v->dz[t] / e0, lo, hi;
    if (!(g > 0)) { /* the router input does not move with the input */
        if (holds(v, t, rz, 1e12)) return INFINITY;
        lo = e0;
        hi = 1e12;
    } else {
        double guess = rz / g * (1 - 1e-12);
        if (holds(v, t, rz, guess)) {
            for (lo = guess, hi = 2 * guess; holds(v, t, rz, hi); lo = hi, hi *= 2)
                if (hi > 1e12) return INFINITY;
        } else {
            for (hi = guess, lo = guess / 2; !holds(v, t, rz, lo); hi = lo, lo /= 2)
                if (lo < e0) return e0; /* it held at e0 */
        }
    }
    for (int it = 0; it < 32 && !v->failed; it++) { /* 2^-32 of a factor-2 bracket */
        double mid = 0.5 * (lo + hi);
        if (holds(v, t, rz, mid)) lo = mid;
        else hi = mid;
    }
    return v->failed ? 0 : lo;
}

int ml_routing_radius(const char *fn, ml_module *model, ml_tensor *x, ml_radius_norm norm, ml_radius *out) {
    memset(out, 0, sizeof *out);
    if (norm != ML_RADIUS_L2 && norm != ML_RADIUS_LINF) return ml_failc("%s: unknown norm %d", fn, (int)norm);
    ml_trace *t = NULL;
    ml_bound *b = ml_bound_build(fn, model, x, &t);
    if (!b) return -1;
    int64_t B = x->shape[0];
    int L = t->n;
    out->trace = t;
    out->batch = B;
    out->norm = norm;
    out->input_size = ml_numel(x) / B;
    out->layers = calloc((size_t)(L ? L : 1), sizeof *out->layers);
    double **rz = calloc((size_t)(L ? L : 1), sizeof *rz), *batch_radius = calloc((size_t)(L ? L : 1), sizeof *batch_radius);
    int rc = out->layers && rz && batch_radius ? 0 : ml_failc("out of memory");
    bool grad = ml_grad_set(false);
    for (int i = 0; i < L && !rc; i++) {
        const ml_trace_layer *l = &t->layers[i];
        ml_radius_layer *o = &out->layers[i];
        out->n = i + 1;
        bool exact = ml_bound_exact(b, i);
        int64_t T = l->T, per = l->T / B;
        *o = (ml_radius_layer){.layer = l->name, .kind = l->kind, .T = T, .per_sample = per, .exact = exact};
        snprintf(o->note, sizeof o->note, "%s", ml_bound_note(b, i));
        o->radius = ml_empty(ML_F32, 1, &T);
        o->router_radius = ml_empty(ML_F32, 1, &T);
        o->sample_radius = ml_empty(ML_F32, 1, &B);
        rz[i] = malloc(sizeof **rz * (size_t)(T ? T : 1));
        ml_router_weights w;
        if (!o->radius || !o->router_radius || !o->sample_radius || !rz[i] || ml_router_weights_get(fn, model, t, i, &w)) {
            rc = rz[i] ? -1 : ml_failc("out of memory");
            break;
        }
        /* the l2 router-space radii drive the bound; the exact case reports the asked norm's */
        double *dn = pair_norms(w.weight, false), *dq = exact && norm == ML_RADIUS_LINF ? pair_norms(w.weight, true) : NULL;
        ml_router_weights_free(&w);
        if (!dn || (exact && norm == ML_RADIUS_LINF && !dq)) {
            free(dn);
            free(dq);
            rc = -1;
            break;
        }
        const float *logits = ml_f32(l->logits);
        const int64_t *sel = ml_i64(l->experts);
        for (int64_t it = 0; it < T; it++) {
            rz[i][it] = ml_router_space_radius(logits + it * l->E, sel + it * l->K, l->K, l->E, dn);
            double shown = dq ? ml_router_space_radius(logits + it * l->E, sel + it * l->K, l->K, l->E, dq) : rz[i][it];
            ml_f32(o->router_radius)[it] = down(shown);
        }
        free(dn);
        free(dq);
        /* samples are independent: each writes its own items */
        bool failed = false, stopped = false;
        const char *note = o->note;
#pragma omp parallel for schedule(dynamic, 1) reduction(||: failed, stopped) if (B > 1 && !exact && !note[0])
        for (int64_t s = 0; s < B; s++) {
            if (failed || stopped) continue;
            if (ml_interrupt_pending()) {
                stopped = true;
                continue;
            }
            double *dz = malloc(sizeof *dz * (size_t)(per ? per : 1));
            inverse v = {b, i, s, norm, (const double *const *)rz, batch_radius, dz, dz == NULL};
            for (int64_t k = 0; k < per && !v.failed; k++) {
                int64_t it = s * per + k;
                double r = exact ? ml_f32(o->router_radius)[it] : note[0] ? 0 : invert(&v, k, rz[i][it]);
                ml_f32(o->radius)[it] = down(r);
            }
            if (v.failed) failed = true;
            free(dz);
        }
        if (stopped) rc = ml_failc("interrupted");
        else if (failed) rc = ml_failc("out of memory");
        double batch_min = INFINITY;
        for (int64_t s = 0; s < B && !rc; s++) {
            double smin = INFINITY;
            for (int64_t it = s * per; it < (s + 1) * per; it++) smin = fmin(smin, ml_f32(o->radius)[it]);
            ml_f32(o->sample_radius)[s] = (float)smin;
            batch_min = fmin(batch_min, smin);
        }
        batch_radius[i] = ml_bound_blocks(b, i) ? 0 : ml_bound_coupled(b, i) ? batch_min : INFINITY;
    }
    ml_grad_set(grad);
    for (int i = 0; rz && i < L; i++) free(rz[i]);
    free(rz);
    free(batch_radius);
    ml_bound_free(b);
    if (rc) ml_radius_free(out);
    return rc;
}
