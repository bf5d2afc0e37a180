/* bound_centre.c -- what the local bounds need to know of the unperturbed
 * forward: every module's sizes, and for LayerNorm, attention and the MoE
 * layers a few statistics per sample (bound_internal.h), recorded through the
 * forward's per-module hook. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/shape.h"
#include "bound_internal.h"
#include "opnorm.h"

static void capture_fail(bound_capture *c) {
    if (!c->failed) snprintf(c->error, sizeof c->error, "%s", ml_last_error());
    c->failed = true;
}

const bound_rec *bound_capture_find(const bound_capture *c, const char *path) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->recs[i].path, path)) return &c->recs[i];
    return NULL;
}

void bound_capture_free(bound_capture *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->recs[i].path);
        free(c->recs[i].v);
        free(c->recs[i].q);
        free(c->recs[i].P);
    }
    free(c->recs);
    memset(c, 0, sizeof *c);
}

/* The record of path: a new one, or NULL when the module already ran in this
 * forward (it is then marked as having no single centre). -1 when out of memory. */
static int capture_add(bound_capture *c, const char *path, ml_tensor *x, ml_tensor *y, bound_rec **out) {
    *out = NULL;
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->recs[i].path, path)) {
            c->recs[i].calls++;
            return 0;
        }
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 32;
        bound_rec *p = realloc(c->recs, sizeof *p * (size_t)cap);
        if (!p) return ml_failc("out of memory");
        c->recs = p;
        c->cap = cap;
    }
    bound_rec *r = &c->recs[c->n];
    *r = (bound_rec){.path = strdup(path), .calls = 1, .in_numel = ml_numel(x) / c->B, .out_numel = ml_numel(y) / c->B};
    if (!r->path) return ml_failc("out of memory");
    if (x->ndim == 4) r->hw = x->shape[2] * x->shape[3];
    c->n++;
    *out = r;
    return 0;
}

static double *doubles(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(double)); }

/* The standard deviation (over the last dimension, as LayerNorm computes it) of every row. */
static int stats_layernorm(bound_capture *c, bound_rec *r, ml_tensor *x) {
    int64_t D = x->shape[x->ndim - 1], rows = D ? ml_numel(x) / D : 0;
    if (rows % c->B) return ml_failc("LayerNorm '%s': %" PRId64 " rows for %" PRId64 " samples", r->path, rows, c->B);
    r->rows = rows / c->B;
    ml_tensor *xc = ml_contiguous(x);
    if (!xc || !(r->v = doubles(rows))) {
        ml_release(xc);
        return xc ? ml_failc("out of memory") : -1;
    }
    for (int64_t i = 0; i < rows; i++) {
        const float *row = ml_f32(xc) + i * D;
        double mean = 0, var = 0;
        for (int64_t j = 0; j < D; j++) mean += row[j];
        mean /= (double)D;
        for (int64_t j = 0; j < D; j++) var += ((double)row[j] - mean) * ((double)row[j] - mean);
        r->v[i] = sqrt(var / (double)D);
    }
    ml_release(xc);
    return 0;
}

int bound_config_int(const ml_module *m, const char *key, int def, int *out) {
    cJSON *cfg = ml_module_config(m);
    if (!cfg) return -1;
    int rc = ml_cfg_int(cfg, key, def, out);
    cJSON_Delete(cfg);
    return rc;
}

