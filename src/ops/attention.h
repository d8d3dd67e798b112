// Causal grouped-query attention, flash-attention style: for each (sequence, KV head, block of
// queries) the scores are formed one key tile at a time with an online softmax, so memory stays at
// one tile however long the context. The per-row log-sum-exp is returned for the backward pass, which
// recomputes the probabilities tile by tile from it (flash-attention 2). Sequences of a batch may sit
// at different lengths of a shared KV cache (ragged batch); packed training rows mask attention to
// their own document (segment ids).
#pragma once

#include <cstdint>
#include <span>

#include "tensor/tensor.h"

namespace adapt::ops {

struct AttentionOptions {
  float scale = 0.0f;             // 0: 1/sqrt(D) (HF: head_dim^-0.5)
  std::int64_t q_pos_offset = 0;  // position of query 0 among the keys (tokens already in the KV cache)
  // Ragged batch: (B) per-sequence offsets, replacing q_pos_offset (empty: q_pos_offset for all).
  std::span<const std::int64_t> q_pos_offsets;
  // (B) the batch row of k and v that sequence b reads, e.g. its KV-cache row (empty: row b).
  std::span<const std::int64_t> kv_rows;
  // Packed rows: (B·T) segment id of every query token, row-major (empty: plain causal). Keys are then
  // the queries' own tokens (S == T, no offset, no ragged fields): query t of sequence b sees key j
  // when j <= t and segment_ids[b·T + j] == segment_ids[b·T + t] >= 0. A negative id is padding: it
  // sees no key (output 0, lse −inf) and no query sees it.
  std::span<const std::int32_t> segment_ids;
  // CPU: every operand of attention's products (q, k, v, the probabilities; in the backward also dout
  // and dS) rounded to bf16 (nearest even) as it is packed, products exact in f32, the softmax and every
  // sum f32 (runtime.attention_dtype = "bf16" on the CPU). A device computes in its tensors' dtype
  // instead (model::attention_forward_in gives it bf16 copies); this flag is refused there.
  bool bf16_products = false;
};

/// out (B, T, H, D) = softmax(q · kᵀ · scale + causal mask) · v per head, f32.
///   q (B, T, H, D); k, v (B_kv, Hkv, S, D) with S >= offset_b + T for every sequence b (a KV cache of
///   larger capacity is fine: keys past the last query's position are never visible). Query t of
///   sequence b sees keys 0 .. offset_b + t of k/v row kv_rows[b] (row b when kv_rows is empty, and
///   then B_kv == B). GQA: query head h reads KV head h / (H / Hkv) (HF repeat_kv).
///   lse (B, H, T) f32, optional: log Σ_j exp(score_j) of each query row (for the backward).
/// Each sequence's output is computed with the same arithmetic whatever the other sequences are, so
/// a sequence gives the same bits alone (B = 1) as in a batch.
/// k and v may be views with unit stride along D; q and out must be contiguous. On the CPU q and out
/// are f32 and k, v f32 or both bf16 (a bf16 KV cache, widened exactly: the result is that of an f32
/// cache holding the same values); on a device see ops/cuda/attention_cuda.h.
void attention_forward(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v,
                       const AttentionOptions& opts = {}, Tensor* lse = nullptr);

/// The backward of attention_forward (SPEC §3.8), f32: from dout (B, T, H, D) and the forward's q, k, v,
/// out and lse (B, H, T), overwrites dq (B, T, H, D) and dk, dv (B, Hkv, S, D) (keys no query sees get
/// 0). Per tile P = exp(q·kᵀ·scale − lse) is recomputed; with Δ = rowsum(dout ⊙ out):
/// dv = Pᵀ·dout, dS = P ⊙ (dout·vᵀ − Δ), dq = scale·dS·k, dk = scale·dSᵀ·q. GQA: a KV head's gradients
/// sum over its n_rep query heads. opts as in the forward (scale, q_pos_offset, segment_ids); ragged
/// batches (q_pos_offsets, kv_rows) are a generation feature: UnsupportedError. Every tensor
/// contiguous. The same bits for any thread count (each element has one writer).
void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& out, const Tensor& lse, const AttentionOptions& opts = {});

}  // namespace adapt::ops
