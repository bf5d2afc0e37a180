/* autograd.c -- recording nodes and walking the tape backwards. */
#include "autograd.h"

#include <stdlib.h>
#include <string.h>

static bool grad_mode = true;

bool ml_grad_enabled(void) { return grad_mode; }
bool ml_grad_set(bool enabled) {
    bool old = grad_mode;
    grad_mode = enabled;
    return old;
}


static void node_free_saved(ml_node *n) {
    for (int k = 0; k < n->n_saved; k++) {
        ml_release(n->saved[k]);
        n->saved[k] = NULL;
    }
    if (n->ctx && n->ctx_free) n->ctx_free(n->ctx);
    n->ctx = NULL;
}

/* Releasing a node can release its inputs, their nodes, and so on down a long
 * chain; an explicit stack keeps a deep graph from overflowing the C stack. */
void ml_node_release(ml_node *n) {
    ml_node *stack_small[64];
    ml_node **stack = stack_small;
    int cap = 64, top = 0;
    stack[top++] = n;
    while (top > 0) {
        ml_node *m = stack[--top];
        if (--m->refcount > 0) continue;
        node_free_saved(m);
        ml_release(m->grad);
        for (int i = 0; i < m->n_in; i++) {
            ml_tensor *t = m->in[i];
            if (!t) continue;
            if (t->refcount == 1 && t->grad_fn) {
                /* detach its node and release it iteratively */
                ml_node *child = t->grad_fn;
                t->grad_fn = NULL;
                if (top == cap) {
                    ml_node **bigger = malloc(sizeof *bigger * (size_t)cap * 2);
                    memcpy(bigger, stack, sizeof *stack * (size_t)top);
                    if (stack != stack_small) free(stack);
                    stack = bigger;
                    cap *= 2;
                }
                stack[top++] = child;
            }
            ml_release(t);
        }
        free(m->in);
        free(m->needs);
        free(m);
    }
    if (stack != stack_small) free(stack);
}

ml_node *ml_record(const char *op, ml_tensor *out, int n_in, ml_tensor *const *in, ml_backward_fn backward) {
    if (!grad_mode || !out) return NULL;
    bool any = false;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->requires_grad) any = true;
    if (!any) return NULL;
    ml_node *n = calloc(1, sizeof *n);
    if (!n) return NULL;
    n->refcount = 1;
    n->op = op;
    n->n_in = n_in;
    n->in = calloc((size_t)n_in, sizeof *n->in);
    n->needs = calloc((size_t)n_in, sizeof *n->needs);
    for (int i = 0; i < n_in; i++) n->in[i] = ml_retain(in[i]);
    n->backward = backward;
    if (out->grad_fn) ml_node_release(out->grad_fn);
    out->grad_fn = n;
    out->requires_grad = true;
    return n;
}

int ml_save(ml_node *n, ml_tensor *t) {
    if (n->n_saved >= ML_NODE_MAX_SAVED) abort(); /* internal: an op saves too much */
    int k = n->n_saved++;
    n->saved[k] = ml_alias(t);
    n->saved_version[k] = t->storage->version;
    return k;
}

ml_tensor *ml_saved(ml_node *n, int k) {
    if (n->freed || !n->saved[k])
        return ml_fail("backward through %s a second time: its saved values were freed by the first backward "
                       "(pass retain_graph = true to the first one)", n->op);
    if (n->saved[k]->storage->version != n->saved_version[k])
        return ml_fail("backward: a tensor saved by %s for its gradient was modified in place afterwards", n->op);
    return n->saved[k];
}

int ml_requires_grad_(ml_tensor *t, bool on) {
    if (on && t->dtype != ML_F32)
        return ml_failc("requires_grad: only float32 tensors can require gradients (this one is %s)",
                        ml_dtype_name(t->dtype));
    if (t->grad_fn)
        return ml_failc("requires_grad: can only be set on a leaf tensor (this one was computed by %s; "
                        "use detach() to make a leaf)", t->grad_fn->op);
    t->requires_grad = on;
    return 0;
}

ml_tensor *ml_detach(ml_tensor *t) { return ml_alias(t); }

