// Tolerances of the CPU-vs-CUDA parity tests, one per dtype, and the one comparison they are used with.
// The error is measured relative to the largest magnitude of the reference (max |got - want| /
// max |want|), so that elements that cancel to near zero do not make a correct result look wrong.
//   fp32: both sides round to f32 but sum in different orders (and GPU kernels use FMA): a few ulps
//         of the largest term; 1e-5 leaves room for reductions over thousands of terms.
//   bf16: 8 mantissa bits, so one rounding of the output alone is up to 2^-8 = 3.9e-3.
//   f16:  11 mantissa bits, one rounding is up to 2^-11 = 4.9e-4.
//   tf32 (f32 GEMM inputs rounded to 10 explicit mantissa bits when TF32 is allowed): each product is
//         off by up to about 2 · 2^-10 relative if the hardware truncates, so a 1 x 1 x 1 product alone
//         can reach 2e-3.
// Never loosen these in place: a kernel that needs more says why in its own test.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include <fmt/format.h>

#include "dtype/dtype.h"

namespace adapt::test {

constexpr double kTolF32 = 1e-5;
constexpr double kTolBf16 = 1e-2;
constexpr double kTolF16 = 1e-3;
constexpr double kTolTf32 = 5e-3;

/// The tolerance for results computed in (or rounded to) `dtype`.
inline double gpu_tolerance(DType dtype) {
  switch (dtype) {
    case DType::BF16: return kTolBf16;
    case DType::F16: return kTolF16;
    default: return kTolF32;
  }
}

/// How far `got` is from `want` (n values, both f32 on the host).
struct Mismatch {
  double max_abs = 0;    // max |got - want|
  double ref_scale = 0;  // max |want|
  double rel = 0;        // max_abs / ref_scale (max_abs when ref_scale is 0); NaN/Inf in got: infinity
  std::int64_t worst = -1;
  float got_at_worst = 0, want_at_worst = 0;
  std::string str() const {
    return fmt::format("relative error {:.3g} (max abs {:.3g}, reference scale {:.3g}), worst at [{}]: got {} want {}",
                       rel, max_abs, ref_scale, worst, got_at_worst, want_at_worst);
  }
};

/// `scale`, when larger than want's largest magnitude, is the reference size instead: the size of terms
/// that cancel in the result, whose rounding the result inherits.
inline Mismatch compare_relative(const float* got, const float* want, std::int64_t n, double scale = 0.0) {
  Mismatch m;
  bool bad = false;
  for (std::int64_t i = 0; i < n; ++i) {
    m.ref_scale = std::fmax(m.ref_scale, std::fabs(static_cast<double>(want[i])));
    const double d = std::fabs(static_cast<double>(got[i]) - static_cast<double>(want[i]));
    if (!std::isfinite(got[i]) && std::isfinite(want[i])) {
      if (!bad) m.worst = i, m.got_at_worst = got[i], m.want_at_worst = want[i];
      bad = true;
    } else if (!bad && d > m.max_abs) {
      m.max_abs = d, m.worst = i, m.got_at_worst = got[i], m.want_at_worst = want[i];
    }
  }
  m.ref_scale = std::fmax(m.ref_scale, scale);
  m.rel = bad ? INFINITY : (m.ref_scale > 0 ? m.max_abs / m.ref_scale : m.max_abs);
  return m;
}

}  // namespace adapt::test
