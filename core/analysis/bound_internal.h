/* bound_internal.h -- the pieces of the deviation program (bound.h) shared
 * by its three files: the centre statistics recorded during the forward
 * (bound_centre.c), the program built from the module tree (bound_build.c)
 * and its evaluation (bound_eval.c). */
#ifndef ML_ANALYSIS_BOUND_INTERNAL_H
#define ML_ANALYSIS_BOUND_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "bound.h"

/* ------------------------------------------------------------ centre statistics */
/* What one module saw in the forward, per sample of the batch. */
typedef struct {
    char *path;
    int calls;          /* forwards of this module (more than one: no single centre) */
    int64_t in_numel, out_numel; /* elements per sample */
    int64_t hw;         /* a 4-d input: H * W */
    int64_t rows;       /* LayerNorm: rows per sample; Attention: tokens per sample */
    int heads;          /* Attention */
    double *v;          /* LayerNorm: [B][rows] standard deviation of every row;
                           Attention: [B][heads][5] ||K||_2, ||Q||_F, R_V = max_j ||v_j - mean v||,
                             the largest column sum of P, max_j ||k_j||;
                           TokenMoE, SmoothMoE: [T][E] norm of every expert's output on every token;
                           MoEConv2d: [B] the norm of the layer's output */
    double *q;          /* Attention: [B][heads][T] ||q_i|| */
    double *P;          /* Attention: [B][heads][T][T] the attention matrices */
} bound_rec;

typedef struct {
    int64_t B;
    bound_rec *recs;
    int n, cap;
    bool failed;
    char error[512];
} bound_capture;

/* The forward's per-module hook (ml_ctx.on_module) that fills the capture. */
void bound_capture_hook(void *ud, const char *path, const ml_module *m, ml_tensor *x, ml_tensor *y, int64_t flops,
                        double seconds);
const bound_rec *bound_capture_find(const bound_capture *c, const char *path);
/* An integer of a module's constructor config (the module's hyperparameters). */
int bound_config_int(const ml_module *m, const char *key, int def, int *out);
void bound_capture_free(bound_capture *c);

/* ------------------------------------------------------------ the program */
typedef enum { N_LINEAR, N_PATCH, N_CHAIN, N_SUM, N_TAP, N_LN, N_ATTN, N_MOE, N_INF } bound_kind;
typedef enum { MOE_TOKEN, MOE_CONV, MOE_GLOBAL } bound_moe;

typedef struct bound_node bound_node;
struct bound_node {
    bound_kind kind;
    /* LINEAR, PATCH: l2 -> l2, l_inf -> l_inf, l_inf -> l2 (per token for a
     * token-wise map, over the sample otherwise); ATTN: c2 = ||W_proj||_2;
     * MOE: c2 = the router's ||W||_2 */
    double c2, cinf, cinf2;
    bool tokenwise;     /* LINEAR: applies to every token alike (Linear, activation): keeps the tokens */
    bool whole;         /* LINEAR: cinf2 bounds the whole sample (a map of the flattened sample) */
    int64_t out_numel;  /* LINEAR, PATCH: elements per sample of the output (0: unknown) */
    int64_t tokens;     /* PATCH: tokens made (the class token first); LN: rows per sample */
    double eps;         /* LN */
    int64_t D;          /* LN: normalised size; ATTN: head size */
    const bound_rec *r; /* LN, ATTN: the centre */
    int heads;
    double *wq, *wk, *wv; /* ATTN: [heads] spectral norms of each head's q, k and v maps */
    int layer;          /* MOE: its trace layer */
    bound_moe moe;
    bool check;         /* MOE: sparse routing, held fixed inside the certified region */
    double lip;         /* MOE_TOKEN: the experts' Lipschitz constant */
    double *lipe;       /* MOE_CONV/GLOBAL: [E] each expert's block convolution (l2) */
    double *emax;       /* MOE_TOKEN: [T] largest centre output norm among each token's kept experts;
                           MOE_CONV/GLOBAL: [B] the sample's convolution output before its gate */
    const int64_t *expert_of; /* MOE_CONV/GLOBAL: [B] the sample's expert (the trace's, borrowed) */
    double hw;          /* MOE_CONV: H * W of its input (its router reads the average pool) */
    double cin;         /* MOE_CONV: input channels */
    bound_node **kids;  /* CHAIN, SUM (a NULL kid is the identity), TAP (kids[0]: the global router's feature) */
    int n;
};

typedef struct {
    char note[256];
    bool exact, coupled, blocks;
    int64_t per_sample;
} bound_layer;

struct ml_bound {
    int64_t B;
    int64_t in_numel;   /* elements per sample of the input */
    int64_t in_tokens, in_dim; /* the input as tokens: [B, T, D] (T = 1 for [B, D]); 0 for images */
    bound_capture cap;
    bound_node *root;
    bound_node **all;
    int n_all, cap_all;
    int layers;
    bound_layer *info;
};

#endif
