/* linalg.h -- matrix products through OpenBLAS cblas_sgemm.
 *
 * matmul follows PyTorch: 1-d x 1-d is a dot product; 2-d x 2-d a matrix
 * product; a 1-d operand is promoted to a matrix and the added dimension
 * removed afterwards; batch dimensions broadcast ([..., n, k] x [..., k, m]).
 * A [..., n, k] x [k, m] product is done as one tall GEMM. */
#ifndef ML_OPS_LINALG_H
#define ML_OPS_LINALG_H

#include "../tensor.h"

ml_tensor *ml_matmul(ml_tensor *a, ml_tensor *b);
ml_tensor *ml_bmm(ml_tensor *a, ml_tensor *b); /* [B,n,k] x [B,k,m] -> [B,n,m] */
/* y = x W^T + b: x [..., in], W [out, in], b [out] or NULL. One GEMM. */
ml_tensor *ml_linear(ml_tensor *x, ml_tensor *w, ml_tensor *b);

/* Low level: C[M,N] = alpha * op(A) op(B) + beta * C, row-major, on raw
 * pointers (lda etc. are row strides). Counts FLOPs (see ml_flops). A large
 * product (about 10 ms and more) runs in pieces with a look at the interrupt
 * flag between them: returns -1 with the error "interrupted" when it stopped
 * there (C partly written), 0 otherwise. */
int ml_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
             int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);

/* FLOP counter: every GEMM and convolution adds 2*MACs here, so GFLOPs per
 * image are measured rather than guessed. */
void ml_flops_add(int64_t flops);
int64_t ml_flops(void);
void ml_flops_reset(void);

#endif
