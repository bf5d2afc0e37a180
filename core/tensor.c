/* tensor.c -- storage, tensor headers, creation, element access, copies. */
#include "tensor.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "autograd.h"
#include "iter.h"
#include "memory.h"
#include "rng.h"


/* ------------------------------------------------------------ storage */
static ml_storage *storage_new(size_t nbytes) {
    ml_storage *s = malloc(sizeof *s);
    if (!s) return ml_fail("out of memory");
    s->data = ml_alloc(nbytes ? nbytes : 1);
    if (!s->data) {
        free(s);
        return NULL;
    }
    s->refcount = 1;
    s->version = 0;
    s->nbytes = nbytes;
    ml_memory_count_storages(1);
    return s;
}

static void storage_release(ml_storage *s) {
    if (!s || --s->refcount > 0) return;
    ml_free(s->data, s->nbytes ? s->nbytes : 1);
    free(s);
    ml_memory_count_storages(-1);
}

/* ------------------------------------------------------------ lifetime */
ml_tensor *ml_retain(ml_tensor *t) {
    if (t) t->refcount++;
    return t;
}

void ml_release(ml_tensor *t) {
    if (!t || --t->refcount > 0) return;
    storage_release(t->storage);
    ml_release(t->grad);
    if (t->grad_fn) ml_node_release(t->grad_fn);
    free(t);
    ml_memory_count_tensors(-1);
}

size_t ml_dtype_size(ml_dtype dt) { return dt == ML_I64 ? 8 : 4; }
const char *ml_dtype_name(ml_dtype dt) { return dt == ML_I64 ? "int64" : "float32"; }

static ml_tensor *header_new(ml_dtype dt, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > ML_MAX_DIMS)
        return ml_fail("tensor: %d dimensions requested, at most %d are supported", ndim, ML_MAX_DIMS);
    ml_tensor *t = calloc(1, sizeof *t);
    if (!t) return ml_fail("out of memory");
    t->refcount = 1;
    t->dtype = dt;
    t->ndim = ndim;
    int64_t st = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t->shape[d] = shape[d];
        t->stride[d] = st;
        st *= shape[d] > 0 ? shape[d] : 1;
    }
    ml_memory_count_tensors(1);
    return t;
}

int64_t ml_shape_numel(const char *fn, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > ML_MAX_DIMS)
        return ml_failc("%s: %d dimensions requested, at most %d are supported", fn, ndim, ML_MAX_DIMS);
    int64_t dense = 1, n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0) return ml_failc("%s: negative size %" PRId64 " in dimension %d", fn, shape[d], d + 1);
        if (shape[d] > 0 && dense > INT64_MAX / 16 / shape[d])
            return ml_failc("%s: a shape with %d dimensions whose sizes multiply past 2^59 is too large "
                            "(size %" PRId64 " in dimension %d)", fn, ndim, shape[d], d + 1);
        if (shape[d] > 0) dense *= shape[d];
        n *= shape[d];
    }
    return n;
}

ml_tensor *ml_empty(ml_dtype dt, int ndim, const int64_t *shape) {
    int64_t n = ml_shape_numel("tensor", ndim, shape);
    if (n < 0) return NULL;
    if ((uint64_t)n * ml_dtype_size(dt) > ((uint64_t)1 << 40))
        return ml_fail("tensor: %" PRId64 " elements is too large", n);
    ml_tensor *t = header_new(dt, ndim, shape);
    if (!t) return NULL;
    t->storage = storage_new((size_t)n * ml_dtype_size(dt));
    if (!t->storage) {
        free(t);
        ml_memory_count_tensors(-1);
        return NULL;
    }
    return t;
}

ml_tensor *ml_zeros(ml_dtype dt, int ndim, const int64_t *shape) {
    ml_tensor *t = ml_empty(dt, ndim, shape);
    if (t) memset(t->storage->data, 0, t->storage->nbytes);
    return t;
}

ml_tensor *ml_full(ml_dtype dt, int ndim, const int64_t *shape, double value) {
    ml_tensor *t = ml_empty(dt, ndim, shape);
    if (t) ml_fill_(t, value);
    return t;
}

ml_tensor *ml_scalar(double value) { return ml_full(ML_F32, 0, NULL, value); }

ml_tensor *ml_from_data(ml_dtype dt, int ndim, const int64_t *shape, const void *data) {
    ml_tensor *t = ml_empty(dt, ndim, shape);
    if (t) memcpy(t->storage->data, data, t->storage->nbytes);
    return t;
}

ml_tensor *ml_empty_like(const ml_tensor *t) { return ml_empty(t->dtype, t->ndim, t->shape); }
ml_tensor *ml_zeros_like(const ml_tensor *t) { return ml_zeros(t->dtype, t->ndim, t->shape); }

