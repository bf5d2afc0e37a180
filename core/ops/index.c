/* index.c -- index_select, gather, scatter_add, one_hot, topk. */
#include "index.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"
#include "../rng.h"

static int check_index(const char *fn, const ml_tensor *idx) {
    if (idx->dtype != ML_I64) return ml_failc("%s: index must be int64 (use :long()), got %s", fn, ml_dtype_name(idx->dtype));
    return 0;
}

/* Fails naming the first out-of-range entry (reported 1-based, as the user wrote it). */
static int check_range(const char *fn, const int64_t *p, int64_t n, int64_t size, int dim) {
    for (int64_t i = 0; i < n; i++)
        if (p[i] < 0 || p[i] >= size)
            return ml_failc("%s: index %" PRId64 " is out of range for dimension %d of size %" PRId64
                            " (indices are 1-based)", fn, (int64_t)((uint64_t)p[i] + 1u), dim + 1, size);
    return 0;
}

/* ------------------------------------------------------------ index_select */
static int index_select_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *idx = ml_saved(n, 0);
    if (!idx) return -1;
    ml_tensor *x = n->in[0];
    int d = (int)n->i[0];
    int64_t outer = 1, inner = 1, R = x->shape[d], K = idx->shape[0];
    for (int k = 0; k < d; k++) outer *= x->shape[k];
    for (int k = d + 1; k < x->ndim; k++) inner *= x->shape[k];
    ml_tensor *gx = ml_zeros(ML_F32, x->ndim, x->shape);
    if (!gx) return -1;
    const float *gg = ml_f32(g);
    const int64_t *ix = ml_i64(idx);
    for (int64_t a = 0; a < outer; a++)
        for (int64_t j = 0; j < K; j++) {
            float *dst = ml_f32(gx) + (a * R + ix[j]) * inner;
            const float *src = gg + (a * K + j) * inner;
            for (int64_t i = 0; i < inner; i++) dst[i] += src[i];
        }
    gin[0] = gx;
    return 0;
}

