/* theory.c -- least squares with linear experts, Theorem 1 quantities,
 * spectral norms, pseudo-inverses, subspace data; double precision, LAPACK. */
#include "theory.h"

#include "../parallel.h"
#include "../rng.h"

#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK (Fortran) from OpenBLAS; the trailing size_t is the hidden length
 * of the character argument. */
void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
             const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info,
             size_t jobz_len);

/* ------------------------------------------------------------ dense helpers (row-major double) */
typedef struct {
    int m, n, k;  /* A is m x n, k = min(m, n) */
    double *U;    /* [m, k] */
    double *S;    /* [k], descending */
    double *VT;   /* [k, n] */
} svd_t;

static void svd_free(svd_t *s) {
    free(s->U);
    free(s->S);
    free(s->VT);
    memset(s, 0, sizeof *s);
}

/* Thin SVD of a row-major m x n matrix. Row-major A is column-major A^T, whose
 * SVD A^T = U' S V'^T gives A = V' S U'^T. */
static int svd(const double *A, int m, int n, svd_t *out) {
    memset(out, 0, sizeof *out);
    out->m = m;
    out->n = n;
    out->k = m < n ? m : n;
    int k = out->k;
    if (k == 0) return 0;
    double *a = malloc(sizeof *a * (size_t)m * (size_t)n);
    out->U = malloc(sizeof(double) * (size_t)m * (size_t)k);
    out->S = malloc(sizeof(double) * (size_t)k);
    out->VT = malloc(sizeof(double) * (size_t)k * (size_t)n);
    int *iwork = malloc(sizeof(int) * 8 * (size_t)k);
    if (!a || !out->U || !out->S || !out->VT || !iwork) {
        free(a);
        free(iwork);
        svd_free(out);
        return ml_failc("theory: out of memory for a %d x %d SVD", m, n);
    }
    memcpy(a, A, sizeof *a * (size_t)m * (size_t)n);
    /* column-major B = A^T is n x m with lda = n */
    int bm = n, bn = m, lda = n, ldu = n, ldvt = k, lwork = -1, info = 0;
    double q;
    int threads = ml_serial_begin(); /* small matrices: threads only cost (parallel.h) */
    dgesdd_("S", &bm, &bn, a, &lda, out->S, out->VT, &ldu, out->U, &ldvt, &q, &lwork, iwork, &info, 1);
    lwork = (int)q + 1;
    double *work = malloc(sizeof *work * (size_t)lwork);
    if (work) dgesdd_("S", &bm, &bn, a, &lda, out->S, out->VT, &ldu, out->U, &ldvt, work, &lwork, iwork, &info, 1);
    ml_serial_end(threads);
    free(work);
    free(a);
    free(iwork);
    if (!work || info != 0) {
        svd_free(out);
        return ml_failc("theory: the SVD did not converge (LAPACK info %d)", info);
    }
    return 0;
}

static double tolerance(const svd_t *s, double rcond) {
    if (s->k == 0) return 0;
    /* the data arrive in float32: directions below its resolution are noise */
    double r = rcond > 0 ? rcond : (double)(s->m > s->n ? s->m : s->n) * FLT_EPSILON;
    return r * s->S[0];
}

/* P = A^+ (n x m) from the SVD of A (m x n). Returns the rank. */
static int pinv_from(const svd_t *s, double rcond, double *P) {
    int m = s->m, n = s->n, k = s->k, rank = 0;
    double tol = tolerance(s, rcond);
    memset(P, 0, sizeof *P * (size_t)n * (size_t)m);
    for (int r = 0; r < k; r++) {
        if (!(s->S[r] > tol)) continue;
        rank++;
        double inv = 1.0 / s->S[r];
        for (int i = 0; i < n; i++) {
            double v = s->VT[(size_t)r * n + i] * inv;
            if (v == 0) continue;
            for (int j = 0; j < m; j++) P[(size_t)i * m + j] += v * s->U[(size_t)j * k + r];
        }
    }
    return rank;
}

