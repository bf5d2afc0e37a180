/* linalg.c -- matmul, bmm, linear on cblas_sgemm, with backward. */
#include "linalg.h"

#include <cblas.h>
#include <omp.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>

#include "../autograd.h"
#include "reduce.h"
#include "shape.h"
#include "../parallel.h"

/* Below this many multiply-adds a GEMM is not worth splitting across threads. */
#define ML_GEMM_SPLIT_MACS ((int64_t)1 << 18)
/* From this many (about 40 ms on two cores) a GEMM is done in pieces, so that
 * Ctrl-C is noticed between them (parts of a second apart even for products
 * of minutes: a piece has at least 2048 rows or columns). */
#define ML_GEMM_POLL_MACS ((int64_t)1 << 32)
#define ML_GEMM_PIECE_MIN 2048

static atomic_llong flop_counter;
void ml_flops_add(int64_t flops) { atomic_fetch_add(&flop_counter, flops); }
int64_t ml_flops(void) { return atomic_load(&flop_counter); }
void ml_flops_reset(void) { atomic_store(&flop_counter, 0); }

static void gemm_block(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)M,
                (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* One product (or one piece of a large one): a serial BLAS gets it split into
 * row (or column) blocks computed in parallel by OpenMP. */
static void gemm_piece(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    /* One thread pool for everything (parallel.h): the OpenMP build of
     * OpenBLAS threads the product with it; a serial BLAS gets the product
     * split into row (or column) blocks computed in parallel by OpenMP. */
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if (threads <= 1 || M * N * K < ML_GEMM_SPLIT_MACS || ml_blas_threads_itself()) {
        gemm_block(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* split the longer side of C into `threads` blocks (multiples of 16) */
    bool by_rows = M >= N;
    int64_t len = by_rows ? M : N, blk = (len + threads - 1) / threads;
    blk = (blk + 15) / 16 * 16;
    int nblk = (int)((len + blk - 1) / blk);
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (int b = 0; b < nblk; b++) {
        int64_t s = b * blk, n = len - s < blk ? len - s : blk;
        if (by_rows) {
            const float *Ab = trans_a ? A + s : A + s * lda;
            gemm_block(trans_a, trans_b, n, N, K, alpha, Ab, lda, B, ldb, beta, C + s * ldc, ldc);
        } else {
            const float *Bb = trans_b ? B + s * ldb : B + s;
            gemm_block(trans_a, trans_b, M, n, K, alpha, A, lda, Bb, ldb, beta, C + s, ldc);
        }
    }
}

int ml_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
             int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M == 0 || N == 0) return 0;
    if (K == 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0 ? 0.0f : beta * C[i * ldc + j];
        return 0;
    }
    ml_flops_add(2 * M * N * K);
    if (M * N * K < ML_GEMM_POLL_MACS || omp_in_parallel()) {
        gemm_piece(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return 0;
    }
    /* A large product: pieces of the longer side of C of about
     * ML_GEMM_POLL_MACS multiply-adds and at least ML_GEMM_PIECE_MIN rows
     * (or columns) each, with a look at the interrupt flag between them.
     * BLAS packs the other operand once per piece: with pieces this deep
     * that costs about 1% (a packed float is some hundred times dearer than a
     * multiply-add). Every element of C is still one sum over the whole of K
     * in BLAS's order, but OpenBLAS tiles the rows at a piece's edge
     * differently from those inside one call, which can change the last bit
     * of a few elements: the same on every run, and products below
     * ML_GEMM_POLL_MACS (every layer of the model zoo) are one call as before. */
    bool by_rows = M >= N;
    int64_t len = by_rows ? M : N, other = by_rows ? N : M;
    int64_t piece = ML_GEMM_POLL_MACS / (other * K);
    piece = piece < ML_GEMM_PIECE_MIN ? ML_GEMM_PIECE_MIN : (piece + 255) / 256 * 256;
    for (int64_t s = 0; s < len; s += piece) {
        if (ml_interrupted()) return -1;
        int64_t n = len - s < piece ? len - s : piece;
        if (by_rows)
            gemm_piece(trans_a, trans_b, n, N, K, alpha, trans_a ? A + s : A + s * lda, lda, B, ldb, beta, C + s * ldc,
                       ldc);
        else
            gemm_piece(trans_a, trans_b, M, n, K, alpha, A, lda, trans_b ? B + s * ldb : B + s, ldb, beta, C + s, ldc);
    }
    return 0;
}

/* ------------------------------------------------------------ bmm core */
/* out[b] = op(a[b]) op(b[b]) for contiguous 3-d operands. Returns 0, or -1
 * with the error set when interrupted. */
static int bmm_raw(const ml_tensor *a, bool ta, const ml_tensor *b, bool tb, ml_tensor *out) {
    int64_t B = out->shape[0], M = out->shape[1], N = out->shape[2];
    int64_t K = ta ? a->shape[1] : a->shape[2];
    int64_t sa = a->shape[0] == 1 ? 0 : a->shape[1] * a->shape[2];
    int64_t sb = b->shape[0] == 1 ? 0 : b->shape[1] * b->shape[2];
    /* many small products (attention heads): one per thread, each on one BLAS
     * thread (ml_sgemm inside a parallel region does not split) */
    bool par = B > 1 && M * N * K < 4 * ML_GEMM_SPLIT_MACS && !omp_in_parallel();
    if (par) {
        #pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < B; i++)
            ml_sgemm(ta, tb, M, N, K, 1.0f, ml_f32(a) + i * sa, a->shape[2], ml_f32(b) + i * sb, b->shape[2], 0.0f,
                     ml_f32(out) + i * M * N, N);
        return 0;
    }
    /* one at a time: a large product may stop when interrupted */
    for (int64_t i = 0; i < B; i++)
        if (ml_sgemm(ta, tb, M, N, K, 1.0f, ml_f32(a) + i * sa, a->shape[2], ml_f32(b) + i * sb, b->shape[2], 0.0f,
                     ml_f32(out) + i * M * N, N))
            return -1;
    return 0;
}

static int bmm_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *a = ml_saved(n, 0), *b = ml_saved(n, 1);
    if (!a || !b) return -1;
    if (n->needs[0]) { /* ga = g b^T */
        int64_t sh[3] = {g->shape[0], a->shape[1], a->shape[2]};
        ml_tensor *ga = ml_empty(ML_F32, 3, sh);
        if (!ga) return -1;
        if (bmm_raw(g, false, b, true, ga)) {
            ml_release(ga);
            return -1;
        }
        gin[0] = ga;
    }
    if (n->needs[1]) { /* gb = a^T g */
        int64_t sh[3] = {g->shape[0], b->shape[1], b->shape[2]};
        ml_tensor *gb = ml_empty(ML_F32, 3, sh);
        if (!gb) return -1;
        if (bmm_raw(a, true, g, false, gb)) {
            ml_release(gb);
            return -1;
        }
        gin[1] = gb;
    }
    return 0;
}

ml_tensor *ml_bmm(ml_tensor *a, ml_tensor *b) {
    if (a->ndim != 3 || b->ndim != 3)
        return ml_fail("bmm: expects two 3-d tensors, got %s and %s", ML_SHAPE_STR(a), ML_SHAPE_STR(b));
    if (a->dtype != ML_F32 || b->dtype != ML_F32) return ml_fail("bmm: expects float32 tensors");
    if (a->shape[0] != b->shape[0] || a->shape[2] != b->shape[1])
        return ml_fail("bmm: shapes %s and %s do not match (need [B,n,k] and [B,k,m])", ML_SHAPE_STR(a),
                       ML_SHAPE_STR(b));
    ml_tensor *ca = ml_contiguous(a), *cb = ca ? ml_contiguous(b) : NULL;
    ml_tensor *out = NULL;
    if (cb) {
        int64_t sh[3] = {a->shape[0], a->shape[1], b->shape[2]};
        out = ml_empty(ML_F32, 3, sh);
        if (out && bmm_raw(ca, false, cb, false, out)) {
            ml_release(out);
            out = NULL;
        }
        if (out) {
            ml_node *n = ml_record("bmm", out, 2, (ml_tensor *[]){a, b}, bmm_backward);
            if (n) {
                ml_save(n, ca);
                ml_save(n, cb);
            }
        }
    }
    ml_release(ca);
    ml_release(cb);
    return out;
}

/* ------------------------------------------------------------ matmul */
ml_tensor *ml_matmul(ml_tensor *a, ml_tensor *b) {
    if (a->dtype != ML_F32 || b->dtype != ML_F32)
        return ml_fail("matmul: expects float32 tensors, got %s and %s", ml_dtype_name(a->dtype),
                       ml_dtype_name(b->dtype));
    if (a->ndim == 0 || b->ndim == 0)
        return ml_fail("matmul: both arguments need at least one dimension (got %s and %s)", ML_SHAPE_STR(a),
                       ML_SHAPE_STR(b));
    /* promote vectors, remember what to squeeze */
    ml_tensor *A = NULL, *B = NULL, *out = NULL, *r = NULL;
    bool sq_a = a->ndim == 1, sq_b = b->ndim == 1;
    A = sq_a ? ml_unsqueeze(a, 0) : ml_retain(a);
    B = sq_b ? ml_unsqueeze(b, 1) : ml_retain(b);
    if (!A || !B) goto done;
    int64_t K = A->shape[A->ndim - 1];
    if (B->shape[B->ndim - 2] != K) {
        ml_fail("matmul: shapes %s and %s do not match (%" PRId64 " columns vs %" PRId64 " rows)", ML_SHAPE_STR(a),
                ML_SHAPE_STR(b), K, B->shape[B->ndim - 2]);
        goto done;
    }
    int64_t M = A->shape[A->ndim - 2], N = B->shape[B->ndim - 1];
    if (B->ndim == 2) {
        /* [..., M, K] x [K, N]: fold the batch into rows, one GEMM (== linear with W = B^T). */
        int64_t rows[2] = {-1, K};
        ml_tensor *A2 = ml_reshape(A, 2, rows), *Bt = A2 ? ml_transpose(B, 0, 1) : NULL;
        ml_tensor *y = Bt ? ml_linear(A2, Bt, NULL) : NULL;
        ml_release(A2);
        ml_release(Bt);
        if (!y) goto done;
        int64_t shape[ML_MAX_DIMS];
        for (int d = 0; d < A->ndim - 1; d++) shape[d] = A->shape[d];
        shape[A->ndim - 1] = N;
        out = ml_reshape(y, A->ndim, shape);
        ml_release(y);
    } else {
        /* broadcast batch dims, then bmm */
        int nba = A->ndim - 2, nbb = B->ndim - 2, nb = nba > nbb ? nba : nbb;
        int64_t bshape[ML_MAX_DIMS], batch = 1;
        for (int d = 0; d < nb; d++) {
            int da = d - (nb - nba), db = d - (nb - nbb);
            int64_t sa = da >= 0 ? A->shape[da] : 1, sb = db >= 0 ? B->shape[db] : 1;
            if (sa != sb && sa != 1 && sb != 1) {
                ml_fail("matmul: batch dimensions of %s and %s do not broadcast", ML_SHAPE_STR(a), ML_SHAPE_STR(b));
                goto done;
            }
            bshape[d] = sa == 1 ? sb : sa;
            batch *= bshape[d];
        }
        int64_t ea[ML_MAX_DIMS], eb[ML_MAX_DIMS];
        for (int d = 0; d < nb; d++) ea[d] = eb[d] = bshape[d];
        ea[nb] = M;
        ea[nb + 1] = K;
        eb[nb] = K;
        eb[nb + 1] = N;
        ml_tensor *Ae = ml_expand(A, nb + 2, ea), *Be = Ae ? ml_expand(B, nb + 2, eb) : NULL;
        int64_t s3a[3] = {batch, M, K}, s3b[3] = {batch, K, N};
        ml_tensor *A3 = Be ? ml_reshape(Ae, 3, s3a) : NULL, *B3 = A3 ? ml_reshape(Be, 3, s3b) : NULL;
        ml_tensor *y = B3 ? ml_bmm(A3, B3) : NULL;
        ml_release(Ae);
        ml_release(Be);
        ml_release(A3);
        ml_release(B3);
        if (!y) goto done;
        int64_t shape[ML_MAX_DIMS];
        for (int d = 0; d < nb; d++) shape[d] = bshape[d];
        shape[nb] = M;
        shape[nb + 1] = N;
        out = ml_reshape(y, nb + 2, shape);
        ml_release(y);
    }
    if (!out) goto done;
    r = out;
    if (sq_b) {
        r = ml_squeeze(out, -1);
        ml_release(out);
        out = r;
        if (!r) goto done;
    }
    if (sq_a) {
        r = ml_squeeze(out, sq_b ? -1 : -2);
        ml_release(out);
    }
done:
    ml_release(A);
    ml_release(B);
    return r;
}

/* ------------------------------------------------------------ linear */
/* W's layout for GEMM without a copy: row-major [out, in] (use with trans_b),
 * or its transpose stored contiguously (a W = B^T view from matmul). */
static bool weight_layout(const ml_tensor *w, bool *trans, int64_t *ld) {
    if (w->stride[1] == 1 && w->stride[0] >= w->shape[1]) {
        *trans = true; /* y = x W^T */
        *ld = w->stride[0];
        return true;
    }
    if (w->stride[0] == 1 && w->stride[1] >= w->shape[0]) {
        *trans = false; /* W^T is row-major [in, out] */
        *ld = w->stride[1];
        return true;
    }
    return false;
}

static int linear_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *x = ml_saved(n, 0), *w = ml_saved(n, 1);
    if (!x || !w) return -1;
    int64_t rows = x->shape[0], in = x->shape[1], out = w->shape[0];
    bool wt = true;
    int64_t ldw = w->shape[1];
    weight_layout(w, &wt, &ldw);
    if (n->needs[0]) { /* gx = g W : [rows, out] x [out, in] */
        ml_tensor *gx = ml_empty(ML_F32, n->in[0]->ndim, n->in[0]->shape);
        if (!gx) return -1;
        if (ml_sgemm(false, !wt, rows, in, out, 1.0f, ml_f32(g), out, ml_f32(w), ldw, 0.0f, ml_f32(gx), in)) {
            ml_release(gx);
            return -1;
        }
        gin[0] = gx;
    }
    if (n->needs[1]) { /* gW = g^T x : [out, rows] x [rows, in] */
        ml_tensor *gw = ml_empty(ML_F32, 2, n->in[1]->shape);
        if (!gw) return -1;
        if (ml_sgemm(true, false, out, in, rows, 1.0f, ml_f32(g), out, ml_f32(x), in, 0.0f, ml_f32(gw), in)) {
            ml_release(gw);
            return -1;
        }
        gin[1] = gw;
    }
    if (n->n_in > 2 && n->needs[2]) {
        int64_t sh = out;
        ml_tensor *gb = ml_zeros(ML_F32, 1, &sh);
        if (!gb) return -1;
        float *o = ml_f32(gb);
        const float *gg = ml_f32(g);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < out; j++) o[j] += gg[r * out + j];
        gin[2] = gb;
    }
    return 0;
}