ml_tensor *ml_index_select(ml_tensor *x, int dim, const ml_tensor *index) {
    int d;
    if (x->ndim == 0) return ml_fail("index_select: cannot index a 0-dimensional tensor");
    if (ml_dim_check("index_select", x, dim, &d) || check_index("index_select", index)) return NULL;
    if (index->ndim != 1) return ml_fail("index_select: index must be 1-d, got %s", ML_SHAPE_STR(index));
    ml_tensor *ic = ml_contiguous((ml_tensor *)index);
    if (!ic) return NULL;
    if (check_range("index_select", ml_i64(ic), ic->shape[0], x->shape[d], d)) {
        ml_release(ic);
        return NULL;
    }
    ml_tensor *xc = ml_contiguous(x);
    int64_t shape[ML_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[d] = ic->shape[0];
    ml_tensor *out = xc ? ml_empty(x->dtype, x->ndim, shape) : NULL;
    if (out) {
        int64_t outer = 1, inner = 1, R = x->shape[d], K = ic->shape[0];
        for (int k = 0; k < d; k++) outer *= x->shape[k];
        for (int k = d + 1; k < x->ndim; k++) inner *= x->shape[k];
        size_t es = ml_dtype_size(x->dtype);
        const char *src = (const char *)xc->storage->data + xc->offset * (int64_t)es;
        char *dst = out->storage->data;
        const int64_t *ix = ml_i64(ic);
        for (int64_t a = 0; a < outer; a++)
            for (int64_t j = 0; j < K; j++)
                memcpy(dst + (size_t)((a * K + j) * inner) * es, src + (size_t)((a * R + ix[j]) * inner) * es,
                       (size_t)inner * es);
        if (x->dtype == ML_F32) {
            ml_node *n = ml_record("index_select", out, 1, &x, index_select_backward);
            if (n) {
                n->i[0] = d;
                ml_save(n, ic);
            }
        }
    }
    ml_release(xc);
    ml_release(ic);
    return out;
}

/* ------------------------------------------------------------ gather / scatter_add */
/* Walks every element of index (contiguous), giving the offset into a tensor
 * of shape `shape` with `d` replaced by the index value. */
typedef struct {
    int nd, d;
    int64_t ishape[ML_MAX_DIMS];
    int64_t xstride[ML_MAX_DIMS]; /* contiguous strides of the indexed tensor */
} gplan;

static int gather_plan(const char *fn, const ml_tensor *x, int d, const ml_tensor *idx, gplan *p) {
    if (idx->ndim != x->ndim)
        return ml_failc("%s: index has %d dimensions, the tensor %d", fn, idx->ndim, x->ndim);
    for (int k = 0; k < x->ndim; k++)
        if (k != d && idx->shape[k] > x->shape[k])
            return ml_failc("%s: index shape %s exceeds the tensor's %s in dimension %d", fn, ML_SHAPE_STR(idx),
                            ML_SHAPE_STR(x), k + 1);
    p->nd = x->ndim;
    p->d = d;
    int64_t st = 1;
    for (int k = x->ndim - 1; k >= 0; k--) {
        p->ishape[k] = idx->shape[k];
        p->xstride[k] = st;
        st *= x->shape[k];
    }
    return 0;
}

/* offset of element e of index (flat, contiguous) with coordinate d = v */
static inline int64_t goffset(const gplan *p, int64_t e, int64_t v) {
    int64_t off = 0;
    for (int k = p->nd - 1; k >= 0; k--) {
        int64_t c = e % p->ishape[k];
        e /= p->ishape[k];
        off += (k == p->d ? v : c) * p->xstride[k];
    }
    return off;
}

static int gather_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *idx = ml_saved(n, 0);
    if (!idx) return -1;
    ml_tensor *x = n->in[0];
    gplan p;
    gather_plan("gather", x, (int)n->i[0], idx, &p);
    ml_tensor *gx = ml_zeros(ML_F32, x->ndim, x->shape);
    if (!gx) return -1;
    const int64_t *ix = ml_i64(idx);
    for (int64_t e = 0, N = ml_numel(idx); e < N; e++) ml_f32(gx)[goffset(&p, e, ix[e])] += ml_f32(g)[e];
    gin[0] = gx;
    return 0;
}

ml_tensor *ml_gather(ml_tensor *x, int dim, const ml_tensor *index) {
    int d;
    if (x->ndim == 0) return ml_fail("gather: cannot index a 0-dimensional tensor");
    if (ml_dim_check("gather", x, dim, &d) || check_index("gather", index)) return NULL;
    gplan p;
    if (gather_plan("gather", x, d, index, &p)) return NULL;
    ml_tensor *ic = ml_contiguous((ml_tensor *)index), *xc = ic ? ml_contiguous(x) : NULL;
    if (!xc || check_range("gather", ml_i64(ic), ml_numel(ic), x->shape[d], d)) {
        ml_release(ic);
        ml_release(xc);
        return NULL;
    }
    ml_tensor *out = ml_empty(x->dtype, index->ndim, index->shape);
    if (out) {
        const int64_t *ix = ml_i64(ic);
        for (int64_t e = 0, N = ml_numel(ic); e < N; e++) {
            int64_t off = goffset(&p, e, ix[e]);
            if (x->dtype == ML_F32) ml_f32(out)[e] = ml_f32(xc)[off];
            else ml_i64(out)[e] = ml_i64(xc)[off];
        }
        if (x->dtype == ML_F32) {
            ml_node *n = ml_record("gather", out, 1, &x, gather_backward);
            if (n) {
                n->i[0] = d;
                ml_save(n, ic);
            }
        }
    }
    ml_release(ic);
    ml_release(xc);
    return out;
}

static int scatter_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *idx = ml_saved(n, 0);
    if (!idx) return -1;
    if (n->needs[0]) gin[0] = ml_retain(g);
    if (n->needs[1]) { /* gsrc = gather(g, dim, index) */
        bool gm = ml_grad_set(false);
        gin[1] = ml_gather(g, (int)n->i[0], idx);
        ml_grad_set(gm);
        if (!gin[1]) return -1;
    }
    return 0;
}

