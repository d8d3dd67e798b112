// Few rows times a weight stored (N, K) with AVX-512 (see skinny_avx512.h). The weight rows are read in
// order, prefetched 4 KB ahead; 16 elements of k per step: one weight vector per weight row, FMA'd into
// the accumulator of every (input row, weight row) output. The input rows (M x K floats) stay in
// L1/L2 across the weight rows. Measured on Zen 4: docs/PERFORMANCE.md, "Batched decoding".
#include "ops/cpu/skinny_avx512.h"

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "core/error.h"
#include "ops/cpu/avx512_loads.h"

namespace adapt::ops::cpu {

namespace {

constexpr std::int64_t kGroupRows = 8;         // input rows per register tile (8 x 2 accumulators)
constexpr std::int64_t kPrefetchBytes = 4096;  // how far ahead of its loads each weight stream is prefetched

// Weight rows [n0, n0 + NW) times R input rows: one accumulator per output, 16 elements of k per step.
// W: float, or std::uint16_t for bf16 bit patterns (load16 widens them).
template <int R, int NW, typename W>
inline void weight_rows(float* c, std::int64_t ldc, const float* a, std::int64_t lda, const W* w, std::int64_t ldw,
                        std::int64_t n0, std::int64_t K, float alpha, float beta) {
  const W* wn[NW];
#pragma GCC unroll 4
  for (int j = 0; j < NW; ++j) wn[j] = w + (n0 + j) * ldw;
  __m512 acc[R][NW];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < NW; ++j) acc[r][j] = _mm512_setzero_ps();
  }
  const std::int64_t k_main = K / 16 * 16;
  for (std::int64_t k = 0; k < k_main; k += 16) {
#pragma GCC unroll 4
    for (int j = 0; j < NW; ++j) _mm_prefetch(reinterpret_cast<const char*>(wn[j] + k) + kPrefetchBytes, _MM_HINT_T0);
    __m512 wv[NW];
#pragma GCC unroll 4
    for (int j = 0; j < NW; ++j) wv[j] = load16(wn[j] + k);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_loadu_ps(a + r * lda + k);
#pragma GCC unroll 4
      for (int j = 0; j < NW; ++j) acc[r][j] = _mm512_fmadd_ps(wv[j], av, acc[r][j]);
    }
  }
  if (k_main < K) {
    const __mmask16 tail = first_lanes(K - k_main);
    __m512 wv[NW];
#pragma GCC unroll 4
    for (int j = 0; j < NW; ++j) wv[j] = load16(wn[j] + k_main, tail);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const __m512 av = load16(a + r * lda + k_main, tail);
#pragma GCC unroll 4
      for (int j = 0; j < NW; ++j) acc[r][j] = _mm512_fmadd_ps(wv[j], av, acc[r][j]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int j = 0; j < NW; ++j) {
      const float s = _mm512_reduce_add_ps(acc[r][j]);
      float& out = c[r * ldc + n0 + j];
      out = alpha * s + (beta != 0.0f ? beta * out : 0.0f);
    }
  }
}

// R (<= 8) input rows times weight rows [n0, n0 + NW), any R at run time.
template <int NW, typename W>
void row_group(int R, float* c, std::int64_t ldc, const float* a, std::int64_t lda, const W* w, std::int64_t ldw,
               std::int64_t n0, std::int64_t K, float alpha, float beta) {
  switch (R) {
#define ADAPT_SKINNY_ROWS(r) \
  case r: return weight_rows<r, NW, W>(c, ldc, a, lda, w, ldw, n0, K, alpha, beta);
    ADAPT_SKINNY_ROWS(1)
    ADAPT_SKINNY_ROWS(2)
    ADAPT_SKINNY_ROWS(3)
    ADAPT_SKINNY_ROWS(4)
    ADAPT_SKINNY_ROWS(5)
    ADAPT_SKINNY_ROWS(6)
    ADAPT_SKINNY_ROWS(7)
    ADAPT_SKINNY_ROWS(8)
#undef ADAPT_SKINNY_ROWS
    default: ADAPT_CHECK(false, "skinny_avx512: a group of ", R, " rows, not 1..", kGroupRows);
  }
}

// Weight rows in order; each (pair of) weight row(s) meets every group of up to kGroupRows input rows
// while it sits in L1, so the weights stream from memory once whatever M is. Up to 4 rows, one weight
// row at a time (one stream: interleaving two rows halved the single-row speed from DRAM, the
// prefetcher following one stream best); above, two (fewer loads of the inputs per FMA).
template <typename W>
void rows_times_weight(float* c, std::int64_t ldc, const float* a, std::int64_t lda, std::int64_t M, const W* w,
                       std::int64_t ldw, std::int64_t n_begin, std::int64_t n_end, std::int64_t K, float alpha,
                       float beta) {
  const auto groups = [&](auto nw, std::int64_t n) {
    for (std::int64_t m0 = 0; m0 < M; m0 += kGroupRows) {
      const int rows = static_cast<int>(std::min<std::int64_t>(kGroupRows, M - m0));
      row_group<decltype(nw)::value, W>(rows, c + m0 * ldc, ldc, a + m0 * lda, lda, w, ldw, n, K, alpha, beta);
    }
  };
  std::int64_t n = n_begin;
  if (M > 4) {
    for (; n + 2 <= n_end; n += 2) groups(std::integral_constant<int, 2>{}, n);
  }
  for (; n < n_end; ++n) groups(std::integral_constant<int, 1>{}, n);
}

}  // namespace

void skinny_avx512(float* c, std::int64_t ldc, const float* a, std::int64_t lda, std::int64_t M, const void* w,
                   bool w_bf16, std::int64_t ldw, std::int64_t n_begin, std::int64_t n_end, std::int64_t K, float alpha,
                   float beta) {
  ADAPT_CHECK(M >= 1 && M <= kSkinnyAvx512MaxRows, "skinny_avx512: ", M, " rows, not 1..", kSkinnyAvx512MaxRows);
  if (w_bf16) {
    rows_times_weight(c, ldc, a, lda, M, static_cast<const std::uint16_t*>(w), ldw, n_begin, n_end, K, alpha, beta);
  } else {
    rows_times_weight(c, ldc, a, lda, M, static_cast<const float*>(w), ldw, n_begin, n_end, K, alpha, beta);
  }
}

}  // namespace adapt::ops::cpu