void ml_zero_grad(ml_tensor *t) {
    ml_release(t->grad);
    t->grad = NULL;
}

void ml_accumulate_(ml_tensor *dst, const ml_tensor *src) {
    float *d = ml_f32(dst);
    const float *s = ml_f32(src);
    int64_t n = ml_numel(dst);
    /* a residual network accumulates whole activations here (every block input) */
    #pragma omp parallel for schedule(static) if (n >= 262144)
    for (int64_t i = 0; i < n; i++) d[i] += s[i];
}

/* ------------------------------------------------------------ the engine */
typedef struct {
    ml_node **items;
    int n, cap;
} node_list;

static int list_push(node_list *l, ml_node *x) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        ml_node **p = realloc(l->items, sizeof *p * (size_t)cap);
        if (!p) return -1;
        l->items = p;
        l->cap = cap;
    }
    l->items[l->n++] = x;
    return 0;
}

/* Adds g into the slot for tensor t (its node's grad, or the leaf's grad / the
 * requested output). Takes ownership of g. */
static int deliver(ml_tensor *t, ml_tensor *g, int n_targets, ml_tensor *const *targets, ml_tensor **results) {
    if (!ml_same_shape(t, g)) {
        ml_release(g);
        return ml_failc("backward: internal error, gradient of shape %s for a tensor of shape %s",
                        ML_SHAPE_STR(g), ML_SHAPE_STR(t));
    }
    ml_tensor **slot = NULL;
    if (n_targets > 0) {
        for (int k = 0; k < n_targets; k++)
            if (targets[k] == t) slot = &results[k];
        if (!slot && t->grad_fn) slot = &t->grad_fn->grad;
    } else {
        slot = t->grad_fn ? &t->grad_fn->grad : &t->grad;
    }
    if (!slot) {
        ml_release(g);
        return 0;
    }
    if (!*slot) {
        /* Own the buffer: a backward may hand back its grad_out or a view. */
        if (g->refcount == 1 && ml_is_contiguous(g) && !g->grad_fn && g->offset == 0 && g->storage->refcount == 1) {
            g->requires_grad = false;
            *slot = g;
            return 0;
        }
        ml_tensor *c = ml_empty(ML_F32, g->ndim, g->shape);
        if (!c) {
            ml_release(g);
            return -1;
        }
        ml_copy_strided_to(ml_f32(c), g);
        ml_release(g);
        *slot = c;
        return 0;
    }
    if (ml_is_contiguous(g)) {
        ml_accumulate_(*slot, g);
    } else {
        ml_tensor *c = ml_empty(ML_F32, g->ndim, g->shape);
        if (!c) {
            ml_release(g);
            return -1;
        }
        ml_copy_strided_to(ml_f32(c), g);
        ml_accumulate_(*slot, c);
        ml_release(c);
    }
    ml_release(g);
    return 0;
}

static int is_target(ml_tensor *t, int n_targets, ml_tensor *const *targets) {
    for (int k = 0; k < n_targets; k++)
        if (targets[k] == t) return 1;
    return 0;
}

