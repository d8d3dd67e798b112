#include "adapters/bottleneck_adapter.h"

#include <cmath>
#include <numbers>
#include <vector>

#include "adapters/adapter_check.h"
#include "adapters/adapter_rng.h"
#include "ops/matmul.h"

namespace adapt::adapters {

namespace {

Tensor zeros(const Shape& shape, const std::string& name) { return Tensor::zeros(shape, DType::F32, name); }

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

/// dst[j] += scale · Σ_i src[i, j] (double accumulation).
void add_colsum(Tensor& dst, const Tensor& src, double scale) {
  const std::int64_t rows = src.dim(0), cols = src.dim(1);
  std::vector<double> acc(static_cast<std::size_t>(cols), 0.0);
  const float* s = src.data<float>();
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t j = 0; j < cols; ++j) acc[static_cast<std::size_t>(j)] += s[i * cols + j];
  float* d = dst.data<float>();
  for (std::int64_t j = 0; j < cols; ++j) d[j] += static_cast<float>(scale * acc[static_cast<std::size_t>(j)]);
}

}  // namespace

BottleneckAdapter::BottleneckAdapter(std::int64_t hidden, std::int64_t m, BnActivation activation, double scaling,
                                     bool ln_before, const std::string& prefix)
    : down_weight(zeros({m, hidden}, prefix + ".down.weight")),
      down_bias(zeros({m}, prefix + ".down.bias")),
      up_weight(zeros({hidden, m}, prefix + ".up.weight")),
      up_bias(zeros({hidden}, prefix + ".up.bias")),
      grad_down_weight(zeros({m, hidden}, prefix + ".down.weight.grad")),
      grad_down_bias(zeros({m}, prefix + ".down.bias.grad")),
      grad_up_weight(zeros({hidden, m}, prefix + ".up.weight.grad")),
      grad_up_bias(zeros({hidden}, prefix + ".up.bias.grad")),
      activation_(activation),
      scaling_(scaling) {
  if (ln_before) {
    ln_weight = zeros({hidden}, prefix + ".ln.weight");
    ln_bias = zeros({hidden}, prefix + ".ln.bias");
    grad_ln_weight = zeros({hidden}, prefix + ".ln.weight.grad");
    grad_ln_bias = zeros({hidden}, prefix + ".ln.bias.grad");
  }
}

void BottleneckAdapter::init(std::uint64_t key) {
  const double bound = 1.0 / std::sqrt(static_cast<double>(hidden()));
  rng_fill_uniform(down_weight, key, -bound, bound);
  down_bias.zero();
  up_weight.zero();
  up_bias.zero();
  if (ln_before()) {
    float* w = ln_weight.data<float>();
    for (std::int64_t j = 0; j < hidden(); ++j) w[j] = 1.0f;
    ln_bias.zero();
  }
}

Tensor BottleneckAdapter::normalized_input(const Tensor& z, ops::Workspace& ws, Tensor* mean_rstd) const {
  if (!ln_before()) return z;
  const std::int64_t N = z.dim(0), C = z.dim(1);
  Tensor zn = ws.take({N, C}, DType::F32, "bottleneck.z_norm");
  Tensor stats = ws.take({N, 2}, DType::F32, "bottleneck.ln_stats");
  const float* zs = z.data<float>();
  const float* w = ln_weight.data<float>();
  const float* bias = ln_bias.data<float>();
  float* out = zn.data<float>();
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
    const float rstd = static_cast<float>(1.0 / std::sqrt(var + kBnLayerNormEps));
    st[2 * i] = m;
    st[2 * i + 1] = rstd;
    for (std::int64_t j = 0; j < C; ++j) out[i * C + j] = (row[j] - m) * rstd * w[j] + bias[j];
  }
  if (mean_rstd) *mean_rstd = stats;
  return zn;
}

