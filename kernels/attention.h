// Host launchers of causal grouped-query attention on the GPU (kernels/attention.cu): the forward
// with the per-row log-sum-exp, and the flash-attention-2 backward that recomputes the probabilities
// from it. Argument structs, validation and the choice of kernel are in kernels/attention_plan.h.
//
// Paths (choose_attention_path, then attention_path_on_device):
//   bf16 with head_dim 64 or 128: tensor cores (wmma m16n16k16, bf16 in, f32 accumulate), 64 queries ×
//     64 keys per tile, online softmax in f32; the backward runs one kernel per key tile for dk/dv
//     (summed over the query heads of the KV group, no atomics) and one per query tile for dq.
//   anything else (f32, f16, bf16 with another head_dim ≤ 256, a multiple of 8): one warp per query
//     (or key) row, f32 arithmetic throughout; the f32 path matches the CPU op to rounding. Also bf16
//     with head_dim 128 on GPUs that let a block have less than the tensor-core kernels' ~121 KiB of
//     shared memory (sm_86 / sm_89: A10, A40, L4, L40S, RTX 30xx and 40xx allow 99 KiB).
// Every result element has one writer, so results are deterministic.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype/dtype.h"
#include "kernels/attention_plan.h"

namespace adapt::kernels {

/// The kernel family that runs attention of `dtype` and head width D on the current device: the
/// tensor-core kernels where choose_attention_path picks them and the device lets a block have their
/// shared memory, else the generic ones. Forward and backward both take it.
AttentionPath attention_path_on_device(DType dtype, std::int64_t D);

/// out = softmax(q·kᵀ·scale + causal/segment mask)·v per head, and lse when a.lse is set (rows that
/// see no key: out 0, lse −inf). Throws like validate_attention_forward, CudaError on launch failure.
void launch_attention_forward(const AttentionForwardArgs& a, DType dtype, cudaStream_t stream);
/// The same with k and v of type kv_dtype: dtype, or bf16 under f32 q and out (a bf16 KV cache, read
/// by the generic kernel with each element widened to f32).
void launch_attention_forward(const AttentionForwardArgs& a, DType dtype, DType kv_dtype, cudaStream_t stream);

/// dq, dk, dv (overwritten) from dout and the forward's q, k, v, out, lse; a.delta is a workspace of
/// attention_backward_workspace_bytes(B, H, T). Keys no query sees get dk = dv = 0.
void launch_attention_backward(const AttentionBackwardArgs& a, DType dtype, cudaStream_t stream);

}  // namespace adapt::kernels
