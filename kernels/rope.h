// Host launchers of rotary position embedding on the device, the HF "rotate_half" convention of
// src/ops/rope.h: element j pairs with j + D/2. The angles come from per-call cos/sin tables (f32,
// one row of D/2 per position) filled on the device from the inverse frequencies that
// model::rope_inv_freq computes on the host (default, linear or llama3 scaling), copied to the device
// by the caller; so scaling is decided in one place for both backends.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype/dtype.h"

namespace adapt::kernels {

/// cos, sin (n_pos, half): angle = f32(p · inv_freq[i]) for p = pos_begin + row, then cos/sin in double
/// rounded to f32 (as ops::rope_table_fill). inv_freq: `half` f32 on the device.
void launch_rope_table_fill(float* cos, float* sin, const float* inv_freq, std::int64_t half, std::int64_t pos_begin,
                            std::int64_t n_pos, cudaStream_t stream);

/// cos, sin (n, half): row i for position positions[i] (i32 or i64 on the device, each >= 0), as
/// ops::rope_table_fill_positions.
void launch_rope_table_fill_positions(float* cos, float* sin, const float* inv_freq, std::int64_t half,
                                      const void* positions, DType pos_dtype, std::int64_t n, cudaStream_t stream);

/// In place on x (B, T, n_heads, head_dim) contiguous, f32/bf16/f16: x[j] ← x[j]·cos − x[j+D/2]·sin,
/// x[j+D/2] ← x[j+D/2]·cos + x[j]·sin. Tables (T, D/2), or (B, T, D/2) when per_sequence (one table
/// per sequence: ragged KV cache, packed rows).
void launch_rope_forward(void* x, const float* cos, const float* sin, std::int64_t B, std::int64_t T,
                         std::int64_t n_heads, std::int64_t head_dim, bool per_sequence, DType dtype,
                         cudaStream_t stream);

/// The backward in place on dx: rotation by −θ, dx[j] ← g[j]·cos + g[j+D/2]·sin,
/// dx[j+D/2] ← g[j+D/2]·cos − g[j]·sin. Same tables and layout as the forward.
void launch_rope_backward(void* dx, const float* cos, const float* sin, std::int64_t B, std::int64_t T,
                          std::int64_t n_heads, std::int64_t head_dim, bool per_sequence, DType dtype,
                          cudaStream_t stream);

}  // namespace adapt::kernels