ml_tensor *ml_arange(double start, double end, double step, ml_dtype dt) {
    if (step == 0 || !isfinite(step) || !isfinite(start) || !isfinite(end))
        return ml_fail("arange: step must be a finite non-zero number (got start %g, end %g, step %g)",
                       start, end, step);
    double count = ceil((end - start) / step);
    if (count < 0) count = 0;
    if (count > 1e10) return ml_fail("arange: %g elements is too many", count);
    int64_t n = (int64_t)count;
    ml_tensor *t = ml_empty(dt, 1, &n);
    if (!t) return NULL;
    for (int64_t i = 0; i < n; i++) {
        double v = start + (double)i * step;
        if (dt == ML_F32) ml_f32(t)[i] = (float)v;
        else ml_i64(t)[i] = (int64_t)v;
    }
    return t;
}

ml_tensor *ml_eye(int64_t n, int64_t m) {
    if (n < 0 || m < 0) return ml_fail("eye: sizes must be non-negative (got %" PRId64 ", %" PRId64 ")", n, m);
    int64_t shape[2] = {n, m};
    ml_tensor *t = ml_zeros(ML_F32, 2, shape);
    if (!t) return NULL;
    for (int64_t i = 0; i < n && i < m; i++) ml_f32(t)[i * m + i] = 1.0f;
    return t;
}

ml_tensor *ml_rand(int ndim, const int64_t *shape) {
    ml_tensor *t = ml_empty(ML_F32, ndim, shape);
    if (!t) return NULL;
    float *p = ml_f32(t);
    for (int64_t i = 0, n = ml_numel(t); i < n; i++) {
        if ((i & 0xfffff) == 0 && ml_interrupted()) { /* large draws stay interruptible */
            ml_release(t);
            return NULL;
        }
        p[i] = (float)ml_rng_uniform();
    }
    return t;
}

ml_tensor *ml_randn(int ndim, const int64_t *shape) {
    ml_tensor *t = ml_empty(ML_F32, ndim, shape);
    if (!t) return NULL;
    float *p = ml_f32(t);
    for (int64_t i = 0, n = ml_numel(t); i < n; i++) {
        if ((i & 0xfffff) == 0 && ml_interrupted()) {
            ml_release(t);
            return NULL;
        }
        p[i] = (float)ml_rng_normal();
    }
    return t;
}

ml_tensor *ml_randint(int64_t low, int64_t high, int ndim, const int64_t *shape) {
    if (high <= low)
        return ml_fail("randint: high (%" PRId64 ") must be greater than low (%" PRId64 ")", high, low);
    ml_tensor *t = ml_empty(ML_I64, ndim, shape);
    if (!t) return NULL;
    uint64_t range = (uint64_t)high - (uint64_t)low; /* high - low may not fit in int64 */
    int64_t *p = ml_i64(t);
    for (int64_t i = 0, n = ml_numel(t); i < n; i++) {
        /* rejection sampling: no modulo bias */
        uint64_t limit = UINT64_MAX - UINT64_MAX % range, r;
        do r = ml_rng_u64();
        while (r >= limit);
        p[i] = (int64_t)((uint64_t)low + r % range);
    }
    return t;
}

/* ------------------------------------------------------------ queries */
int64_t ml_numel(const ml_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
    return n;
}

bool ml_is_contiguous(const ml_tensor *t) {
    int64_t st = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != st) return false;
        st *= t->shape[d];
    }
    return true;
}

