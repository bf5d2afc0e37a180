/* mlp.h -- a fused two-layer MLP over blocks of rows, one weight set per block:
 *
 *   y[r] = act(x[r] W1[e]^T + b1[e]) W2[e]^T + b2[e]     for offset[e] <= r < offset[e+1]
 *
 * x [A, D], W1[e] [H, D], b1[e] [H], W2[e] [O, H], b2[e] [O]  ->  y [A, O].
 * A dense transformer MLP is one block (E = 1); the experts of a V-MoE layer
 * are E blocks of the dispatched tokens (moe.c): one grouped pass under one
 * autograd node instead of E modules of three ops each, so the cost follows
 * the rows, not the number of blocks.
 *
 * Rows go through in tiles of a few hundred: the bias and the activation are
 * applied to a tile's GEMM result while it is in cache (the epilogue), and
 * only the pre-activation is kept for the backward, which recomputes the
 * activation together with its derivative (one erf for both). Gradients go
 * to x and to the weights and biases of every non-empty block; an empty
 * block's parameters get none, as if its expert had not run.
 *
 * Results equal the composed ops (linear, unary, linear) to float rounding,
 * and are bit-identical from run to run for a given thread count: every
 * output row is computed by one thread, and a weight gradient summed over
 * several slices of rows adds the slices' partials in slice order. */
#ifndef ML_OPS_MLP_H
#define ML_OPS_MLP_H

#include "../tensor.h"
#include "elementwise.h"

/* The activations the fused kernels implement (GELU, ReLU). */
bool ml_mlp_act_supported(ml_unary_op act);

/* offset: E + 1 nondecreasing row offsets from 0 to A. w1, b1, w2, b2: E
 * float32 tensors each (all biases required). */
ml_tensor *ml_mlp_blocks(ml_tensor *x, int E, const int64_t *offset, ml_tensor *const *w1, ml_tensor *const *b1,
                         ml_tensor *const *w2, ml_tensor *const *b2, ml_unary_op act);

/* The same experts applied to routed tokens, with the dispatch fused in (the
 * V-MoE layer's gather, experts and weighted combine in one op):
 *
 *   out[t] = sum over a with ids[a] = t of gates[a] (act(x[ids[a]] W1[e]^T + b1[e]) W2[e]^T + b2[e])
 *
 * for assignment a in block e (offset[e] <= a < offset[e+1]). x [T, D], ids
 * int64 [A] (0-based rows of x), gates [A] float (differentiable) -> out [T, O];
 * rows of x no assignment reaches get 0. The gathered rows and the experts'
 * outputs are never kept: tiles gather their rows from x, and the backward
 * recomputes what it needs from the pre-activation (the gate's gradient is
 * <act, g W2> + <b2, g> with g the output gradient at the token). Sums over
 * a token's assignments run in assignment order, as ml_moe_combine's. */
ml_tensor *ml_mlp_routed(ml_tensor *x, const ml_tensor *ids, ml_tensor *gates, int E, const int64_t *offset,
                         ml_tensor *const *w1, ml_tensor *const *b1, ml_tensor *const *w2, ml_tensor *const *b2,
                         ml_unary_op act);

#endif
