// Masked 16-lane loads and a 16 x 16 transpose shared by the AVX-512 kernels (gemm_avx512.cpp,
// gemm_avx512_bf16.cpp, skinny_avx512.cpp, attention_decode_avx512.cpp). Include only from translation
// units compiled for AVX-512F/BW/VL.
#pragma once

// GCC 12 reports -Wmaybe-uninitialized and -Wuninitialized inside its own AVX-512 intrinsics (their
// `__Y = __Y` undefined pass-through operands) once they are inlined; the warning is located in the header.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
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

/// The epilogue of the packed GEMMs' micro-kernels: c (mr x nr tile, row stride ldc) = alpha · acc +
/// beta · c, where acc[i][v] holds columns 16v .. 16v + 15 of row i; beta = 0 does not read c.
template <int MR, int NV>
inline void store_tile(const __m512 (&acc)[MR][NV], float* c, std::int64_t ldc, int mr, int nr, float alpha,
                       float beta) {
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  if (mr == MR && nr == 16 * NV) {
    for (int i = 0; i < MR; ++i) {
      for (int v = 0; v < NV; ++v) {
        float* p = c + i * ldc + v * 16;
        const __m512 base = beta == 0.0f ? _mm512_setzero_ps() : _mm512_mul_ps(vb, _mm512_loadu_ps(p));
        _mm512_storeu_ps(p, _mm512_fmadd_ps(va, acc[i][v], base));
      }
    }
    return;
  }
  for (int i = 0; i < mr; ++i) {
    for (int v = 0; v < NV; ++v) {
      const __mmask16 m = first_lanes(nr - v * 16);
      float* p = c + i * ldc + v * 16;
      const __m512 base = beta == 0.0f ? _mm512_setzero_ps() : _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, p));
      _mm512_mask_storeu_ps(p, m, _mm512_fmadd_ps(va, acc[i][v], base));
    }
  }
}

/// In-register transpose of 16 x 16 32-bit lanes: r[i] lane j becomes r[j] lane i.
inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  __m512 u[16];  // u[4g + c], 128-bit lane L: column 4L + c of rows 4g .. 4g + 3
  for (int g = 0; g < 4; ++g) {
    const __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
  }
  for (int c = 0; c < 4; ++c) {
    const __m512 lo01 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x44), hi01 = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xEE);
    const __m512 lo23 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x44);
    const __m512 hi23 = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xEE);
    r[c] = _mm512_shuffle_f32x4(lo01, lo23, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(lo01, lo23, 0xDD);
    r[8 + c] = _mm512_shuffle_f32x4(hi01, hi23, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(hi01, hi23, 0xDD);
  }
}

}  // namespace adapt::ops::cpu
