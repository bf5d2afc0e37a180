/* transformer.h -- LayerNorm, multi-head self-attention, the pre-LN
 * transformer block, and the patch embedding of vision transformers. */
#ifndef ML_NN_TRANSFORMER_H
#define ML_NN_TRANSFORMER_H

#include "module.h"

/* Normalises the last dimension (size dim), affine weight 1 and bias 0. */
ml_module *ml_nn_layernorm(int64_t dim, double eps);
/* qkv = Linear(dim -> 3 dim) with rows ordered q, k, v (each heads x dim/heads);
 * softmax(q k^T / sqrt(dim/heads)) v per head; proj = Linear(dim -> dim).
 * Children "qkv", "proj". Input [B, T, dim]. */
ml_module *ml_nn_attention(int64_t dim, int heads);
/* x = x + attn(ln1(x)); x = x + mlp(ln2(x)). mlp is any module mapping
 * [B, T, dim] to [B, T, dim] (an MLP, or a TokenMoE); the block takes it. */
ml_module *ml_nn_transformer_block(int64_t dim, int heads, double eps, ml_module *mlp);
/* Image [B, C, H, W] -> tokens [B, 1 + (H/p)(W/p), dim]: a p x p stride-p
 * convolution (weight, bias), a learned class token prepended (cls_token
 * [1, 1, dim]) and a learned position embedding added (pos_embed [1, T, dim]). */
ml_module *ml_nn_patch_embed(int channels, int height, int width, int patch, int64_t dim);

extern const ml_module_kind ml_transformer_kinds[]; /* for the registry */

#endif