static int run_backward(ml_tensor *root, ml_tensor *grad_root, bool retain_graph, int n_targets,
                        ml_tensor *const *targets, ml_tensor **results) {
    if (root->dtype != ML_F32) return ml_failc("backward: the output is %s, not float32", ml_dtype_name(root->dtype));
    if (!root->requires_grad)
        return ml_failc("backward: the tensor does not require grad (nothing it was computed from requires grad, "
                        "or it was computed under no_grad)");
    ml_tensor *g0;
    if (grad_root) {
        if (!ml_same_shape(grad_root, root))
            return ml_failc("backward: gradient of shape %s given for an output of shape %s",
                            ML_SHAPE_STR(grad_root), ML_SHAPE_STR(root));
        g0 = ml_to_dtype(grad_root, ML_F32); /* a fresh contiguous float copy */
        if (!g0) return -1;
        g0->requires_grad = false;
        if (g0->grad_fn) {
            ml_node_release(g0->grad_fn);
            g0->grad_fn = NULL;
        }
    } else {
        if (ml_numel(root) != 1)
            return ml_failc("backward: the output has %lld elements (shape %s); backward() without a gradient "
                            "needs a single value such as a loss",
                            (long long)ml_numel(root), ML_SHAPE_STR(root));
        g0 = ml_full(ML_F32, root->ndim, root->shape, 1.0);
        if (!g0) return -1;
    }
    if (!root->grad_fn) { /* the root is a leaf itself */
        return deliver(root, g0, n_targets, targets, results);
    }

    /* 1. Collect the nodes (iterative DFS) and count consumers of each node. */
    node_list all = {0}, stack = {0}, order = {0};
    int rc = 0;
    root->grad_fn->mark = 1;
    list_push(&stack, root->grad_fn);
    while (stack.n > 0) {
        ml_node *n = stack.items[--stack.n];
        if (list_push(&all, n)) {
            rc = ml_failc("out of memory");
            break;
        }
        if (n->freed) {
            rc = ml_failc("backward through %s a second time: the graph was freed by the first backward "
                          "(pass retain_graph = true to the first one)", n->op);
            break;
        }
        for (int i = 0; i < n->n_in; i++) {
            ml_tensor *t = n->in[i];
            if (!t || !t->grad_fn || t->grad_fn->mark) continue;
            t->grad_fn->mark = 1;
            list_push(&stack, t->grad_fn);
        }
    }
    if (rc != 0) {
        while (stack.n > 0) stack.items[--stack.n]->mark = 0;
        ml_release(g0);
        goto done;
    }
    for (int k = 0; k < all.n; k++) all.items[k]->deps = 0;
    for (int k = 0; k < all.n; k++) {
        ml_node *n = all.items[k];
        for (int i = 0; i < n->n_in; i++)
            if (n->in[i] && n->in[i]->grad_fn) n->in[i]->grad_fn->deps++;
    }

    /* 2. Topological order (Kahn) from the root. */
    list_push(&stack, root->grad_fn);
    while (stack.n > 0) {
        ml_node *n = stack.items[--stack.n];
        list_push(&order, n);
        for (int i = 0; i < n->n_in; i++) {
            ml_tensor *t = n->in[i];
            if (t && t->grad_fn && --t->grad_fn->deps == 0) list_push(&stack, t->grad_fn);
        }
    }

    /* 3. With targets, only nodes that lead to a target are worth computing:
     * reverse topological order sees inputs before consumers. */
    if (n_targets > 0) {
        for (int k = order.n - 1; k >= 0; k--) {
            ml_node *n = order.items[k];
            n->useful = 0;
            for (int i = 0; i < n->n_in; i++) {
                ml_tensor *t = n->in[i];
                if (!t) continue;
                if (is_target(t, n_targets, targets) || (t->grad_fn && t->grad_fn->useful)) n->useful = 1;
            }
        }
    }

    /* 4. Walk. Ops called by backward functions must not record. */
    bool old_mode = ml_grad_set(false);
    rc = deliver(root, g0, n_targets, targets, results);
    ml_tensor *gin_small[8];
    for (int k = 0; k < order.n && rc == 0; k++) {
        ml_node *n = order.items[k];
        ml_tensor *g = n->grad;
        n->grad = NULL;
        if (!g || (n_targets > 0 && !n->useful)) {
            ml_release(g);
            continue;
        }
        if (ml_interrupted()) {
            ml_release(g);
            rc = -1;
            break;
        }
        ml_tensor **gin = n->n_in <= 8 ? gin_small : calloc((size_t)n->n_in, sizeof *gin);
        bool anyneed = false;
        for (int i = 0; i < n->n_in; i++) {
            ml_tensor *t = n->in[i];
            gin[i] = NULL;
            n->needs[i] = t && t->requires_grad && t->dtype == ML_F32 &&
                          (n_targets == 0 || is_target(t, n_targets, targets) || (t->grad_fn && t->grad_fn->useful));
            anyneed |= n->needs[i];
        }
        if (anyneed) {
            if (n->backward(n, g, gin) != 0) {
                ml_error_prefix("backward of %s: ", n->op);
                rc = -1;
            }
        }
        ml_release(g);
        for (int i = 0; i < n->n_in; i++) {
            if (!gin[i]) continue;
            if (rc == 0 && n->needs[i]) rc = deliver(n->in[i], gin[i], n_targets, targets, results);
            else ml_release(gin[i]);
        }
        if (gin != gin_small) free(gin);
    }
    ml_grad_set(old_mode);

done:
    for (int k = 0; k < all.n; k++) {
        ml_node *n = all.items[k];
        n->mark = 0;
        ml_release(n->grad);
        n->grad = NULL;
        if (!retain_graph && rc == 0) {
            node_free_saved(n);
            n->freed = true;
        }
    }
    if (!retain_graph && rc == 0) {
        /* The graph cannot be used again, so let go of the intermediate
         * tensors it holds now rather than when Lua collects the root: their
         * buffers go back to the allocator's cache for the next step (a
         * training loop otherwise faults fresh pages for every activation).
         * The nodes are pinned while their inputs go, since releasing one
         * input can free other nodes of the list. */
        for (int k = 0; k < all.n; k++) all.items[k]->refcount++;
        for (int k = 0; k < all.n; k++) {
            ml_node *n = all.items[k];
            for (int i = 0; i < n->n_in; i++) {
                ml_tensor *t = n->in[i];
                n->in[i] = NULL;
                ml_release(t);
            }
        }
        for (int k = 0; k < all.n; k++) ml_node_release(all.items[k]);
    }
    free(all.items);
    free(stack.items);
    free(order.items);
    return rc;
}

