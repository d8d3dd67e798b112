// Helpers of the ops unit tests: seeded random tensors and a max-relative-error comparison against
// the plain-loop references the tests write out in double precision.
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "tensor/tensor.h"
#include "tests/support/test_support.h"

namespace adapt::test {

/// f32 tensor of N(0, std^2) values from a generator seeded with kSeed ^ salt.
inline Tensor random_tensor(const Shape& shape, std::uint64_t salt, float std = 1.0f, const char* name = "x") {
  Tensor t = Tensor::empty(shape, DType::F32, host_allocator(), name);
  std::mt19937_64 rng(kSeed ^ (salt * 0x9e3779b97f4a7c15ull));
  std::normal_distribution<float> dist(0.0f, std);
  float* p = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) p[i] = dist(rng);
  return t;
}

inline Tensor filled(const Shape& shape, float value, const char* name = "y") {
  Tensor t = Tensor::empty(shape, DType::F32, host_allocator(), name);
  std::fill_n(t.data<float>(), t.numel(), value);
  return t;
}

/// max |a − ref| / max |ref| (ref in double); the scale is floored at `floor` so that an all-zero
/// reference still gives an absolute comparison.
inline double max_rel_error(const float* a, const std::vector<double>& ref, double floor = 1e-30) {
  double max_abs = 0, max_ref = floor;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    const double e = std::fabs(static_cast<double>(a[i]) - ref[i]);
    max_abs = std::isnan(e) ? INFINITY : std::max(max_abs, e);
    max_ref = std::max(max_ref, std::fabs(ref[i]));
  }
  return max_abs / max_ref;
}

inline double max_rel_error(const Tensor& a, const std::vector<double>& ref) {
  REQUIRE(a.numel() == static_cast<std::int64_t>(ref.size()));
  return max_rel_error(a.data<float>(), ref);
}

/// Same shape in elements and the same bytes (bit for bit, NaN patterns included).
inline bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.numel() == b.numel() && std::memcmp(a.raw(), b.raw(), a.size_bytes()) == 0;
}

}  // namespace adapt::test
