/* Large matrix products: done in pieces so that Ctrl-C is noticed between
 * them. */
#include <cblas.h>
#include <string.h>

#include "autograd.h"
#include "testlib.h"

/* C = op(A) op(B) by one cblas call, A [M, K] (or [K, M] when ta), B [K, N]
 * (or [N, K] when tb). */
static ml_tensor *reference(const ml_tensor *a, bool ta, const ml_tensor *b, bool tb, int64_t M, int64_t N, int64_t K) {
    int64_t cs[2] = {M, N};
    ml_tensor *c = ml_zeros(ML_F32, 2, cs);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K,
                1.0f, ml_f32(a), (int)a->shape[1], ml_f32(b), (int)b->shape[1], 0.0f, ml_f32(c), (int)N);
    return c;
}

/* A product and its two gradients through linear (the three transpose
 * patterns), against one cblas call each: bit-identical when `exact`, else to
 * float rounding (a large product runs in pieces of rows or columns, and
 * OpenBLAS tiles the rows of a piece's edge differently: the last bit of about
 * 1% of the elements); the same bits on a second run either way. */
static void check_product(int64_t M, int64_t N, int64_t K, bool exact) {
    int64_t as[2] = {M, K}, bs[2] = {K, N}, ws[2] = {N, K};
    ml_tensor *a = ml_randn(2, as), *b = ml_randn(2, bs), *w = ml_randn(2, ws);
    ml_tensor *y = ml_matmul(a, b), *y2 = ml_matmul(a, b), *ref = reference(a, false, b, false, M, N, K);
    CHECK(test_same_bits(y, y2));
    CHECK(exact ? test_same_bits(y, ref) : test_rel_diff(y, ref) < 1e-6); /* [M, K] x [K, N] */
    ml_release(y); ml_release(y2); ml_release(ref);
    ml_requires_grad_(a, true);
    ml_requires_grad_(w, true);
    y = ml_linear(a, w, NULL); /* a w^T */
    ref = reference(a, false, w, true, M, N, K);
    CHECK(exact ? test_same_bits(y, ref) : test_rel_diff(y, ref) < 1e-6);
    ml_tensor *g = ml_randn(2, y->shape), *grads[2] = {0}, *ins[2] = {a, w};
    CHECK(ml_grad(y, g, 2, ins, grads, true) == 0);
    ml_tensor *ga = reference(g, false, w, false, M, K, N); /* g w */
    ml_tensor *gw = reference(g, true, a, false, N, K, M);  /* g^T a */
    CHECK(exact ? test_same_bits(grads[0], ga) : test_rel_diff(grads[0], ga) < 1e-6);
    CHECK(exact ? test_same_bits(grads[1], gw) : test_rel_diff(grads[1], gw) < 1e-6);
    ml_tensor *again[2] = {0};
    CHECK(ml_grad(y, g, 2, ins, again, false) == 0 && test_same_bits(again[0], grads[0]) && test_same_bits(again[1], grads[1]));
    if (test_failures) fprintf(stderr, "  %lld x %lld x %lld\n", (long long)M, (long long)N, (long long)K);
    ml_release(again[0]); ml_release(again[1]);
    ml_release(ga); ml_release(gw); ml_release(grads[0]); ml_release(grads[1]); ml_release(g);
    ml_release(y); ml_release(ref);
    ml_release(a); ml_release(b); ml_release(w);
}

/* Products below the piece threshold (2^32 multiply-adds) are one call, as
 * they always were; above it, split by rows (M >= N) and by columns, odd sizes. */
TEST(large_products_in_pieces) {
    ml_seed(3);
    check_product(4095, 1024, 1024, true);
    check_product(4099, 1101, 953, false);
    check_product(1063, 4611, 877, false);
}

/* With the interrupt flag raised, a large product stops at its first look and
 * fails with "interrupted" (matmul, bmm, and linear's backward); a small one,
 * which never looks, completes. */
TEST(large_products_stop_when_interrupted) {
    int64_t as[2] = {2048, 2048}, bs[2] = {2048, 1024}, a3[3] = {2, 2048, 2048}, b3[3] = {2, 2048, 1024};
    ml_tensor *a = ml_randn(2, as), *b = ml_randn(2, bs), *x3 = ml_randn(3, a3), *y3 = ml_randn(3, b3);
    int64_t ss[2] = {64, 64};
    ml_tensor *s = ml_randn(2, ss);
    ml_requires_grad_(a, true);
    ml_tensor *big = ml_matmul(a, b), *gout = ml_randn(2, big->shape), *ga = NULL; /* for the backward below */
    ml_interrupt_request();
    CHECK_FAILS(ml_matmul(a, b) != NULL, "interrupted");
    CHECK_FAILS(ml_bmm(x3, y3) != NULL, "interrupted");
    ml_tensor *small = ml_matmul(s, s);
    CHECK(small != NULL);
    CHECK_FAILS(ml_grad(big, gout, 1, &a, &ga, false) == 0, "interrupted");
    ml_interrupt_clear();
    CHECK(ml_grad(big, gout, 1, &a, &ga, false) == 0 && ga);
    ml_release(ga); ml_release(gout); ml_release(big); ml_release(small);
    ml_release(a); ml_release(b); ml_release(x3); ml_release(y3); ml_release(s);
}

int main(void) {
    RUN(large_products_in_pieces);
    RUN(large_products_stop_when_interrupted);
    return test_summary();
}
