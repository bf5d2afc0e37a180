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

/* The largest rho (l2, input space) found with Delta_z(rho) < rz. */
static double invert(const ml_bound *b, int i, int64_t s, double rz, const double *rmin, const double *batch_radius) {
    if (!(rz > 0)) return 0;
#define HOLDS(rho) (ml_bound_router_deviation(b, i, s, (rho), rmin, batch_radius) < rz)
    double lo = 0, hi = 1e-3;
    while (HOLDS(hi)) {
        lo = hi;
        hi *= 4;
        if (hi > 1e12) return INFINITY; /* the router input does not move with the input */
    }
    for (int it = 0; it < 60 && hi - lo > 1e-15 * hi; it++) {
        double mid = 0.5 * (lo + hi);
        if (HOLDS(mid)) lo = mid;
        else hi = mid;
    }
#undef HOLDS
    return lo;
}

int ml_routing_radius(const char *fn, ml_module *model, ml_tensor *x, ml_radius_norm norm, ml_radius *out) {
    memset(out, 0, sizeof *out);
    if (norm != ML_RADIUS_L2 && norm != ML_RADIUS_LINF) return ml_failc("%s: unknown norm %d", fn, (int)norm);
    ml_trace *t = NULL;
    ml_bound *b = ml_bound_build(fn, model, x, &t);
    if (!b) return -1;
    int64_t B = x->shape[0], L = t->n;
    out->trace = t;
    out->batch = B;
    out->norm = norm;
    out->input_size = ml_numel(x) / B;
    out->layers = calloc((size_t)(L ? L : 1), sizeof *out->layers);
    double *rmin = malloc(sizeof *rmin * (size_t)((L ? L : 1) * B)), *batch_radius = malloc(sizeof *batch_radius * (size_t)(L ? L : 1));
    double *rz = NULL, *dn = NULL;
    int rc = out->layers && rmin && batch_radius ? 0 : ml_failc("out of memory");
    bool grad = ml_grad_set(false);
    double linf_scale = 1.0 / sqrt((double)out->input_size);
    for (int i = 0; i < L && !rc; i++) {
        const ml_trace_layer *l = &t->layers[i];
        ml_radius_layer *o = &out->layers[i];
        out->n = i + 1;
        bool exact = ml_bound_exact(b, i);
        *o = (ml_radius_layer){.layer = l->name, .kind = l->kind, .T = l->T, .per_sample = l->T / B, .exact = exact};
        snprintf(o->note, sizeof o->note, "%s", ml_bound_note(b, i));
        int64_t T = l->T;
        o->radius = ml_empty(ML_F32, 1, &T);
        o->router_radius = ml_empty(ML_F32, 1, &T);
        o->sample_radius = ml_empty(ML_F32, 1, &B);
        ml_router_weights w;
        if (!o->radius || !o->router_radius || !o->sample_radius || ml_router_weights_get(fn, model, t, i, &w)) {
            rc = -1;
            break;
        }
        /* the l2 router-space radii drive the bisection; the exact case
         * reports the asked norm's */
        free(dn);
        dn = pair_norms(w.weight, false);
        double *dq = exact && norm == ML_RADIUS_LINF ? pair_norms(w.weight, true) : NULL;
        ml_router_weights_free(&w);
        free(rz);
        rz = malloc(sizeof *rz * (size_t)T);
        if (!dn || !rz || (exact && norm == ML_RADIUS_LINF && !dq)) {
            free(dq);
            rc = ml_failc("out of memory");
            break;
        }
        const float *logits = ml_f32(l->logits);
        const int64_t *sel = ml_i64(l->experts);
        int64_t per = o->per_sample;
        for (int64_t s = 0; s < B; s++) rmin[(int64_t)i * B + s] = INFINITY;
        for (int64_t it = 0; it < T; it++) {
            rz[it] = ml_router_space_radius(logits + it * l->E, sel + it * l->K, l->K, l->E, dn);
            rmin[(int64_t)i * B + it / per] = fmin(rmin[(int64_t)i * B + it / per], rz[it]);
            double shown = dq ? ml_router_space_radius(logits + it * l->E, sel + it * l->K, l->K, l->E, dq) : rz[it];
            ml_f32(o->router_radius)[it] = down(shown);
        }
        double batch_min = INFINITY;
        for (int64_t s = 0; s < B && !rc; s++) {
            if (ml_interrupted()) {
                rc = -1;
                break;
            }
            double smin = INFINITY, smin2 = INFINITY;
            for (int64_t it = s * per; it < (s + 1) * per; it++) {
                double r2;
                if (exact) r2 = rz[it];
                else if (o->note[0]) r2 = 0;
                else r2 = invert(b, i, s, rz[it], rmin, batch_radius);
                double r = exact ? ml_f32(o->router_radius)[it] : norm == ML_RADIUS_LINF ? r2 * linf_scale : r2;
                ml_f32(o->radius)[it] = down(r);
                smin = fmin(smin, r);
                smin2 = fmin(smin2, r2);
            }
            ml_f32(o->sample_radius)[s] = down(smin);
            batch_min = fmin(batch_min, smin2);
        }
        free(dq);
        batch_radius[i] = ml_bound_blocks(b, i) ? 0 : ml_bound_coupled(b, i) ? batch_min : INFINITY;
    }
    ml_grad_set(grad);
    free(rz);
    free(dn);
    free(rmin);
    free(batch_radius);
    ml_bound_free(b);
    if (rc) ml_radius_free(out);
    return rc;
}
