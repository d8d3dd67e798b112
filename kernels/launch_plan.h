// Host-side launch planning of the row kernels, kept free of CUDA headers so that the CPU tests check
// it (tests/unit/kernels_host): threads per row block, grid-stride grid sizes, the row chunks of the
// deterministic RMSNorm weight-gradient reduction, and the AdamW scalars the host hands the kernel.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace adapt::kernels {

/// Most blocks a grid-stride kernel is given: enough to fill any current GPU several times over.
constexpr std::int64_t kMaxGridStrideBlocks = 65535LL * 8;
/// Most blocks along grid.y / grid.z (CUDA limit).
constexpr std::int64_t kMaxGridY = 65535;

/// Threads of a kernel that gives one block to one row of `cols` elements: cols rounded up to a whole
/// warp, between 32 and max_threads (a multiple of 32, at most 1024). Extra threads stride the row.
inline int row_block_threads(std::int64_t cols, int max_threads) {
  const std::int64_t want = std::max<std::int64_t>(32, (cols + 31) / 32 * 32);
  return static_cast<int>(std::min<std::int64_t>(want, max_threads));
}

/// Blocks of a grid-stride loop over n elements with `threads` per block (at least 1).
inline int grid_stride_blocks(std::int64_t n, int threads) {
  const std::int64_t b = (n + threads - 1) / threads;
  return static_cast<int>(std::clamp<std::int64_t>(b, 1, kMaxGridStrideBlocks));
}

/// The RMSNorm weight gradient dw[c] += Σ_rows dy·x·rstd without atomics: pass 1 has
/// col_blocks × row_chunks blocks of col_threads threads, thread c of chunk k summing rows
/// [k·rows_per_chunk, min(rows, (k+1)·rows_per_chunk)) of column c into partial[k·cols + c]; pass 2
/// adds the row_chunks partials of each column in chunk order. With one chunk pass 1 adds into dw
/// directly and needs no workspace. Same plan, same bits, on every run.
struct RmsNormDwPlan {
  int col_threads = 256;
  std::int64_t col_blocks = 0;
  std::int64_t row_chunks = 1;
  std::int64_t rows_per_chunk = 0;
  std::int64_t workspace_elems = 0;  // f32 elements of `partial` (0 when row_chunks == 1)
};

/// Aims at about `target_blocks` blocks in pass 1, with at least `min_rows_per_chunk` rows per chunk.
inline RmsNormDwPlan rms_norm_dw_plan(std::int64_t rows, std::int64_t cols, std::int64_t target_blocks = 1024,
                                      std::int64_t min_rows_per_chunk = 32) {
  RmsNormDwPlan p;
  p.col_blocks = std::max<std::int64_t>(1, (cols + p.col_threads - 1) / p.col_threads);
  const std::int64_t by_blocks = std::max<std::int64_t>(1, target_blocks / p.col_blocks);
  const std::int64_t by_rows = std::max<std::int64_t>(1, rows / std::max<std::int64_t>(1, min_rows_per_chunk));
  std::int64_t chunks = std::min({by_blocks, by_rows, kMaxGridY});
  p.rows_per_chunk = std::max<std::int64_t>(1, (rows + chunks - 1) / chunks);
  p.row_chunks = std::max<std::int64_t>(1, (rows + p.rows_per_chunk - 1) / p.rows_per_chunk);  // no empty chunk
  p.workspace_elems = p.row_chunks > 1 ? p.row_chunks * cols : 0;
  return p;
}

/// The scalars of one AdamW step as src/optim/adamw.cpp computes them (PyTorch's single-tensor AdamW:
/// double on the host, rounded to f32 for the elementwise update).
struct AdamWScalars {
  float step_size = 0;  // lr / (1 − β1^t)
  float bc2_sqrt = 1;   // sqrt(1 − β2^t)
  float beta1 = 0, one_minus_beta1 = 0;
  float beta2 = 0, one_minus_beta2 = 0;
  float eps = 0;
  float decay = 1;  // 1 − lr·wd for decayed tensors, 1 otherwise
};

/// `step` counts from 1 (the step being taken).
inline AdamWScalars adamw_scalars(double lr, std::int64_t step, double beta1, double beta2, double eps,
                                  double weight_decay, bool decay) {
  AdamWScalars s;
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  s.step_size = static_cast<float>(lr / bias_correction1);
  s.bc2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  s.beta1 = static_cast<float>(beta1);
  s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  s.beta2 = static_cast<float>(beta2);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.eps = static_cast<float>(eps);
  s.decay = decay ? static_cast<float>(1.0 - lr * weight_decay) : 1.0f;
  return s;
}

}  // namespace adapt::kernels
