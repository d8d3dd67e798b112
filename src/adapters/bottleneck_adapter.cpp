#include "adapters/bottleneck_adapter.h"

#include <cmath>

#include "adapters/adapter_check.h"
#include "adapters/adapter_math.h"
#include "adapters/adapter_rng.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"

namespace adapt::adapters {

namespace {

Tensor zeros(const Shape& shape, const std::string& name) { return Tensor::zeros(shape, DType::F32, name); }

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
  detail::fill_on_host(down_weight, [&](Tensor& t) { rng_fill_uniform(t, key, -bound, bound); });
  ops::fill(down_bias, 0.0f);
  ops::fill(up_weight, 0.0f);
  ops::fill(up_bias, 0.0f);
  if (ln_before()) {
    detail::fill_on_host(ln_weight, [&](Tensor& t) {
      float* w = t.data<float>();
      for (std::int64_t j = 0; j < hidden(); ++j) w[j] = 1.0f;
    });
    ops::fill(ln_bias, 0.0f);
  }
}

void BottleneckAdapter::to_memory(Allocator& alloc) {
  for (Tensor* t : {&ln_weight, &ln_bias, &down_weight, &down_bias, &up_weight, &up_bias, &grad_ln_weight,
                    &grad_ln_bias, &grad_down_weight, &grad_down_bias, &grad_up_weight, &grad_up_bias})
    *t = detail::copy_to(*t, alloc);
}

Tensor BottleneckAdapter::normalized_input(const Tensor& z, ops::Workspace& ws, Tensor* mean_rstd) const {
  if (!ln_before()) return z;
  const std::int64_t N = z.dim(0), C = z.dim(1);
  Tensor zn = ws.take({N, C}, DType::F32, "bottleneck.z_norm");
  Tensor stats = ws.take({N, 2}, DType::F32, "bottleneck.ln_stats");
  detail::layer_norm_forward(zn, stats, z, ln_weight, ln_bias, kBnLayerNormEps);
  if (mean_rstd) *mean_rstd = stats;
  return zn;
}

void BottleneckAdapter::forward(const Tensor& z, Tensor& out, ops::Workspace& ws) const {
  const std::int64_t N = matrix_rows("bottleneck forward", z, "z");
  check_matrix("bottleneck forward", z, N, hidden(), "z");
  check_matrix("bottleneck forward", out, N, hidden(), "out");
  check_device("bottleneck forward", z, device(), "z");
  check_device("bottleneck forward", out, device(), "out");
  const Tensor zn = normalized_input(z, ws, nullptr);
  Tensor g = ws.take({N, width()}, DType::F32, "bottleneck.act");
  ops::matmul(g, zn, down_weight);  // (N, m) = zn · Wdᵀ
  detail::bias_add_scaled(g, down_bias, 1.0f, ws);
  detail::activation_forward(g, g, activation_);
  const float s = static_cast<float>(scaling_);
  // out += s·(g·Wuᵀ + bu): all of z is read above, so out may alias it.
  ops::matmul(out, g, up_weight, {.transpose_b = true, .alpha = s, .beta = 1.0f});
  detail::bias_add_scaled(out, up_bias, s, ws);  // out[i, j] += f32(s·bu[j])
}

void BottleneckAdapter::backward(const Tensor& z, const Tensor& dout, Tensor& dz, ops::Workspace& ws) {
  const std::int64_t N = matrix_rows("bottleneck backward", z, "z");
  const std::int64_t C = hidden(), m = width();
  check_matrix("bottleneck backward", z, N, C, "z");
  check_matrix("bottleneck backward", dout, N, C, "dout");
  check_matrix("bottleneck backward", dz, N, C, "dz");
  check_device("bottleneck backward", z, device(), "z");
  check_device("bottleneck backward", dout, device(), "dout");
  check_device("bottleneck backward", dz, device(), "dz");
  const float s = static_cast<float>(scaling_);
  Tensor stats;
  const Tensor zn = normalized_input(z, ws, &stats);
  Tensor pre = ws.take({N, m}, DType::F32, "bottleneck.pre_act");
  ops::matmul(pre, zn, down_weight);
  detail::bias_add_scaled(pre, down_bias, 1.0f, ws);
  Tensor g = ws.take({N, m}, DType::F32, "bottleneck.act");
  detail::activation_forward(g, pre, activation_);

  // up: o = g·Wuᵀ + bu, term = s·o.
  ops::matmul(grad_up_weight, dout, g, {.transpose_a = true, .transpose_b = false, .alpha = s, .beta = 1.0f});
  ops::column_sum(grad_up_bias, dout, s);
  Tensor da = ws.take({N, m}, DType::F32, "bottleneck.d_pre_act");
  ops::matmul(da, dout, up_weight, {.transpose_b = false, .alpha = s});  // dg = s·dout·Wu
  detail::activation_backward(da, pre, activation_);

  // down: pre = zn·Wdᵀ + bd.
  ops::matmul(grad_down_weight, da, zn, {.transpose_a = true, .transpose_b = false, .beta = 1.0f});
  ops::column_sum(grad_down_bias, da, 1.0f);
  if (!ln_before()) {
    ops::matmul(dz, da, down_weight, {.transpose_b = false});  // dz = da·Wd
    return;
  }
  Tensor dzn = ws.take({N, C}, DType::F32, "bottleneck.d_z_norm");
  ops::matmul(dzn, da, down_weight, {.transpose_b = false});
  detail::layer_norm_backward(dz, grad_ln_weight, grad_ln_bias, dzn, z, stats, ln_weight, ws);
}

}  // namespace adapt::adapters
