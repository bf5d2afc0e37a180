/* opnorm.h -- upper bounds on the operator norms of the linear maps of a
 * model, for the certified routing radius (bound.h): how much a map can
 * stretch a perturbation, from l2 to l2, from l_inf to l_inf, and from l_inf
 * to l2. Every value is an upper bound (exact where the note says so); NAN +
 * error when LAPACK fails. */
#ifndef ML_ANALYSIS_OPNORM_H
#define ML_ANALYSIS_OPNORM_H

#include "../tensor.h"

typedef struct {
    double l2;     /* ||A||_{2->2} */
    double linf;   /* ||A||_{inf->inf} = the largest l1 norm of a row */
    double linf2;  /* ||A||_{inf->2} <= sqrt(sum of the squared l1 norms of the rows) */
} ml_opnorm;

/* The spectral norm of a matrix (double-precision SVD, with a margin for its
 * rounding). */
double ml_opnorm_spectral(ml_tensor *A);
/* A matrix [out, in]: exact l2 and l_inf norms. */
int ml_opnorm_matrix(ml_tensor *W, ml_opnorm *out);
/* A convolution with weight [O, I/groups, k, k], this stride, any zero
 * padding, producing `out_pixels` positions per output channel: l2 <= the
 * smaller of ceil(k/s) ||W_mat||_2 (an input pixel lies in at most
 * ceil(k/s)^2 patches) and, ungrouped, sqrt(max row sum x max column sum) of
 * |W| (Schur's test); l_inf = the largest row sum; l_inf -> l2 over the whole
 * output. */
int ml_opnorm_conv(ml_tensor *W, int k, int stride, int groups, int64_t out_pixels, ml_opnorm *out);

#endif