ml_tensor *ml_scatter_add(ml_tensor *x, int dim, const ml_tensor *index, ml_tensor *src) {
    int d;
    if (x->ndim == 0) return ml_fail("scatter_add: cannot index a 0-dimensional tensor");
    if (ml_dim_check("scatter_add", x, dim, &d) || check_index("scatter_add", index)) return NULL;
    if (!ml_same_shape(index, src))
        return ml_fail("scatter_add: index %s and source %s must have the same shape", ML_SHAPE_STR(index), ML_SHAPE_STR(src));
    if (x->dtype != src->dtype) return ml_fail("scatter_add: tensor and source dtypes differ");
    gplan p;
    if (gather_plan("scatter_add", x, d, index, &p)) return NULL;
    ml_tensor *ic = ml_contiguous((ml_tensor *)index);
    if (!ic || check_range("scatter_add", ml_i64(ic), ml_numel(ic), x->shape[d], d)) {
        ml_release(ic);
        return NULL;
    }
    ml_tensor *sc = ml_contiguous(src);
    ml_tensor *out = sc ? ml_empty(x->dtype, x->ndim, x->shape) : NULL;
    if (out) {
        ml_copy_strided_to(out->storage->data, x);
        const int64_t *ix = ml_i64(ic);
        for (int64_t e = 0, N = ml_numel(ic); e < N; e++) {
            int64_t off = goffset(&p, e, ix[e]);
            if (x->dtype == ML_F32) ml_f32(out)[off] += ml_f32(sc)[e];
            else ml_i64(out)[off] += ml_i64(sc)[e];
        }
        if (x->dtype == ML_F32) {
            ml_node *n = ml_record("scatter_add", out, 2, (ml_tensor *[]){x, src}, scatter_backward);
            if (n) {
                n->i[0] = d;
                ml_save(n, ic);
            }
        }
    }
    ml_release(ic);
    ml_release(sc);
    return out;
}

ml_tensor *ml_one_hot(const ml_tensor *labels, int64_t K) {
    if (check_index("one_hot", labels)) return NULL;
    if (K < 1) return ml_fail("one_hot: number of classes must be positive, got %" PRId64, K);
    ml_tensor *lc = ml_contiguous((ml_tensor *)labels);
    if (!lc || check_range("one_hot", ml_i64(lc), ml_numel(lc), K, 0)) {
        ml_release(lc);
        return NULL;
    }
    int64_t shape[ML_MAX_DIMS];
    memcpy(shape, labels->shape, sizeof shape);
    if (labels->ndim >= ML_MAX_DIMS) {
        ml_release(lc);
        return ml_fail("one_hot: too many dimensions");
    }
    shape[labels->ndim] = K;
    ml_tensor *out = ml_zeros(ML_F32, labels->ndim + 1, shape);
    if (out)
        for (int64_t i = 0, N = ml_numel(lc); i < N; i++) ml_f32(out)[i * K + ml_i64(lc)[i]] = 1.0f;
    ml_release(lc);
    return out;
}

/* ------------------------------------------------------------ topk */
static int topk_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *idx = ml_saved(n, 0);
    if (!idx) return -1;
    ml_tensor *x = n->in[0];
    int d = (int)n->i[0];
    int64_t outer = 1, inner = 1, R = x->shape[d], K = idx->shape[d];
    for (int k = 0; k < d; k++) outer *= x->shape[k];
    for (int k = d + 1; k < x->ndim; k++) inner *= x->shape[k];
    ml_tensor *gx = ml_zeros(ML_F32, x->ndim, x->shape);
    if (!gx) return -1;
    for (int64_t a = 0; a < outer; a++)
        for (int64_t j = 0; j < K; j++)
            for (int64_t i = 0; i < inner; i++) {
                int64_t o = (a * K + j) * inner + i;
                ml_f32(gx)[(a * R + ml_i64(idx)[o]) * inner + i] += ml_f32(g)[o];
            }
    gin[0] = gx;
    return 0;
}