static double spectral(const double *A, int m, int n) {
    svd_t s;
    if (svd(A, m, n, &s)) return NAN;
    double v = s.k ? s.S[0] : 0.0;
    svd_free(&s);
    return v;
}

static double norm2(const double *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i] * v[i];
    return sqrt(s);
}

/* y = A x, A m x n */
static void matvec(const double *A, int m, int n, const double *x, double *y) {
    for (int i = 0; i < m; i++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += A[(size_t)i * n + j] * x[j];
        y[i] = s;
    }
}

/* Copies a float32 tensor into a fresh double buffer, failing on NaN/Inf. */
static double *to_double(const char *what, const ml_tensor *t) {
    ml_tensor *c = ml_contiguous((ml_tensor *)t);
    if (!c) return NULL;
    int64_t n = ml_numel(c);
    double *d = malloc(sizeof *d * (size_t)(n ? n : 1));
    for (int64_t i = 0; d && i < n; i++) {
        double v = c->dtype == ML_F32 ? (double)ml_f32(c)[i] : (double)ml_i64(c)[i];
        if (!isfinite(v)) {
            free(d);
            ml_release(c);
            return ml_fail("theory: %s contains a NaN or infinite value (element %" PRId64 ")", what, i + 1);
        }
        d[i] = v;
    }
    ml_release(c);
    if (!d) return ml_fail("out of memory");
    return d;
}

/* ------------------------------------------------------------ inputs */
typedef struct {
    int64_t N;
    int D, E;
    double *X, *y;
    int64_t *assign;
    int64_t *count;
    double **Xi, **yi; /* per-expert rows */
} problem;

static void problem_free(problem *p) {
    free(p->X);
    free(p->y);
    free(p->assign);
    free(p->count);
    if (p->Xi)
        for (int e = 0; e < p->E; e++) {
            free(p->Xi[e]);
            free(p->yi[e]);
        }
    free(p->Xi);
    free(p->yi);
    memset(p, 0, sizeof *p);
}

static int problem_load(const ml_tensor *X, const ml_tensor *y, const ml_tensor *assign, int E, problem *p) {
    memset(p, 0, sizeof *p);
    if (X->ndim != 2) return ml_failc("theory: X must be a 2-d tensor [N, D], got %s", ML_SHAPE_STR(X));
    if (y->ndim != 1 || y->shape[0] != X->shape[0])
        return ml_failc("theory: y must be [%" PRId64 "] (one target per row of X), got %s", X->shape[0], ML_SHAPE_STR(y));
    if (assign->dtype != ML_I64 || assign->ndim != 1 || assign->shape[0] != X->shape[0])
        return ml_failc("theory: assign must be an int64 tensor [%" PRId64 "] of expert ids", X->shape[0]);
    if (X->shape[0] < 1 || X->shape[1] < 1) return ml_failc("theory: X is empty (%s)", ML_SHAPE_STR(X));
    if (X->shape[1] > 4096) return ml_failc("theory: D = %" PRId64 " is too large for dense SVDs (at most 4096)", X->shape[1]);
    p->N = X->shape[0];
    p->D = (int)X->shape[1];
    if (!(p->X = to_double("X", X)) || !(p->y = to_double("y", y))) {
        problem_free(p);
        return -1;
    }
    ml_tensor *ac = ml_contiguous((ml_tensor *)assign);
    int maxe = -1;
    p->assign = malloc(sizeof *p->assign * (size_t)p->N);
    for (int64_t n = 0; n < p->N; n++) {
        int64_t a = ml_i64(ac)[n];
        if (a < 0 || (E > 0 && a >= E)) {
            ml_release(ac);
            problem_free(p);
            return ml_failc("theory: row %" PRId64 " is assigned to expert %" PRId64 ", outside 1..%d", n + 1, a + 1, E);
        }
        p->assign[n] = a;
        if (a > maxe) maxe = (int)a;
    }
    ml_release(ac);
    p->E = E > 0 ? E : maxe + 1;
    p->count = calloc((size_t)p->E, sizeof *p->count);
    p->Xi = calloc((size_t)p->E, sizeof *p->Xi);
    p->yi = calloc((size_t)p->E, sizeof *p->yi);
    for (int64_t n = 0; n < p->N; n++) p->count[p->assign[n]]++;
    for (int e = 0; e < p->E; e++) {
        p->Xi[e] = malloc(sizeof(double) * (size_t)(p->count[e] ? p->count[e] : 1) * (size_t)p->D);
        p->yi[e] = malloc(sizeof(double) * (size_t)(p->count[e] ? p->count[e] : 1));
    }
    int64_t *fill = calloc((size_t)p->E, sizeof *fill);
    for (int64_t n = 0; n < p->N; n++) {
        int e = (int)p->assign[n];
        memcpy(p->Xi[e] + fill[e] * p->D, p->X + n * p->D, sizeof(double) * (size_t)p->D);
        p->yi[e][fill[e]++] = p->y[n];
    }
    free(fill);
    return 0;
}

