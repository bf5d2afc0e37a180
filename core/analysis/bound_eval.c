/* bound_eval.c -- running the deviation program for one sample (bound.h):
 * what each node does to a bound on how far the activation moved, kept as
 * three numbers that hold together: F >= the l2 norm of the sample's
 * deviation, I >= its largest element, and, while the activation is a
 * sequence of tokens, d[t] >= each token's l2 deviation. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "bound_internal.h"

#define SQRT2 1.4142135623730951

/* 0 x anything = 0: every factor here that is exactly 0 belongs to a map that
 * does not move (a zero weight, values that are all equal), whatever the
 * other factor, even an infinite one. */
static double mul(double a, double b) { return a == 0 || b == 0 ? 0 : a * b; }

typedef struct {
    double F, I;
    double *d; /* [T] per token, or NULL */
    int64_t T;
} dev;

typedef struct block {
    struct block *next;
    size_t used, cap;
    double data[];
} block;

typedef struct {
    const ml_bound *b;
    int64_t s;
    double eps;
    int stop;
    bool stopped;
    double *dz;  /* out: the stop layer's router deviation of every item of the sample */
    dev feat;    /* the global router's feature */
    const double *const *rz;
    const double *batch_radius;
    block *mem;
    bool oom;
} run;

static double *alloc(run *r, int64_t n) {
    size_t need = (size_t)(n > 0 ? n : 1);
    if (!r->mem || r->mem->used + need > r->mem->cap) {
        size_t cap = need > 4096 ? need : 4096;
        block *blk = malloc(sizeof *blk + sizeof(double) * cap);
        if (!blk) {
            r->oom = true;
            return NULL;
        }
        blk->next = r->mem;
        blk->used = 0;
        blk->cap = cap;
        r->mem = blk;
    }
    double *p = r->mem->data + r->mem->used;
    r->mem->used += need;
    return p;
}

static dev infinite(void) { return (dev){INFINITY, INFINITY, NULL, 0}; }

/* Makes the three bounds agree: ||.||_inf <= ||.||_2, a token's norm <= the
 * sample's, the sample's <= the root of the tokens' squares, and
 * ||.||_2 <= sqrt(n) ||.||_inf for n elements (0: unknown). */
static dev tighten(dev v, int64_t numel) {
    v.I = fmin(v.I, v.F);
    if (v.d) {
        double sq = 0;
        for (int64_t t = 0; t < v.T; t++) {
            v.d[t] = fmin(v.d[t], v.F);
            sq += v.d[t] * v.d[t];
        }
        v.F = fmin(v.F, sqrt(sq));
    }
    if (numel > 0) v.F = fmin(v.F, mul(sqrt((double)numel), v.I));
    return v;
}

static dev token_copy(run *r, dev in) {
    dev out = in;
    out.d = alloc(r, in.T);
    if (out.d) memcpy(out.d, in.d, sizeof(double) * (size_t)in.T);
    else out = infinite();
    return out;
}

static dev eval(const bound_node *n, dev in, run *r);

static dev eval_linear(const bound_node *n, dev in, run *r) {
    dev out = {mul(n->c2, in.F), mul(n->cinf, in.I), NULL, 0};
    if (in.d && n->tokenwise) {
        out = token_copy(r, in);
        if (!out.d) return out;
        out.F = mul(n->c2, in.F);
        out.I = mul(n->cinf, in.I);
        for (int64_t t = 0; t < in.T; t++) out.d[t] = fmin(mul(n->c2, in.d[t]), mul(n->cinf2, in.I));
    } else if (n->whole) {
        out.F = fmin(out.F, mul(n->cinf2, in.I));
    }
    return tighten(out, n->out_numel);
}

/* Image -> tokens: a token is a patch's pixels times the weight (the class
 * token and the position embedding do not move). */
static dev eval_patch(const bound_node *n, dev in, run *r) {
    dev out = {mul(n->c2, in.F), mul(n->cinf, in.I), alloc(r, n->tokens), n->tokens};
    if (!out.d) return infinite();
    double patch = fmin(fmin(mul(n->c2, in.F), mul(n->c2 * sqrt((double)n->D), in.I)), mul(n->cinf2, in.I));
    out.d[0] = 0;
    for (int64_t t = 1; t < n->tokens; t++) out.d[t] = patch;
    return tighten(out, n->out_numel);
}

/* LayerNorm of a row u: gamma * c / sqrt(||c||^2 / D + eps), c = u - mean;
 * its Jacobian has norm <= max|gamma| / sqrt(sigma^2 + eps) at a row of
 * standard deviation sigma, and along a move of l2 length a the deviation
 * stays above sigma - a / sqrt(D). */
