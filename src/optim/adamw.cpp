#include "optim/adamw.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "optim/adamw_simd.h"

namespace adapt::optim {

namespace {
void require_f32_host(const Tensor& t, const std::string& what, const std::string& name) {
  ADAPT_REQUIRE(t.defined() && t.dtype() == DType::F32 && t.is_contiguous() && t.device().host_accessible(), ShapeError,
                "AdamW: {} of '{}' must be a contiguous f32 host tensor", what, name);
}
}  // namespace

AdamW::AdamW(const AdamWOptions& o) : options_(o) {
  ADAPT_REQUIRE(o.beta1 >= 0 && o.beta1 < 1 && o.beta2 >= 0 && o.beta2 < 1, ConfigError,
                "AdamW betas must be in [0, 1), got ({}, {})", o.beta1, o.beta2);
  ADAPT_REQUIRE(o.eps > 0 && o.weight_decay >= 0, ConfigError, "AdamW needs eps > 0 and weight_decay >= 0");
}

void AdamW::add(std::string name, Tensor master, Tensor grad, bool decay) {
  require_f32_host(master, "the master weights", name);
  require_f32_host(grad, "the gradient", name);
  ADAPT_REQUIRE(master.shape() == grad.shape(), ShapeError, "AdamW: '{}' has weights {} but gradient {}", name,
                master.shape().str(), grad.shape().str());
  AdamWSlot s{std::move(name), std::move(master), std::move(grad), {}, {}, decay};
  s.m = Tensor::zeros(s.master.shape(), DType::F32, s.name + ".exp_avg");
  s.v = Tensor::zeros(s.master.shape(), DType::F32, s.name + ".exp_avg_sq");
  slots_.push_back(std::move(s));
}

void AdamW::step(double lr) {
  ++n_steps_;
  for (AdamWSlot& sl : slots_) {
    const AdamWScalars s = adamw_scalars(options_, lr, n_steps_, sl.decay);
    float* p = sl.master.data<float>();
    const float* g = sl.grad.data<float>();
    float* m = sl.m.data<float>();
    float* v = sl.v.data<float>();
    const std::int64_t n = sl.master.numel();
    // The vectorised update (adamw_simd.h: the same operations in the same order, so the same bits) on
    // chunks of 32Ki elements, spread over the OpenMP threads when there is more than one chunk.
    static const CpuIsa isa = cpu_isa_best();
    constexpr std::int64_t kChunk = std::int64_t{1} << 15;
    const std::int64_t n_chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n_chunks > 1)
    for (std::int64_t c = 0; c < n_chunks; ++c) {
      const std::int64_t i0 = c * kChunk, len = std::min(kChunk, n - i0);
      adamw_update(p + i0, g + i0, m + i0, v + i0, len, s, isa);
    }
  }
}

double grad_global_norm(std::span<const Tensor> grads) {
  double ss = 0;
  for (const Tensor& t : grads) {
    const float* g = t.data<float>();
    const std::int64_t n = t.numel();
#pragma omp parallel for reduction(+ : ss) if (n > (1 << 15))
    for (std::int64_t i = 0; i < n; ++i) ss += static_cast<double>(g[i]) * g[i];
  }
  return std::sqrt(ss);
}

double grad_clip_global_norm(std::span<Tensor> grads, double max_norm) {
  ADAPT_REQUIRE(max_norm > 0, ConfigError, "gradient clipping needs max_norm > 0, got {}", max_norm);
  const double norm = grad_global_norm(grads);
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    const float c = static_cast<float>(coef);
    for (Tensor& t : grads) {
      float* g = t.data<float>();
      for (std::int64_t i = 0; i < t.numel(); ++i) g[i] *= c;
    }
  }
  return norm;
}

}  // namespace adapt::optim
