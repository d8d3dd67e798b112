// Few rows times a weight stored (N, K) with AVX2 and FMA (see skinny_avx2.h). The weight rows are read
// in order, bf16 ones prefetched 4 KB ahead (on Zen 3 that lifted a bf16 stream from DRAM by ~10%; f32
// streams were as fast or faster without); 16 elements of k per step: two weight vectors, FMA'd into
// the two accumulators of every input row. Two accumulators per output, not one: an FMA waits 4 cycles for its
// accumulator, which bounds one chain per output (what the compiler makes of skinny_cpu.cpp's loop)
// below the speed of a weight in cache. Measured against that loop: docs/PERFORMANCE.md, 2026-11-23.
#include "ops/cpu/skinny_avx2.h"

#include "ops/cpu/avx2_loads.h"

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace adapt::ops::cpu {

namespace {

constexpr int kGroupRows = 4;                  // input rows per register tile (4 x 2 accumulators)
constexpr std::int64_t kPrefetchBytes = 4096;  // how far ahead of its loads a bf16 weight stream is prefetched

// The last K − k0 (< 16) elements of a row, zero-filled to 16: what the main loop would load past K.
template <typename T>
inline void tail16(T (&dst)[16], const T* src, std::int64_t n) {
  std::memset(dst, 0, sizeof(dst));
  std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(T));
}

inline float hsum(__m256 v0, __m256 v1) {
  const __m256 v = _mm256_add_ps(v0, v1);
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 d = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(d, _mm_movehdup_ps(d)));
}

// Weight row n times R input rows: two accumulators per output, 16 elements of k per step.
template <int R, typename W>
inline void weight_row(float* c, std::int64_t ldc, const float* a, std::int64_t lda, const W* wn, std::int64_t n,
                       std::int64_t K, float alpha, float beta) {
  __m256 acc[R][2];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  const auto step = [&](const W* wk, const float* const* ak) {
    const __m256 w0 = load8(wk), w1 = load8(wk + 8);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      acc[r][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(ak[r]), acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(ak[r] + 8), acc[r][1]);
    }
  };
  const std::int64_t k_main = K / 16 * 16;
  const float* ak[R];
  for (std::int64_t k = 0; k < k_main; k += 16) {
    if constexpr (sizeof(W) == 2) _mm_prefetch(reinterpret_cast<const char*>(wn + k) + kPrefetchBytes, _MM_HINT_T0);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) ak[r] = a + r * lda + k;
    step(wn + k, ak);
  }
  if (k_main < K) {
    W wt[16];
    float at[R][16];
    tail16(wt, wn + k_main, K - k_main);
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      tail16(at[r], a + r * lda + k_main, K - k_main);
      ak[r] = at[r];
    }
    step(wt, ak);
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
    float& out = c[r * ldc + n];
    out = alpha * hsum(acc[r][0], acc[r][1]) + (beta != 0.0f ? beta * out : 0.0f);
  }
}

// R (<= 4) input rows times weight row n, any R at run time.
template <typename W>
void row_group(int R, float* c, std::int64_t ldc, const float* a, std::int64_t lda, const W* wn, std::int64_t n,
               std::int64_t K, float alpha, float beta) {
  switch (R) {
    case 1: return weight_row<1, W>(c, ldc, a, lda, wn, n, K, alpha, beta);
    case 2: return weight_row<2, W>(c, ldc, a, lda, wn, n, K, alpha, beta);
    case 3: return weight_row<3, W>(c, ldc, a, lda, wn, n, K, alpha, beta);
    default: return weight_row<4, W>(c, ldc, a, lda, wn, n, K, alpha, beta);
  }
}

// Weight rows in order; each meets every group of up to kGroupRows input rows while it sits in L1, so
// the weights stream from memory once whatever M is.
template <typename W>
void rows_times_weight(float* c, std::int64_t ldc, const float* a, std::int64_t lda, std::int64_t M, const W* w,
                       std::int64_t ldw, std::int64_t n_begin, std::int64_t n_end, std::int64_t K, float alpha,
                       float beta) {
  for (std::int64_t n = n_begin; n < n_end; ++n) {
    for (std::int64_t m0 = 0; m0 < M; m0 += kGroupRows) {
      const int rows = static_cast<int>(std::min<std::int64_t>(kGroupRows, M - m0));
      row_group<W>(rows, c + m0 * ldc, ldc, a + m0 * lda, lda, w + n * ldw, n, K, alpha, beta);
    }
  }
}

}  // namespace

void skinny_avx2(float* c, std::int64_t ldc, const float* a, std::int64_t lda, std::int64_t M, const void* w,
                 bool w_bf16, std::int64_t ldw, std::int64_t n_begin, std::int64_t n_end, std::int64_t K, float alpha,
                 float beta) {
  if (w_bf16) {
    rows_times_weight(c, ldc, a, lda, M, static_cast<const std::uint16_t*>(w), ldw, n_begin, n_end, K, alpha, beta);
  } else {
    rows_times_weight(c, ldc, a, lda, M, static_cast<const float*>(w), ldw, n_begin, n_end, K, alpha, beta);
  }
}

}  // namespace adapt::ops::cpu
