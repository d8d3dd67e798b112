// Helpers for the adapters tests: a tiny Llama shape, seeded random tensors, f64 copies, and the
// comparison of an f32 analytic gradient with f64 central differences (named tolerances).
#pragma once

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "adapters/adapter_rng.h"
#include "model/llama_config.h"
#include "tensor/tensor.h"
#include "tests/support/test_support.h"

namespace adapt::test {

/// C = 16, F = 24, L = 3, H = 4, Hkv = 2 (D = 4): every LoRA site has its own (in, out).
inline model::LlamaConfig tiny_llama(std::int64_t hidden = 16) {
  model::LlamaConfig c;
  c.hidden_size = hidden;
  c.intermediate_size = 24;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = hidden / 4;
  c.vocab_size = 32;
  return c;
}

/// Fills t (f32) with U(lo, hi) from `stream` (distinct streams give independent tensors).
inline void fill_uniform(Tensor& t, std::uint64_t stream, double lo, double hi) {
  adapters::rng_fill_uniform(t, adapters::rng_key({kSeed, stream}), lo, hi);
}

inline Tensor random_tensor(const Shape& shape, std::uint64_t stream, double lo = -1.0, double hi = 1.0) {
  Tensor t = Tensor::empty(shape, DType::F32);
  fill_uniform(t, stream, lo, hi);
  return t;
}

inline Tensor clone(const Tensor& t) { return t.to_host(DType::F32); }

inline std::vector<double> to_f64(const Tensor& t) {
  const Tensor c = t.to_host(DType::F32);
  const float* p = c.data<float>();
  return std::vector<double>(p, p + c.numel());
}

/// f64 central differences of loss() with respect to every element of v (restored afterwards).
inline std::vector<double> numeric_grad(std::vector<double>& v, const std::function<double()>& loss, double h = 1e-6) {
  std::vector<double> g(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    const double saved = v[i];
    v[i] = saved + h;
    const double lp = loss();
    v[i] = saved - h;
    const double lm = loss();
    v[i] = saved;
    g[i] = (lp - lm) / (2 * h);
  }
  return g;
}

/// f32 analytic gradients against f64 central differences: the f32 products round at ~1e-7 relative
/// to the magnitude of their terms, so each element must satisfy
/// |analytic − numeric| <= kGradAtol · max(1, max|numeric|) + kGradRtol · |numeric|.
constexpr double kGradRtol = 1e-3;
constexpr double kGradAtol = 2e-5;

inline void check_grad(const std::string& what, const Tensor& analytic, const std::vector<double>& numeric) {
  const std::vector<double> a = to_f64(analytic);
  REQUIRE(a.size() == numeric.size());
  double scale = 1.0;
  for (const double n : numeric) scale = std::max(scale, std::fabs(n));
  double worst = 0.0;
  std::size_t worst_i = 0;
  bool nonzero = false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    const double excess = std::fabs(a[i] - numeric[i]) - (kGradAtol * scale + kGradRtol * std::fabs(numeric[i]));
    if (excess > worst || i == 0) {
      worst = excess;
      worst_i = i;
    }
    nonzero = nonzero || numeric[i] != 0.0;
  }
  INFO(what << ": worst element " << worst_i << " analytic " << a[worst_i] << " numeric " << numeric[worst_i]
            << " (seed " << kSeed << ")");
  CHECK(worst <= 0.0);
  CHECK(nonzero);  // a gradient check on an all-zero gradient proves nothing
}

/// max |a − b| / max(1, max |b|) over all elements.
inline double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  double scale = 1.0, diff = 0.0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    scale = std::max(scale, std::fabs(b[i]));
    diff = std::max(diff, std::fabs(a[i] - b[i]));
  }
  return diff / scale;
}

inline bool bit_equal(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::equal(static_cast<const char*>(a.raw()), static_cast<const char*>(a.raw()) + a.size_bytes(),
                    static_cast<const char*>(b.raw()));
}

}  // namespace adapt::test
