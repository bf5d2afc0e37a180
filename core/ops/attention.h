/* attention.h -- multi-head scaled dot-product self-attention as one op.
 *
 * qkv [B, T, 3 D] (the output of the fused q/k/v projection, laid out as
 * [B, T, 3, H, D/H]) -> out [B, T, D]: for every batch element b and head h,
 *   P = softmax(Q K^T / sqrt(D/H)),  out[b, :, h] = P V,
 * with Q, K, V the head's slices of qkv. The GEMMs read the slices in place
 * (row stride 3 D) and write each head's output into its columns of out, so no
 * permuted copies are made; the (b, h) pairs run in parallel. Backward keeps the
 * probabilities P ([B, H, T, T]) and qkv. */
#ifndef ML_OPS_ATTENTION_H
#define ML_OPS_ATTENTION_H

#include "../tensor.h"

ml_tensor *ml_attention(ml_tensor *qkv, int heads);

#endif
