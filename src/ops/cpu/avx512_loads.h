// Masked 16-lane loads shared by the AVX-512 kernels (gemm_avx512.cpp, skinny_avx512.cpp,
// attention_decode_avx512.cpp). Include only from translation units compiled for AVX-512F/BW/VL.
#pragma once

// GCC 12 reports -Wmaybe-uninitialized inside its own AVX-512 intrinsics (their `__Y = __Y` undefined
// pass-through operands) once they are inlined; the warning is located in the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop

#include <algorithm>
#include <cstdint>

namespace adapt::ops::cpu {

/// The first n lanes (none for n <= 0, all 16 for n >= 16).
inline __mmask16 first_lanes(std::int64_t n) {
  return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << std::max<std::int64_t>(n, 0)) - 1u);
}

/// Up to 16 consecutive values as f32, lanes outside `mask` zero; bf16 widens exactly (bits << 16).
inline __m512 load16(const float* p, __mmask16 mask = 0xFFFF) { return _mm512_maskz_loadu_ps(mask, p); }
inline __m512 load16(const std::uint16_t* p, __mmask16 mask = 0xFFFF) {
  const __m256i h = _mm256_maskz_loadu_epi16(mask, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

}  // namespace adapt::ops::cpu