/* w = (A^T A)^+ A^T b = A^+ b for A rows x D. Returns the rank of A (or -1). */
static int lstsq(const double *A, int64_t rows, int D, const double *b, double rcond, double *w) {
    memset(w, 0, sizeof *w * (size_t)D);
    if (rows == 0) return 0;
    svd_t s;
    if (svd(A, (int)rows, D, &s)) return -1;
    double tol = tolerance(&s, rcond);
    int rank = 0;
    for (int r = 0; r < s.k; r++) {
        if (!(s.S[r] > tol)) continue;
        rank++;
        double c = 0;
        for (int64_t i = 0; i < rows; i++) c += s.U[(size_t)i * s.k + r] * b[i];
        c /= s.S[r];
        for (int j = 0; j < D; j++) w[j] += c * s.VT[(size_t)r * D + j];
    }
    svd_free(&s);
    return rank;
}

/* ------------------------------------------------------------ linear experts */
void ml_linexp_free(ml_linexp *r) {
    free(r->w);
    free(r->wi);
    free(r->expert_lipschitz);
    free(r->count);
    free(r->xty_norm);
    memset(r, 0, sizeof *r);
}

static int linexp(const problem *p, double rcond, ml_linexp *r) {
    memset(r, 0, sizeof *r);
    int D = p->D, E = p->E;
    r->E = E;
    r->D = D;
    r->w = calloc((size_t)D, sizeof *r->w);
    r->wi = calloc((size_t)E * (size_t)D, sizeof *r->wi);
    r->expert_lipschitz = calloc((size_t)E, sizeof(double));
    r->count = calloc((size_t)E, sizeof(int64_t));
    r->xty_norm = calloc((size_t)E, sizeof(double));
    if (!r->w || !r->wi || !r->expert_lipschitz || !r->count || !r->xty_norm) {
        ml_linexp_free(r);
        return ml_failc("out of memory");
    }
    r->rank = lstsq(p->X, p->N, D, p->y, rcond, r->w);
    if (r->rank < 0) {
        ml_linexp_free(r);
        return -1;
    }
    r->dense_lipschitz = norm2(r->w, D);
    double *xty = calloc((size_t)D, sizeof *xty), *xtyi = calloc((size_t)D, sizeof *xtyi);
    for (int e = 0; e < E; e++) {
        r->count[e] = p->count[e];
        if (lstsq(p->Xi[e], p->count[e], D, p->yi[e], rcond, r->wi + (size_t)e * D) < 0) {
            free(xty);
            free(xtyi);
            ml_linexp_free(r);
            return -1;
        }
        r->expert_lipschitz[e] = norm2(r->wi + (size_t)e * D, D);
        memset(xtyi, 0, sizeof *xtyi * (size_t)D);
        for (int64_t i = 0; i < p->count[e]; i++)
            for (int j = 0; j < D; j++) xtyi[j] += p->Xi[e][i * D + j] * p->yi[e][i];
        r->xty_norm[e] = norm2(xtyi, D);
        for (int j = 0; j < D; j++) xty[j] += xtyi[j];
    }
    r->xty_all = norm2(xty, D);
    free(xty);
    free(xtyi);
    return 0;
}

