/* The vectorisable exp and erf of ops/vmath.h against libm, in ulps and
 * absolute error, with their special values. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ops/vmath.h"
#include "testlib.h"

static int64_t ulps(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    if (ia < 0) ia = INT32_MIN - ia;
    if (ib < 0) ib = INT32_MIN - ib;
    int64_t d = (int64_t)ia - (int64_t)ib;
    return d < 0 ? -d : d;
}

TEST(exp_against_libm) {
    int64_t worst = 0;
    float at = 0;
    for (int64_t i = 0; i <= 2000000; i++) {
        float x = -87.0f + (float)i * (175.0f / 2000000.0f); /* [-87, 88] */
        float want = expf(x), got = ml_vexpf(x);
        if (want < FLT_MIN) continue; /* denormal results are flushed, by design */
        int64_t u = ulps(got, want);
        if (u > worst) {
            worst = u;
            at = x;
        }
    }
    if (worst > 2) fprintf(stderr, "  exp: %lld ulps at %g\n", (long long)worst, (double)at);
    CHECK(worst <= 2);
    CHECK(ml_vexpf(0.0f) == 1.0f);
    CHECK(ml_vexpf(-INFINITY) == 0.0f);
    CHECK(ml_vexpf(-200.0f) == 0.0f);
    CHECK(isinf(ml_vexpf(INFINITY)) && ml_vexpf(INFINITY) > 0);
    CHECK(isinf(ml_vexpf(100.0f)));
    CHECK(isnan(ml_vexpf(NAN)));
}

TEST(erf_against_libm) {
    double worst = 0;
    for (int i = -600000; i <= 600000; i++) {
        float x = (float)i * 1e-5f; /* [-6, 6] */
        double err = fabs((double)ml_verff(x) - (double)erff(x));
        if (err > worst) worst = err;
    }
    CHECK(worst < 3e-7);
    CHECK(ml_verff(INFINITY) == 1.0f && ml_verff(-INFINITY) == -1.0f);
    CHECK(fabsf(ml_verff(0.0f)) < 1e-7f);
}

int main(void) {
    RUN(exp_against_libm);
    RUN(erf_against_libm);
    return test_summary();
}