bool ml_same_shape(const ml_tensor *a, const ml_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

char *ml_shape_str(const ml_tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "[");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? ", %" PRId64 : "%" PRId64, t->shape[d]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

float *ml_f32(const ml_tensor *t) { return (float *)t->storage->data + t->offset; }
int64_t *ml_i64(const ml_tensor *t) { return (int64_t *)t->storage->data + t->offset; }

static int64_t linear_index(const ml_tensor *t, const int64_t *index) {
    int64_t off = t->offset;
    for (int d = 0; d < t->ndim; d++) off += index[d] * t->stride[d];
    return off;
}

double ml_get(const ml_tensor *t, const int64_t *index) {
    int64_t off = linear_index(t, index);
    return t->dtype == ML_F32 ? (double)((float *)t->storage->data)[off]
                              : (double)((int64_t *)t->storage->data)[off];
}

void ml_set(ml_tensor *t, const int64_t *index, double v) {
    int64_t off = linear_index(t, index);
    if (t->dtype == ML_F32) ((float *)t->storage->data)[off] = (float)v;
    else ((int64_t *)t->storage->data)[off] = (int64_t)v;
}

int ml_item(const ml_tensor *t, double *out) {
    if (ml_numel(t) != 1) {
        return ml_failc("item: tensor has %" PRId64 " elements (shape %s), item() needs exactly one",
                        ml_numel(t), ML_SHAPE_STR(t));
    }
    int64_t zero[ML_MAX_DIMS] = {0};
    *out = ml_get(t, zero);
    return 0;
}

int ml_dim_check(const char *fn, const ml_tensor *t, int dim, int *out) {
    int nd = t->ndim ? t->ndim : 1;
    int d = dim < 0 ? dim + nd : dim;
    if (d < 0 || d >= nd)
        return ml_failc("%s: dimension %d is out of range for a tensor with %d dimensions", fn,
                        dim < 0 ? dim : dim + 1, t->ndim);
    *out = d;
    return 0;
}

/* ------------------------------------------------------------ raw views */
ml_tensor *ml_view_raw(const ml_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                       int64_t offset) {
    ml_tensor *v = header_new(t->dtype, ndim, shape);
    if (!v) return NULL;
    for (int d = 0; d < ndim; d++) v->stride[d] = stride[d];
    v->offset = offset;
    v->storage = t->storage;
    t->storage->refcount++;
    return v;
}

ml_tensor *ml_alias(const ml_tensor *t) { return ml_view_raw(t, t->ndim, t->shape, t->stride, t->offset); }

/* Copies a strided tensor into dense memory, innermost dimension as a run. */
void ml_copy_strided_to(void *dst, const ml_tensor *src) {
    size_t es = ml_dtype_size(src->dtype);
    int64_t n = ml_numel(src);
    if (n == 0) return;
    if (ml_is_contiguous(src)) {
        memcpy(dst, (char *)src->storage->data + src->offset * (int64_t)es, (size_t)n * es);
        return;
    }
    int nd = src->ndim;
    int64_t inner = src->shape[nd - 1], istride = src->stride[nd - 1];
    int64_t outer = n / inner;
    int64_t idx[ML_MAX_DIMS] = {0};
    for (int64_t o = 0; o < outer; o++) {
        int64_t off = src->offset;
        for (int d = 0; d < nd - 1; d++) off += idx[d] * src->stride[d];
        if (src->dtype == ML_F32) {
            const float *s = (const float *)src->storage->data + off;
            float *q = (float *)dst + o * inner;
            for (int64_t i = 0; i < inner; i++) q[i] = s[i * istride];
        } else {
            const int64_t *s = (const int64_t *)src->storage->data + off;
            int64_t *q = (int64_t *)dst + o * inner;
            for (int64_t i = 0; i < inner; i++) q[i] = s[i * istride];
        }
        for (int d = nd - 2; d >= 0; d--) {
            if (++idx[d] < src->shape[d]) break;
            idx[d] = 0;
        }
    }
}

/* ------------------------------------------------------------ copies */
static int clone_backward(ml_node *n, ml_tensor *gout, ml_tensor **gin) {
    gin[0] = ml_retain(gout);
    return 0;
}

static ml_tensor *dense_copy(ml_tensor *t, const char *op) {
    ml_tensor *c = ml_empty(t->dtype, t->ndim, t->shape);
    if (!c) return NULL;
    ml_copy_strided_to(c->storage->data, t);
    ml_record(op, c, 1, &t, clone_backward);
    return c;
}

ml_tensor *ml_contiguous(ml_tensor *t) {
    if (ml_is_contiguous(t)) return ml_retain(t);
    return dense_copy(t, "contiguous");
}

ml_tensor *ml_clone(ml_tensor *t) { return dense_copy(t, "clone"); }

ml_tensor *ml_to_dtype(ml_tensor *t, ml_dtype dt) {
    if (t->dtype == dt) return ml_clone(t);
    ml_tensor *src = ml_contiguous(t);
    if (!src) return NULL;
    ml_tensor *c = ml_empty(dt, t->ndim, t->shape);
    if (c) {
        int64_t n = ml_numel(t);
        if (dt == ML_F32) {
            const int64_t *s = ml_i64(src);
            float *d = ml_f32(c);
            for (int64_t i = 0; i < n; i++) d[i] = (float)s[i];
        } else {
            const float *s = ml_f32(src);
            int64_t *d = ml_i64(c);
            for (int64_t i = 0; i < n; i++) {
                if (!isfinite(s[i])) {
                    ml_release(c);
                    ml_release(src);
                    return ml_fail("long: cannot convert %g to an integer", (double)s[i]);
                }
                d[i] = (int64_t)s[i];
            }
        }
    }
    ml_release(src);
    return c;
}

void ml_bump_version(ml_tensor *t) { t->storage->version++; }

int ml_check_inplace(const char *fn, const ml_tensor *t) {
    if (ml_grad_enabled() && t->requires_grad)
        return ml_failc("%s: cannot write in place into a tensor that requires grad "
                        "(use ml.no_grad, or detach() it first)", fn);
    return 0;
}

static void copy_run(const void *ctx, int64_t n, char **p, const int64_t *st) {
    const ml_dtype *dt = ctx; /* dt[0] = dst dtype, dt[1] = src dtype */
    if (dt[0] == ML_F32 && dt[1] == ML_F32) {
        float *d = (float *)p[0];
        const float *s = (const float *)p[1];
        if (st[0] == 1 && st[1] == 1) memcpy(d, s, (size_t)n * sizeof *d);
        else for (int64_t i = 0; i < n; i++) d[i * st[0]] = s[i * st[1]];
    } else if (dt[0] == ML_I64 && dt[1] == ML_I64) {
        int64_t *d = (int64_t *)p[0];
        const int64_t *s = (const int64_t *)p[1];
        for (int64_t i = 0; i < n; i++) d[i * st[0]] = s[i * st[1]];
    } else if (dt[0] == ML_F32) {
        float *d = (float *)p[0];
        const int64_t *s = (const int64_t *)p[1];
        for (int64_t i = 0; i < n; i++) d[i * st[0]] = (float)s[i * st[1]];
    } else {
        int64_t *d = (int64_t *)p[0];
        const float *s = (const float *)p[1];
        for (int64_t i = 0; i < n; i++) d[i * st[0]] = (int64_t)s[i * st[1]];
    }
}

int ml_copy_(ml_tensor *dst, const ml_tensor *src) {
    if (ml_check_inplace("copy", dst)) return -1;
    /* src must broadcast to exactly dst's shape */
    bool fits = src->ndim <= dst->ndim;
    for (int d = 0; d < src->ndim && fits; d++) {
        int64_t s = src->shape[src->ndim - 1 - d], t = dst->shape[dst->ndim - 1 - d];
        fits = s == t || s == 1;
    }
    if (!fits) {
        /* allow extra leading size-1 dims in src */
        int extra = src->ndim - dst->ndim;
        fits = extra > 0;
        for (int d = 0; d < extra && fits; d++) fits = src->shape[d] == 1;
        for (int d = 0; d < dst->ndim && fits; d++)
            fits = src->shape[extra + d] == dst->shape[d] || src->shape[extra + d] == 1;
        if (fits) {
            ml_tensor *v = ml_view_raw(src, dst->ndim, src->shape + extra, src->stride + extra, src->offset);
            if (!v) return -1;
            int rc = ml_copy_(dst, v);
            ml_release(v);
            return rc;
        }
        return ml_failc("copy: source of shape %s does not fit destination of shape %s", ML_SHAPE_STR(src),
                        ML_SHAPE_STR(dst));
    }
    if (ml_numel(dst) == 0) return 0;
    /* Overlapping storage (x:copy(x:t())): read everything before writing. */
    ml_tensor *tmp = NULL;
    if (src->storage == dst->storage) {
        tmp = ml_empty(src->dtype, src->ndim, src->shape);
        if (!tmp) return -1;
        ml_copy_strided_to(tmp->storage->data, src);
        src = tmp;
    }
    iter_t it;
    ml_tensor *ops[2] = {dst, (ml_tensor *)src};
    iter_init(&it, dst->ndim, dst->shape, 2, ops);
    ml_dtype dts[2] = {dst->dtype, src->dtype};
    iter_exec(&it, copy_run, dts);
    ml_release(tmp);
    ml_bump_version(dst);
    return 0;
}

int ml_fill_(ml_tensor *dst, double value) {
    if (ml_check_inplace("fill", dst)) return -1;
    int64_t n = ml_numel(dst);
    if (ml_is_contiguous(dst)) {
        if (dst->dtype == ML_F32) {
            float *p = ml_f32(dst), v = (float)value;
            for (int64_t i = 0; i < n; i++) p[i] = v;
        } else {
            int64_t *p = ml_i64(dst), v = (int64_t)value;
            for (int64_t i = 0; i < n; i++) p[i] = v;
        }
    } else {
        int64_t idx[ML_MAX_DIMS] = {0};
        for (int64_t i = 0; i < n; i++) {
            ml_set(dst, idx, value);
            for (int d = dst->ndim - 1; d >= 0; d--) {
                if (++idx[d] < dst->shape[d]) break;
                idx[d] = 0;
            }
        }
    }
    ml_bump_version(dst);
    return 0;
}
