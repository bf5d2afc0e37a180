/* iter.h -- internal: iterate several strided operands over one broadcast shape.
 *
 * iter_init aligns each operand's strides to the shape (0 where it broadcasts),
 * drops size-1 dimensions and merges dimensions that are contiguous for every
 * operand, so most loops end up as one or two flat runs. iter_exec then calls a
 * run function on every innermost run, split across OpenMP threads. */
#ifndef ML_ITER_H
#define ML_ITER_H

#include "tensor.h"

#define PAR_MIN 32768 /* below this many elements, threads cost more than they save */

typedef struct {
    int nd;
    int nops;
    int64_t shape[ML_MAX_DIMS];
    int64_t st[4][ML_MAX_DIMS]; /* in elements of each operand's dtype */
    size_t es[4];
    char *base[4];
} iter_t;

/* fn(ctx, n, p, st): one innermost run of n elements; p[k] points at operand
 * k's first element, st[k] is its stride in elements. */
typedef void (*run_fn)(const void *ctx, int64_t n, char **p, const int64_t *st);

void iter_init(iter_t *it, int nd, const int64_t *shape, int nops, ml_tensor *const *ops);
void iter_exec(const iter_t *it, run_fn fn, const void *ctx);

#endif
