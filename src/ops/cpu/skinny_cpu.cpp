// Products with few rows (decoding: one row per sequence) against a weight stored (N, K): each weight
// row is streamed once and dotted with every input row while it sits in L1. Memory-bound, so the
// weight dtype sets the speed: bf16 rows are half the bytes of f32 rows and are widened in registers
// (exactly: bf16 -> f32 is a 16-bit shift). One row at a time: interleaving several weight rows
// defeated the hardware prefetcher here (9 GB/s instead of 22 GB/s per core).
#include <bit>
#include <cstdint>

#include "dtype/dtype.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/cpu/vec_math.h"

namespace adapt::ops::cpu {

namespace {
inline float widen_bf16(std::uint16_t bits) { return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16); }
}  // namespace

ADAPT_CPU_KERNEL void skinny_rows_f32(float* c, std::int64_t ldc, const float* a, std::int64_t lda, std::int64_t M,
                                      const float* w, std::int64_t ldw, std::int64_t n_begin, std::int64_t n_end,
                                      std::int64_t K, float alpha, float beta) {
  for (std::int64_t n = n_begin; n < n_end; ++n) {
    const float* wn = w + n * ldw;
    for (std::int64_t m = 0; m < M; ++m) {
      const float* am = a + m * lda;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (std::int64_t k = 0; k < K; ++k) s += wn[k] * am[k];
      float& out = c[m * ldc + n];
      out = alpha * s + (beta != 0.0f ? beta * out : 0.0f);
    }
  }
}

ADAPT_CPU_KERNEL void skinny_rows_bf16(float* c, std::int64_t ldc, const float* a, std::int64_t lda, std::int64_t M,
                                       const std::uint16_t* w, std::int64_t ldw, std::int64_t n_begin,
                                       std::int64_t n_end, std::int64_t K, float alpha, float beta) {
  for (std::int64_t n = n_begin; n < n_end; ++n) {
    const std::uint16_t* wn = w + n * ldw;
    for (std::int64_t m = 0; m < M; ++m) {
      const float* am = a + m * lda;
      float s = 0.0f;
#pragma omp simd reduction(+ : s)
      for (std::int64_t k = 0; k < K; ++k) s += widen_bf16(wn[k]) * am[k];
      float& out = c[m * ldc + n];
      out = alpha * s + (beta != 0.0f ? beta * out : 0.0f);
    }
  }
}

ADAPT_CPU_KERNEL void widen_bf16_rows(float* dst, std::int64_t ldd, const std::uint16_t* src, std::int64_t lds,
                                      std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::uint16_t* s = src + r * lds;
    float* d = dst + r * ldd;
#pragma omp simd
    for (std::int64_t j = 0; j < cols; ++j) d[j] = widen_bf16(s[j]);
  }
}

ADAPT_CPU_KERNEL void round_bf16_rows(float* dst, std::int64_t ldd, const float* src, std::int64_t lds,
                                      std::int64_t rows, std::int64_t cols) {
  for (std::int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * lds;
    float* d = dst + r * ldd;
#pragma omp simd
    for (std::int64_t j = 0; j < cols; ++j) d[j] = bf16_to_f32(f32_to_bf16(s[j]));
  }
}

}  // namespace adapt::ops::cpu