/* Per sample and head: the centre's Q, K, V and attention matrix, summarised. */
static int stats_attention(bound_capture *c, bound_rec *r, const ml_module *m, ml_tensor *x) {
    int heads;
    if (bound_config_int(m, "heads", 1, &heads)) return -1;
    if (x->ndim != 3 || x->shape[0] != c->B)
        return ml_failc("Attention '%s': input %s, expected [%" PRId64 ", T, D]", r->path, ML_SHAPE_STR(x), c->B);
    int64_t B = c->B, T = x->shape[1], D = x->shape[2], d = D / heads;
    r->rows = T;
    r->heads = heads;
    r->v = doubles(B * heads * 5);
    r->q = doubles(B * heads * T);
    r->P = doubles(B * heads * T * T);
    if (!r->v || !r->q || !r->P) return ml_failc("out of memory for the attention matrices of '%s'", r->path);
    ml_module *qkvm = ml_module_child(m, "qkv");
    ml_tensor *qkv = qkvm ? ml_module_forward(qkvm, x, NULL) : NULL, *qc = qkv ? ml_contiguous(qkv) : NULL;
    ml_release(qkv);
    int64_t ks[2] = {T, d};
    ml_tensor *K = qc ? ml_empty(ML_F32, 2, ks) : NULL;
    double *col = K ? doubles(T) : NULL, *vbar = col ? doubles(d) : NULL;
    int rc = vbar ? 0 : -1;
    if (!rc && qc->shape[2] != 3 * D) rc = ml_failc("Attention '%s': qkv gives %s", r->path, ML_SHAPE_STR(qc));
    for (int64_t s = 0; s < B && !rc; s++)
        for (int h = 0; h < heads && !rc; h++) {
            const float *base = ml_f32(qc) + s * T * 3 * D;
#define Q_(t, j) base[(t) * 3 * D + h * d + (j)]
#define K_(t, j) base[(t) * 3 * D + D + h * d + (j)]
#define V_(t, j) base[(t) * 3 * D + 2 * D + h * d + (j)]
            double qf = 0, kmax = 0;
            double *qn = r->q + (s * heads + h) * T, *P = r->P + (s * heads + h) * T * T;
            for (int64_t t = 0; t < T; t++) {
                double q2 = 0, k2 = 0;
                for (int64_t j = 0; j < d; j++) {
                    q2 += (double)Q_(t, j) * Q_(t, j);
                    k2 += (double)K_(t, j) * K_(t, j);
                    ml_f32(K)[t * d + j] = K_(t, j);
                }
                qn[t] = sqrt(q2);
                qf += q2;
                kmax = fmax(kmax, sqrt(k2));
            }
            double kn = ml_opnorm_spectral(K);
            if (isnan(kn)) {
                rc = -1;
                break;
            }
            for (int64_t j = 0; j < d; j++) {
                vbar[j] = 0;
                for (int64_t t = 0; t < T; t++) vbar[j] += V_(t, j);
                vbar[j] /= (double)T;
            }
            double rv = 0, colmax = 0, scale = 1.0 / sqrt((double)d);
            for (int64_t t = 0; t < T; t++) {
                double n2 = 0;
                for (int64_t j = 0; j < d; j++) n2 += ((double)V_(t, j) - vbar[j]) * ((double)V_(t, j) - vbar[j]);
                rv = fmax(rv, sqrt(n2));
                col[t] = 0;
            }
            for (int64_t i = 0; i < T; i++) {
                double mx = -INFINITY, z = 0;
                for (int64_t t = 0; t < T; t++) {
                    double dot = 0;
                    for (int64_t j = 0; j < d; j++) dot += (double)Q_(i, j) * K_(t, j);
                    P[i * T + t] = dot * scale;
                    mx = fmax(mx, P[i * T + t]);
                }
                for (int64_t t = 0; t < T; t++) z += (P[i * T + t] = exp(P[i * T + t] - mx));
                for (int64_t t = 0; t < T; t++) col[t] += (P[i * T + t] /= z);
            }
            for (int64_t t = 0; t < T; t++) colmax = fmax(colmax, col[t]);
#undef Q_
#undef K_
#undef V_
            double *o = r->v + (s * heads + h) * 5;
            o[0] = kn;
            o[1] = sqrt(qf) * (1 + 1e-12);
            o[2] = rv * (1 + 1e-12);
            o[3] = colmax * (1 + 1e-12);
            o[4] = kmax * (1 + 1e-12);
        }
    ml_release(qc);
    ml_release(K);
    free(col);
    free(vbar);
    return rc;
}

/* The norm of every expert's output on every token of a token MoE. */
static int stats_moe(bound_rec *r, const ml_module *m, ml_tensor *x) {
    ml_module *experts = ml_module_child(m, "experts");
    if (!experts) return ml_failc("%s '%s': no experts", m->type->name, r->path);
    int64_t D = x->shape[x->ndim - 1], T = ml_numel(x) / D, E = experts->n_children, rows[2] = {-1, D};
    r->rows = T;
    if (!(r->v = doubles(T * E))) return ml_failc("out of memory");
    ml_tensor *X = ml_reshape(x, 2, rows);
    int rc = X ? 0 : -1;
    for (int64_t e = 0; e < E && !rc; e++) {
        ml_tensor *y = ml_module_forward(experts->children[e].m, X, NULL), *yc = y ? ml_contiguous(y) : NULL;
        if (!yc || yc->ndim != 2 || yc->shape[0] != T) {
            if (yc) ml_fail("%s '%s': expert %" PRId64 " returned %s", m->type->name, r->path, e + 1, ML_SHAPE_STR(yc));
            rc = -1;
        }
        for (int64_t t = 0; t < T && !rc; t++) {
            double n2 = 0;
            const float *row = ml_f32(yc) + t * yc->shape[1];
            for (int64_t j = 0; j < yc->shape[1]; j++) n2 += (double)row[j] * row[j];
            r->v[t * E + e] = sqrt(n2) * (1 + 1e-12);
        }
        ml_release(y);
        ml_release(yc);
    }
    ml_release(X);
    return rc;
}

static int stats_conv(bound_capture *c, bound_rec *r, ml_tensor *y) {
    ml_tensor *yc = ml_contiguous(y);
    if (!yc || !(r->v = doubles(c->B))) {
        ml_release(yc);
        return yc ? ml_failc("out of memory") : -1;
    }
    int64_t per = ml_numel(yc) / c->B;
    for (int64_t s = 0; s < c->B; s++) {
        double n2 = 0;
        for (int64_t j = 0; j < per; j++) n2 += (double)ml_f32(yc)[s * per + j] * ml_f32(yc)[s * per + j];
        r->v[s] = sqrt(n2) * (1 + 1e-12);
    }
    ml_release(yc);
    return 0;
}

void bound_capture_hook(void *ud, const char *path, const ml_module *m, ml_tensor *x, ml_tensor *y, int64_t flops,
                        double seconds) {
    bound_capture *c = ud;
    if (c->failed) return;
    if (x->ndim < 1 || x->shape[0] != c->B || y->ndim < 1 || y->shape[0] != c->B) return; /* not per sample */
    bound_rec *r;
    if (capture_add(c, path, x, y, &r)) {
        capture_fail(c);
        return;
    }
    if (!r) return;
    const char *type = m->type->name;
    int rc = 0;
    if (!strcmp(type, "LayerNorm")) rc = stats_layernorm(c, r, x);
    else if (!strcmp(type, "Attention")) rc = stats_attention(c, r, m, x);
    else if (!strcmp(type, "TokenMoE") || !strcmp(type, "SmoothMoE")) rc = stats_moe(r, m, x);
    else if (!strcmp(type, "MoEConv2d")) rc = stats_conv(c, r, y);
    if (rc) capture_fail(c);
}