int ml_theory_linear_experts(const ml_tensor *X, const ml_tensor *y, const ml_tensor *assign, int E, double rcond,
                             ml_linexp *out) {
    problem p;
    if (problem_load(X, y, assign, E, &p)) return -1;
    int rc = linexp(&p, rcond, out);
    problem_free(&p);
    return rc;
}

/* ------------------------------------------------------------ Theorem 1 */
void ml_thm1_free(ml_thm1 *t) {
    free(t->delta);
    free(t->proj_norm);
    free(t->diff);
    free(t->dims);
    memset(t, 0, sizeof *t);
}

int ml_theory_theorem1(const ml_tensor *X, const ml_tensor *y, const ml_tensor *assign, int E, double rcond,
                       ml_linexp *le, ml_thm1 *t) {
    memset(t, 0, sizeof *t);
    problem p;
    if (problem_load(X, y, assign, E, &p)) return -1;
    int rc = -1;
    int D = p.D;
    E = p.E;
    svd_t sx = {0};
    double *Gp = NULL, *Bi = NULL, *Ai = NULL, *tmp = NULL, *Q = NULL;
    int *owner = NULL;
    if (linexp(&p, rcond, le)) goto done;
    if (svd(p.X, (int)p.N, D, &sx)) goto done;
    double tol = tolerance(&sx, rcond);
    int r = 0;
    while (r < sx.k && sx.S[r] > tol) r++;
    t->delta = calloc((size_t)E, sizeof(double));
    t->proj_norm = calloc((size_t)E, sizeof(double));
    t->diff = calloc((size_t)E, sizeof(double));
    t->dims = calloc((size_t)E, sizeof(int));
    owner = calloc((size_t)(r ? r : 1), sizeof *owner);
    Gp = calloc((size_t)D * D, sizeof *Gp);
    Bi = calloc((size_t)E * D * D, sizeof *Bi);
    Ai = calloc((size_t)D * D, sizeof *Ai);
    tmp = calloc((size_t)D * D, sizeof *tmp);
    Q = calloc((size_t)D * D, sizeof *Q);
    if (!t->delta || !t->proj_norm || !t->diff || !t->dims || !owner || !Gp || !Bi || !Ai || !tmp || !Q) {
        ml_fail("out of memory");
        goto done;
    }
    /* eigenvectors of X^T X = rows of V^T; each goes to the expert whose data
     * projects most onto it */
    double *proj = malloc(sizeof(double) * (size_t)(p.N > 0 ? p.N : 1));
    for (int k = 0; k < r; k++) {
        const double *v = sx.VT + (size_t)k * D;
        int best = 0;
        double bv = -1;
        for (int e = 0; e < E; e++) {
            if (p.count[e] == 0) continue;
            matvec(p.Xi[e], (int)p.count[e], D, v, proj);
            double s = norm2(proj, (int)p.count[e]);
            if (s > bv) {
                bv = s;
                best = e;
            }
        }
        owner[k] = best;
        t->dims[best]++;
        /* (X^T X)^+ = sum_k v_k v_k^T / s_k^2 */
        double inv = 1.0 / (sx.S[k] * sx.S[k]);
        for (int a = 0; a < D; a++)
            for (int b = 0; b < D; b++) Gp[(size_t)a * D + b] += inv * v[a] * v[b];
    }
    free(proj);
    /* B_i = (X_i^T X_i)^+ from the SVD of X_i: sum v v^T / s^2 */
    for (int e = 0; e < E; e++) {
        if (p.count[e] == 0) continue;
        svd_t si;
        if (svd(p.Xi[e], (int)p.count[e], D, &si)) goto done;
        double ti = tolerance(&si, rcond);
        for (int k = 0; k < si.k && si.S[k] > ti; k++) {
            const double *v = si.VT + (size_t)k * D;
            double inv = 1.0 / (si.S[k] * si.S[k]);
            for (int a = 0; a < D; a++)
                for (int b = 0; b < D; b++) Bi[(size_t)e * D * D + (size_t)a * D + b] += inv * v[a] * v[b];
        }
        svd_free(&si);
    }
    /* eps1 = max_i ||P_i G^+ - B_i||, P_i G^+ = sum over i's eigen-directions */
    t->eps1 = 0;
    for (int e = 0; e < E; e++) {
        memset(Ai, 0, sizeof *Ai * (size_t)D * D);
        for (int k = 0; k < r; k++) {
            if (owner[k] != e) continue;
            const double *v = sx.VT + (size_t)k * D;
            double inv = 1.0 / (sx.S[k] * sx.S[k]);
            for (int a = 0; a < D; a++)
                for (int b = 0; b < D; b++) Ai[(size_t)a * D + b] += inv * v[a] * v[b];
        }
        for (size_t q = 0; q < (size_t)D * D; q++) tmp[q] = Ai[q] - Bi[(size_t)e * D * D + q];
        double s = spectral(tmp, D, D);
        if (isnan(s)) goto done;
        if (s > t->eps1) t->eps1 = s;
        /* the projection of w* onto expert e's directions, and its distance to w_e* */
        double pw2 = 0;
        double *pw = calloc((size_t)D, sizeof *pw);
        for (int k = 0; k < r; k++) {
            if (owner[k] != e) continue;
            const double *v = sx.VT + (size_t)k * D;
            double c = 0;
            for (int a = 0; a < D; a++) c += v[a] * le->w[a];
            for (int a = 0; a < D; a++) pw[a] += c * v[a];
        }
        pw2 = norm2(pw, D);
        t->proj_norm[e] = pw2;
        for (int a = 0; a < D; a++) pw[a] -= le->wi[(size_t)e * D + a];
        t->diff[e] = norm2(pw, D);
        free(pw);
    }
    /* eps2 = max_{i != j} ||B_i Q_j||, Q_j an orthonormal basis of span(X_j^T) */
    t->eps2 = 0;
    for (int j = 0; j < E; j++) {
        if (p.count[j] == 0) continue;
        svd_t sj;
        if (svd(p.Xi[j], (int)p.count[j], D, &sj)) goto done;
        double tj = tolerance(&sj, rcond);
        int rj = 0;
        while (rj < sj.k && sj.S[rj] > tj) rj++;
        for (int i = 0; i < E && rj > 0; i++) {
            if (i == j || p.count[i] == 0) continue;
            /* tmp [D, rj] = B_i Q_j, Q_j columns = rows of V_j^T */
            for (int a = 0; a < D; a++)
                for (int c = 0; c < rj; c++) {
                    double s = 0;
                    for (int b = 0; b < D; b++) s += Bi[(size_t)i * D * D + (size_t)a * D + b] * sj.VT[(size_t)c * D + b];
                    tmp[(size_t)a * rj + c] = s;
                }
            double s = spectral(tmp, D, rj);
            if (isnan(s)) {
                svd_free(&sj);
                goto done;
            }
            if (s > t->eps2) t->eps2 = s;
        }
        svd_free(&sj);
    }
    /* the bound */
    t->lhs = le->dense_lipschitz * le->dense_lipschitz;
    t->rhs = 0;
    for (int e = 0; e < E; e++) {
        double cross = 0;
        for (int j = 0; j < E; j++)
            if (j != e) cross += le->xty_norm[j];
        t->delta[e] = t->eps1 * le->xty_all + t->eps2 * cross;
        double m = le->expert_lipschitz[e] - t->delta[e];
        if (m > 0) t->rhs += m * m;
    }
    /* rounding: the identity ||w*||^2 = sum ||P_i w*||^2 holds to ~1e-12 relative */
    t->holds = t->lhs >= t->rhs * (1.0 - 1e-9) - 1e-12;
    rc = 0;
done:
    svd_free(&sx);
    free(Gp);
    free(Bi);
    free(Ai);
    free(tmp);
    free(Q);
    free(owner);
    problem_free(&p);
    if (rc) {
        ml_thm1_free(t);
        ml_linexp_free(le);
    }
    return rc;
}

