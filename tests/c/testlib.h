/* testlib.h -- a tiny test harness for the C unit tests.
 *
 *   TEST(name) { CHECK(x == 1); CHECK_NEAR(a, b, 1e-6); }
 *   int main(void) { RUN(name); return test_summary(); }
 */
#ifndef ML_TESTLIB_H
#define ML_TESTLIB_H

#include <math.h>
#include <stdio.h>

#include "moelab.h"

extern int test_failures, test_checks;
extern const char *test_current;

#define TEST(name) static void name(void)
#define RUN(name)                            \
    do {                                     \
        test_current = #name;                \
        int before = test_failures;          \
        name();                              \
        printf("%s %s\n", test_failures == before ? "ok  " : "FAIL", #name); \
    } while (0)

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        test_checks++;                                                                       \
        if (!(cond)) {                                                                       \
            test_failures++;                                                                 \
            fprintf(stderr, "%s:%d: %s: check failed: %s\n", __FILE__, __LINE__, test_current, #cond); \
        }                                                                                    \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                                \
    do {                                                                                     \
        double a_ = (a), b_ = (b);                                                           \
        test_checks++;                                                                       \
        if (!(fabs(a_ - b_) <= (tol) * (1.0 + fabs(b_)))) {                                   \
            test_failures++;                                                                 \
            fprintf(stderr, "%s:%d: %s: %s = %.9g, expected %s = %.9g (tol %g)\n", __FILE__, __LINE__, \
                    test_current, #a, a_, #b, b_, (double)(tol));                            \
        }                                                                                    \
    } while (0)

/* `succeeded` must be false (the call failed) and the message must contain `needle`:
 * CHECK_FAILS(ml_relu(x) != NULL, "relu:"), CHECK_FAILS(ml_copy_(a, b) == 0, "copy:"). */
#define CHECK_FAILS(succeeded, needle)                                                          \
    do {                                                                                     \
        ml_error_clear();                                                                    \
        test_checks++;                                                                       \
        if (succeeded) {                                                                   \
            test_failures++;                                                                 \
            fprintf(stderr, "%s:%d: %s: expected failure of %s\n", __FILE__, __LINE__, test_current, #succeeded); \
        } else if (!strstr(ml_last_error(), needle)) {                                       \
            test_failures++;                                                                 \
            fprintf(stderr, "%s:%d: %s: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, test_current, \
                    ml_last_error(), needle);                                                \
        }                                                                                    \
    } while (0)

int test_summary(void);
/* Max |a - b| / (atol + rtol |b|) over elements; <= 1 means close. */
double test_close_ratio(const ml_tensor *a, const ml_tensor *b, double rtol, double atol);
ml_tensor *test_tensor(int ndim, const int64_t *shape, const float *values);
/* Max |a - b| over max |b| (contiguous float32, same size): the error
 * relative to b's scale. */
double test_rel_diff(const ml_tensor *a, const ml_tensor *b);
/* Both non-NULL, the same size and the same bits (contiguous float32). */
bool test_same_bits(const ml_tensor *a, const ml_tensor *b);

#endif
