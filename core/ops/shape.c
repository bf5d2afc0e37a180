/* shape.c -- views (sharing storage) and concatenation, with backward. */
#include "shape.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../autograd.h"

/* ------------------------------------------------------------ reshape */
static int reshape_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *x = n->in[0];
    gin[0] = ml_reshape(g, x->ndim, x->shape);
    return gin[0] ? 0 : -1;
}

/* Strides for viewing t with a new shape without copying, if possible: each
 * run of old dimensions that are contiguous with one another ("chunk") must be
 * covered exactly by a run of new dimensions. */
static bool view_strides(const ml_tensor *t, int nd, const int64_t *shape, int64_t *stride) {
    if (ml_is_contiguous(t) || ml_numel(t) == 0) {
        int64_t st = 1;
        for (int d = nd - 1; d >= 0; d--) {
            stride[d] = st;
            st *= shape[d] ? shape[d] : 1;
        }
        return true;
    }
    if (t->ndim == 0) return false;
    int vd = nd - 1;
    int64_t base = t->stride[t->ndim - 1], tnum = 1, vnum = 1;
    for (int td = t->ndim - 1; td >= 0; td--) {
        tnum *= t->shape[td];
        bool chunk_ends = td == 0 || (t->shape[td - 1] != 1 && t->stride[td - 1] != tnum * base);
        if (!chunk_ends) continue;
        while (vd >= 0 && (vnum < tnum || shape[vd] == 1)) {
            stride[vd] = vnum * base;
            vnum *= shape[vd];
            vd--;
        }
        if (vnum != tnum) return false;
        if (td > 0) {
            base = t->stride[td - 1];
            tnum = 1;
            vnum = 1;
        }
    }
    return vd == -1;
}

ml_tensor *ml_reshape(ml_tensor *t, int ndim, const int64_t *shape_in) {
    if (ndim < 0 || ndim > ML_MAX_DIMS)
        return ml_fail("reshape: %d dimensions requested, at most %d are supported", ndim, ML_MAX_DIMS);
    int64_t shape[ML_MAX_DIMS], known, total = ml_numel(t);
    int infer = -1;
    for (int d = 0; d < ndim; d++) {
        shape[d] = shape_in[d];
        if (shape[d] == -1) {
            if (infer >= 0) return ml_fail("reshape: only one dimension can be -1");
            infer = d;
            shape[d] = 1; /* checked below with the others */
        } else if (shape[d] < 0) {
            return ml_fail("reshape: invalid size %" PRId64 " in dimension %d", shape[d], d + 1);
        }
    }
    if ((known = ml_shape_numel("reshape", ndim, shape)) < 0) return NULL;
    if (infer >= 0) {
        if (known == 0 || total % known != 0)
            return ml_fail("reshape: cannot infer dimension %d: %" PRId64 " elements do not divide into %" PRId64,
                           infer + 1, total, known);
        shape[infer] = total / known;
        known *= shape[infer];
    }
    if (known != total) {
        char buf[96];
        size_t k = 0;
        k += (size_t)snprintf(buf, sizeof buf, "[");
        for (int d = 0; d < ndim && k < sizeof buf; d++)
            k += (size_t)snprintf(buf + k, sizeof buf - k, d ? ", %" PRId64 : "%" PRId64, shape_in[d]);
        if (k < sizeof buf) snprintf(buf + k, sizeof buf - k, "]");
        return ml_fail("reshape: shape %s is invalid for a tensor of %" PRId64 " elements (shape %s)", buf, total,
                       ML_SHAPE_STR(t));
    }
    int64_t stride[ML_MAX_DIMS];
    ml_tensor *out;
    if (view_strides(t, ndim, shape, stride)) {
        out = ml_view_raw(t, ndim, shape, stride, t->offset);
    } else {
        ml_tensor *c = ml_contiguous(t);
        if (!c) return NULL;
        int64_t st = 1;
        for (int d = ndim - 1; d >= 0; d--) {
            stride[d] = st;
            st *= shape[d];
        }
        out = ml_view_raw(c, ndim, shape, stride, c->offset);
        ml_release(c);
    }
    if (out) ml_record("reshape", out, 1, &t, reshape_backward);
    return out;
}