/* ------------------------------------------------------------ utilities */
double ml_theory_spectral_norm(const ml_tensor *A) {
    if (A->ndim != 2) {
        ml_fail("spectral_norm: expects a matrix, got %s", ML_SHAPE_STR(A));
        return NAN;
    }
    double *a = to_double("the matrix", A);
    if (!a) return NAN;
    double s = spectral(a, (int)A->shape[0], (int)A->shape[1]);
    free(a);
    return s;
}

ml_tensor *ml_theory_pinv(const ml_tensor *A, double rcond) {
    if (A->ndim != 2) return ml_fail("pinv: expects a matrix, got %s", ML_SHAPE_STR(A));
    int m = (int)A->shape[0], n = (int)A->shape[1];
    double *a = to_double("the matrix", A);
    if (!a) return NULL;
    svd_t s;
    if (svd(a, m, n, &s)) {
        free(a);
        return NULL;
    }
    double *P = malloc(sizeof *P * (size_t)n * (size_t)m);
    pinv_from(&s, rcond, P);
    int64_t shape[2] = {n, m};
    ml_tensor *out = ml_empty(ML_F32, 2, shape);
    if (out)
        for (int64_t i = 0; i < (int64_t)n * m; i++) ml_f32(out)[i] = (float)P[i];
    free(P);
    free(a);
    svd_free(&s);
    return out;
}