int ml_backward(ml_tensor *root, ml_tensor *grad_root, bool retain_graph) {
    return run_backward(root, grad_root, retain_graph, 0, NULL, NULL);
}

int ml_grad(ml_tensor *root, ml_tensor *grad_root, int n, ml_tensor *const *inputs, ml_tensor **grads_out,
            bool retain_graph) {
    for (int k = 0; k < n; k++) {
        grads_out[k] = NULL;
        if (!inputs[k]->requires_grad)
            return ml_failc("grad: input %d does not require grad", k + 1);
    }
    int rc = run_backward(root, grad_root, retain_graph, n, inputs, grads_out);
    for (int k = 0; k < n; k++) {
        if (rc != 0) {
            ml_release(grads_out[k]);
            grads_out[k] = NULL;
        } else if (!grads_out[k]) {
            grads_out[k] = ml_zeros(ML_F32, inputs[k]->ndim, inputs[k]->shape);
        }
    }
    return rc;
}

/* Sums over the dimensions along which `shape` was broadcast to g's shape. */
ml_tensor *ml_sum_to_shape(ml_tensor *g, int ndim, const int64_t *shape) {
    if (g->ndim == ndim) {
        bool same = true;
        for (int d = 0; d < ndim; d++) same &= g->shape[d] == shape[d];
        if (same) return ml_retain(g);
    }
    ml_tensor *gc = ml_contiguous(g);
    if (!gc) return NULL;
    ml_tensor *out = ml_zeros(ML_F32, ndim, shape);
    if (!out) {
        ml_release(gc);
        return NULL;
    }
    /* strides of out aligned to g's dims, 0 where summed */
    int64_t ost[ML_MAX_DIMS];
    int lead = g->ndim - ndim;
    for (int d = 0; d < g->ndim; d++) {
        int od = d - lead;
        ost[d] = (od < 0 || shape[od] == 1) ? 0 : out->stride[od];
    }
    const float *src = ml_f32(gc);
    float *dst = ml_f32(out);
    int64_t n = ml_numel(gc), idx[ML_MAX_DIMS] = {0}, off = 0;
    int nd = g->ndim;
    for (int64_t i = 0; i < n; i++) {
        dst[off] += src[i];
        for (int d = nd - 1; d >= 0; d--) {
            if (++idx[d] < g->shape[d]) {
                off += ost[d];
                break;
            }
            off -= ost[d] * (idx[d] - 1);
            idx[d] = 0;
        }
    }
    ml_release(gc);
    return out;
}
