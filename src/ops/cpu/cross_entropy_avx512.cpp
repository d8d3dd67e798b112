// Cross-entropy of one row with AVX-512 (see cross_entropy_avx512.h). Pass 1: the row's maximum, four
// vectors in flight. Pass 2: e = exp(z − max) per 16 lanes (exp_f32's scheme: Cephes' range reduction
// with ln 2 in two parts, the degree-6 polynomial, 2^n through the exponent bits), widened to double and
// summed in two 8-lane accumulators; with grad, e is stored over z. Pass 3: z ← e · grad_scale / Σ.
// The row (128 KB at vocabulary 32,000) stays in L2 between the passes.
#include "ops/cpu/cross_entropy_avx512.h"

#include <cmath>
#include <limits>

#include "ops/cpu/avx512_loads.h"

namespace adapt::ops::cpu {

namespace {

inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 shifter = _mm512_set1_ps(12582912.0f);  // 1.5 · 2^23: round to nearest
  const __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), shifter);
  const __m512 n = _mm512_sub_ps(t, shifter);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, r), r, r), _mm512_set1_ps(1.0f));
  // 2^n: n + 127 in the exponent field (n within [−126, 127] after the clamp).
  const __m512i bits = _mm512_slli_epi32(
      _mm512_add_epi32(_mm512_sub_epi32(_mm512_castps_si512(t), _mm512_set1_epi32(0x4B400000)), _mm512_set1_epi32(127)),
      23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

// The 16 lanes of e added to two 8-lane double accumulators.
inline void add_wide(__m512d& lo, __m512d& hi, __m512 e) {
  lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
  hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(e), 1))));
}

}  // namespace

double cross_entropy_row_avx512(float* z, std::int64_t V, std::int64_t y, float grad_scale, bool grad) {
  const __m512 neg_inf = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 m4[4] = {neg_inf, neg_inf, neg_inf, neg_inf};
  std::int64_t j = 0;
  for (; j + 64 <= V; j += 64)
    for (int u = 0; u < 4; ++u) m4[u] = _mm512_max_ps(m4[u], _mm512_loadu_ps(z + j + 16 * u));
  for (; j < V; j += 16) m4[0] = _mm512_max_ps(m4[0], _mm512_mask_loadu_ps(neg_inf, first_lanes(V - j), z + j));
  const float m = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_max_ps(m4[0], m4[1]), _mm512_max_ps(m4[2], m4[3])));
  const float z_y = z[y];

  const __m512 vm = _mm512_set1_ps(m);
  __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
  for (j = 0; j < V; j += 16) {
    const __mmask16 mask = first_lanes(V - j);
    const __m512 e = _mm512_maskz_mov_ps(mask, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, z + j), vm)));
    if (grad) _mm512_mask_storeu_ps(z + j, mask, e);
    add_wide(lo, hi, e);
  }
  const double sum = _mm512_reduce_add_pd(_mm512_add_pd(lo, hi));
  if (grad) {
    const __m512 k = _mm512_set1_ps(static_cast<float>(static_cast<double>(grad_scale) / sum));
    for (j = 0; j < V; j += 16) {
      const __mmask16 mask = first_lanes(V - j);
      _mm512_mask_storeu_ps(z + j, mask, _mm512_mul_ps(_mm512_maskz_loadu_ps(mask, z + j), k));
    }
    z[y] -= grad_scale;
  }
  // −log p_y = log Σ exp(z − m) + m − z_y.
  return std::log(sum) + static_cast<double>(m) - static_cast<double>(z_y);
}

}  // namespace adapt::ops::cpu
