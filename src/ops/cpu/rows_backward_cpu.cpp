// Row-wise CPU kernels of the backward pass: RMSNorm, RoPE (inverse rotation), SwiGLU, embedding
// scatter-add, and the fused cross-entropy that turns a row of logits into its gradient in place.
// Reductions across rows (dw of RMSNorm, the embedding scatter, the loss sum) are split by column or
// summed in row order afterwards, so no result depends on the number of threads.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/backward_cpu.h"
#include "ops/cpu/cross_entropy_avx512.h"
#include "ops/cpu/gemm_avx512.h"
#include "ops/cpu/vec_math.h"

namespace adapt::ops::cpu {

namespace {
constexpr std::int64_t kParallelMinElements = 1 << 16;
constexpr std::int64_t kColumnChunk = 64;  // columns per task of the across-row reductions

ADAPT_CPU_KERNEL void rms_norm_backward_row(float* dx, bool accumulate, const float* dy, const float* x, const float* w,
                                            float rstd, std::int64_t cols) {
  // y_j = x_j · r · w_j with r = (Σ x² / C + eps)^-1/2 and dr/dx_k = −r³ x_k / C, so with u = dy ⊙ w:
  // dx_k = r · u_k − x_k · r³ · (Σ_j u_j x_j) / C (SPEC §3.8).
  double dot = 0.0;  // double, as the forward's sum of squares
#pragma omp simd reduction(+ : dot)
  for (std::int64_t j = 0; j < cols; ++j) dot += static_cast<double>(dy[j] * w[j]) * x[j];
  const float coef = static_cast<float>(dot / static_cast<double>(cols)) * rstd * rstd * rstd;
  if (accumulate) {
#pragma omp simd
    for (std::int64_t j = 0; j < cols; ++j) dx[j] += rstd * (dy[j] * w[j]) - x[j] * coef;
  } else {
#pragma omp simd
    for (std::int64_t j = 0; j < cols; ++j) dx[j] = rstd * (dy[j] * w[j]) - x[j] * coef;
  }
}

ADAPT_CPU_KERNEL void rope_backward_head(float* x, const float* cos, const float* sin, std::int64_t half) {
  // The transpose of the forward rotation: rotate by −θ.
#pragma omp simd
  for (std::int64_t j = 0; j < half; ++j) {
    const float g0 = x[j], g1 = x[j + half];
    x[j] = g0 * cos[j] + g1 * sin[j];
    x[j + half] = g1 * cos[j] - g0 * sin[j];
  }
}

ADAPT_CPU_KERNEL void swiglu_backward_row(float* dgate, float* dup, const float* dout, const float* gate,
                                          const float* up, std::int64_t cols) {
  alignas(64) float e[kSiluBlock];  // e^-g of a block: two loops, one division a lane (vec_math.h)
  for (std::int64_t j0 = 0; j0 < cols; j0 += kSiluBlock) {
    const std::int64_t n = std::min(kSiluBlock, cols - j0);
#pragma omp simd
    for (std::int64_t j = 0; j < n; ++j) e[j] = exp_f32(-gate[j0 + j]);
#pragma omp simd
    for (std::int64_t j = 0; j < n; ++j) {
      const float g = gate[j0 + j], u = up[j0 + j], d = dout[j0 + j];
      const float sig = 1.0f / (1.0f + e[j]);
      const float silu = g * sig;
      dgate[j0 + j] = d * u * (sig * (1.0f + g * (1.0f - sig)));  // silu'(g) = σ(g)·(1 + g·(1 − σ(g)))
      dup[j0 + j] = d * silu;
    }
  }
}

// Loss of one row and, when args.grad, its gradient in place: p = softmax(z) is formed in the row
// itself (unnormalised first), then scaled, and the target's entry gets − grad_scale. CPUs with
// AVX-512 take cross_entropy_row_avx512 instead (the same passes in intrinsics).
ADAPT_CPU_KERNEL double cross_entropy_row(float* z, std::int64_t V, std::int64_t y, float grad_scale, bool grad) {
  float m = -std::numeric_limits<float>::infinity();
#pragma omp simd reduction(max : m)
  for (std::int64_t j = 0; j < V; ++j) m = std::max(m, z[j]);
  const float z_y = z[y];
  double sum = 0.0;
  if (grad) {
#pragma omp simd reduction(+ : sum)
    for (std::int64_t j = 0; j < V; ++j) {
      z[j] = exp_f32(z[j] - m);
      sum += z[j];
    }
    const float k = static_cast<float>(static_cast<double>(grad_scale) / sum);
#pragma omp simd
    for (std::int64_t j = 0; j < V; ++j) z[j] *= k;
    z[y] -= grad_scale;
  } else {
#pragma omp simd reduction(+ : sum)
    for (std::int64_t j = 0; j < V; ++j) sum += exp_f32(z[j] - m);
  }
  // −log p_y = log Σ exp(z − m) + m − z_y.
  return std::log(sum) + static_cast<double>(m) - static_cast<double>(z_y);
}
}  // namespace

void rms_norm_backward(float* dx, std::int64_t lddx, bool accumulate, float* dw, const float* dy, std::int64_t lddy,
                       const float* x, std::int64_t ldx, const float* w, const float* rstd, std::int64_t rows,
                       std::int64_t cols) {
  if (dx) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelMinElements)
    for (std::int64_t r = 0; r < rows; ++r)
      rms_norm_backward_row(dx + r * lddx, accumulate, dy + r * lddy, x + r * ldx, w, rstd[r], cols);
  }
  if (dw) {
    const std::int64_t n_chunks = (cols + kColumnChunk - 1) / kColumnChunk;
#pragma omp parallel for schedule(static) if (rows * cols > kParallelMinElements)
    for (std::int64_t chunk = 0; chunk < n_chunks; ++chunk) {
      const std::int64_t c0 = chunk * kColumnChunk, c1 = std::min(cols, c0 + kColumnChunk);
      double acc[kColumnChunk] = {};
      for (std::int64_t r = 0; r < rows; ++r) {
        const float* dyr = dy + r * lddy;
        const float* xr = x + r * ldx;
        for (std::int64_t c = c0; c < c1; ++c) acc[c - c0] += static_cast<double>(dyr[c] * (xr[c] * rstd[r]));
      }
      for (std::int64_t c = c0; c < c1; ++c) dw[c] += static_cast<float>(acc[c - c0]);
    }
  }
}

