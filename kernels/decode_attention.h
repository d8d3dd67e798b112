// Host launcher of decode attention (kernels/decode_attention.cu): one new query token per sequence
// over a KV cache, ragged lengths per sequence, GQA, f32/bf16/f16 cache. Split-K over long contexts:
// plan_decode_attention (kernels/attention_plan.h) cuts each sequence's keys into chunks, one block per
// (chunk, group of query heads of one KV head, sequence) writes a partial softmax per head, reading each
// key and value once for the group, and a combine kernel merges the chunks.
#pragma once

#include <cuda_runtime.h>

#include "dtype/dtype.h"
#include "kernels/attention_plan.h"

namespace adapt::kernels {

/// The plan launch_decode_attention uses for these sizes on the current device (its SM count).
DecodePlan decode_attention_plan_for_device(std::int64_t B, std::int64_t H, std::int64_t Hkv, std::int64_t max_seq_len);

/// out (B, H, D) = softmax(q·kᵀ·scale)·v over keys [0, seq_lens[b]) of cache row kv_rows[b] (or b).
/// a.workspace holds decode_attention_workspace_bytes(plan, B, H, D) for `plan`, which must be the
/// plan of decode_attention_plan_for_device (or plan_decode_attention) for a.max_seq_len.
void launch_decode_attention(const DecodeAttentionArgs& a, const DecodePlan& plan, DType dtype, cudaStream_t stream);
/// The same with a cache of type kv_dtype: dtype, or bf16 under f32 q and out.
void launch_decode_attention(const DecodeAttentionArgs& a, const DecodePlan& plan, DType dtype, DType kv_dtype,
                             cudaStream_t stream);

}  // namespace adapt::kernels
