// CPU loops of the adapter math (the reference) and the dispatch of device tensors to the CUDA glue.
#include "adapters/adapter_math.h"

#include <cmath>
#include <numbers>
#include <vector>

#include "adapters/adapter_rng.h"
#include "backend/backend.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"

#if ADAPT_HAVE_CUDA
#include "adapters/cuda/adapter_math_cuda.h"
#endif

namespace adapt::adapters::detail {

namespace {

float activate(BnActivation act, float a) {
  switch (act) {
    case BnActivation::Relu: return a > 0.0f ? a : 0.0f;
    case BnActivation::Swish: return a / (1.0f + std::exp(-a));
    case BnActivation::Gelu: return 0.5f * a * (1.0f + std::erf(a * static_cast<float>(std::numbers::sqrt2 / 2)));
  }
  return 0.0f;
}

/// d act(a) / da.
float activate_grad(BnActivation act, float a) {
  switch (act) {
    case BnActivation::Relu: return a > 0.0f ? 1.0f : 0.0f;
    case BnActivation::Swish: {
      const float sig = 1.0f / (1.0f + std::exp(-a));
      return sig * (1.0f + a * (1.0f - sig));
    }
    case BnActivation::Gelu: {
      const float cdf = 0.5f * (1.0f + std::erf(a * static_cast<float>(std::numbers::sqrt2 / 2)));
      const float pdf = std::exp(-0.5f * a * a) * static_cast<float>(std::numbers::inv_sqrtpi / std::numbers::sqrt2);
      return cdf + a * pdf;
    }
  }
  return 0.0f;
}

}  // namespace

void lora_dropout_apply(Tensor& out, const Tensor& x, const LoraDropout& dropout) {
  const std::int64_t cols = x.dim(1);
#if ADAPT_HAVE_CUDA
  if (!x.device().host_accessible()) return cuda::lora_dropout(out, x, dropout, /*accumulate=*/false);
#endif
  const float* xs = x.data<float>();
  float* d = out.data<float>();
  const float keep_scale = static_cast<float>(1.0 / (1.0 - dropout.p));
  const std::int64_t n = x.numel();
  for (std::int64_t i = 0; i < n; ++i)
    d[i] = dropout_keep(dropout.stream, dropout.element(i, cols), dropout.p) ? xs[i] * keep_scale : 0.0f;
}

void lora_dropout_accumulate(Tensor& dx, const Tensor& g, const LoraDropout& dropout) {
  const std::int64_t cols = g.dim(1);
#if ADAPT_HAVE_CUDA
  if (!g.device().host_accessible()) return cuda::lora_dropout(dx, g, dropout, /*accumulate=*/true);
#endif
  const float* gs = g.data<float>();
  float* d = dx.data<float>();
  const float keep_scale = static_cast<float>(1.0 / (1.0 - dropout.p));
  const std::int64_t n = dx.numel();
  for (std::int64_t i = 0; i < n; ++i)
    if (dropout_keep(dropout.stream, dropout.element(i, cols), dropout.p)) d[i] += gs[i] * keep_scale;
}

void bias_add_scaled(Tensor& y, const Tensor& bias, float alpha, ops::Workspace& ws) {
#if ADAPT_HAVE_CUDA
  if (!y.device().host_accessible()) return cuda::bias_add_scaled(y, bias, alpha);
#endif
  if (alpha == 1.0f) return ops::bias_add(y, bias);
  const std::int64_t C = bias.numel();
  Tensor scaled = ws.take({C}, DType::F32, "adapter.scaled_bias");
  const float* b = bias.data<float>();
  float* sb = scaled.data<float>();
  for (std::int64_t j = 0; j < C; ++j) sb[j] = alpha * b[j];
  ops::bias_add(y, scaled);  // y[i, j] += alpha·b[j], rows split over the threads
}

void activation_forward(Tensor& out, const Tensor& pre, BnActivation act) {
#if ADAPT_HAVE_CUDA
  if (!pre.device().host_accessible()) return cuda::activation_forward(out, pre, act);
#endif
  const float* p = pre.data<float>();
  float* o = out.data<float>();
  for (std::int64_t i = 0; i < pre.numel(); ++i) o[i] = activate(act, p[i]);
}

void activation_backward(Tensor& grad, const Tensor& pre, BnActivation act) {
#if ADAPT_HAVE_CUDA
  if (!pre.device().host_accessible()) return cuda::activation_backward(grad, pre, act);
#endif
  const float* p = pre.data<float>();
  float* g = grad.data<float>();
  for (std::int64_t i = 0; i < pre.numel(); ++i) g[i] *= activate_grad(act, p[i]);
}

void layer_norm_forward(Tensor& out, Tensor& stats, const Tensor& z, const Tensor& w, const Tensor& b, double eps) {
#if ADAPT_HAVE_CUDA
  if (!z.device().host_accessible()) return cuda::layer_norm_forward(out, stats, z, w, b, eps);
#endif
  const std::int64_t N = z.dim(0), C = z.dim(1);
  const float* zs = z.data<float>();
  const float* wp = w.data<float>();
  const float* bias = b.data<float>();
  float* o = out.data<float>();
  float* st = stats.data<float>();
  for (std::int64_t i = 0; i < N; ++i) {
    const float* row = zs + i * C;
    double sum = 0.0;
    for (std::int64_t j = 0; j < C; ++j) sum += row[j];
    const double mean = sum / static_cast<double>(C);
    double var = 0.0;
    for (std::int64_t j = 0; j < C; ++j) var += (row[j] - mean) * (row[j] - mean);
    var /= static_cast<double>(C);
    const float m = static_cast<float>(mean);
    const float rstd = static_cast<float>(1.0 / std::sqrt(var + eps));
    st[2 * i] = m;
    st[2 * i + 1] = rstd;
    for (std::int64_t j = 0; j < C; ++j) o[i * C + j] = (row[j] - m) * rstd * wp[j] + bias[j];
  }
}

void layer_norm_backward(Tensor& dz, Tensor& dw, Tensor& db, const Tensor& dzn, const Tensor& z, const Tensor& stats,
                         const Tensor& w, ops::Workspace& ws) {
#if ADAPT_HAVE_CUDA
  if (!z.device().host_accessible()) return cuda::layer_norm_backward(dz, dw, db, dzn, z, stats, w, ws);
#endif
  (void)ws;  // scratch for the device path only
  // ẑ = (z − μ)·ρ, zn = γ ⊙ ẑ + β; with u = dzn ⊙ γ:
  // dz = ρ·(u − mean(u) − ẑ·mean(u ⊙ ẑ)), dγ += Σ dzn ⊙ ẑ, dβ += Σ dzn.
  const std::int64_t N = z.dim(0), C = z.dim(1);
  const float* zs = z.data<float>();
  const float* st = stats.data<float>();
  const float* gw = w.data<float>();
  const float* dn = dzn.data<float>();
  float* out = dz.data<float>();
  std::vector<double> dgamma(static_cast<std::size_t>(C), 0.0);
  std::vector<float> zhat(static_cast<std::size_t>(C));
  for (std::int64_t i = 0; i < N; ++i) {
    const float mean = st[2 * i], rstd = st[2 * i + 1];
    double sum_u = 0.0, sum_uz = 0.0;
    for (std::int64_t j = 0; j < C; ++j) {
      const std::size_t ju = static_cast<std::size_t>(j);
      zhat[ju] = (zs[i * C + j] - mean) * rstd;
      const double u = static_cast<double>(dn[i * C + j]) * gw[j];
      sum_u += u;
      sum_uz += u * zhat[ju];
      dgamma[ju] += static_cast<double>(dn[i * C + j]) * zhat[ju];
    }
    const double mean_u = sum_u / static_cast<double>(C), mean_uz = sum_uz / static_cast<double>(C);
    for (std::int64_t j = 0; j < C; ++j) {
      const double u = static_cast<double>(dn[i * C + j]) * gw[j];
      out[i * C + j] = static_cast<float>(rstd * (u - mean_u - zhat[static_cast<std::size_t>(j)] * mean_uz));
    }
  }
  float* dgw = dw.data<float>();
  for (std::int64_t j = 0; j < C; ++j) dgw[j] += static_cast<float>(dgamma[static_cast<std::size_t>(j)]);
  ops::column_sum(db, dzn, 1.0f);
}

Tensor copy_to(const Tensor& t, Allocator& alloc) {
  if (!t.defined()) return t;
  Tensor out = Tensor::empty(t.shape(), t.dtype(), alloc, t.name());
  backend::copy(out, t);
  return out;
}

void fill_on_host(Tensor& t, const std::function<void(Tensor&)>& fill) {
  if (t.device().host_accessible()) return fill(t);
  Tensor host = Tensor::empty(t.shape(), t.dtype(), host_allocator(), t.name());
  fill(host);
  backend::copy(t, host);
}

}  // namespace adapt::adapters::detail
