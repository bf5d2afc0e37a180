/* layers.h -- basic modules: Linear, activations, Flatten, Identity,
 * Normalize, Sequential, and Lambda (a C callback, used by the Lua bindings to
 * wrap a Lua function as a module). */
#ifndef ML_NN_LAYERS_H
#define ML_NN_LAYERS_H

#include "../ops/elementwise.h"
#include "module.h"

/* y = x W^T + b; W [out, in] and b [out] initialised as PyTorch does. */
ml_module *ml_nn_linear(int64_t in, int64_t out, bool bias);
/* fc1 (in -> hidden) -> activation -> fc2 (hidden -> out): children "fc1", "fc2". */
ml_module *ml_nn_mlp(int64_t in, int64_t hidden, int64_t out, ml_unary_op act);
/* An MLP's weights and activation (borrowed), for the fused kernels
 * (ops/mlp.h); false when m is not an MLP with biases. */
bool ml_nn_mlp_parts(const ml_module *m, ml_tensor **w1, ml_tensor **b1, ml_tensor **w2, ml_tensor **b2,
                     ml_unary_op *act);
/* A pointwise activation module: ML_RELU, ML_GELU, ML_TANH, ML_SIGMOID, ... */
ml_module *ml_nn_activation(ml_unary_op op);
ml_module *ml_nn_identity(void);
/* Flattens dims [start, end] (0-based; end -1 = last). Flatten() keeps dim 0. */
ml_module *ml_nn_flatten(int start_dim, int end_dim);
/* (x - mean[c]) / std[c] over dim 1 (channels). Buffers, not parameters: a
 * model that normalises inside lets attacks work in [0,1] pixel space. */
ml_module *ml_nn_normalize(int channels, const float *mean, const float *std);
/* Runs children in order. Children are added with ml_nn_sequential_add. */
ml_module *ml_nn_sequential(void);
ml_module *ml_nn_sequential_add(ml_module *seq, ml_module *child); /* takes child; returns it */

/* A module whose forward is a callback (no config: cannot be saved by architecture). */
typedef ml_tensor *(*ml_lambda_fn)(void *ud, ml_tensor *x, ml_ctx *ctx, bool training);
ml_module *ml_nn_lambda(const char *name, ml_lambda_fn fn, void *ud, void (*free_ud)(void *));

extern const ml_module_type ml_sequential_type;
extern const ml_module_kind ml_layers_kinds[]; /* for the registry */

#endif
