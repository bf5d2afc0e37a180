/* bound.c -- the deviation program behind the certified routing radius
 * (bound.h; the derivation of every rule is in docs/ANALYSIS.md). */
#include "bound.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "../nn/moe/moe_conv.h"
#include "../nn/moe/route.h"
#include "../ops/shape.h"
#include "../theory/theory.h"
#include "router.h"

#define SQRT2 1.4142135623730951

/* snprintf that may cut the text short (names in notes and paths). */
static void text(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void text(char *dst, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

/* 0 x anything = 0: every factor here that is exactly 0 belongs to a map that
 * does not move (a zero weight, values that are all equal), whatever the
 * other factor, even an infinite one. */
static double mul(double a, double b) { return a == 0 || b == 0 ? 0 : a * b; }

/* ------------------------------------------------------------ centre statistics */
typedef enum { REC_LN, REC_ATTN, REC_MOE, REC_CONV, REC_GAP } rec_kind;

typedef struct {
    char *path;
    rec_kind kind;
    double *v;      /* LN: [B] smallest token std; ATTN: [B][H][4] ||K||_2, ||Q||_F, R_V, max column sum of P;
                       MOE: [T][E] norm of every expert's output on every token; CONV: [B] output norm */
    int64_t n;      /* entries of v */
    int64_t hw;     /* CONV, GAP: H * W of the input */
    int64_t tokens; /* ATTN: tokens per sample */
    int calls;      /* forwards of this module in the pass (a module run twice has no single centre) */
} rec;

typedef struct {
    int64_t B;
    rec *recs;
    int n, cap;
    bool failed;
    char error[512];
} capture;

static void capture_fail(capture *c) {
    if (!c->failed) snprintf(c->error, sizeof c->error, "%s", ml_last_error());
    c->failed = true;
}

static rec *capture_find(const capture *c, const char *path) {
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->recs[i].path, path)) return &c->recs[i];
    return NULL;
}

/* A new record for path (*out), or *out = NULL when the module already ran
 * in this forward (it is then marked as having no single centre). */
static int capture_add(capture *c, const char *path, rec_kind kind, int64_t n, rec **out) {
    *out = NULL;
    rec *old = capture_find(c, path);
    if (old) {
        old->calls++;
        return 0;
    }
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 16;
        rec *p = realloc(c->recs, sizeof *p * (size_t)cap);
        if (!p) return ml_failc("out of memory");
        c->recs = p;
        c->cap = cap;
    }
    rec *r = &c->recs[c->n];
    *r = (rec){.path = strdup(path), .kind = kind, .n = n, .calls = 1};
    r->v = calloc((size_t)(n > 0 ? n : 1), sizeof *r->v);
    if (!r->path || !r->v) {
        free(r->path);
        free(r->v);
        return ml_failc("out of memory");
    }
    c->n++;
    *out = r;
    return 0;
}

/* The smallest standard deviation (over the last dimension, as LayerNorm
 * computes it) among each sample's rows. */
static int stats_layernorm(capture *c, const char *path, ml_tensor *x) {
    int64_t D = x->shape[x->ndim - 1], rows = D ? ml_numel(x) / D : 0;
    if (rows % c->B) return ml_failc("LayerNorm '%s': %" PRId64 " rows for %" PRId64 " samples", path, rows, c->B);
    rec *r;
    if (capture_add(c, path, REC_LN, c->B, &r)) return -1;
    if (!r) return 0;
    ml_tensor *xc = ml_contiguous(x);
    if (!xc) return -1;
    int64_t per = rows / c->B;
    for (int64_t s = 0; s < c->B; s++) {
        double lo = INFINITY;
        for (int64_t i = s * per; i < (s + 1) * per; i++) {
            const float *row = ml_f32(xc) + i * D;
            double mean = 0, var = 0;
            for (int64_t j = 0; j < D; j++) mean += row[j];
            mean /= (double)D;
            for (int64_t j = 0; j < D; j++) var += ((double)row[j] - mean) * ((double)row[j] - mean);
            lo = fmin(lo, sqrt(var / (double)D));
        }
        r->v[s] = lo;
    }
    ml_release(xc);
    return 0;
}

static int config_int(const ml_module *m, const char *key, int def, int *out) {
    cJSON *cfg = ml_module_config(m);
    if (!cfg) return -1;
    int rc = ml_cfg_int(cfg, key, def, out);
    cJSON_Delete(cfg);
    return rc;
}

/* Per sample and head: ||K_h||_2, ||Q_h||_F, max_j ||v_j - mean v||, and the
 * largest column sum of the attention matrix P_h. */
