// Host launchers of Σ x² over f32 device tensors, accumulated in double, for the global gradient norm
// of src/optim/device_adamw.h. Deterministic without atomics: a tensor of n elements always gets
// sum_squares_blocks(n) blocks (a grid fixed by n, not by the GPU), each writing one double partial;
// then one block adds the partials in a fixed order. The same bits on every run and on every GPU.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace adapt::kernels {

/// Threads per block of both passes.
constexpr int kSumSquaresThreads = 256;
/// Most blocks (partials) one tensor gets.
constexpr std::int64_t kSumSquaresMaxBlocks = 256;

/// Blocks, and so double partials, of launch_sum_squares_partials for n elements: ceil(n / 256)
/// clamped to [1, kSumSquaresMaxBlocks] (one block, writing 0, for n = 0). Depends on n only.
inline std::int64_t sum_squares_blocks(std::int64_t n) {
  return std::clamp<std::int64_t>((n + kSumSquaresThreads - 1) / kSumSquaresThreads, 1, kSumSquaresMaxBlocks);
}

/// partials[b] = Σ (double)x[i]² over the elements i ≡ b·256 + t (mod blocks·256) of x (n f32) for
/// b < sum_squares_blocks(n): every partial is written, also for n = 0. Pointers are device memory.
void launch_sum_squares_partials(const float* x, std::int64_t n, double* partials, cudaStream_t stream);

/// *out = Σ partials[0 .. n_partials) in double, by one block in a fixed order (out: device memory;
/// 0 for n_partials = 0).
void launch_sum_partials(const double* partials, std::int64_t n_partials, double* out, cudaStream_t stream);

}  // namespace adapt::kernels
