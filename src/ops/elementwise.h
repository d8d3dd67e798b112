// Elementwise f32 arithmetic and layout copies the model and the adapters run between the big ops:
// residual adds, gradient accumulation, bias gradients (column sums), fills, copies, the (B, T, G, D) ↔
// (B, G, T, D) permutes of attention's K/V layout and the KV-cache row write. Host tensors run OpenMP
// loops (one thread below 64 Ki elements); CUDA tensors go to kernels/elementwise.h on the legacy
// default stream, unsynchronised. column_sum accumulates in double on both, so its CPU result does not
// depend on the thread count.
#pragma once

#include <cstdint>
#include <span>

#include "tensor/tensor.h"

namespace adapt::ops {

// Every function: f32 tensors, contiguous, all on one device (host or CUDA); ShapeError /
// UnsupportedError naming the op and the tensors otherwise.

/// out = a + b elementwise (same numel; shapes may differ, e.g. (B, T, C) and (N, C)). out may alias
/// a or b.
void add(Tensor& out, const Tensor& a, const Tensor& b);
/// y += alpha · x (same numel).
void axpy(Tensor& y, const Tensor& x, float alpha);
/// x *= alpha.
void scale(Tensor& x, float alpha);
/// Every element of x set to `value`.
void fill(Tensor& x, float value);
/// dst = src (same numel, same device; across devices use backend::copy).
void copy(Tensor& dst, const Tensor& src);
/// out (C) += alpha · Σ_rows x (N, C), the sum over rows in double, rows in order (bias gradients).
/// x may have any rank ≥ 1; its last dimension is C.
void column_sum(Tensor& out, const Tensor& x, float alpha);

/// dst (B, G, T, D) = src (B, T, G, D): the layout attention reads keys and values in.
void to_heads_major(Tensor& dst, const Tensor& src);
/// dst (B, T, G, D) = src (B, G, T, D).
void from_heads_major(Tensor& dst, const Tensor& src);

/// KV-cache write: for every sequence b and token t, cache[rows[b], :, positions[b] + t, :] = src[b, t, :, :]
/// with cache (R, G, S, D) and src (B, T, G, D); src is f32, the cache f32 or bf16 (rounded to nearest
/// even, the same bits on host and device). rows (B) and positions (B) are host arrays, checked:
/// rows in [0, R), positions[b] + T ≤ S. On the device the two tables travel as kernel arguments (no
/// copy, no synchronisation).
void kv_cache_write(Tensor& cache, const Tensor& src, std::span<const std::int64_t> rows,
                    std::span<const std::int64_t> positions);

}  // namespace adapt::ops
