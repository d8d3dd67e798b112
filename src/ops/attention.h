// Causal grouped-query attention, flash-attention style: for each (sequence, KV head, block of
// queries) the scores are formed one key tile at a time with an online softmax, so memory stays at
// one tile however long the context. The per-row log-sum-exp is returned for the backward pass.
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace adapt::ops {

struct AttentionOptions {
  float scale = 0.0f;             // 0: 1/sqrt(D) (HF: head_dim^-0.5)
  std::int64_t q_pos_offset = 0;  // position of query 0 among the keys (tokens already in the KV cache)
};

/// out (B, T, H, D) = softmax(q · kᵀ · scale + causal mask) · v per head, f32.
///   q (B, T, H, D); k, v (B, Hkv, S, D) with S >= q_pos_offset + T (a KV cache of larger capacity is
///   fine: keys past the last query's position are never visible). Query t sees keys
///   0 .. q_pos_offset + t. GQA: query head h reads KV head h / (H / Hkv) (HF repeat_kv).
///   lse (B, H, T) f32, optional: log Σ_j exp(score_j) of each query row (for the backward).
/// k and v may be views with unit stride along D; q and out must be contiguous.
void attention_forward(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v,
                       const AttentionOptions& opts = {}, Tensor* lse = nullptr);

}  // namespace adapt::ops
