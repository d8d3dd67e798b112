#include "adapters/lora_adapter.h"

#include <cmath>

#include "adapters/adapter_check.h"
#include "adapters/adapter_math.h"
#include "adapters/adapter_rng.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"

namespace adapt::adapters {

LoraAdapter::LoraAdapter(std::int64_t in, std::int64_t out, std::int64_t r, double scaling, const std::string& prefix)
    : a(Tensor::zeros({r, in}, DType::F32, prefix + ".lora_a")),
      b(Tensor::zeros({out, r}, DType::F32, prefix + ".lora_b")),
      grad_a(Tensor::zeros({r, in}, DType::F32, prefix + ".lora_a.grad")),
      grad_b(Tensor::zeros({out, r}, DType::F32, prefix + ".lora_b.grad")),
      scaling_(scaling) {}

void LoraAdapter::init(LoraInit init, std::uint64_t key) {
  switch (init) {
    case LoraInit::Peft: {
      // kaiming_uniform_(a=√5) on (r, in): gain √(2/(1+5)), bound = gain·√(3/in) = 1/√in.
      const double bound = 1.0 / std::sqrt(static_cast<double>(in()));
      detail::fill_on_host(a, [&](Tensor& t) { rng_fill_uniform(t, key, -bound, bound); });
      break;
    }
    case LoraInit::Gaussian:
      detail::fill_on_host(a, [&](Tensor& t) { rng_fill_normal(t, key, 1.0 / static_cast<double>(rank())); });
      break;
  }
  ops::fill(b, 0.0f);
}

void LoraAdapter::to_memory(Allocator& alloc) {
  a = detail::copy_to(a, alloc);
  b = detail::copy_to(b, alloc);
  grad_a = detail::copy_to(grad_a, alloc);
  grad_b = detail::copy_to(grad_b, alloc);
}

Tensor LoraAdapter::dropped_input(const Tensor& x, const LoraDropout& dropout, ops::Workspace& ws) const {
  if (!dropout.active()) return x;
  Tensor xd = ws.take(x.shape(), DType::F32, "lora.x_dropped");
  detail::lora_dropout_apply(xd, x, dropout);
  return xd;
}

void LoraAdapter::forward(const Tensor& x, Tensor& y, const LoraDropout& dropout, ops::Workspace& ws) const {
  const std::int64_t N = matrix_rows("lora forward", x, "x");
  check_matrix("lora forward", x, N, in(), "x");
  check_matrix("lora forward", y, N, out(), "y");
  check_device("lora forward", x, device(), "x");
  check_device("lora forward", y, device(), "y");
  const Tensor xd = dropped_input(x, dropout, ws);
  Tensor u = ws.take({N, rank()}, DType::F32, "lora.u");
  ops::matmul(u, xd, a);  // (N, r) = x̃ · Aᵀ
  ops::matmul(y, u, b, {.transpose_b = true, .alpha = static_cast<float>(scaling_), .beta = 1.0f});
}

void LoraAdapter::check_backward(const char* what, const Tensor& x, const Tensor& dy, const Tensor* dx) const {
  const std::int64_t N = matrix_rows(what, x, "x");
  check_matrix(what, x, N, in(), "x");
  check_matrix(what, dy, N, out(), "dy");
  if (dx) check_matrix(what, *dx, N, in(), "dx");
  check_device(what, x, device(), "x");
  check_device(what, dy, device(), "dy");
  if (dx) check_device(what, *dx, device(), "dx");
}

Tensor LoraAdapter::grad_u(const Tensor& dy, ops::Workspace& ws) const {
  Tensor gu = ws.take({dy.dim(0), rank()}, DType::F32, "lora.gu");
  ops::matmul(gu, dy, b, {.transpose_b = false});  // gu (N, r) = dy · B
  return gu;
}

void LoraAdapter::accumulate_grads(const Tensor& xd, const Tensor& dy, const Tensor& gu, ops::Workspace& ws) {
  const float s = static_cast<float>(scaling_);
  Tensor u = ws.take({xd.dim(0), rank()}, DType::F32, "lora.u");
  ops::matmul(u, xd, a);
  // dB (out, r) += s · dyᵀ · u
  ops::matmul(grad_b, dy, u, {.transpose_a = true, .transpose_b = false, .alpha = s, .beta = 1.0f});
  // dA (r, in) += s · guᵀ · x̃
  ops::matmul(grad_a, gu, xd, {.transpose_a = true, .transpose_b = false, .alpha = s, .beta = 1.0f});
}

void LoraAdapter::add_input_share(Tensor& dx, const Tensor& gu, const LoraDropout& dropout, ops::Workspace& ws) const {
  const float s = static_cast<float>(scaling_);
  if (!dropout.active()) {
    ops::matmul(dx, gu, a, {.transpose_b = false, .alpha = s, .beta = 1.0f});  // dx += s · gu · A
    return;
  }
  Tensor dxd = ws.take({gu.dim(0), in()}, DType::F32, "lora.dx_dropped");
  ops::matmul(dxd, gu, a, {.transpose_b = false, .alpha = s});
  detail::lora_dropout_accumulate(dx, dxd, dropout);  // dx += mask ⊙ dxd / (1 − p)
}

void LoraAdapter::backward(const Tensor& x, const Tensor& dy, Tensor& dx, const LoraDropout& dropout,
                           ops::Workspace& ws) {
  check_backward("lora backward", x, dy, &dx);
  const Tensor xd = dropped_input(x, dropout, ws);
  const Tensor gu = grad_u(dy, ws);
  accumulate_grads(xd, dy, gu, ws);
  add_input_share(dx, gu, dropout, ws);
}

void LoraAdapter::backward_input(const Tensor& x, const Tensor& dy, Tensor& dx, const LoraDropout& dropout,
                                 ops::Workspace& ws) const {
  check_backward("lora backward_input", x, dy, &dx);
  add_input_share(dx, grad_u(dy, ws), dropout, ws);
}

void LoraAdapter::backward_weights(const Tensor& x, const Tensor& dy, const LoraDropout& dropout, ops::Workspace& ws) {
  check_backward("lora backward_weights", x, dy, nullptr);
  const Tensor xd = dropped_input(x, dropout, ws);
  accumulate_grads(xd, dy, grad_u(dy, ws), ws);
}

void LoraAdapter::merge_into(Tensor& w, double sign) const {
  check_matrix("lora merge", w, out(), in(), "base weight");
  ops::matmul(w, b, a, {.transpose_b = false, .alpha = static_cast<float>(sign * scaling_), .beta = 1.0f});
}

}  // namespace adapt::adapters