static double ln_lipschitz(const bound_node *n, double sigma, double a) {
    double lo = fmax(0.0, sigma - a / sqrt((double)n->D));
    return n->c2 / sqrt(lo * lo + n->eps);
}

static dev eval_layernorm(const bound_node *n, dev in, run *r) {
    const double *sigma = n->r->v + r->s * n->tokens;
    double smin = INFINITY;
    for (int64_t t = 0; t < n->tokens; t++) smin = fmin(smin, sigma[t]);
    dev out = {mul(ln_lipschitz(n, smin, in.F), in.F), 0, NULL, 0};
    if (in.d && in.T == n->tokens) {
        out.d = alloc(r, in.T);
        if (!out.d) return infinite();
        out.T = in.T;
        for (int64_t t = 0; t < in.T; t++) out.d[t] = mul(ln_lipschitz(n, sigma[t], in.d[t]), in.d[t]);
    }
    out.I = out.F;
    return tighten(out, 0);
}

/* Softmax attention, per head (rows of the centre's P, Q, K, V; docs/ANALYSIS.md):
 * dO_i = sum_j P'_ij dv_j + dp_i^T (V - mean v), with
 * ||dp_i||_1 <= min(2, sqrt2 ||ds_i||_2, 2 ||ds_i||_inf). */
static dev eval_attention(const bound_node *n, dev in, run *r) {
    const bound_rec *rec = n->r;
    int64_t T = rec->rows;
    int H = n->heads;
    double sq = sqrt((double)n->D);
    bool tokens = in.d && in.T == T;
    dev out = {0, 0, tokens ? alloc(r, T) : NULL, tokens ? T : 0};
    if (tokens && !out.d) return infinite();
    double dmax = 0, sumF = 0;
    for (int64_t t = 0; tokens && t < T; t++) dmax = fmax(dmax, in.d[t]);
    for (int64_t t = 0; tokens && t < T; t++) out.d[t] = 0;
    for (int h = 0; h < H; h++) {
        const double *st = rec->v + (r->s * H + h) * 5; /* ||K||_2, ||Q||_F, R_V, max column sum, max ||k_j|| */
        double Fq = mul(n->wq[h], in.F), Fk = mul(n->wk[h], in.F), Fv = mul(n->wv[h], in.F);
        /* the sample as a whole */
        double dS = (mul(st[0] + Fk, Fq) + mul(st[1], Fk)) / sq;
        double dpF = fmin(2 * sqrt((double)T), SQRT2 * dS);
        double pn = sqrt(fmin((double)T, st[3] + mul(sqrt((double)T), dpF)));
        double oF = mul(pn, Fv) + mul(st[2], dpF);
        if (tokens) {
            const double *qn = rec->q + (r->s * H + h) * T, *P = rec->P + (r->s * H + h) * T * T;
            double dkmax = mul(n->wk[h], dmax), dvmax = mul(n->wv[h], dmax), sq_tokens = 0;
            for (int64_t i = 0; i < T; i++) {
                double dq = mul(n->wq[h], in.d[i]);
                double ds2 = (mul(st[0], dq) + mul(qn[i], Fk) + mul(dq, Fk)) / sq;
                double dsinf = (mul(dq, st[4]) + mul(qn[i], dkmax) + mul(dq, dkmax)) / sq;
                double dp = fmin(2.0, fmin(SQRT2 * ds2, 2 * dsinf));
                double mix = 0;
                for (int64_t j = 0; j < T; j++) mix += mul(P[i * T + j], in.d[j]);
                double o = mul(n->wv[h], mix) + mul(dp, dvmax) + mul(dp, st[2]);
                out.d[i] += o * o;
                sq_tokens += o * o;
            }
            oF = fmin(oF, sqrt(sq_tokens));
        }
        sumF += oF * oF;
    }
    for (int64_t t = 0; tokens && t < T; t++) out.d[t] = mul(n->c2, sqrt(out.d[t]));
    out.F = mul(n->c2, sqrt(sumF));
    out.I = out.F;
    return tighten(out, 0);
}

