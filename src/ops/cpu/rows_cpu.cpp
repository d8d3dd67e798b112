// Row-wise CPU kernels: RMSNorm, RoPE, SwiGLU, embedding gather, softmax. Each row is independent, so
// rows are split over OpenMP threads once a call is large enough to pay for the fork.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "dtype/dtype.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/vec_math.h"

namespace adapt::ops::cpu {

namespace {
constexpr std::int64_t kParallelMinElements = 1 << 16;

ADAPT_CPU_KERNEL void rms_norm_row(float* y, float* rstd_out, const float* x, const float* w, std::int64_t cols,
                                   float eps) {
  double ss = 0.0;  // double: the reference should not depend on the summation order
#pragma omp simd reduction(+ : ss)
  for (std::int64_t j = 0; j < cols; ++j) ss += static_cast<double>(x[j]) * x[j];
  const float var = static_cast<float>(ss / static_cast<double>(cols));
  const float rstd = 1.0f / std::sqrt(var + eps);
  if (rstd_out) *rstd_out = rstd;
#pragma omp simd
  for (std::int64_t j = 0; j < cols; ++j) y[j] = (x[j] * rstd) * w[j];  // HF: weight * (x * rstd)
}

ADAPT_CPU_KERNEL void swiglu_row(float* out, const float* gate, const float* up, std::int64_t cols) {
  alignas(64) float e[kSiluBlock];  // e^-g of a block: two loops, one division a lane (vec_math.h)
  for (std::int64_t j0 = 0; j0 < cols; j0 += kSiluBlock) {
    const std::int64_t n = std::min(kSiluBlock, cols - j0);
    const float* g = gate + j0;
#pragma omp simd
    for (std::int64_t j = 0; j < n; ++j) e[j] = exp_f32(-g[j]);
#pragma omp simd
    for (std::int64_t j = 0; j < n; ++j) out[j0 + j] = g[j] / (1.0f + e[j]) * up[j0 + j];
  }
}

ADAPT_CPU_KERNEL void rope_head(float* x, const float* cos, const float* sin, std::int64_t half) {
#pragma omp simd
  for (std::int64_t j = 0; j < half; ++j) {
    const float x0 = x[j], x1 = x[j + half];
    x[j] = x0 * cos[j] - x1 * sin[j];
    x[j + half] = x1 * cos[j] + x0 * sin[j];
  }
}
}  // namespace

void rms_norm_forward(float* y, std::int64_t ldy, float* rstd, const float* x, std::int64_t ldx, const float* w,
                      std::int64_t rows, std::int64_t cols, float eps) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelMinElements)
  for (std::int64_t r = 0; r < rows; ++r)
    rms_norm_row(y + r * ldy, rstd ? rstd + r : nullptr, x + r * ldx, w, cols, eps);
}

void rope_table_fill(float* cos, float* sin, const float* inv_freq, std::int64_t half, std::int64_t pos_begin,
                     std::int64_t n_pos) {
  for (std::int64_t p = 0; p < n_pos; ++p) {
    const float pos = static_cast<float>(pos_begin + p);
    for (std::int64_t i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];  // rounded to f32 like HF's f32 matmul of positions and inv_freq
      cos[p * half + i] = static_cast<float>(std::cos(static_cast<double>(angle)));
      sin[p * half + i] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
}

void rope_forward(float* x, std::int64_t B, std::int64_t T, std::int64_t Hx, std::int64_t D, const float* cos,
                  const float* sin) {
  const std::int64_t half = D / 2;
#pragma omp parallel for collapse(2) schedule(static) if (B * T * Hx * D > kParallelMinElements)
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t h = 0; h < Hx; ++h)
        rope_head(x + ((b * T + t) * Hx + h) * D, cos + t * half, sin + t * half, half);
    }
  }
}

void swiglu_forward(float* out, std::int64_t ldo, const float* gate, std::int64_t ldg, const float* up,
                    std::int64_t ldu, std::int64_t rows, std::int64_t cols) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelMinElements)
  for (std::int64_t r = 0; r < rows; ++r) swiglu_row(out + r * ldo, gate + r * ldg, up + r * ldu, cols);
}

void embedding_forward(float* out, std::int64_t ldo, const void* table, bool table_bf16, std::int64_t C,
                       const std::int32_t* ids32, const std::int64_t* ids64, std::int64_t n) {
#pragma omp parallel for schedule(static) if (n * C > kParallelMinElements)
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t id = ids32 ? ids32[i] : ids64[i];
    if (table_bf16) {
      const auto* row = static_cast<const std::uint16_t*>(table) + id * C;
      for (std::int64_t c = 0; c < C; ++c) out[i * ldo + c] = bf16_to_f32(row[c]);
    } else {
      std::memcpy(out + i * ldo, static_cast<const float*>(table) + id * C,
                  static_cast<std::size_t>(C) * sizeof(float));
    }
  }
}

void softmax_forward(float* y, std::int64_t ldy, const float* x, std::int64_t ldx, std::int64_t rows, std::int64_t cols,
                     bool log) {
#pragma omp parallel for schedule(static) if (rows * cols > kParallelMinElements)
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ldx;
    float* yr = y + r * ldy;
    float m = -std::numeric_limits<float>::infinity();
    for (std::int64_t j = 0; j < cols; ++j) m = std::max(m, xr[j]);
    double sum = 0.0;
    for (std::int64_t j = 0; j < cols; ++j) sum += std::exp(static_cast<double>(xr[j] - m));
    if (log) {
      const float log_sum = static_cast<float>(std::log(sum));
      for (std::int64_t j = 0; j < cols; ++j) yr[j] = (xr[j] - m) - log_sum;
    } else {
      const double inv = 1.0 / sum;
      for (std::int64_t j = 0; j < cols; ++j)
        yr[j] = static_cast<float>(std::exp(static_cast<double>(xr[j] - m)) * inv);
    }
  }
}

}  // namespace adapt::ops::cpu
