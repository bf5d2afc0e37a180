/* tensor.h -- n-d tensors over reference-counted storage.
 *
 * A tensor is sizes, strides (in elements) and an offset over a shared,
 * 64-byte aligned storage, as in Torch7's TH. Views (narrow, select, transpose,
 * permute, view, expand) share the storage and write through. Kernels work on
 * contiguous memory: an op calls ml_contiguous() on its inputs at entry, which
 * costs nothing when the input already is.
 *
 * Ownership: every function that returns an ml_tensor* returns a NEW reference;
 * the caller releases it with ml_release(). Arguments are borrowed.
 * On user error a function returns NULL and sets the message (error.h).
 *
 * Dimensions are 0-based here; the Lua bindings convert from 1-based.
 *
 * Example:
 *     int64_t shape[2] = {2, 3};
 *     ml_tensor *a = ml_randn(2, shape);
 *     ml_tensor *b = ml_relu(a);             // new reference
 *     float *p = ml_f32(b);                  // b is contiguous: p[0..5]
 *     ml_release(b); ml_release(a);
 */
#ifndef ML_TENSOR_H
#define ML_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "error.h"

#define ML_MAX_DIMS 6

typedef enum { ML_F32 = 0, ML_I64 = 1 } ml_dtype;

typedef struct ml_storage {
    int refcount;
    uint32_t version; /* bumped by every in-place write; autograd checks it */
    size_t nbytes;
    void *data; /* 64-byte aligned */
} ml_storage;

typedef struct ml_node ml_node;

typedef struct ml_tensor {
    int refcount;
    ml_dtype dtype;
    int ndim;
    int64_t shape[ML_MAX_DIMS];
    int64_t stride[ML_MAX_DIMS];
    int64_t offset; /* in elements */
    ml_storage *storage;
    /* autograd: a leaf that requires grad accumulates into `grad`; a tensor
     * computed from one has `grad_fn`, the tape node that made it (owned). */
    bool requires_grad;
    struct ml_tensor *grad;
    ml_node *grad_fn;
} ml_tensor;

/* ------------------------------------------------------------ lifetime */
ml_tensor *ml_retain(ml_tensor *t); /* returns t */
void ml_release(ml_tensor *t);      /* NULL is fine */

/* ------------------------------------------------------------ creation */
/* Uninitialised contiguous tensor. ndim may be 0 (a scalar). */
ml_tensor *ml_empty(ml_dtype dt, int ndim, const int64_t *shape);
ml_tensor *ml_zeros(ml_dtype dt, int ndim, const int64_t *shape);
ml_tensor *ml_full(ml_dtype dt, int ndim, const int64_t *shape, double value);
ml_tensor *ml_scalar(double value);                                /* 0-d float32 */
ml_tensor *ml_from_data(ml_dtype dt, int ndim, const int64_t *shape, const void *data);
ml_tensor *ml_arange(double start, double end, double step, ml_dtype dt);
ml_tensor *ml_eye(int64_t n, int64_t m);
ml_tensor *ml_rand(int ndim, const int64_t *shape);                 /* U[0,1) */
ml_tensor *ml_randn(int ndim, const int64_t *shape);                /* N(0,1) */
ml_tensor *ml_randint(int64_t low, int64_t high, int ndim, const int64_t *shape); /* [low,high) int64 */
ml_tensor *ml_empty_like(const ml_tensor *t);
ml_tensor *ml_zeros_like(const ml_tensor *t);

/* ------------------------------------------------------------ queries */
int64_t ml_numel(const ml_tensor *t);
/* Checks a shape any tensor or view may have: sizes >= 0, and the product of
 * the non-zero sizes (the dense strides) small enough that element and byte
 * offsets fit in int64. Returns the element count, or -1 after
 * ml_fail("fn: ..."). Every op that makes a shape up calls it. */
int64_t ml_shape_numel(const char *fn, int ndim, const int64_t *shape);
bool ml_is_contiguous(const ml_tensor *t);
bool ml_same_shape(const ml_tensor *a, const ml_tensor *b);
size_t ml_dtype_size(ml_dtype dt);
const char *ml_dtype_name(ml_dtype dt);
/* "[2, 3, 4]" into buf (for error messages). Returns buf. */
char *ml_shape_str(const ml_tensor *t, char *buf, size_t n);
#define ML_SHAPE_STR(t) ml_shape_str((t), (char[96]){0}, 96)
/* Pointer to the first element (storage + offset). Index it directly only when
 * the tensor is contiguous. */
float *ml_f32(const ml_tensor *t);
int64_t *ml_i64(const ml_tensor *t);
/* Element at a multi-index (any strides), as double. */
double ml_get(const ml_tensor *t, const int64_t *index);
void ml_set(ml_tensor *t, const int64_t *index, double v);
/* The value of a one-element tensor. */
int ml_item(const ml_tensor *t, double *out);
/* Normalises a possibly negative dim; fails naming `fn` when out of range. */
int ml_dim_check(const char *fn, const ml_tensor *t, int dim, int *out);

/* ------------------------------------------------------------ copies */
/* A contiguous tensor with t's values: t itself (retained) when already
 * contiguous, else a copy (recorded by autograd). */
ml_tensor *ml_contiguous(ml_tensor *t);
ml_tensor *ml_clone(ml_tensor *t);                 /* always a fresh copy, autograd-aware */
ml_tensor *ml_to_dtype(ml_tensor *t, ml_dtype dt); /* float <-> int64 (truncates) */
/* In-place, no autograd (error if dst requires grad while grad mode is on).
 * src is broadcast to dst's shape; dtypes convert. */
int ml_copy_(ml_tensor *dst, const ml_tensor *src);
int ml_fill_(ml_tensor *dst, double value);
/* Marks an in-place write (bumps the storage version). */
void ml_bump_version(ml_tensor *t);
/* Checks whether an in-place write to t is allowed (fails naming fn). */
int ml_check_inplace(const char *fn, const ml_tensor *t);

/* ------------------------------------------------------------ raw views
 * No autograd; used by ops/shape.c which adds it. Share storage, new header. */
ml_tensor *ml_alias(const ml_tensor *t); /* same view, no autograd history */
ml_tensor *ml_view_raw(const ml_tensor *t, int ndim, const int64_t *shape, const int64_t *stride,
                       int64_t offset);
/* Copies any strided tensor into contiguous memory at dst (dtype of src). */
void ml_copy_strided_to(void *dst, const ml_tensor *src);

#endif
