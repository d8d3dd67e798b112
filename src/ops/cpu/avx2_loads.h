// 8-lane loads shared by the AVX2 kernels (gemm_avx2.cpp, skinny_avx2.cpp). Include only from
// translation units compiled for AVX2 and FMA.
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace adapt::ops::cpu {

/// 8 consecutive values as f32; bf16 widens exactly (bits << 16).
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const std::uint16_t* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

/// A mask of the first n lanes (none for n <= 0, all 8 for n >= 8), for _mm256_maskload_ps / maskstore.
inline __m256i first_lanes8(std::int64_t n) {
  alignas(32) static constexpr std::int32_t kOnesThenZeros[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                                                  0,  0,  0,  0,  0,  0,  0,  0};
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kOnesThenZeros + 8 - std::clamp<std::int64_t>(n, 0, 8)));
}

/// The first n (< 8 and >= 0: a row's tail) values as f32, zeros after; nothing past them is read.
inline __m256 load8_first(const float* p, std::int64_t n) { return _mm256_maskload_ps(p, first_lanes8(n)); }
inline __m256 load8_first(const std::uint16_t* p, std::int64_t n) {
  alignas(16) std::uint16_t t[8] = {};
  std::memcpy(t, p, static_cast<std::size_t>(std::max<std::int64_t>(n, 0)) * sizeof(std::uint16_t));
  return load8(t);
}

}  // namespace adapt::ops::cpu
