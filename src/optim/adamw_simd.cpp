#include "optim/adamw_simd.h"

#include <immintrin.h>

#include <cmath>

#include "core/error.h"

namespace adapt::optim {

AdamWScalars adamw_scalars(const AdamWOptions& o, double lr, std::int64_t step, bool decay) {
  const double bias_correction1 = 1.0 - std::pow(o.beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(o.beta2, static_cast<double>(step));
  return {.decay = decay ? static_cast<float>(1.0 - lr * o.weight_decay) : 1.0f,
          .beta1 = static_cast<float>(o.beta1),
          .one_minus_beta1 = static_cast<float>(1.0 - o.beta1),
          .beta2 = static_cast<float>(o.beta2),
          .one_minus_beta2 = static_cast<float>(1.0 - o.beta2),
          .bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2)),
          .step_size = static_cast<float>(lr / bias_correction1),
          .eps = static_cast<float>(o.eps)};
}

std::string_view cpu_isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Scalar: return "scalar";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
  }
  return "?";
}

namespace {

bool cpu_supports(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Scalar: return true;
    case CpuIsa::Avx2: return __builtin_cpu_supports("avx2");
    case CpuIsa::Avx512: return __builtin_cpu_supports("avx512f");
  }
  return false;
}

// One element, in AdamW::step's order.
inline void update_one(float& p, float g, float& m, float& v, const AdamWScalars& s) {
  p *= s.decay;
  m = m * s.beta1 + g * s.one_minus_beta1;
  v = v * s.beta2 + g * g * s.one_minus_beta2;
  const float denom = std::sqrt(v) / s.bias_correction2_sqrt + s.eps;
  p += -s.step_size * (m / denom);
}

void update_scalar(float* p, const float* g, float* m, float* v, std::int64_t n, const AdamWScalars& s) {
  for (std::int64_t i = 0; i < n; ++i) update_one(p[i], g[i], m[i], v[i], s);
}

__attribute__((target("avx2"))) void update_avx2(float* p, const float* g, float* m, float* v, std::int64_t n,
                                                 const AdamWScalars& s) {
  const __m256 decay = _mm256_set1_ps(s.decay), b1 = _mm256_set1_ps(s.beta1), omb1 = _mm256_set1_ps(s.one_minus_beta1);
  const __m256 b2 = _mm256_set1_ps(s.beta2), omb2 = _mm256_set1_ps(s.one_minus_beta2);
  const __m256 bc2 = _mm256_set1_ps(s.bias_correction2_sqrt), eps = _mm256_set1_ps(s.eps);
  const __m256 neg_step = _mm256_set1_ps(-s.step_size);
  std::int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(m + i), b1), _mm256_mul_ps(gi, omb1));
    const __m256 vi =
        _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), b2), _mm256_mul_ps(_mm256_mul_ps(gi, gi), omb2));
    const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    _mm256_storeu_ps(p + i, _mm256_add_ps(pi, _mm256_mul_ps(neg_step, _mm256_div_ps(mi, denom))));
  }
  update_scalar(p + i, g + i, m + i, v + i, n - i, s);
}

// GCC 12 reports _mm512_sqrt_ps's internal _mm512_undefined_ps() as maybe-uninitialized (a known
// false positive of the header); the warning is silenced for this function only.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
__attribute__((target("avx512f"))) void update_avx512(float* p, const float* g, float* m, float* v, std::int64_t n,
                                                      const AdamWScalars& s) {
  const __m512 decay = _mm512_set1_ps(s.decay), b1 = _mm512_set1_ps(s.beta1), omb1 = _mm512_set1_ps(s.one_minus_beta1);
  const __m512 b2 = _mm512_set1_ps(s.beta2), omb2 = _mm512_set1_ps(s.one_minus_beta2);
  const __m512 bc2 = _mm512_set1_ps(s.bias_correction2_sqrt), eps = _mm512_set1_ps(s.eps);
  const __m512 neg_step = _mm512_set1_ps(-s.step_size);
  std::int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 gi = _mm512_loadu_ps(g + i);
    const __m512 pi = _mm512_mul_ps(_mm512_loadu_ps(p + i), decay);
    const __m512 mi = _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(m + i), b1), _mm512_mul_ps(gi, omb1));
    const __m512 vi =
        _mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(v + i), b2), _mm512_mul_ps(_mm512_mul_ps(gi, gi), omb2));
    const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), bc2), eps);
    _mm512_storeu_ps(m + i, mi);
    _mm512_storeu_ps(v + i, vi);
    _mm512_storeu_ps(p + i, _mm512_add_ps(pi, _mm512_mul_ps(neg_step, _mm512_div_ps(mi, denom))));
  }
  update_scalar(p + i, g + i, m + i, v + i, n - i, s);
}
#pragma GCC diagnostic pop

}  // namespace

CpuIsa cpu_isa_best() {
  static const CpuIsa best = cpu_supports(CpuIsa::Avx512) ? CpuIsa::Avx512
                             : cpu_supports(CpuIsa::Avx2) ? CpuIsa::Avx2
                                                          : CpuIsa::Scalar;
  return best;
}

void adamw_update(float* p, const float* g, float* m, float* v, std::int64_t n, const AdamWScalars& s, CpuIsa isa) {
  ADAPT_CHECK(cpu_supports(isa), "AdamW update: this CPU does not support {}", cpu_isa_name(isa));
  switch (isa) {
    case CpuIsa::Scalar: update_scalar(p, g, m, v, n, s); return;
    case CpuIsa::Avx2: update_avx2(p, g, m, v, n, s); return;
    case CpuIsa::Avx512: update_avx512(p, g, m, v, n, s); return;
  }
}

}  // namespace adapt::optim