typedef struct {
    float v;
    double key; /* random tie-break key */
    int64_t i;
} cand;

static bool better(const cand *a, const cand *b, bool largest, bool rnd) {
    if (a->v != b->v) {
        if (isnan(a->v)) return true; /* NaN counts as largest, as PyTorch */
        if (isnan(b->v)) return false;
        return largest ? a->v > b->v : a->v < b->v;
    }
    if (rnd) return a->key < b->key;
    return a->i < b->i;
}

static _Thread_local int sort_mode; /* bit 0: largest first, bit 1: random tie keys */

static int cand_cmp(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (better(a, b, sort_mode & 1, sort_mode & 2)) return -1;
    if (better(b, a, sort_mode & 1, sort_mode & 2)) return 1;
    return 0;
}

int ml_topk(ml_tensor *x, int64_t k, int dim, bool largest, bool sorted, bool random_ties, ml_tensor **values,
            ml_tensor **indices) {
    *values = *indices = NULL;
    int d;
    if (x->dtype != ML_F32) return ml_failc("topk: expects a float32 tensor");
    if (x->ndim == 0) return ml_failc("topk: expects at least one dimension");
    if (ml_dim_check("topk", x, dim, &d)) return -1;
    int64_t R = x->shape[d];
    if (k < 1 || k > R) return ml_failc("topk: k = %" PRId64 " is out of range for a dimension of size %" PRId64, k, R);
    int64_t outer = 1, inner = 1;
    for (int j = 0; j < d; j++) outer *= x->shape[j];
    for (int j = d + 1; j < x->ndim; j++) inner *= x->shape[j];
    int64_t shape[ML_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[d] = k;
    ml_tensor *xc = ml_contiguous(x);
    ml_tensor *val = xc ? ml_empty(ML_F32, x->ndim, shape) : NULL, *idx = val ? ml_empty(ML_I64, x->ndim, shape) : NULL;
    cand *buf = malloc(sizeof *buf * (size_t)R);
    if (!idx || !buf) {
        ml_release(xc);
        ml_release(val);
        ml_release(idx);
        free(buf);
        return ml_failc("out of memory");
    }
    for (int64_t a = 0; a < outer; a++)
        for (int64_t i = 0; i < inner; i++) {
            const float *row = ml_f32(xc) + a * R * inner + i;
            for (int64_t r = 0; r < R; r++) buf[r] = (cand){row[r * inner], 0.0, r};
            if (random_ties) /* a random key orders equal values uniformly */
                for (int64_t r = 0; r < R; r++) buf[r].key = ml_rng_uniform();
            if (k <= 16) {
                /* partial selection: k passes (k is small for routers); sorted by construction */
                for (int64_t j = 0; j < k; j++) {
                    int64_t best = j;
                    for (int64_t r = j + 1; r < R; r++)
                        if (better(&buf[r], &buf[best], largest, random_ties)) best = r;
                    cand t = buf[j];
                    buf[j] = buf[best];
                    buf[best] = t;
                }
            } else {
                sort_mode = (largest ? 1 : 0) | (random_ties ? 2 : 0);
                qsort(buf, (size_t)R, sizeof *buf, cand_cmp);
            }
            if (!sorted) { /* index order among the selected */
                for (int64_t j = 1; j < k; j++)
                    for (int64_t q = j; q > 0 && buf[q].i < buf[q - 1].i; q--) {
                        cand t = buf[q];
                        buf[q] = buf[q - 1];
                        buf[q - 1] = t;
                    }
            }
            for (int64_t j = 0; j < k; j++) {
                int64_t o = (a * k + j) * inner + i;
                ml_f32(val)[o] = buf[j].v;
                ml_i64(idx)[o] = buf[j].i;
            }
        }
    free(buf);
    ml_release(xc);
    ml_node *n = ml_record("topk", val, 1, &x, topk_backward);
    if (n) {
        n->i[0] = d;
        ml_save(n, idx);
    }
    *values = val;
    *indices = idx;
    return 0;
}
