/* iter.c -- see iter.h. */
#include "iter.h"

void iter_init(iter_t *it, int nd, const int64_t *shape, int nops, ml_tensor *const *ops) {
    it->nops = nops;
    int64_t st[4][ML_MAX_DIMS];
    for (int k = 0; k < nops; k++) {
        const ml_tensor *t = ops[k];
        it->es[k] = ml_dtype_size(t->dtype);
        it->base[k] = (char *)t->storage->data + t->offset * (int64_t)it->es[k];
        for (int d = 0; d < nd; d++) {
            int td = d - (nd - t->ndim);
            st[k][d] = (td < 0 || t->shape[td] == 1) ? 0 : t->stride[td];
        }
    }
    /* drop size-1 dims, then merge neighbours that are contiguous for all ops */
    int m = 0;
    for (int d = 0; d < nd; d++) {
        if (shape[d] == 1) continue;
        if (m > 0) {
            bool merge = true;
            for (int k = 0; k < nops; k++)
                if (it->st[k][m - 1] != st[k][d] * shape[d]) merge = false;
            if (merge) {
                it->shape[m - 1] *= shape[d];
                for (int k = 0; k < nops; k++) it->st[k][m - 1] = st[k][d];
                continue;
            }
        }
        it->shape[m] = shape[d];
        for (int k = 0; k < nops; k++) it->st[k][m] = st[k][d];
        m++;
    }
    if (m == 0) {
        it->shape[0] = 1;
        for (int k = 0; k < nops; k++) it->st[k][0] = 0;
        m = 1;
    }
    it->nd = m;
}

void iter_exec(const iter_t *it, run_fn fn, const void *ctx) {
    int nd = it->nd, nops = it->nops;
    int64_t ist[4];
    for (int k = 0; k < nops; k++) ist[k] = it->st[k][nd - 1];
    if (nd == 1) {
        /* one run: split it into chunks across threads */
        int64_t n = it->shape[0], chunk = 8192, nchunks = (n + chunk - 1) / chunk;
        #pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t start = c * chunk, len = n - start < chunk ? n - start : chunk;
            char *p[4];
            for (int k = 0; k < nops; k++) p[k] = it->base[k] + start * ist[k] * (int64_t)it->es[k];
            fn(ctx, len, p, ist);
        }
        return;
    }
    int64_t inner = it->shape[nd - 1], rows = 1;
    for (int d = 0; d < nd - 1; d++) rows *= it->shape[d];
    #pragma omp parallel for schedule(static) if (rows * inner >= PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        char *p[4];
        int64_t rem = r;
        for (int k = 0; k < nops; k++) p[k] = it->base[k];
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = rem % it->shape[d];
            rem /= it->shape[d];
            for (int k = 0; k < nops; k++) p[k] += i * it->st[k][d] * (int64_t)it->es[k];
        }
        fn(ctx, inner, p, ist);
    }
}

