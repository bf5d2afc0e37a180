/* rng.h -- the engine's seeded random number generator (xoshiro256**).
 *
 * One generator for the engine (ml_seed), used by ml_rand/ml_randn, dropout,
 * router noise and random tie-breaking; private generators (ml_rng_local_*)
 * for things a user seeds on their own (a data loader's shuffling). */
#ifndef ML_RNG_H
#define ML_RNG_H

#include <stdint.h>

void ml_seed(uint64_t seed);
uint64_t ml_rng_u64(void);
double ml_rng_uniform(void); /* [0,1) */
double ml_rng_normal(void);  /* N(0,1) */
/* Opaque state save/restore (e.g. to replay a dropout mask). */
typedef struct { uint64_t s[4]; double spare; int has_spare; } ml_rng_state;
void ml_rng_get_state(ml_rng_state *st);
void ml_rng_set_state(const ml_rng_state *st);
/* A private generator (e.g. a data loader's shuffling seeded by the user),
 * independent of the engine's. */
void ml_rng_local_seed(ml_rng_state *st, uint64_t seed);
uint64_t ml_rng_local_u64(ml_rng_state *st);
double ml_rng_local_uniform(ml_rng_state *st);

/* A uniformly random permutation of 0..n-1 into out (Fisher-Yates), from a
 * private generator when st is given, else from the engine's. */
void ml_rng_permutation(ml_rng_state *st, int64_t n, int64_t *out);

#endif