ml_tensor *ml_flatten(ml_tensor *t, int start_dim, int end_dim) {
    if (t->ndim == 0) {
        int64_t one = 1;
        return ml_reshape(t, 1, &one);
    }
    int s, e;
    if (ml_dim_check("flatten", t, start_dim, &s) || ml_dim_check("flatten", t, end_dim, &e)) return NULL;
    if (s > e) return ml_fail("flatten: start dimension %d comes after end dimension %d", s + 1, e + 1);
    int64_t shape[ML_MAX_DIMS];
    int nd = 0;
    for (int d = 0; d < s; d++) shape[nd++] = t->shape[d];
    int64_t m = 1;
    for (int d = s; d <= e; d++) m *= t->shape[d];
    shape[nd++] = m;
    for (int d = e + 1; d < t->ndim; d++) shape[nd++] = t->shape[d];
    return ml_reshape(t, nd, shape);
}

/* ------------------------------------------------------------ permute */
static int permute_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    int inv[ML_MAX_DIMS];
    for (int d = 0; d < g->ndim; d++) inv[n->i[d]] = d;
    gin[0] = ml_permute(g, inv);
    return gin[0] ? 0 : -1;
}

ml_tensor *ml_permute(ml_tensor *t, const int *perm) {
    int seen[ML_MAX_DIMS] = {0};
    int64_t shape[ML_MAX_DIMS], stride[ML_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) {
        int p = perm[d];
        if (p < 0) p += t->ndim;
        if (p < 0 || p >= t->ndim || seen[p])
            return ml_fail("permute: the order must list each of the %d dimensions exactly once", t->ndim);
        seen[p] = 1;
        shape[d] = t->shape[p];
        stride[d] = t->stride[p];
    }
    ml_tensor *out = ml_view_raw(t, t->ndim, shape, stride, t->offset);
    ml_node *n = ml_record("permute", out, 1, &t, permute_backward);
    if (n)
        for (int d = 0; d < t->ndim; d++) n->i[d] = perm[d] < 0 ? perm[d] + t->ndim : perm[d];
    return out;
}

ml_tensor *ml_transpose(ml_tensor *t, int d0, int d1) {
    int a, b;
    if (ml_dim_check("transpose", t, d0, &a) || ml_dim_check("transpose", t, d1, &b)) return NULL;
    int perm[ML_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) perm[d] = d;
    perm[a] = b;
    perm[b] = a;
    return ml_permute(t, perm);
}

/* ------------------------------------------------------------ narrow, select */
/* Backward of a slice: zeros of the input's shape with g written into the slice. */
static int slice_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    ml_tensor *x = n->in[0];
    int dim = (int)n->i[0];
    int64_t start = n->i[1], len = n->i[2];
    bool is_select = n->i[3];
    ml_tensor *z = ml_zeros(ML_F32, x->ndim, x->shape);
    if (!z) return -1;
    ml_tensor *region = ml_narrow(z, dim, start, len);
    if (!region) {
        ml_release(z);
        return -1;
    }
    int rc;
    if (is_select) {
        ml_tensor *gu = ml_unsqueeze(g, dim);
        rc = gu ? ml_copy_(region, gu) : -1;
        ml_release(gu);
    } else {
        rc = ml_copy_(region, g);
    }
    ml_release(region);
    if (rc) {
        ml_release(z);
        return -1;
    }
    gin[0] = z;
    return 0;
}