ml_tensor *ml_linear(ml_tensor *x, ml_tensor *w, ml_tensor *b) {
    if (x->dtype != ML_F32 || w->dtype != ML_F32 || (b && b->dtype != ML_F32))
        return ml_fail("linear: expects float32 tensors");
    if (w->ndim != 2) return ml_fail("linear: weight must be 2-d [out, in], got %s", ML_SHAPE_STR(w));
    if (x->ndim < 1) return ml_fail("linear: input must have at least one dimension");
    int64_t in = w->shape[1], outf = w->shape[0];
    if (x->shape[x->ndim - 1] != in)
        return ml_fail("linear: input has %" PRId64 " features (shape %s), weight expects %" PRId64,
                       x->shape[x->ndim - 1], ML_SHAPE_STR(x), in);
    if (b && (b->ndim != 1 || b->shape[0] != outf))
        return ml_fail("linear: bias has shape %s, expected [%" PRId64 "]", ML_SHAPE_STR(b), outf);
    int64_t rows = in ? ml_numel(x) / in : 0;
    int64_t s2[2] = {rows, in};
    ml_tensor *xc = ml_contiguous(x);
    if (!xc) return NULL;
    ml_tensor *x2 = ml_view_raw(xc, 2, s2, (int64_t[]){in, 1}, xc->offset);
    ml_release(xc);
    bool wt = true;
    int64_t ldw = w->shape[1];
    ml_tensor *wc = weight_layout(w, &wt, &ldw) ? ml_retain(w) : ml_contiguous(w);
    if (!wc || !x2) {
        ml_release(wc);
        ml_release(x2);
        return NULL;
    }
    weight_layout(wc, &wt, &ldw);
    int64_t shape[ML_MAX_DIMS];
    for (int d = 0; d < x->ndim - 1; d++) shape[d] = x->shape[d];
    shape[x->ndim - 1] = outf;
    ml_tensor *y = ml_empty(ML_F32, x->ndim, shape);
    if (y) {
        float *o = ml_f32(y);
        float beta = 0.0f;
        if (b) {
            ml_tensor *bc = ml_contiguous(b);
            if (!bc) {
                ml_release(y);
                ml_release(wc);
                ml_release(x2);
                return NULL;
            }
            for (int64_t r = 0; r < rows; r++) memcpy(o + r * outf, ml_f32(bc), sizeof(float) * (size_t)outf);
            ml_release(bc);
            beta = 1.0f;
        }
        if (ml_sgemm(false, wt, rows, outf, in, 1.0f, ml_f32(x2), in, ml_f32(wc), ldw, beta, o, outf)) {
            ml_release(y);
            ml_release(wc);
            ml_release(x2);
            return NULL;
        }
        ml_tensor *ins[3] = {x, w, b};
        ml_node *n = ml_record("linear", y, b ? 3 : 2, ins, linear_backward);
        if (n) {
            ml_save(n, x2);
            ml_save(n, wc);
        }
    }
    ml_release(wc);
    ml_release(x2);
    return y;
}