void rope_backward(float* x, std::int64_t B, std::int64_t T, std::int64_t Hx, std::int64_t D, const float* cos,
                   const float* sin) {
  const std::int64_t half = D / 2;
#pragma omp parallel for collapse(2) schedule(static) if (B * T * Hx * D > kParallelMinElements)
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t h = 0; h < Hx; ++h)
        rope_backward_head(x + ((b * T + t) * Hx + h) * D, cos + t * half, sin + t * half, half);
    }
  }
}

void rope_table_fill_positions(float* cos, float* sin, const float* inv_freq, std::int64_t half,
                               const std::int32_t* pos32, const std::int64_t* pos64, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n * half > kParallelMinElements)
  for (std::int64_t p = 0; p < n; ++p) {
    const float pos = static_cast<float>(pos32 ? pos32[p] : pos64[p]);
    for (std::int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];  // the same roundings as rope_table_fill
      cos[p * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[p * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

void swiglu_backward(float* dgate, std::int64_t lddg, float* dup, std::int64_t lddu, const float* dout,
                     std::int64_t lddo, const float* gate, std::int64_t ldg, const float* up, std::int64_t ldu,
                     std::int64_t rows, std::int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelMinElements)
  for (std::int64_t r = 0; r < rows; ++r)
    swiglu_backward_row(dgate + r * lddg, dup + r * lddu, dout + r * lddo, gate + r * ldg, up + r * ldu, cols);
}

void embedding_backward(float* dtable, std::int64_t C, const float* dout, std::int64_t lddo, const std::int32_t* ids32,
                        const std::int64_t* ids64, std::int64_t n) {
  const std::int64_t n_chunks = (C + kColumnChunk - 1) / kColumnChunk;
#pragma omp parallel for schedule(static) if (n * C > kParallelMinElements)
  for (std::int64_t chunk = 0; chunk < n_chunks; ++chunk) {
    const std::int64_t c0 = chunk * kColumnChunk, c1 = std::min(C, c0 + kColumnChunk);
    for (std::int64_t i = 0; i < n; ++i) {
      const std::int64_t id = ids32 ? ids32[i] : ids64[i];
      for (std::int64_t c = c0; c < c1; ++c) dtable[id * C + c] += dout[i * lddo + c];
    }
  }
}

#if !ADAPT_HAVE_X86_KERNELS
double cross_entropy_row_avx512(float*, std::int64_t, std::int64_t, float, bool) { return 0.0; }
#endif

CrossEntropySums cross_entropy(const CrossEntropyArgs& a) {
  std::vector<double> loss(static_cast<std::size_t>(a.rows), 0.0);
  const bool avx512 = gemm_avx512_supported();
#pragma omp parallel for schedule(static) if (a.rows * a.V > kParallelMinElements)
  for (std::int64_t r = 0; r < a.rows; ++r) {
    const std::int64_t y = a.targets32 ? a.targets32[r] : a.targets64[r];
    float* z = a.logits + r * a.ld;
    if (y == a.ignore_index) {
      if (a.grad) std::fill_n(z, a.V, 0.0f);
      continue;
    }
    loss[static_cast<std::size_t>(r)] = avx512 ? cross_entropy_row_avx512(z, a.V, y, a.grad_scale, a.grad)
                                               : cross_entropy_row(z, a.V, y, a.grad_scale, a.grad);
  }
  CrossEntropySums sums;
  for (std::int64_t r = 0; r < a.rows; ++r) {  // in row order: the same sum for any thread count
    const std::int64_t y = a.targets32 ? a.targets32[r] : a.targets64[r];
    if (a.row_loss) a.row_loss[r] = static_cast<float>(loss[static_cast<std::size_t>(r)]);
    if (y == a.ignore_index) continue;
    sums.loss_sum += loss[static_cast<std::size_t>(r)];
    ++sums.n_valid;
  }
  return sums;
}

}  // namespace adapt::ops::cpu
