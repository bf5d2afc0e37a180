#include "testlib.h"

#include <stdlib.h>
#include <string.h>

int test_failures, test_checks;
const char *test_current = "";

int test_summary(void) {
    printf("%d checks, %d failures\n", test_checks, test_failures);
    return test_failures ? 1 : 0;
}

double test_close_ratio(const ml_tensor *a, const ml_tensor *b, double rtol, double atol) {
    if (!ml_same_shape(a, b)) return INFINITY;
    int64_t n = ml_numel(a), idx[ML_MAX_DIMS] = {0};
    double worst = 0;
    for (int64_t k = 0; k < n; k++) {
        double x = ml_get(a, idx), y = ml_get(b, idx);
        double r = fabs(x - y) / (atol + rtol * fabs(y));
        if (isnan(r)) r = INFINITY;
        if (r > worst) worst = r;
        for (int d = a->ndim - 1; d >= 0; d--) {
            if (++idx[d] < a->shape[d]) break;
            idx[d] = 0;
        }
    }
    return worst;
}

ml_tensor *test_tensor(int ndim, const int64_t *shape, const float *values) {
    return ml_from_data(ML_F32, ndim, shape, values);
}

double test_rel_diff(const ml_tensor *a, const ml_tensor *b) {
    double d = 0, m = 0;
    for (int64_t i = 0; i < ml_numel(b); i++) {
        double e = fabs((double)ml_f32(a)[i] - ml_f32(b)[i]), s = fabs((double)ml_f32(b)[i]);
        if (e > d) d = e;
        if (s > m) m = s;
    }
    return m > 0 ? d / m : d;
}

bool test_same_bits(const ml_tensor *a, const ml_tensor *b) {
    return a && b && ml_numel(a) == ml_numel(b) && !memcmp(ml_f32(a), ml_f32(b), sizeof(float) * (size_t)ml_numel(a));
}
