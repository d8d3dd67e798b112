// Host launchers of the f32 elementwise ops and layout copies on the device (src/ops/elementwise.h):
// add, axpy, scale, fill, the column sum of bias gradients (double accumulation in a fixed order, no
// atomics: the same bits on every run), the (B, X, Y, D) → (B, Y, X, D) permute and the KV-cache write.
// Pointers are device memory; n counts f32 elements.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace adapt::kernels {

/// out = a + b; out may alias a or b.
void launch_add(float* out, const float* a, const float* b, std::int64_t n, cudaStream_t stream);
/// y += alpha · x, rounded as the host does (a product, then a sum; no fused multiply-add).
void launch_axpy(float* y, const float* x, float alpha, std::int64_t n, cudaStream_t stream);
/// x *= alpha.
void launch_scale(float* x, float alpha, std::int64_t n, cudaStream_t stream);
/// x = value.
void launch_fill(float* x, float value, std::int64_t n, cudaStream_t stream);
/// out[c] += (float)(alpha · Σ_r x[r·cols + c]) with the sum in double over r = 0 .. rows − 1.
void launch_column_sum(float* out, const float* x, float alpha, std::int64_t rows, std::int64_t cols,
                       cudaStream_t stream);
/// y[r, c] += bias[c] for rows × cols contiguous f32 y.
void launch_bias_add(float* y, const float* bias, std::int64_t rows, std::int64_t cols, cudaStream_t stream);
/// dst (B, Y, X, D) = src (B, X, Y, D).
void launch_swap_middle(float* dst, const float* src, std::int64_t B, std::int64_t X, std::int64_t Y, std::int64_t D,
                        cudaStream_t stream);
/// cache (R, G, S, D): cache[rows[b], g, positions[b] + t, :] = src[b, t, g, :] for src (B, T, G, D).
/// rows and positions are B host int64 values, checked by the caller; they travel as kernel arguments
/// (one launch per 64 sequences), so nothing is copied or synchronised.
void launch_kv_cache_write(float* cache, const float* src, const std::int64_t* rows, const std::int64_t* positions,
                           std::int64_t B, std::int64_t T, std::int64_t G, std::int64_t D, std::int64_t S,
                           cudaStream_t stream);
/// The same into a bf16 cache (raw bits), each element rounded to nearest even as on the host.
void launch_kv_cache_write_bf16(std::uint16_t* cache, const float* src, const std::int64_t* rows,
                                const std::int64_t* positions, std::int64_t B, std::int64_t T, std::int64_t G,
                                std::int64_t D, std::int64_t S, cudaStream_t stream);

}  // namespace adapt::kernels
