#include "adapters/cuda/adapter_math_cuda.h"

#include <initializer_list>

#include "backend/cuda/cuda_runtime.h"
#include "core/error.h"
#include "kernels/adapter_ops.h"
#include "ops/elementwise.h"

namespace adapt::adapters::detail::cuda {

namespace {

/// Every tensor a contiguous f32 tensor on first's CUDA device, which becomes the current device.
void require_device_f32(const char* op, const Tensor& first, std::initializer_list<const Tensor*> others) {
  ADAPT_REQUIRE(!first.device().host_accessible(), ShapeError, "adapter op '{}': '{}' is on {}, not a CUDA device", op,
                first.name(), first.device().str());
  auto check = [&](const Tensor& t) {
    ADAPT_REQUIRE(t.device() == first.device(), ShapeError,
                  "adapter op '{}': '{}' is on {} but '{}' is on {}; move the adapters to the model's device "
                  "(AdapterSet::to_device)",
                  op, t.name(), t.device().str(), first.name(), first.device().str());
    ADAPT_REQUIRE(t.dtype() == DType::F32 && t.is_contiguous(), ShapeError,
                  "adapter op '{}': '{}' {} must be contiguous f32 (got {}{})", op, t.name(), t.shape().str(),
                  dtype_name(t.dtype()), t.is_contiguous() ? "" : ", strided");
  };
  check(first);
  for (const Tensor* t : others) check(*t);
  backend::cuda::set_device(first.device().index);
}

void require_same_numel(const char* op, const Tensor& a, const Tensor& b) {
  ADAPT_REQUIRE(a.numel() == b.numel(), ShapeError, "adapter op '{}': '{}' {} and '{}' {} differ in size", op, a.name(),
                a.shape().str(), b.name(), b.shape().str());
}

float* f32(const Tensor& t) { return static_cast<float*>(t.raw()); }

kernels::AdapterActivation kernel_activation(BnActivation act) {
  switch (act) {
    case BnActivation::Relu: return kernels::AdapterActivation::Relu;
    case BnActivation::Swish: return kernels::AdapterActivation::Swish;
    case BnActivation::Gelu: return kernels::AdapterActivation::Gelu;
  }
  ADAPT_CHECK(false, "unknown bottleneck activation {}", static_cast<int>(act));
  return kernels::AdapterActivation::Relu;
}

/// Rows and columns of a (N, C) matrix.
struct Dims {
  std::int64_t rows, cols;
};
Dims matrix_dims(const char* op, const Tensor& t) {
  ADAPT_REQUIRE(t.rank() == 2, ShapeError, "adapter op '{}': '{}' has shape {}; a (N, width) matrix is expected", op,
                t.name(), t.shape().str());
  return {t.dim(0), t.dim(1)};
}

}  // namespace

void lora_dropout(Tensor& out, const Tensor& x, const LoraDropout& dropout, bool accumulate) {
  constexpr const char* op = "lora_dropout";
  require_device_f32(op, x, {&out});
  require_same_numel(op, out, x);
  const Dims d = matrix_dims(op, x);
  const kernels::LoraDropoutMask mask{.p = dropout.p,
                                      .keep_scale = static_cast<float>(1.0 / (1.0 - dropout.p)),
                                      .stream = dropout.stream,
                                      .width = dropout.width,
                                      .col_offset = dropout.col_offset,
                                      .row_offset = dropout.row_offset};
  kernels::launch_lora_dropout(f32(out), f32(x), d.rows, d.cols, mask, accumulate, nullptr);
}

void bias_add_scaled(Tensor& y, const Tensor& bias, float alpha) {
  constexpr const char* op = "bias_add_scaled";
  require_device_f32(op, y, {&bias});
  const Dims d = matrix_dims(op, y);
  ADAPT_REQUIRE(bias.numel() == d.cols, ShapeError, "adapter op '{}': bias '{}' {} must hold {} values", op,
                bias.name(), bias.shape().str(), d.cols);
  kernels::launch_adapter_bias_add(f32(y), f32(bias), d.rows, d.cols, alpha, nullptr);
}

void activation_forward(Tensor& out, const Tensor& pre, BnActivation act) {
  constexpr const char* op = "activation_forward";
  require_device_f32(op, pre, {&out});
  require_same_numel(op, out, pre);
  kernels::launch_adapter_activation_forward(f32(out), f32(pre), pre.numel(), kernel_activation(act), nullptr);
}

void activation_backward(Tensor& grad, const Tensor& pre, BnActivation act) {
  constexpr const char* op = "activation_backward";
  require_device_f32(op, pre, {&grad});
  require_same_numel(op, grad, pre);
  kernels::launch_adapter_activation_backward(f32(grad), f32(pre), pre.numel(), kernel_activation(act), nullptr);
}

void layer_norm_forward(Tensor& out, Tensor& stats, const Tensor& z, const Tensor& w, const Tensor& b, double eps) {
  constexpr const char* op = "layer_norm_forward";
  require_device_f32(op, z, {&out, &stats, &w, &b});
  const Dims d = matrix_dims(op, z);
  require_same_numel(op, out, z);
  ADAPT_REQUIRE(w.numel() == d.cols && b.numel() == d.cols && stats.numel() == 2 * d.rows, ShapeError,
                "adapter op '{}': weight '{}' {} and bias '{}' {} must hold {} values, stats '{}' {} two per row", op,
                w.name(), w.shape().str(), b.name(), b.shape().str(), d.cols, stats.name(), stats.shape().str());
  kernels::launch_adapter_layer_norm_forward(f32(out), f32(stats), f32(z), f32(w), f32(b), d.rows, d.cols, eps,
                                             nullptr);
}

void layer_norm_backward(Tensor& dz, Tensor& dw, Tensor& db, const Tensor& dzn, const Tensor& z, const Tensor& stats,
                         const Tensor& w, ops::Workspace& ws) {
  constexpr const char* op = "layer_norm_backward";
  require_device_f32(op, z, {&dz, &dw, &db, &dzn, &stats, &w});
  const Dims d = matrix_dims(op, z);
  require_same_numel(op, dz, z);
  require_same_numel(op, dzn, z);
  ADAPT_REQUIRE(w.numel() == d.cols && dw.numel() == d.cols && db.numel() == d.cols && stats.numel() == 2 * d.rows,
                ShapeError, "adapter op '{}': '{}', '{}' and '{}' must hold {} values, stats '{}' {} two per row", op,
                w.name(), dw.name(), db.name(), d.cols, stats.name(), stats.shape().str());
  Tensor terms = ws.take({d.rows, d.cols}, DType::F32, "adapter.ln_weight_grad_terms");
  kernels::launch_adapter_layer_norm_backward(f32(dz), f32(terms), f32(dzn), f32(z), f32(stats), f32(w), d.rows, d.cols,
                                              nullptr);
  ops::column_sum(dw, terms, 1.0f);
  ops::column_sum(db, dzn, 1.0f);
}

}  // namespace adapt::adapters::detail::cuda