void BottleneckAdapter::forward(const Tensor& z, Tensor& out, ops::Workspace& ws) const {
  const std::int64_t N = matrix_rows("bottleneck forward", z, "z");
  check_matrix("bottleneck forward", z, N, hidden(), "z");
  check_matrix("bottleneck forward", out, N, hidden(), "out");
  const Tensor zn = normalized_input(z, ws, nullptr);
  Tensor g = ws.take({N, width()}, DType::F32, "bottleneck.act");
  ops::matmul(g, zn, down_weight);  // (N, m) = zn · Wdᵀ
  ops::bias_add(g, down_bias);
  float* gp = g.data<float>();
  for (std::int64_t i = 0; i < g.numel(); ++i) gp[i] = activate(activation_, gp[i]);
  const float s = static_cast<float>(scaling_);
  // out += s·(g·Wuᵀ + bu): all of z is read above, so out may alias it.
  ops::matmul(out, g, up_weight, {.transpose_b = true, .alpha = s, .beta = 1.0f});
  const std::int64_t C = hidden();
  Tensor scaled_bias = ws.take({C}, DType::F32, "bottleneck.scaled_up_bias");
  const float* bu = up_bias.data<float>();
  float* sb = scaled_bias.data<float>();
  for (std::int64_t j = 0; j < C; ++j) sb[j] = s * bu[j];
  ops::bias_add(out, scaled_bias);  // out[i, j] += s·bu[j], rows split over the threads
}

void BottleneckAdapter::backward(const Tensor& z, const Tensor& dout, Tensor& dz, ops::Workspace& ws) {
  const std::int64_t N = matrix_rows("bottleneck backward", z, "z");
  const std::int64_t C = hidden(), m = width();
  check_matrix("bottleneck backward", z, N, C, "z");
  check_matrix("bottleneck backward", dout, N, C, "dout");
  check_matrix("bottleneck backward", dz, N, C, "dz");
  const float s = static_cast<float>(scaling_);
  Tensor stats;
  const Tensor zn = normalized_input(z, ws, &stats);
  Tensor pre = ws.take({N, m}, DType::F32, "bottleneck.pre_act");
  ops::matmul(pre, zn, down_weight);
  ops::bias_add(pre, down_bias);
  Tensor g = ws.take({N, m}, DType::F32, "bottleneck.act");
  const float* pp = pre.data<float>();
  float* gp = g.data<float>();
  for (std::int64_t i = 0; i < N * m; ++i) gp[i] = activate(activation_, pp[i]);

  // up: o = g·Wuᵀ + bu, term = s·o.
  ops::matmul(grad_up_weight, dout, g, {.transpose_a = true, .transpose_b = false, .alpha = s, .beta = 1.0f});
  add_colsum(grad_up_bias, dout, s);
  Tensor da = ws.take({N, m}, DType::F32, "bottleneck.d_pre_act");
  ops::matmul(da, dout, up_weight, {.transpose_b = false, .alpha = s});  // dg = s·dout·Wu
  float* dap = da.data<float>();
  for (std::int64_t i = 0; i < N * m; ++i) dap[i] *= activate_grad(activation_, pp[i]);

  // down: pre = zn·Wdᵀ + bd.
  ops::matmul(grad_down_weight, da, zn, {.transpose_a = true, .transpose_b = false, .beta = 1.0f});
  add_colsum(grad_down_bias, da, 1.0);
  if (!ln_before()) {
    ops::matmul(dz, da, down_weight, {.transpose_b = false});  // dz = da·Wd
    return;
  }
  Tensor dzn = ws.take({N, C}, DType::F32, "bottleneck.d_z_norm");
  ops::matmul(dzn, da, down_weight, {.transpose_b = false});
  // LayerNorm: ẑ = (z − μ)·ρ, zn = γ ⊙ ẑ + β; with u = dzn ⊙ γ:
  // dz = ρ·(u − mean(u) − ẑ·mean(u ⊙ ẑ)), dγ += Σ dzn ⊙ ẑ, dβ += Σ dzn.
  const float* zs = z.data<float>();
  const float* st = stats.data<float>();
  const float* gw = ln_weight.data<float>();
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
  float* dgw = grad_ln_weight.data<float>();
  for (std::int64_t j = 0; j < C; ++j) dgw[j] += static_cast<float>(dgamma[static_cast<std::size_t>(j)]);
  add_colsum(grad_ln_bias, dzn, 1.0);
}

}  // namespace adapt::adapters
