/* Tensors: creation, views writing through, copies, broadcasting, printing. */
#include <stdlib.h>
#include <string.h>

#include "testlib.h"
#include "memory.h"
#include "print.h"
#include "rng.h"

TEST(creation_and_views) {
    int64_t s[2] = {3, 4};
    ml_tensor *a = ml_arange(0, 12, 1, ML_F32);
    ml_tensor *m = ml_reshape(a, 2, s);
    CHECK(m && m->shape[0] == 3 && m->shape[1] == 4);
    ml_tensor *col = ml_narrow(m, 1, 1, 2); /* columns 2..3 */
    CHECK(col->shape[1] == 2 && !ml_is_contiguous(col));
    CHECK(ml_get(col, (int64_t[]){2, 1}) == 10.0);
    ml_fill_(col, -1);                         /* writes through to a */
    CHECK(ml_f32(a)[1] == -1 && ml_f32(a)[2] == -1 && ml_f32(a)[3] == 3);
    ml_tensor *t = ml_transpose(m, 0, 1);
    CHECK(t->shape[0] == 4 && ml_get(t, (int64_t[]){3, 2}) == 11.0);
    ml_tensor *tc = ml_contiguous(t);
    CHECK(ml_is_contiguous(tc) && ml_f32(tc)[1] == 4.0f);
    ml_release(tc);
    ml_release(t);
    ml_release(col);
    ml_release(m);
    ml_release(a);
}

TEST(reshape_of_noncontiguous_view) {
    int64_t s[3] = {2, 3, 4};
    ml_tensor *a = ml_arange(0, 24, 1, ML_F32), *x = ml_reshape(a, 3, s);
    ml_tensor *p = ml_permute(x, (int[]){1, 0, 2}); /* [3,2,4]: last dim contiguous */
    ml_tensor *v = ml_reshape(p, 2, (int64_t[]){6, 4}); /* dims 0,1 of p do not merge: copy */
    CHECK(v && v->storage != a->storage);
    CHECK(ml_get(v, (int64_t[]){1, 0}) == 12.0); /* p[0][1][0] = x[1][0][0] */
    ml_release(v);
    ml_tensor *v2 = ml_reshape(p, 4, (int64_t[]){3, 2, 2, 2}); /* splitting the last dim: a view */
    CHECK(v2 && v2->storage == a->storage);
    CHECK(ml_get(v2, (int64_t[]){2, 1, 1, 1}) == 23.0);
    ml_release(v2);
    ml_tensor *w = ml_reshape(p, 2, (int64_t[]){3, 8}); /* dims 1,2 of p: stride 12,1 -> not mergeable */
    CHECK(w && w->storage != a->storage);
    CHECK(ml_get(w, (int64_t[]){1, 4}) == 16.0); /* p[1][1][0] = x[1][1][0] = 16 */
    ml_release(w);
    ml_release(p);
    ml_release(x);
    ml_release(a);
}

TEST(broadcast_add) {
    ml_tensor *a = test_tensor(2, (int64_t[]){2, 3}, (float[]){1, 2, 3, 4, 5, 6});
    ml_tensor *b = test_tensor(1, (int64_t[]){3}, (float[]){10, 20, 30});
    ml_tensor *c = ml_add(a, b);
    float want[6] = {11, 22, 33, 14, 25, 36};
    for (int i = 0; i < 6; i++) CHECK(ml_f32(c)[i] == want[i]);
    ml_tensor *col = test_tensor(2, (int64_t[]){2, 1}, (float[]){100, 200});
    ml_tensor *d = ml_mul(a, col);
    CHECK(ml_f32(d)[5] == 1200 && ml_f32(d)[0] == 100);
    ml_tensor *bad = test_tensor(1, (int64_t[]){2}, (float[]){1, 2});
    CHECK_FAILS(ml_add(a, bad) != NULL, "cannot be broadcast");
    ml_release(a); ml_release(b); ml_release(c); ml_release(col); ml_release(d); ml_release(bad);
}

TEST(printing_summarises) {
    int64_t s[2] = {100, 100};
    ml_tensor *big = ml_zeros(ML_F32, 2, s);
    char *txt = ml_format(big, NULL);
    CHECK(strlen(txt) < 2000);
    CHECK(strstr(txt, "...") != NULL);
    CHECK(strstr(txt, "shape 100x100") != NULL);
    free(txt);
    ml_tensor *small = test_tensor(2, (int64_t[]){2, 2}, (float[]){0.5f, -1.25f, 3, 4});
    txt = ml_format(small, NULL);
    CHECK(strstr(txt, "[[ 0.5000, -1.2500],") != NULL);
    free(txt);
    ml_release(big);
    ml_release(small);
}

TEST(rng_reproducible) {
    int64_t s[1] = {5};
    ml_seed(42);
    ml_tensor *a = ml_randn(1, s);
    ml_seed(42);
    ml_tensor *b = ml_randn(1, s);
    for (int i = 0; i < 5; i++) CHECK(ml_f32(a)[i] == ml_f32(b)[i]);
    ml_release(a);
    ml_release(b);
}

TEST(memory_returns_to_baseline) {
    ml_memory_stats before, after;
    ml_memory_get(&before);
    for (int i = 0; i < 100; i++) {
        int64_t s[2] = {64, 64};
        ml_tensor *x = ml_randn(2, s);
        ml_requires_grad_(x, true);
        ml_tensor *y = ml_relu(x), *z = ml_sum(y, ML_ALL_DIMS, false);
        ml_backward(z, NULL, false);
        ml_release(z); ml_release(y); ml_release(x);
    }
    ml_memory_get(&after);
    CHECK(after.live_tensors == before.live_tensors);
    CHECK(after.live_bytes == before.live_bytes);
}

int main(void) {
    RUN(creation_and_views);
    RUN(reshape_of_noncontiguous_view);
    RUN(broadcast_add);
    RUN(printing_summarises);
    RUN(rng_reproducible);
    RUN(memory_returns_to_baseline);
    return test_summary();
}