/* ------------------------------------------------------------ synthetic data */
static double gauss(ml_rng_state *st) {
    double u = ml_rng_local_uniform(st), v = ml_rng_local_uniform(st);
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

int ml_theory_subspace_data(const ml_subspace_opts *o, ml_tensor **Xo, ml_tensor **yo, ml_tensor **ao, ml_tensor **bo) {
    *Xo = *yo = *ao = *bo = NULL;
    if (o->E < 1 || o->d < 1 || o->D < 1 || o->n < 1)
        return ml_failc("subspace_data: n, dim, sub_dim and experts must be positive");
    if (o->d * (o->E + 1) > o->D)
        return ml_failc("subspace_data: %d subspaces of dimension %d (plus a shared one) need dim >= %d, got %d", o->E,
                        o->d, o->d * (o->E + 1), o->D);
    if (!(o->alignment >= 0 && o->alignment <= 1)) return ml_failc("subspace_data: alignment must be in [0, 1]");
    if (o->mirror && o->E != 2) return ml_failc("subspace_data: the mirror case has 2 experts");
    ml_rng_state st;
    ml_rng_local_seed(&st, o->seed);
    int D = o->D, d = o->d, E = o->E, nb = d * (E + 1);
    /* an orthonormal set of nb vectors: the right singular vectors of a random matrix */
    double *G = malloc(sizeof *G * (size_t)nb * D);
    for (int i = 0; i < nb * D; i++) G[i] = gauss(&st);
    svd_t s;
    if (svd(G, nb, D, &s)) {
        free(G);
        return -1;
    }
    free(G);
    /* VT rows 0..nb-1 are orthonormal: C = rows [0, d), Q_i = rows [(i+1) d, (i+2) d) */
    double t = (1.0 - o->alignment) * 1.5707963267948966, ct = cos(t), stt = sin(t);
    int64_t N = o->n * E;
    int64_t xs[2] = {N, D}, bs[2] = {E, D};
    ml_tensor *X = ml_empty(ML_F32, 2, xs), *y = ml_empty(ML_F32, 1, &N), *a = ml_empty(ML_I64, 1, &N);
    ml_tensor *betas = ml_zeros(ML_F32, 2, bs);
    double *basis = malloc(sizeof *basis * (size_t)d * D), *beta = malloc(sizeof *beta * (size_t)D);
    double *z = malloc(sizeof *z * (size_t)d);
    if (!X || !y || !a || !betas || !basis || !beta || !z) {
        ml_release(X);
        ml_release(y);
        ml_release(a);
        ml_release(betas);
        free(basis);
        free(beta);
        free(z);
        svd_free(&s);
        return ml_failc("out of memory");
    }
    double *shared = NULL;
    int kshared = (int)floor(o->alignment * d + 0.5);
    if (o->shared) {
        /* one target over the data's span (C and every Q_i); balanced: coefficients
         * +-1 on the union's basis, so every expert's part of it has norm sqrt(d) */
        shared = calloc((size_t)D, sizeof *shared);
        for (int k = 0; k < nb; k++) {
            bool in_union = !o->overlap || (k < d ? k < kshared : (k % d) < d - kshared);
            if (!in_union) continue;
            double c = o->balanced ? (ml_rng_local_uniform(&st) < 0.5 ? -1.0 : 1.0) : gauss(&st);
            for (int j = 0; j < D; j++) shared[j] += c * s.VT[(size_t)k * D + j];
        }
    }
    for (int e = 0; e < E; e++) {
        for (int k = 0; k < d; k++)
            for (int j = 0; j < D; j++) {
                const double *c = s.VT + (size_t)k * D, *q = s.VT + (size_t)((e + 1) * d + k - kshared) * D;
                basis[k * D + j] = !o->overlap ? ct * c[j] + stt * s.VT[(size_t)((e + 1) * d + k) * D + j]
                                   : k < kshared ? c[j] : q[j];
            }
        /* beta_e: a random vector of the subspace (the mirror case shares subset 1's) */
        if (shared) {
            memcpy(beta, shared, sizeof *beta * (size_t)D);
        } else if (!(o->mirror && e == 1)) {
            for (int j = 0; j < D; j++) beta[j] = 0;
            for (int k = 0; k < d; k++) {
                double c = gauss(&st);
                for (int j = 0; j < D; j++) beta[j] += c * basis[k * D + j];
            }
            if (o->balanced) {
                double nb2 = norm2(beta, D);
                for (int j = 0; j < D; j++) beta[j] /= nb2 > 0 ? nb2 : 1;
            }
        }
        for (int j = 0; j < D; j++) ml_f32(betas)[e * D + j] = (float)beta[j];
        for (int64_t i = 0; i < o->n; i++) {
            int64_t row = (int64_t)e * o->n + i;
            if (o->mirror && e == 1) {
                /* X_2 = -X_1, y_2 = y_1 */
                for (int j = 0; j < D; j++) ml_f32(X)[row * D + j] = -ml_f32(X)[i * D + j];
                ml_f32(y)[row] = ml_f32(y)[i];
            } else {
                for (int k = 0; k < d; k++) z[k] = gauss(&st);
                double yy = 0;
                for (int j = 0; j < D; j++) {
                    double v = 0;
                    for (int k = 0; k < d; k++) v += z[k] * basis[k * D + j];
                    ml_f32(X)[row * D + j] = (float)v;
                    yy += v * beta[j];
                }
                ml_f32(y)[row] = (float)(yy + o->noise * gauss(&st));
            }
            ml_i64(a)[row] = e;
        }
    }
    free(basis);
    free(beta);
    free(z);
    free(shared);
    svd_free(&s);
    *Xo = X;
    *yo = y;
    *ao = a;
    *bo = betas;
    return 0;
}
