/* autograd.h -- the define-by-run tape.
 *
 * An op computes its output, then calls ml_record(). When grad mode is on and an
 * input requires grad, ml_record creates a node, makes it the output's grad_fn
 * and returns it; the op then saves what its backward needs:
 *
 *     ml_tensor *y = ...compute...;
 *     ml_node *n = ml_record("relu", y, 1, (ml_tensor *[]){x}, relu_backward);
 *     if (n) ml_save(n, x);
 *
 * A backward function receives the gradient of the output (contiguous, same
 * shape as the output) and fills grad_in[i] with a NEW tensor of input i's shape
 * for every i where node->needs[i] is true (leave the others NULL):
 *
 *     static int relu_backward(ml_node *n, ml_tensor *gout, ml_tensor **gin) {
 *         ml_tensor *x = ml_saved(n, 0); if (!x) return -1;
 *         gin[0] = ...;  return 0;
 *     }
 *
 * Nodes own their inputs (for routing gradients) and their saved tensors;
 * saved tensors are history-free aliases, so an output saved by its own node
 * makes no reference cycle. An in-place write to a saved tensor is detected
 * (storage version) and reported when backward needs it. */
#ifndef ML_AUTOGRAD_H
#define ML_AUTOGRAD_H

#include "tensor.h"

#define ML_NODE_MAX_SAVED 20
#define ML_NODE_NPARAM 8

typedef int (*ml_backward_fn)(ml_node *node, ml_tensor *grad_out, ml_tensor **grad_in);

struct ml_node {
    int refcount;
    const char *op; /* static string naming the op, for messages */
    int n_in;
    ml_tensor **in; /* retained inputs */
    bool *needs;    /* set by the engine before backward: which grads to compute */
    int n_saved;
    ml_tensor *saved[ML_NODE_MAX_SAVED];
    uint32_t saved_version[ML_NODE_MAX_SAVED];
    double f[ML_NODE_NPARAM];  /* small op parameters (scalars) */
    int64_t i[ML_NODE_NPARAM]; /* small op parameters (ints) */
    void *ctx;                 /* larger op state, freed with ctx_free */
    void (*ctx_free)(void *);
    ml_backward_fn backward;
    bool freed; /* saved tensors released after a backward without retain_graph */
    /* engine bookkeeping */
    ml_tensor *grad; /* gradient of the output accumulated during backward */
    int deps;
    int mark;
    int useful;
};

/* Drops a reference to a node (tensors own their grad_fn; tensor.c releases it). */
void ml_node_release(ml_node *n);

/* Grad mode (on by default). ml_grad_set returns the previous value. */
bool ml_grad_enabled(void);
bool ml_grad_set(bool enabled);

/* Records a node for `out` when grad mode is on and some input requires grad;
 * returns it (owned by out), or NULL when nothing is recorded. */
ml_node *ml_record(const char *op, ml_tensor *out, int n_in, ml_tensor *const *in,
                   ml_backward_fn backward);
/* Saves an alias of t for backward; returns its slot. */
int ml_save(ml_node *n, ml_tensor *t);
/* The saved tensor in slot k (borrowed), or NULL + error if it was modified in
 * place since it was saved, or freed by an earlier backward. */
ml_tensor *ml_saved(ml_node *n, int k);

/* Marks a leaf: t:requires_grad(true). Fails on int64 or non-leaf tensors. */
int ml_requires_grad_(ml_tensor *t, bool on);
/* A history-free alias sharing storage (t:detach()). */
ml_tensor *ml_detach(ml_tensor *t);
void ml_zero_grad(ml_tensor *t); /* drops t->grad */

/* Backpropagates from root. grad_root NULL means 1 (root must have one element).
 * Leaves that require grad accumulate into ->grad. */
int ml_backward(ml_tensor *root, ml_tensor *grad_root, bool retain_graph);
/* Like torch.autograd.grad: the gradients of root w.r.t. inputs[0..n-1] are
 * returned in grads_out (new references; zeros when unreachable), ->grad is not
 * touched, and only the part of the graph leading to the inputs is computed
 * (so an attack does not pay for parameter gradients). */
int ml_grad(ml_tensor *root, ml_tensor *grad_root, int n, ml_tensor *const *inputs,
            ml_tensor **grads_out, bool retain_graph);

/* Helpers for backward functions. */
/* Sums g over broadcast dimensions so that it has the given shape (new ref). */
ml_tensor *ml_sum_to_shape(ml_tensor *g, int ndim, const int64_t *shape);
/* dst += src, same shape, both contiguous float32, no autograd. */
void ml_accumulate_(ml_tensor *dst, const ml_tensor *src);

#endif