ml_tensor *ml_narrow(ml_tensor *t, int dim, int64_t start, int64_t length) {
    int d;
    if (ml_dim_check("narrow", t, dim, &d)) return NULL;
    if (t->ndim == 0) return ml_fail("narrow: cannot narrow a 0-dimensional tensor");
    /* compared without adding: start + length overflows for huge lengths */
    if (start < 0 || length < 0 || start > t->shape[d] || length > t->shape[d] - start) {
        if (start >= 0 && length >= 0 && length <= INT64_MAX - start - 1)
            return ml_fail("narrow: range [%" PRId64 ", %" PRId64 "] (1-based, length %" PRId64
                           ") is outside dimension %d of size %" PRId64,
                           start + 1, start + length, length, d + 1, t->shape[d]);
        return ml_fail("narrow: start %" PRId64 " (1-based) with length %" PRId64
                       " is outside dimension %d of size %" PRId64,
                       start < INT64_MAX ? start + 1 : start, length, d + 1, t->shape[d]);
    }
    int64_t shape[ML_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[d] = length;
    ml_tensor *out = ml_view_raw(t, t->ndim, shape, t->stride, t->offset + start * t->stride[d]);
    ml_node *n = ml_record("narrow", out, 1, &t, slice_backward);
    if (n) {
        n->i[0] = d;
        n->i[1] = start;
        n->i[2] = length;
        n->i[3] = 0;
    }
    return out;
}

ml_tensor *ml_select(ml_tensor *t, int dim, int64_t index) {
    int d;
    if (t->ndim == 0) return ml_fail("select: cannot index a 0-dimensional tensor");
    if (ml_dim_check("select", t, dim, &d)) return NULL;
    if (index < 0 || index >= t->shape[d])
        return ml_fail("select: index %" PRId64 " is out of range for dimension %d of size %" PRId64
                       " (indices are 1-based)", index + 1, d + 1, t->shape[d]);
    int64_t shape[ML_MAX_DIMS], stride[ML_MAX_DIMS];
    int nd = 0;
    for (int k = 0; k < t->ndim; k++) {
        if (k == d) continue;
        shape[nd] = t->shape[k];
        stride[nd++] = t->stride[k];
    }
    ml_tensor *out = ml_view_raw(t, nd, shape, stride, t->offset + index * t->stride[d]);
    ml_node *n = ml_record("select", out, 1, &t, slice_backward);
    if (n) {
        n->i[0] = d;
        n->i[1] = index;
        n->i[2] = 1;
        n->i[3] = 1;
    }
    return out;
}

/* ------------------------------------------------------------ squeeze, unsqueeze, expand */
ml_tensor *ml_unsqueeze(ml_tensor *t, int dim) {
    int nd = t->ndim + 1;
    int d = dim < 0 ? dim + nd : dim;
    if (d < 0 || d >= nd)
        return ml_fail("unsqueeze: dimension %d is out of range for a tensor with %d dimensions",
                       dim < 0 ? dim : dim + 1, t->ndim);
    if (nd > ML_MAX_DIMS) return ml_fail("unsqueeze: at most %d dimensions are supported", ML_MAX_DIMS);
    int64_t shape[ML_MAX_DIMS];
    for (int k = 0, j = 0; k < nd; k++) shape[k] = k == d ? 1 : t->shape[j++];
    return ml_reshape(t, nd, shape);
}

ml_tensor *ml_squeeze(ml_tensor *t, int dim) {
    int64_t shape[ML_MAX_DIMS];
    int nd = 0;
    if (dim == ML_ALL_DIMS) {
        for (int k = 0; k < t->ndim; k++)
            if (t->shape[k] != 1) shape[nd++] = t->shape[k];
    } else {
        int d;
        if (ml_dim_check("squeeze", t, dim, &d)) return NULL;
        for (int k = 0; k < t->ndim; k++)
            if (k != d || t->shape[k] != 1) shape[nd++] = t->shape[k];
    }
    return ml_reshape(t, nd, shape);
}

static int expand_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    gin[0] = ml_sum_to_shape(g, n->in[0]->ndim, n->in[0]->shape);
    return gin[0] ? 0 : -1;
}

ml_tensor *ml_expand(ml_tensor *t, int ndim, const int64_t *shape_in) {
    if (ndim < t->ndim)
        return ml_fail("expand: the new shape has %d dimensions, fewer than the tensor's %d", ndim, t->ndim);
    if (ndim > ML_MAX_DIMS) return ml_fail("expand: at most %d dimensions are supported", ML_MAX_DIMS);
    int64_t shape[ML_MAX_DIMS], stride[ML_MAX_DIMS];
    for (int d = 0; d < ndim; d++) {
        int td = d - (ndim - t->ndim);
        int64_t want = shape_in[d];
        if (td < 0) {
            if (want < 0)
                return ml_fail("expand: size %" PRId64 " is not allowed for a new leading dimension", want);
            shape[d] = want;
            stride[d] = 0;
        } else if (want == -1 || want == t->shape[td]) {
            shape[d] = t->shape[td];
            stride[d] = t->stride[td];
        } else if (t->shape[td] == 1 && want >= 0) {
            shape[d] = want;
            stride[d] = 0;
        } else if (want < 0) {
            return ml_fail("expand: invalid size %" PRId64 " for dimension %d (-1 keeps a size)", want, d + 1);
        } else {
            return ml_fail("expand: size %" PRId64 " of dimension %d cannot become %" PRId64
                           " (only size-1 dimensions expand)", t->shape[td], td + 1, want);
        }
    }
    if (ml_shape_numel("expand", ndim, shape) < 0) return NULL;
    ml_tensor *out = ml_view_raw(t, ndim, shape, stride, t->offset);
    ml_record("expand", out, 1, &t, expand_backward);
    return out;
}

