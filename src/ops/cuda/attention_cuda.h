// CUDA glue for ops::attention_forward / attention_backward and for decode attention over a device
// KV cache: the shape, dtype and device checks of the CPU op (src/ops/attention.h), the host-side
// ragged fields (offsets, kv_rows, segment ids) checked and copied to the device, then the
// kernels/attention.h and kernels/decode_attention.h launchers on the default stream. q, k, v, out,
// dout, dq, dk, dv are f32, bf16 or f16 (all the same), except that the forward and decode attention
// also take f32 q and out over bf16 k and v (a bf16 KV cache); lse is f32.
#pragma once

#include <cstdint>
#include <span>

#include "ops/attention.h"
#include "tensor/tensor.h"

namespace adapt::ops::cuda {

/// As ops::attention_forward, on device tensors (k and v may be views with unit stride along D and
/// 16-byte aligned strides, e.g. a KV cache).
void attention_forward(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opts,
                       Tensor* lse);

/// As ops::attention_backward, on contiguous device tensors.
void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& out, const Tensor& lse, const AttentionOptions& opts);

/// out (B, H, D) = attention of one query per sequence, q (B, H, D), over keys [0, seq_lens[b]) of
/// rows kv_rows[b] (row b when empty) of the cache k, v (B_kv, Hkv, S_max, D). Equal to
/// ops::attention_forward with T = 1, q_pos_offsets[b] = seq_lens[b] − 1 for every seq_lens[b] ≥ 1;
/// a length of 0 gives zeros.
void decode_attention(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v,
                      std::span<const std::int64_t> seq_lens, std::span<const std::int64_t> kv_rows = {},
                      float scale = 0.0f);

}  // namespace adapt::ops::cuda
