#include "optim/adamw.h"

#include <cmath>

#include "core/error.h"

namespace adapt::optim {

namespace {
void require_f32_host(const Tensor& t, const std::string& what, const std::string& name) {
  ADAPT_REQUIRE(t.defined() && t.dtype() == DType::F32 && t.is_contiguous() && t.device().host_accessible(),
                ShapeError, "AdamW: {} of '{}' must be a contiguous f32 host tensor", what, name);
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
  const double b1 = options_.beta1, b2 = options_.beta2;
  const double bias_correction1 = 1.0 - std::pow(b1, static_cast<double>(n_steps_));
  const double bias_correction2 = 1.0 - std::pow(b2, static_cast<double>(n_steps_));
  // The scalars as torch passes them to its float32 kernels.
  const float step_size = static_cast<float>(lr / bias_correction1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  const float b1f = static_cast<float>(b1), one_minus_b1 = static_cast<float>(1.0 - b1);
  const float b2f = static_cast<float>(b2), one_minus_b2 = static_cast<float>(1.0 - b2);
  const float eps = static_cast<float>(options_.eps);
  for (AdamWSlot& s : slots_) {
    const float decay = s.decay ? static_cast<float>(1.0 - lr * options_.weight_decay) : 1.0f;
    float* p = s.master.data<float>();
    const float* g = s.grad.data<float>();
    float* m = s.m.data<float>();
    float* v = s.v.data<float>();
    const std::int64_t n = s.master.numel();
#pragma omp parallel for simd if (n > (1 << 15))
    for (std::int64_t i = 0; i < n; ++i) {
      p[i] *= decay;
      m[i] = m[i] * b1f + g[i] * one_minus_b1;
      v[i] = v[i] * b2f + g[i] * g[i] * one_minus_b2;
      const float denom = std::sqrt(v[i]) / bc2_sqrt + eps;
      p[i] += -step_size * (m[i] / denom);
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