static int stats_attention(capture *c, const char *path, const ml_module *m, ml_tensor *x) {
    int heads;
    if (config_int(m, "heads", 1, &heads)) return -1;
    if (x->ndim != 3 || x->shape[0] != c->B)
        return ml_failc("Attention '%s': input %s, expected [%" PRId64 ", T, D]", path, ML_SHAPE_STR(x), c->B);
    int64_t T = x->shape[1], D = x->shape[2], d = D / heads;
    rec *r;
    if (capture_add(c, path, REC_ATTN, c->B * heads * 4, &r)) return -1;
    if (!r) return 0;
    r->tokens = T;
    ml_module *qkvm = ml_module_child(m, "qkv");
    ml_tensor *qkv = qkvm ? ml_module_forward(qkvm, x, NULL) : NULL, *qc = qkv ? ml_contiguous(qkv) : NULL;
    ml_release(qkv);
    int64_t ks[2] = {T, d};
    ml_tensor *K = qc ? ml_empty(ML_F32, 2, ks) : NULL;
    double *P = K ? malloc(sizeof *P * (size_t)(T * T)) : NULL, *col = P ? malloc(sizeof *col * (size_t)T) : NULL;
    double *vbar = col ? malloc(sizeof *vbar * (size_t)d) : NULL;
    int rc = vbar ? 0 : -1;
    if (!rc && qc->shape[2] != 3 * D) rc = ml_failc("Attention '%s': qkv gives %s", path, ML_SHAPE_STR(qc));
    for (int64_t s = 0; s < c->B && !rc; s++)
        for (int h = 0; h < heads && !rc; h++) {
            const float *base = ml_f32(qc) + s * T * 3 * D;
#define Q_(t, j) base[(t) * 3 * D + h * d + (j)]
#define K_(t, j) base[(t) * 3 * D + D + h * d + (j)]
#define V_(t, j) base[(t) * 3 * D + 2 * D + h * d + (j)]
            double qf = 0;
            for (int64_t t = 0; t < T; t++)
                for (int64_t j = 0; j < d; j++) {
                    qf += (double)Q_(t, j) * Q_(t, j);
                    ml_f32(K)[t * d + j] = K_(t, j);
                }
            double kn = ml_theory_spectral_norm(K);
            if (isnan(kn)) {
                rc = -1;
                break;
            }
            for (int64_t j = 0; j < d; j++) {
                vbar[j] = 0;
                for (int64_t t = 0; t < T; t++) vbar[j] += V_(t, j);
                vbar[j] /= (double)T;
            }
            double rv = 0;
            for (int64_t t = 0; t < T; t++) {
                double n2 = 0;
                for (int64_t j = 0; j < d; j++) n2 += ((double)V_(t, j) - vbar[j]) * ((double)V_(t, j) - vbar[j]);
                rv = fmax(rv, sqrt(n2));
            }
            double scale = 1.0 / sqrt((double)d), colmax = 0;
            for (int64_t t = 0; t < T; t++) col[t] = 0;
            for (int64_t i = 0; i < T; i++) {
                double mx = -INFINITY, z = 0;
                for (int64_t t = 0; t < T; t++) {
                    double sdot = 0;
                    for (int64_t j = 0; j < d; j++) sdot += (double)Q_(i, j) * K_(t, j);
                    P[i * T + t] = sdot * scale;
                    mx = fmax(mx, P[i * T + t]);
                }
                for (int64_t t = 0; t < T; t++) z += (P[i * T + t] = exp(P[i * T + t] - mx));
                for (int64_t t = 0; t < T; t++) col[t] += P[i * T + t] / z;
            }
            for (int64_t t = 0; t < T; t++) colmax = fmax(colmax, col[t]);
#undef Q_
#undef K_
#undef V_
            double *o = r->v + (s * heads + h) * 4;
            o[0] = kn * (1 + 1e-12);
            o[1] = sqrt(qf);
            o[2] = rv;
            o[3] = colmax;
        }
    ml_release(qc);
    ml_release(K);
    free(P);
    free(col);
    free(vbar);
    return rc;
}

/* The norm of every expert's output on every token of a token MoE. */
static int stats_moe(capture *c, const char *path, const ml_module *m, ml_tensor *x) {
    ml_module *experts = ml_module_child(m, "experts");
    if (!experts) return ml_failc("%s '%s': no experts", m->type->name, path);
    int64_t D = x->shape[x->ndim - 1], T = ml_numel(x) / D, E = experts->n_children, rows[2] = {-1, D};
    rec *r;
    if (capture_add(c, path, REC_MOE, T * E, &r)) return -1;
    if (!r) return 0;
    ml_tensor *X = ml_reshape(x, 2, rows);
    int rc = X ? 0 : -1;
    for (int64_t e = 0; e < E && !rc; e++) {
        ml_tensor *y = ml_module_forward(experts->children[e].m, X, NULL), *yc = y ? ml_contiguous(y) : NULL;
        if (!yc || yc->ndim != 2 || yc->shape[0] != T) {
            if (yc) ml_fail("%s '%s': expert %" PRId64 " returned %s", m->type->name, path, e + 1, ML_SHAPE_STR(yc));
            rc = -1;
        }
        for (int64_t t = 0; t < T && !rc; t++) {
            double n2 = 0;
            const float *row = ml_f32(yc) + t * yc->shape[1];
            for (int64_t j = 0; j < yc->shape[1]; j++) n2 += (double)row[j] * row[j];
            r->v[t * E + e] = sqrt(n2);
        }
        ml_release(y);
        ml_release(yc);
    }
    ml_release(X);
    return rc;
}

static int stats_conv(capture *c, const char *path, ml_tensor *x, ml_tensor *y) {
    if (x->ndim != 4 || x->shape[0] != c->B || y->shape[0] != c->B)
        return ml_failc("MoEConv2d '%s': input %s for %" PRId64 " samples", path, ML_SHAPE_STR(x), c->B);
    rec *r;
    if (capture_add(c, path, REC_CONV, c->B, &r)) return -1;
    if (!r) return 0;
    r->hw = x->shape[2] * x->shape[3];
    ml_tensor *yc = ml_contiguous(y);
    if (!yc) return -1;
    int64_t per = ml_numel(yc) / c->B;
    for (int64_t s = 0; s < c->B; s++) {
        double n2 = 0;
        for (int64_t j = 0; j < per; j++) n2 += (double)ml_f32(yc)[s * per + j] * ml_f32(yc)[s * per + j];
        r->v[s] = sqrt(n2);
    }
    ml_release(yc);
    return 0;
}

