// f64 references of the adapters for the adapters tests (SPEC-llama.md §5.4, §6.3): a LoRA site on a
// projection and a bottleneck adapter at a sub-block end, each with its loss L = Σ w ⊙ output.
#pragma once

#include <cmath>
#include <cstdint>
#include <numbers>
#include <vector>

#include "adapters/adapter_config.h"

namespace adapt::test {

using adapters::BnActivation;
using adapters::BnPlacement;

/// L = Σ w ⊙ out.
inline double weighted_sum(const std::vector<double>& w, const std::vector<double>& out) {
  double l = 0;
  for (std::size_t i = 0; i < out.size(); ++i) l += w[i] * out[i];
  return l;
}

/// y = x·Wᵀ + s·((x ⊙ keep)·Aᵀ)·Bᵀ, L = Σ w ⊙ y, all in f64 (SPEC-llama.md §5.4).
struct LoraRef {
  std::int64_t N, in, out, r;
  double s;
  std::vector<double> x, W, A, B, keep, w;  // keep: 0 or 1/(1−p) per element of x

  std::vector<double> forward() const {
    std::vector<double> y(static_cast<std::size_t>(N * out), 0.0);
    std::vector<double> u(static_cast<std::size_t>(r));
    for (std::int64_t n = 0; n < N; ++n) {
      for (std::int64_t k = 0; k < r; ++k) {
        double acc = 0;
        for (std::int64_t i = 0; i < in; ++i) acc += x[n * in + i] * keep[n * in + i] * A[k * in + i];
        u[k] = acc;
      }
      for (std::int64_t o = 0; o < out; ++o) {
        double base = 0, lora = 0;
        for (std::int64_t i = 0; i < in; ++i) base += x[n * in + i] * W[o * in + i];
        for (std::int64_t k = 0; k < r; ++k) lora += u[k] * B[o * r + k];
        y[n * out + o] = base + s * lora;
      }
    }
    return y;
  }
  double loss() const { return weighted_sum(w, forward()); }
};

inline double act(BnActivation a, double z) {
  switch (a) {
    case BnActivation::Relu: return z > 0 ? z : 0;
    case BnActivation::Swish: return z / (1 + std::exp(-z));
    case BnActivation::Gelu: return 0.5 * z * (1 + std::erf(z / std::numbers::sqrt2));
  }
  return 0;
}

/// out = h + f + s·(up(act(down(LN(z)))), z = f | h + f | h; L = Σ w ⊙ out. f64 throughout.
struct BnRef {
  std::int64_t N, C, m;
  BnPlacement placement;
  BnActivation activation;
  double s;
  bool ln;
  std::vector<double> h, f, ln_w, ln_b, Wd, bd, Wu, bu, w;

  std::vector<double> forward() const {
    std::vector<double> out(static_cast<std::size_t>(N * C));
    std::vector<double> z(static_cast<std::size_t>(C)), g(static_cast<std::size_t>(m));
    for (std::int64_t n = 0; n < N; ++n) {
      for (std::int64_t c = 0; c < C; ++c) {
        const double hv = h[n * C + c], fv = f[n * C + c];
        z[c] = placement == BnPlacement::Houlsby ? fv : placement == BnPlacement::Parallel ? hv : hv + fv;
      }
      if (ln) {
        double mean = 0, var = 0;
        for (const double v : z) mean += v;
        mean /= static_cast<double>(C);
        for (const double v : z) var += (v - mean) * (v - mean);
        var /= static_cast<double>(C);
        for (std::int64_t c = 0; c < C; ++c) z[c] = (z[c] - mean) / std::sqrt(var + 1e-5) * ln_w[c] + ln_b[c];
      }
      for (std::int64_t k = 0; k < m; ++k) {
        double a = bd[k];
        for (std::int64_t c = 0; c < C; ++c) a += z[c] * Wd[k * C + c];
        g[k] = act(activation, a);
      }
      for (std::int64_t c = 0; c < C; ++c) {
        double o = bu[c];
        for (std::int64_t k = 0; k < m; ++k) o += g[k] * Wu[c * m + k];
        out[n * C + c] = h[n * C + c] + f[n * C + c] + s * o;
      }
    }
    return out;
  }
  double loss() const { return weighted_sum(w, forward()); }
};

}  // namespace adapt::test