/* ------------------------------------------------------------ cat, stack */
static int cat_backward(ml_node *n, ml_tensor *g, ml_tensor **gin) {
    int dim = (int)n->i[0];
    int64_t off = 0;
    for (int k = 0; k < n->n_in; k++) {
        int64_t len = n->in[k]->shape[dim];
        if (n->needs[k]) {
            gin[k] = ml_narrow(g, dim, off, len);
            if (!gin[k]) return -1;
        }
        off += len;
    }
    return 0;
}

ml_tensor *ml_cat(int n, ml_tensor *const *ts, int dim) {
    if (n < 1) return ml_fail("cat: needs at least one tensor");
    const ml_tensor *t0 = ts[0];
    int d;
    if (ml_dim_check("cat", t0, dim, &d)) return NULL;
    if (t0->ndim == 0) return ml_fail("cat: cannot concatenate 0-dimensional tensors (use stack)");
    int64_t total = 0;
    for (int k = 0; k < n; k++) {
        const ml_tensor *t = ts[k];
        if (t->dtype != t0->dtype)
            return ml_fail("cat: tensor %d is %s, tensor 1 is %s", k + 1, ml_dtype_name(t->dtype),
                           ml_dtype_name(t0->dtype));
        if (t->ndim != t0->ndim)
            return ml_fail("cat: tensor %d has %d dimensions, tensor 1 has %d", k + 1, t->ndim, t0->ndim);
        for (int j = 0; j < t->ndim; j++)
            if (j != d && t->shape[j] != t0->shape[j])
                return ml_fail("cat: tensor %d has shape %s, tensor 1 has %s (only dimension %d may differ)", k + 1,
                               ML_SHAPE_STR(t), ML_SHAPE_STR(t0), d + 1);
        if (t->shape[d] > INT64_MAX / 16 - total)
            return ml_fail("cat: the sizes along dimension %d add up past 2^59", d + 1);
        total += t->shape[d];
    }
    int64_t shape[ML_MAX_DIMS];
    memcpy(shape, t0->shape, sizeof shape);
    shape[d] = total;
    ml_tensor *out = ml_empty(t0->dtype, t0->ndim, shape);
    if (!out) return NULL;
    bool gm = ml_grad_set(false);
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        ml_tensor *region = ml_narrow(out, d, off, ts[k]->shape[d]);
        int rc = region ? ml_copy_(region, ts[k]) : -1;
        ml_release(region);
        if (rc) {
            ml_grad_set(gm);
            ml_release(out);
            return NULL;
        }
        off += ts[k]->shape[d];
    }
    ml_grad_set(gm);
    ml_node *node = ml_record("cat", out, n, ts, cat_backward);
    if (node) node->i[0] = d;
    return out;
}

ml_tensor *ml_stack(int n, ml_tensor *const *ts, int dim) {
    if (n < 1) return ml_fail("stack: needs at least one tensor");
    int nd = ts[0]->ndim + 1;
    int d = dim < 0 ? dim + nd : dim;
    if (d < 0 || d >= nd) return ml_fail("stack: dimension %d is out of range", dim < 0 ? dim : dim + 1);
    for (int k = 1; k < n; k++)
        if (!ml_same_shape(ts[k], ts[0]))
            return ml_fail("stack: tensor %d has shape %s, tensor 1 has %s (all must match)", k + 1,
                           ML_SHAPE_STR(ts[k]), ML_SHAPE_STR(ts[0]));
    ml_tensor **us = malloc(sizeof *us * (size_t)n);
    if (!us) return ml_fail("out of memory");
    int made = 0;
    ml_tensor *out = NULL;
    for (; made < n; made++)
        if (!(us[made] = ml_unsqueeze(ts[made], d))) break;
    if (made == n) out = ml_cat(n, us, d);
    for (int k = 0; k < made; k++) ml_release(us[k]);
    free(us);
    return out;
}
