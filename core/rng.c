/* rng.c -- the engine's one seeded generator (xoshiro256**, splitmix64 seeding).
 * Same seed, same numbers, on any machine with the same build. */
#include <math.h>

#include "rng.h"

static ml_rng_state rng;
static int rng_ready;

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void ml_rng_local_seed(ml_rng_state *st, uint64_t seed) {
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) st->s[i] = splitmix64(&x);
    st->has_spare = 0;
    st->spare = 0;
}

void ml_seed(uint64_t seed) {
    ml_rng_local_seed(&rng, seed);
    rng_ready = 1;
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

uint64_t ml_rng_local_u64(ml_rng_state *st) {
    uint64_t *s = st->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

double ml_rng_local_uniform(ml_rng_state *st) { return (double)(ml_rng_local_u64(st) >> 11) * 0x1.0p-53; }

uint64_t ml_rng_u64(void) {
    if (!rng_ready) ml_seed(0x6d6f656c6162ULL); /* "moelab": reproducible by default */
    return ml_rng_local_u64(&rng);
}

double ml_rng_uniform(void) { return (double)(ml_rng_u64() >> 11) * 0x1.0p-53; }

double ml_rng_normal(void) {
    if (rng.has_spare) {
        rng.has_spare = 0;
        return rng.spare;
    }
    double u, v, s;
    do { /* Marsaglia's polar method */
        u = 2.0 * ml_rng_uniform() - 1.0;
        v = 2.0 * ml_rng_uniform() - 1.0;
        s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    double m = sqrt(-2.0 * log(s) / s);
    rng.spare = v * m;
    rng.has_spare = 1;
    return u * m;
}

void ml_rng_get_state(ml_rng_state *st) {
    if (!rng_ready) ml_seed(0x6d6f656c6162ULL);
    *st = rng;
}
void ml_rng_set_state(const ml_rng_state *st) {
    rng = *st;
    rng_ready = 1;
}

void ml_rng_permutation(ml_rng_state *st, int64_t n, int64_t *out) {
    for (int64_t i = 0; i < n; i++) out[i] = i;
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        uint64_t r = st ? ml_rng_local_u64(st) : ml_rng_u64();
        int64_t j = (int64_t)(r % (uint64_t)(i + 1)), tmp = out[i];
        out[i] = out[j];
        out[j] = tmp;
    }
}