static void capture_hook(void *ud, const char *path, const ml_module *m, ml_tensor *x, ml_tensor *y, int64_t flops,
                         double seconds) {
    capture *c = ud;
    if (c->failed) return;
    const char *type = m->type->name;
    int rc = 0;
    ml_error_clear();
    if (!strcmp(type, "LayerNorm")) rc = stats_layernorm(c, path, x);
    else if (!strcmp(type, "Attention")) rc = stats_attention(c, path, m, x);
    else if (!strcmp(type, "TokenMoE") || !strcmp(type, "SmoothMoE")) rc = stats_moe(c, path, m, x);
    else if (!strcmp(type, "MoEConv2d")) rc = stats_conv(c, path, x, y);
    else if (!strcmp(type, "GlobalAvgPool") && x->ndim == 4) {
        rec *r;
        rc = capture_add(c, path, REC_GAP, 1, &r);
        if (r) r->hw = x->shape[2] * x->shape[3];
    }
    if (rc) capture_fail(c);
}

static void capture_free(capture *c) {
    for (int i = 0; i < c->n; i++) {
        free(c->recs[i].path);
        free(c->recs[i].v);
    }
    free(c->recs);
    memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------ the program */
typedef enum { N_SCALE, N_CHAIN, N_SUM, N_TAP, N_LN, N_ATTN, N_MOE, N_INF } nkind;
typedef enum { MOE_TOKEN, MOE_CONV, MOE_GLOBAL } moe_kind;

typedef struct node node;
struct node {
    nkind kind;
    double c;          /* SCALE: factor; LN: max|gamma|; ATTN: ||W_proj||_2; MOE: ||router W||_2 */
    double eps;        /* LN */
    int64_t D;         /* LN: normalised size; ATTN: head size */
    const rec *r;      /* LN, ATTN: centre statistics */
    int heads;         /* ATTN */
    double *wq, *wk, *wv; /* ATTN: [heads] spectral norms of the q, k, v maps of each head */
    int layer;         /* MOE: trace layer */
    moe_kind moe;
    bool check;        /* MOE: sparse routing, held fixed inside the certified region */
    double lip;        /* MOE_TOKEN: Lipschitz constant of the experts */
    double *lipe;      /* MOE_CONV/GLOBAL: [E] bound of each expert's block convolution */
    double *emax;      /* MOE: [B] largest centre output norm among the sample's kept experts (token), or the
                          centre output of the sample's expert before its gate (conv) */
    const int64_t *expert_of; /* MOE_CONV/GLOBAL: [B] the sample's expert (the trace's, borrowed) */
    double hw;         /* MOE_CONV: H * W of the input (its router reads the average pool) */
    node **kids;       /* CHAIN, SUM (a NULL kid is the identity), TAP (kids[0]: the global router's feature) */
    int n;
};

typedef struct {
    char note[256];
    bool exact, coupled, blocks;
} layer_info;

struct ml_bound {
    int64_t B;
    capture cap;
    node *root;
    node **all;
    int n_all, cap_all;
    int layers;
    layer_info *info;
};

void ml_bound_free(ml_bound *b) {
    if (!b) return;
    for (int i = 0; i < b->n_all; i++) {
        node *n = b->all[i];
        free(n->wq);
        free(n->wk);
        free(n->wv);
        free(n->lipe);
        free(n->emax);
        free(n->kids);
        free(n);
    }
    free(b->all);
    free(b->info);
    capture_free(&b->cap);
    free(b);
}

typedef struct {
    const char *fn;
    ml_bound *b;
    ml_module *model;
    const ml_trace *trace;
    bool plain;     /* only reshapes between the model's input and here */
    char why[256];  /* the first module without a bound, "" while there is none */
    bool failed;    /* a hard error (out of memory, LAPACK): the build fails */
} builder;

static node *new_node(builder *bd, nkind kind) {
    if (bd->b->n_all == bd->b->cap_all) {
        int cap = bd->b->cap_all ? 2 * bd->b->cap_all : 64;
        node **p = realloc(bd->b->all, sizeof *p * (size_t)cap);
        if (!p) {
            bd->failed = true;
            return ml_fail("out of memory");
        }
        bd->b->all = p;
        bd->b->cap_all = cap;
    }
    node *n = calloc(1, sizeof *n);
    if (!n) {
        bd->failed = true;
        return ml_fail("out of memory");
    }
    n->kind = kind;
    n->layer = -1;
    bd->b->all[bd->b->n_all++] = n;
    return n;
}

static node *inf_node(builder *bd, const char *path, const char *fmt, const char *what) {
    if (!bd->why[0]) {
        char reason[160];
        snprintf(reason, sizeof reason, fmt, what);
        text(bd->why, sizeof bd->why, "no sound bound through '%s': %s", path[0] ? path : "(the model)", reason);
    }
    bd->plain = false;
    return new_node(bd, N_INF);
}

static node *scale_node(builder *bd, double c, bool keeps_plain) {
    node *n = new_node(bd, N_SCALE);
    if (n) n->c = c;
    if (!keeps_plain) bd->plain = false;
    return n;
}

static bool add_kid(builder *bd, node *parent, node *kid) {
    node **k = realloc(parent->kids, sizeof *k * (size_t)(parent->n + 1));
    if (!k) {
        bd->failed = true;
        ml_fail("out of memory");
        return false;
    }
    parent->kids = k;
    parent->kids[parent->n++] = kid;
    return true;
}

/* The spectral norm of a float matrix (double precision SVD, with a margin
 * for its rounding); NAN + error on failure. */
static double spectral(builder *bd, ml_tensor *A) {
    ml_tensor *c = ml_contiguous(A);
    double s = c ? ml_theory_spectral_norm(c) : NAN;
    ml_release(c);
    if (isnan(s)) bd->failed = true;
    return s * (1 + 1e-12);
}

/* Bound on ||conv(x)||_2 / ||x||_2 for a weight [O, I, k, k] with this
 * stride (any zero padding): every input pixel is in at most ceil(k/s)^2
 * patches, so ||conv|| <= ceil(k/s) ||W_mat||_2; and, by Schur's test,
 * ||conv|| <= sqrt(max row sum x max column sum) of |W| (ungrouped). */
static double conv_bound(builder *bd, ml_tensor *w, int k, int stride, int groups) {
    ml_tensor *wc = ml_contiguous(w);
    if (!wc) {
        bd->failed = true;
        return NAN;
    }
    int64_t O = wc->shape[0], per = ml_numel(wc) / (O ? O : 1), I = wc->shape[1], kk = per / (I ? I : 1);
    int64_t ms[2] = {O, per};
    ml_tensor *mat = ml_reshape(wc, 2, ms);
    double mult = ceil((double)k / (double)stride), b = mat ? mult * spectral(bd, mat) : NAN;
    ml_release(mat);
    if (groups == 1 && !isnan(b)) {
        const float *v = ml_f32(wc);
        double row = 0, colmax = 0;
        for (int64_t o = 0; o < O; o++) {
            double s = 0;
            for (int64_t j = 0; j < per; j++) s += fabs(v[o * per + j]);
            row = fmax(row, s);
        }
        for (int64_t i = 0; i < I; i++) {
            double s = 0;
            for (int64_t o = 0; o < O; o++)
                for (int64_t j = 0; j < kk; j++) s += fabs(v[o * per + i * kk + j]);
            colmax = fmax(colmax, s);
        }
        b = fmin(b, sqrt(row * colmax) * (1 + 1e-12));
    }
    ml_release(wc);
    return b;
}

/* Lipschitz constants of the pointwise activations (GELU: max of
 * Phi(x) + x phi(x) = 1.1290 at x = sqrt(2); erf: 2/sqrt(pi)); 0 when the
 * function is not Lipschitz (a jump or unbounded slope). */
static double activation_lipschitz(const char *op) {
    static const struct {
        const char *name;
        double lip;
    } table[] = {{"relu", 1}, {"gelu", 1.1290}, {"tanh", 1}, {"sigmoid", 0.25}, {"softplus", 1}, {"neg", 1},
                 {"abs", 1},  {"sin", 1},       {"cos", 1},  {"erf", 1.1284}};
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (!strcmp(table[i].name, op)) return table[i].lip;
    return 0;
}

static void join(char *out, size_t n, const char *path, const char *name) {
    text(out, n, "%s%s%s", path, path[0] ? "." : "", name);
}

static node *build(builder *bd, ml_module *m, const char *path);

static node *build_child(builder *bd, ml_module *m, const char *path, const char *name) {
    ml_module *c = ml_module_child(m, name);
    char p[ML_PATH_MAX];
    join(p, sizeof p, path, name);
    if (!c) return inf_node(bd, p, "%s", "the module is missing");
    return build(bd, c, p);
}

/* The linear gain of a node built only of scales, chains and sums (the
 * experts' Lipschitz constant), or +inf. */
static double gain(const node *n) {
    if (!n) return 1;
    switch (n->kind) {
    case N_SCALE: return n->c;
    case N_CHAIN: {
        double g = 1;
        for (int i = 0; i < n->n; i++) g = mul(g, gain(n->kids[i]));
        return g;
    }
    case N_SUM: {
        double g = 0;
        for (int i = 0; i < n->n; i++) g += gain(n->kids[i]);
        return g;
    }
    default: return INFINITY;
    }
}

static const rec *centre(builder *bd, const char *path, rec_kind kind) {
    const rec *r = capture_find(&bd->b->cap, path);
    return r && r->kind == kind && r->calls == 1 ? r : NULL;
}

static node *build_chain(builder *bd, ml_module *m, const char *path, bool model) {
    node *n = new_node(bd, N_CHAIN);
    bool tap = model && ml_module_child(m, "router") != NULL;
    for (int i = 0; n && i < m->n_children; i++) {
        const char *name = m->children[i].name;
        if (model && !strcmp(name, "router")) continue;
        char p[ML_PATH_MAX];
        join(p, sizeof p, path, name);
        if (!add_kid(bd, n, build(bd, m->children[i].m, p))) return NULL;
        if (tap && !strcmp(name, "normalize")) {
            /* the global router reads the normalised image: its feature (the
             * input of its last Linear) is tapped here for the MoE layers */
            ml_module *r = ml_module_child(m, "router");
            node *t = new_node(bd, N_TAP), *feat = new_node(bd, N_CHAIN);
            bool plain = bd->plain;
            for (int j = 0; t && feat && j + 1 < r->n_children; j++) {
                char rp[ML_PATH_MAX];
                join(rp, sizeof rp, path, "router");
                join(p, sizeof p, rp, r->children[j].name);
                if (!add_kid(bd, feat, build(bd, r->children[j].m, p))) return NULL;
            }
            bd->plain = plain;
            if (!t || !feat || !add_kid(bd, t, feat) || !add_kid(bd, n, t)) return NULL;
            tap = false;
        }
    }
    return n;
}

static node *build_sum(builder *bd, node *a, node *b) {
    node *n = new_node(bd, N_SUM);
    if (!n || !add_kid(bd, n, a) || !add_kid(bd, n, b)) return NULL;
    bd->plain = false;
    return n;
}

static node *chain_of(builder *bd, ml_module *m, const char *path, const char *const *names, int count) {
    node *n = new_node(bd, N_CHAIN);
    for (int i = 0; n && i < count; i++)
        if (!add_kid(bd, n, build_child(bd, m, path, names[i]))) return NULL;
    return n;
}

static node *build_layernorm(builder *bd, ml_module *m, const char *path) {
    const rec *r = centre(bd, path, REC_LN);
    if (!r) return inf_node(bd, path, "%s", "no single centre forward recorded");
    cJSON *cfg = ml_module_config(m);
    double eps = NAN;
    if (!cfg || ml_cfg_double(cfg, "eps", 1e-5, &eps)) {
        cJSON_Delete(cfg);
        bd->failed = true;
        return NULL;
    }
    cJSON_Delete(cfg);
    ml_tensor *g = ml_contiguous(ml_module_param(m, "weight"));
    if (!g) {
        bd->failed = true;
        return NULL;
    }
    double gmax = 0;
    for (int64_t i = 0; i < ml_numel(g); i++) gmax = fmax(gmax, fabs(ml_f32(g)[i]));
    node *n = new_node(bd, N_LN);
    if (n) {
        n->c = gmax;
        n->eps = eps;
        n->D = ml_numel(g);
        n->r = r;
    }
    ml_release(g);
    bd->plain = false;
    return n;
}

static node *build_attention(builder *bd, ml_module *m, const char *path) {
    const rec *r = centre(bd, path, REC_ATTN);
    if (!r) return inf_node(bd, path, "%s", "no single centre forward recorded");
    int heads;
    ml_module *qkv = ml_module_child(m, "qkv"), *proj = ml_module_child(m, "proj");
    if (config_int(m, "heads", 1, &heads) || !qkv || !proj) {
        bd->failed = true;
        return NULL;
    }
    ml_tensor *W = ml_module_param(qkv, "weight");
    int64_t D = W->shape[1], d = D / heads;
    node *n = new_node(bd, N_ATTN);
    if (!n) return NULL;
    n->heads = heads;
    n->D = d;
    n->r = r;
    n->wq = calloc((size_t)heads, sizeof(double));
    n->wk = calloc((size_t)heads, sizeof(double));
    n->wv = calloc((size_t)heads, sizeof(double));
    if (!n->wq || !n->wk || !n->wv) {
        bd->failed = true;
        return ml_fail("out of memory");
    }
    double *dst[3] = {n->wq, n->wk, n->wv};
    for (int part = 0; part < 3; part++)
        for (int h = 0; h < heads; h++) {
            ml_tensor *rows = ml_narrow(W, 0, part * D + h * d, d);
            dst[part][h] = rows ? spectral(bd, rows) : NAN;
            ml_release(rows);
        }
    n->c = spectral(bd, ml_module_param(proj, "weight"));
    bd->plain = false;
    return bd->failed ? NULL : n;
}

static node *build_mlp(builder *bd, ml_module *m, const char *path) {
    cJSON *cfg = ml_module_config(m);
    const char *act = cfg ? ml_cfg_string(cfg, "activation", "gelu") : "gelu";
    double lip = activation_lipschitz(act);
    char actname[32];
    snprintf(actname, sizeof actname, "%s", act);
    cJSON_Delete(cfg);
    node *n = new_node(bd, N_CHAIN);
    if (!n || !add_kid(bd, n, build_child(bd, m, path, "fc1"))) return NULL;
    if (!add_kid(bd, n, lip > 0 ? scale_node(bd, lip, false) : inf_node(bd, path, "the activation %s is not Lipschitz", actname)))
        return NULL;
    return add_kid(bd, n, build_child(bd, m, path, "fc2")) ? n : NULL;
}

/* The experts' common Lipschitz constant (each expert's global bound). */
static double experts_lipschitz(builder *bd, ml_module *experts, const char *path) {
    double lip = 0;
    bool plain = bd->plain;
    char why[sizeof bd->why];
    memcpy(why, bd->why, sizeof why);
    for (int e = 0; e < experts->n_children && !bd->failed; e++) {
        char p[ML_PATH_MAX];
        text(p, sizeof p, "%s%sexperts.%s", path, path[0] ? "." : "", experts->children[e].name);
        lip = fmax(lip, gain(build(bd, experts->children[e].m, p)));
    }
    bd->plain = plain;
    memcpy(bd->why, why, sizeof why); /* an expert without a global bound shows as an infinite gain instead */
    return lip;
}

static int trace_layer(builder *bd, const char *path) {
    int i = ml_trace_index(bd->trace, path);
    if (i < 0) {
        bd->failed = true;
        ml_failc("%s: the MoE layer '%s' reported no routing", bd->fn, path);
    }
    return i;
}

/* exact: the router reads the layer's input itself (token routers) and only
 * reshapes lie before it. */
static void layer_note(builder *bd, int i, bool reads_input) {
    layer_info *li = &bd->b->info[i];
    li->exact = bd->plain && reads_input;
    text(li->note, sizeof li->note, "%s", bd->why);
}

static node *build_token_moe(builder *bd, ml_module *m, const char *path, bool smooth) {
    int i = trace_layer(bd, path);
    const rec *r = centre(bd, path, REC_MOE);
    if (i < 0) return NULL;
    if (!r) {
        node *n = inf_node(bd, path, "%s", "no single centre forward recorded");
        layer_note(bd, i, true);
        return n;
    }
    const ml_trace_layer *l = &bd->trace->layers[i];
    if (r->n != l->T * l->E) {
        bd->failed = true;
        return ml_fail("%s: layer '%s' routed %" PRId64 " items, its input has %" PRId64, bd->fn, path, l->T, r->n / l->E);
    }
    layer_note(bd, i, true);
    bd->plain = false;
    node *n = new_node(bd, N_MOE);
    if (!n) return NULL;
    n->layer = i;
    n->moe = MOE_TOKEN;
    n->check = !smooth;
    n->c = spectral(bd, ml_module_param(ml_module_child(m, "router"), "weight"));
    n->lip = experts_lipschitz(bd, ml_module_child(m, "experts"), path);
    n->emax = calloc((size_t)bd->b->B, sizeof(double));
    if (!n->emax) {
        bd->failed = true;
        return ml_fail("out of memory");
    }
    int64_t per = l->T / bd->b->B, K = l->K, E = l->E;
    const int64_t *ex = ml_i64(l->experts), *kept = ml_i64(l->kept);
    for (int64_t t = 0; t < l->T; t++) {
        double mx = 0;
        for (int64_t k = 0; k < (smooth ? E : K); k++) {
            if (!smooth && !kept[t * K + k]) continue;
            mx = fmax(mx, r->v[t * E + (smooth ? k : ex[t * K + k])]);
        }
        n->emax[t / per] = fmax(n->emax[t / per], mx);
    }
    /* capacity: a layer that can drop ties every sample's routing to the batch */
    cJSON *cfg = ml_module_config(m);
    double cf = 0;
    bool round4 = false, priority = false;
    int k = l->K;
    if (!smooth && cfg && !ml_cfg_double(cfg, "capacity_factor", 0, &cf) && !ml_cfg_bool(cfg, "round_capacity", false, &round4) &&
        !ml_cfg_bool(cfg, "batch_priority", false, &priority) && cf > 0 && ml_route_capacity(l->T, E, k, cf, round4) < l->T) {
        bd->b->info[i].coupled = true;
        bd->b->info[i].blocks = priority;
    }
    cJSON_Delete(cfg);
    return n;
}

static node *build_moe_conv(builder *bd, ml_module *m, const char *path) {
    int i = trace_layer(bd, path);
    const rec *r = centre(bd, path, REC_CONV);
    if (i < 0) return NULL;
    if (!r) {
        node *n = inf_node(bd, path, "%s", "no single centre forward recorded");
        layer_note(bd, i, false);
        return n;
    }
    const ml_trace_layer *l = &bd->trace->layers[i];
    layer_note(bd, i, false);
    bd->plain = false;
    node *n = new_node(bd, N_MOE);
    if (!n) return NULL;
    n->layer = i;
    n->check = true;
    n->moe = l->kind == ML_TRACE_GLOBAL ? MOE_GLOBAL : MOE_CONV;
    n->hw = (double)r->hw;
    n->expert_of = ml_i64(l->experts);
    int k, stride;
    if (config_int(m, "kernel", 3, &k) || config_int(m, "stride", 1, &stride)) {
        bd->failed = true;
        return NULL;
    }
    n->lipe = calloc((size_t)l->E, sizeof(double));
    n->emax = calloc((size_t)bd->b->B, sizeof(double));
    if (!n->lipe || !n->emax) {
        bd->failed = true;
        return ml_fail("out of memory");
    }
    ml_tensor *W = ml_module_param(m, "weight");
    for (int e = 0; e < l->E && !bd->failed; e++) {
        int64_t first, count;
        if (ml_moe_conv_expert_channels(bd->fn, m, e, &first, &count)) {
            bd->failed = true;
            return NULL;
        }
        ml_tensor *blk = ml_narrow(W, 0, first, count);
        n->lipe[e] = blk ? conv_bound(bd, blk, k, stride, 1) : NAN;
        ml_release(blk);
    }
    /* the sample's output before its gate: output norm / gate */
    for (int64_t s = 0; s < bd->b->B; s++) {
        double g = ml_f32(l->gates)[s];
        n->emax[s] = g > 0 ? r->v[s] / g : INFINITY;
    }
    ml_router_weights w;
    if (ml_router_weights_get(bd->fn, bd->model, bd->trace, i, &w)) {
        bd->failed = true;
        return NULL;
    }
    n->c = spectral(bd, w.weight);
    ml_router_weights_free(&w);
    return bd->failed ? NULL : n;
}

static node *build_leaf(builder *bd, ml_module *m, const char *path, const char *type) {
    if (!strcmp(type, "Linear") || !strcmp(type, "Router")) return scale_node(bd, spectral(bd, ml_module_param(m, "weight")), false);
    if (!strcmp(type, "Conv2d") || !strcmp(type, "MaskedConv2d")) {
        int k, stride, groups = 1;
        if (config_int(m, "kernel", 3, &k) || config_int(m, "stride", 1, &stride) ||
            (!strcmp(type, "Conv2d") && config_int(m, "groups", 1, &groups))) {
            bd->failed = true;
            return NULL;
        }
        return scale_node(bd, conv_bound(bd, ml_module_param(m, "weight"), k, stride, groups), false);
    }
    if (!strcmp(type, "PatchEmbed")) {
        int patch;
        if (config_int(m, "patch", 4, &patch)) {
            bd->failed = true;
            return NULL;
        }
        return scale_node(bd, conv_bound(bd, ml_module_param(m, "weight"), patch, patch, 1), false);
    }
    if (!strcmp(type, "BatchNorm2d")) {
        if (m->training) return inf_node(bd, path, "%s", "BatchNorm2d in training mode (batch statistics)");
        cJSON *cfg = ml_module_config(m);
        double eps = 1e-5;
        if (cfg) ml_cfg_double(cfg, "eps", 1e-5, &eps);
        cJSON_Delete(cfg);
        ml_tensor *g = ml_contiguous(ml_module_param(m, "weight")), *v = ml_contiguous(ml_module_param(m, "running_var"));
        double lip = 0;
        for (int64_t c = 0; g && v && c < ml_numel(g); c++)
            lip = fmax(lip, fabs(ml_f32(g)[c]) / sqrt((double)ml_f32(v)[c] + eps));
        ml_release(g);
        ml_release(v);
        return scale_node(bd, lip * (1 + 1e-12), false);
    }
    if (!strcmp(type, "Normalize")) {
        ml_tensor *inv = ml_module_param(m, "inv_std");
        double lip = 0;
        for (int64_t c = 0; c < ml_numel(inv); c++) lip = fmax(lip, fabs(ml_f32(inv)[c]));
        return scale_node(bd, lip, false);
    }
    if (!strcmp(type, "Activation")) {
        cJSON *cfg = ml_module_config(m);
        char op[32];
        snprintf(op, sizeof op, "%s", cfg ? ml_cfg_string(cfg, "op", "?") : "?");
        cJSON_Delete(cfg);
        double lip = activation_lipschitz(op);
        return lip > 0 ? scale_node(bd, lip, false) : inf_node(bd, path, "the activation %s is not Lipschitz", op);
    }
    if (!strcmp(type, "Flatten") || !strcmp(type, "Identity")) return scale_node(bd, 1, true);
    if (!strcmp(type, "Dropout"))
        return m->training ? inf_node(bd, path, "%s", "Dropout in training mode") : scale_node(bd, 1, true);
    if (!strcmp(type, "MaxPool2d") || !strcmp(type, "AvgPool2d")) {
        int k, stride;
        if (config_int(m, "kernel", 2, &k) || config_int(m, "stride", 2, &stride)) {
            bd->failed = true;
            return NULL;
        }
        return scale_node(bd, ceil((double)k / (double)stride), false);
    }
    if (!strcmp(type, "GlobalAvgPool")) {
        const rec *r = centre(bd, path, REC_GAP);
        return scale_node(bd, r && r->hw > 0 ? 1.0 / sqrt((double)r->hw) : 1.0, false);
    }
    return inf_node(bd, path, "a %s module has no known bound", type);
}

static node *build(builder *bd, ml_module *m, const char *path) {
    if (bd->failed) return NULL;
    const char *type = m->type->name;
    if (!strcmp(type, "Sequential") || !strcmp(type, "Model")) return build_chain(bd, m, path, !strcmp(type, "Model"));
    if (!strcmp(type, "BasicBlock")) {
        static const char *const body[] = {"conv1", "bn1", "conv2", "bn2"}, *const sc[] = {"shortcut"};
        node *a = chain_of(bd, m, path, body, 4);
        node *b = ml_module_child(m, "shortcut") ? chain_of(bd, m, path, sc, 1) : NULL;
        return a ? build_sum(bd, a, b) : NULL;
    }
    if (!strcmp(type, "WideBlock")) {
        static const char *const body[] = {"bn1", "conv1", "bn2", "conv2"}, *const sc[] = {"bn1", "shortcut"};
        node *a = chain_of(bd, m, path, body, 4);
        node *b = ml_module_child(m, "shortcut") ? chain_of(bd, m, path, sc, 2) : NULL;
        return a ? build_sum(bd, a, b) : NULL;
    }
    if (!strcmp(type, "TransformerBlock")) {
        static const char *const attn[] = {"ln1", "attn"}, *const mlp[] = {"ln2", "mlp"};
        node *a = chain_of(bd, m, path, attn, 2), *s1 = a ? build_sum(bd, NULL, a) : NULL;
        node *f = s1 ? chain_of(bd, m, path, mlp, 2) : NULL, *s2 = f ? build_sum(bd, NULL, f) : NULL;
        node *n = s2 ? new_node(bd, N_CHAIN) : NULL;
        return n && add_kid(bd, n, s1) && add_kid(bd, n, s2) ? n : NULL;
    }
    if (!strcmp(type, "Attention")) return build_attention(bd, m, path);
    if (!strcmp(type, "MLP")) return build_mlp(bd, m, path);
    if (!strcmp(type, "LayerNorm")) return build_layernorm(bd, m, path);
    if (!strcmp(type, "TokenMoE")) return build_token_moe(bd, m, path, false);
    if (!strcmp(type, "SmoothMoE")) return build_token_moe(bd, m, path, true);
    if (!strcmp(type, "MoEConv2d")) return build_moe_conv(bd, m, path);
    return build_leaf(bd, m, path, type);
}

ml_bound *ml_bound_build(const char *fn, ml_module *model, ml_tensor *x, ml_trace **trace) {
    *trace = NULL;
    if (model->training)
        return ml_fail("%s: the model is in training mode (batch statistics, dropout and router noise); call "
                       "model:eval() first", fn);
    if (x->ndim < 1 || x->shape[0] < 1) return ml_fail("%s: the input needs a batch dimension, got %s", fn, ML_SHAPE_STR(x));
    ml_bound *b = calloc(1, sizeof *b);
    if (!b) return ml_fail("out of memory");
    b->B = b->cap.B = x->shape[0];
    bool grad = ml_grad_set(false);
    ml_ctx ctx = {.trace = true, .on_module = capture_hook, .on_module_ud = &b->cap};
    ml_tensor *y = ml_module_forward(model, x, &ctx);
    ml_trace *t = y ? ml_ctx_take_trace(&ctx) : NULL;
    ml_ctx_clear(&ctx);
    if (y) capture_hook(&b->cap, "", model, x, y, 0, 0); /* the hook sees children only */
    ml_release(y);
    if (t && b->cap.failed) ml_fail("%s: %s", fn, b->cap.error);
    builder bd = {.fn = fn, .b = b, .model = model, .trace = t, .plain = true};
    if (t && !b->cap.failed) {
        b->layers = t->n;
        b->info = calloc((size_t)(t->n ? t->n : 1), sizeof *b->info);
        if (!b->info) ml_fail("out of memory");
        for (int i = 0; b->info && i < t->n && !bd.failed; i++)
            if (t->layers[i].T % b->B) {
                bd.failed = true;
                ml_fail("%s: layer '%s' routed %" PRId64 " items, not a multiple of the batch size %" PRId64, fn,
                        t->layers[i].name, t->layers[i].T, b->B);
            }
        b->root = b->info && !bd.failed ? build(&bd, model, "") : NULL;
    }
    ml_grad_set(grad);
    if (!t || b->cap.failed || !b->info || bd.failed || !b->root) {
        ml_trace_free(t);
        ml_bound_free(b);
        return NULL;
    }
    *trace = t;
    return b;
}

bool ml_bound_exact(const ml_bound *b, int i) { return b->info[i].exact && !b->info[i].note[0]; }
const char *ml_bound_note(const ml_bound *b, int i) { return b->info[i].note; }
bool ml_bound_coupled(const ml_bound *b, int i) { return b->info[i].coupled; }
bool ml_bound_blocks(const ml_bound *b, int i) { return b->info[i].blocks; }

/* ------------------------------------------------------------ evaluation */
typedef struct {
    const ml_bound *b;
    int64_t s;
    double rho;
    int stop;     /* the layer whose router deviation is wanted */
    bool stopped;
    double dz;    /* ... found here */
    double feat;  /* the global router feature's deviation */
    const double *rmin, *batch_radius;
} run;

static double eval(const node *n, double d, run *r);

static double eval_attention(const node *n, double d, const run *r) {
    double T = (double)n->r->tokens, sum2 = 0;
    for (int h = 0; h < n->heads; h++) {
        const double *st = n->r->v + (r->s * n->heads + h) * 4; /* ||K||_2, ||Q||_F, R_V, max column sum */
        double dq = mul(n->wq[h], d), dk = mul(n->wk[h], d), dv = mul(n->wv[h], d);
        double ds = (mul(st[0] + dk, dq) + mul(st[1], dk)) / sqrt((double)n->D);
        double dp = fmin(2 * sqrt(T), SQRT2 * ds); /* >= sqrt(sum_i ||dp_i||_1^2) */
        double pn = sqrt(fmin(T, st[3] + mul(sqrt(T), dp)));
        double dout = mul(pn, dv) + mul(st[2], dp);
        sum2 += dout * dout;
    }
    return mul(n->c, sqrt(sum2));
}

static double eval_moe(const node *n, double d, run *r) {
    double dz = n->moe == MOE_CONV ? d / sqrt(n->hw) : n->moe == MOE_GLOBAL ? r->feat : d;
    if (n->layer == r->stop) {
        r->stopped = true;
        r->dz = dz;
        return INFINITY;
    }
    if (n->check) {
        /* the routing is held fixed: only while it provably is */
        if (!(dz < r->rmin[(int64_t)n->layer * r->b->B + r->s])) return INFINITY;
        if (r->b->info[n->layer].coupled && !(r->rho < r->batch_radius[n->layer])) return INFINITY;
    }
    if (n->moe == MOE_TOKEN) return mul(n->lip, d) + mul(SQRT2 * n->c * n->emax[r->s], d);
    /* one expert's block convolution, gated by p_e: |dp_e| <= ||dp||_1 / 2 <= ||ds|| / sqrt2 */
    double lipe = n->lipe[n->expert_of[r->s]];
    return mul(lipe, d) + mul(n->c / SQRT2 * n->emax[r->s], dz);
}

static double eval(const node *n, double d, run *r) {
    if (r->stopped) return INFINITY;
    if (!n) return d;
    switch (n->kind) {
    case N_SCALE: return mul(n->c, d);
    case N_CHAIN:
        for (int i = 0; i < n->n && !r->stopped; i++) d = eval(n->kids[i], d, r);
        return r->stopped ? INFINITY : d;
    case N_SUM: {
        double total = 0;
        for (int i = 0; i < n->n && !r->stopped; i++) total += eval(n->kids[i], d, r);
        return r->stopped ? INFINITY : total;
    }
    case N_TAP: r->feat = eval(n->kids[0], d, r); return r->stopped ? INFINITY : d;
    case N_LN: {
        double lo = fmax(0.0, n->r->v[r->s] - d / sqrt((double)n->D));
        return mul(n->c / sqrt(lo * lo + n->eps), d);
    }
    case N_ATTN: return eval_attention(n, d, r);
    case N_MOE: return eval_moe(n, d, r);
    case N_INF: return INFINITY;
    }
    return INFINITY;
}

double ml_bound_router_deviation(const ml_bound *b, int i, int64_t s, double rho, const double *rmin,
                                 const double *batch_radius) {
    run r = {.b = b, .s = s, .rho = rho, .stop = i, .dz = INFINITY, .rmin = rmin, .batch_radius = batch_radius};
    eval(b->root, rho, &r);
    return r.stopped ? r.dz : INFINITY;
}