static dev eval_moe(const bound_node *n, dev in, run *r) {
    const bound_layer *info = &r->b->info[n->layer];
    int64_t per = info->per_sample, s = r->s;
    bool tokens = n->moe == MOE_TOKEN && in.d && in.T == per;
    /* how far the router's input moved, for every item of the sample */
    double z = n->moe == MOE_CONV ? fmin(in.F / sqrt(n->hw), mul(sqrt(n->cin), in.I))
               : n->moe == MOE_GLOBAL ? r->feat.F : in.F;
    if (n->layer == r->stop) {
        for (int64_t t = 0; t < per; t++) r->dz[t] = tokens ? in.d[t] : z;
        r->stopped = true;
        return infinite();
    }
    if (n->check) {
        /* the routing is held fixed: only while it provably is */
        const double *rz = r->rz[n->layer] + s * per;
        for (int64_t t = 0; t < per; t++)
            if (!((tokens ? in.d[t] : z) < rz[t])) return infinite();
        if (info->coupled && !(r->eps < r->batch_radius[n->layer])) return infinite();
    }
    if (n->moe != MOE_TOKEN) {
        /* one expert's block convolution, gated by p_e: |dp_e| <= ||dp||_1 / 2 <= ||ds|| / sqrt2 */
        double F = mul(n->lipe[n->expert_of[s]], in.F) + mul(n->c2 / SQRT2 * n->emax[s], z);
        return (dev){F, F, NULL, 0};
    }
    /* fixed choices: gates sum to <= 1 and move by ||dp||_1 <= sqrt2 ||W_r|| ||dx||; the
     * centre's expert outputs bound what the gates multiply */
    const double *emax = n->emax + s * per;
    double worst = 0;
    for (int64_t t = 0; t < per; t++) worst = fmax(worst, emax[t]);
    dev out = {mul(n->lip + SQRT2 * n->c2 * worst, in.F), 0, NULL, 0};
    if (tokens) {
        out.d = alloc(r, per);
        if (!out.d) return infinite();
        out.T = per;
        for (int64_t t = 0; t < per; t++) out.d[t] = mul(n->lip + SQRT2 * n->c2 * emax[t], in.d[t]);
    }
    out.I = out.F;
    return tighten(out, 0);
}

static dev eval_sum(const bound_node *n, dev in, run *r) {
    dev out = {0, 0, NULL, 0};
    bool tokens = true;
    dev parts[2];
    for (int i = 0; i < n->n && i < 2 && !r->stopped; i++) {
        parts[i] = n->kids[i] ? eval(n->kids[i], in, r) : in;
        out.F += parts[i].F;
        out.I += parts[i].I;
        tokens = tokens && parts[i].d && parts[i].T == parts[0].T;
    }
    if (r->stopped) return infinite();
    if (tokens && n->n == 2) {
        out.T = parts[0].T;
        out.d = alloc(r, out.T);
        if (!out.d) return infinite();
        for (int64_t t = 0; t < out.T; t++) out.d[t] = parts[0].d[t] + parts[1].d[t];
    }
    return tighten(out, 0);
}

static dev eval(const bound_node *n, dev in, run *r) {
    if (r->stopped || r->oom) return infinite();
    switch (n->kind) {
    case N_LINEAR: return eval_linear(n, in, r);
    case N_PATCH: return eval_patch(n, in, r);
    case N_CHAIN:
        for (int i = 0; i < n->n && !r->stopped; i++) in = eval(n->kids[i], in, r);
        return r->stopped ? infinite() : in;
    case N_SUM: return eval_sum(n, in, r);
    case N_TAP: r->feat = eval(n->kids[0], in, r); return r->stopped ? infinite() : in;
    case N_LN: return eval_layernorm(n, in, r);
    case N_ATTN: return eval_attention(n, in, r);
    case N_MOE: return eval_moe(n, in, r);
    case N_INF: return infinite();
    }
    return infinite();
}

int ml_bound_router_deviation(const ml_bound *b, int i, int64_t s, ml_radius_norm norm, double eps,
                              const double *const *rz, const double *batch_radius, double *dz) {
    run r = {.b = b, .s = s, .eps = eps, .stop = i, .dz = dz, .rz = rz, .batch_radius = batch_radius};
    dev in = {eps, eps, NULL, 0};
    if (norm == ML_RADIUS_LINF) in.F = mul(sqrt((double)b->in_numel), eps);
    if (b->in_tokens) {
        in.T = b->in_tokens;
        in.d = alloc(&r, in.T);
        for (int64_t t = 0; in.d && t < in.T; t++) in.d[t] = norm == ML_RADIUS_LINF ? mul(sqrt((double)b->in_dim), eps) : eps;
    }
    if (!b->in_tokens || in.d) eval(b->root, in, &r);
    bool oom = r.oom || (b->in_tokens && !in.d);
    while (r.mem) {
        block *next = r.mem->next;
        free(r.mem);
        r.mem = next;
    }
    if (oom) return ml_failc("out of memory");
    if (!r.stopped)
        for (int64_t t = 0; t < b->info[i].per_sample; t++) dz[t] = INFINITY;
    return 0;
}
