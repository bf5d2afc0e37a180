/* theory.h -- the Lipschitz theory of MoEs with linear experts, computable
 * (Puigcerver et al. 2022, section 3.2; derivations in docs/THEORY.md).
 *
 * Data X [N, D], targets y [N], a fixed routing `assign` [N] (int64, 0-based
 * expert of each row, E experts). Dense least squares w* = (X^T X)^+ X^T y,
 * expert i on its rows: w_i* = (X_i^T X_i)^+ X_i^T y_i; their Lipschitz
 * constants are the norms. Linear algebra runs in double precision through
 * LAPACK (dgesdd). Pseudo-inverses drop singular values at or below
 * rcond * sigma_max, with rcond = max(rows, cols) * FLT_EPSILON by default
 * (NumPy's matrix_rank convention, at the float32 precision the data come
 * in); an expert with no rows gets w_i* = 0. */
#ifndef ML_THEORY_H
#define ML_THEORY_H

#include "../tensor.h"

typedef struct {
    int E, D;
    double *w;          /* [D] dense solution */
    double *wi;         /* [E, D] expert solutions */
    double dense_lipschitz;
    double *expert_lipschitz; /* [E] */
    int64_t *count;     /* [E] rows per expert */
    double *xty_norm;   /* [E] ||X_i^T y_i|| */
    double xty_all;     /* ||X^T y|| */
    int rank;           /* rank of X^T X */
} ml_linexp;

/* rcond <= 0 selects the default. Fails on bad shapes, labels out of range,
 * NaN or infinite values. */
int ml_theory_linear_experts(const ml_tensor *X, const ml_tensor *y, const ml_tensor *assign, int E, double rcond,
                             ml_linexp *out);
void ml_linexp_free(ml_linexp *r);

/* Theorem 1: U_i = eigenvectors of X^T X (nonzero eigenvalues) assigned to the
 * expert i maximising ||X_i u||; eps1 = max_i ||U_i U_i^T (X^T X)^+ - (X_i^T X_i)^+||_2
 * (in-subspace distance); eps2 = max_{i != j} ||(X_i^T X_i)^+ Q_j||_2, Q_j an
 * orthonormal basis of span(X_j^T) (cross-subspace distance). Then
 *   ||w*||^2 = sum_i ||U_i U_i^T w*||^2 >= sum_i max(0, ||w_i*|| - delta_i)^2 = rhs,
 *   delta_i = eps1 ||X^T y|| + eps2 sum_{j != i} ||X_j^T y_j||,
 * with equality (eps1 = eps2 = 0, w* = sum w_i*) for orthogonal subspaces. */
typedef struct {
    double eps1, eps2;
    double lhs;        /* ||w*||^2 */
    double rhs;
    bool holds;
    double *delta;     /* [E] */
    double *proj_norm; /* [E] ||U_i U_i^T w*|| */
    double *diff;      /* [E] Delta_i = ||w_i* - U_i U_i^T w*|| (exact) */
    int *dims;         /* [E] eigen-directions assigned to each expert */
} ml_thm1;
int ml_theory_theorem1(const ml_tensor *X, const ml_tensor *y, const ml_tensor *assign, int E, double rcond,
                       ml_linexp *le, ml_thm1 *out);
void ml_thm1_free(ml_thm1 *t);

/* Spectral norm (largest singular value) of a float32 matrix, in double. */
double ml_theory_spectral_norm(const ml_tensor *A);
/* Pseudo-inverse of a float32 matrix (double inside, returned as float32). */
ml_tensor *ml_theory_pinv(const ml_tensor *A, double rcond);

/* Synthetic data for the theory: E subspaces of dimension d in R^D whose
 * alignment goes from orthogonal (0) to identical (1), with C and the Q_i
 * orthonormal, mutually orthogonal d-dimensional bases. Two geometries:
 *  - rotate (default): subspace i is spanned by cos(t) C + sin(t) Q_i,
 *    t = (1 - alignment) pi/2: every principal angle between two subspaces
 *    shrinks together (the subspaces stay distinct until alignment 1, so
 *    their union keeps (E + 1) d dimensions);
 *  - overlap: subspace i is spanned by the first k = round(alignment d)
 *    vectors of C (shared by all) and d - k vectors of Q_i: k principal
 *    angles are 0, the others 90 degrees, and the union has k + E (d - k)
 *    dimensions, shrinking smoothly to d. n rows per subspace,
 * x = B_i z (z ~ N(0, I)), y = x . beta_i + noise * N(0, 1), beta_i a random
 * vector of the subspace (unit norm when balanced); with shared, every subset
 * follows one beta drawn over all the subspaces. mirror (E = 2): X_2 = -X_1
 * and y_2 = y_1. */
typedef struct {
    int64_t n;
    int D, d, E;
    double alignment, noise;
    bool mirror;
    bool overlap;   /* the overlap geometry (else rotate) */
    bool shared;    /* one target vector beta for every subset (else one per subset) */
    bool balanced;  /* per-subset betas of unit norm; with shared, +-1 coefficients on the union's basis */
    uint64_t seed;
} ml_subspace_opts;
int ml_theory_subspace_data(const ml_subspace_opts *o, ml_tensor **X, ml_tensor **y, ml_tensor **assign,
                            ml_tensor **betas);

#endif
