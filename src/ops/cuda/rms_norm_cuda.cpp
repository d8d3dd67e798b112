#include "ops/cuda/rms_norm_cuda.h"

#include "backend/backend.h"
#include "kernels/rms_norm.h"
#include "ops/cuda/cuda_op_checks.h"

namespace adapt::ops::cuda {

void rms_norm_forward(Tensor& y, const Tensor& x, const Tensor& w, float eps, Tensor* rstd) {
  constexpr const char* op = "rms_norm_forward";
  detail::require_device_contiguous(op, y, {&x, &w, rstd});
  detail::require_float(op, x);
  detail::require_dtype(op, y, x.dtype());
  detail::require_dtype(op, w, DType::F32);
  ADAPT_REQUIRE(detail::same_matrix(y, x), ShapeError, "{}: output '{}' {} and input '{}' {} differ", op, y.name(),
                y.shape().str(), x.name(), x.shape().str());
  const std::int64_t cols = x.dim(-1), rows = detail::rows_of(x);
  ADAPT_REQUIRE(w.rank() == 1 && w.dim(0) == cols, ShapeError, "{}: weight '{}' {} must be ({})", op, w.name(),
                w.shape().str(), cols);
  if (rstd) {
    detail::require_dtype(op, *rstd, DType::F32);
    ADAPT_REQUIRE(rstd->numel() == rows, ShapeError, "{}: rstd '{}' {} must hold one value per row ({})", op,
                  rstd->name(), rstd->shape().str(), rows);
  }
  kernels::launch_rms_norm_forward(y.raw(), detail::f32_ptr(rstd), x.raw(), detail::f32_ptr(w), rows, cols, eps,
                                   x.dtype(), nullptr);
}

void rms_norm_backward(Tensor& dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                       const RmsNormBackwardOptions& opts) {
  constexpr const char* op = "rms_norm_backward";
  detail::require_device_contiguous(op, dx, {&dy, &x, &w, &rstd, dw});
  detail::require_float(op, x);
  detail::require_dtype(op, dx, x.dtype());
  detail::require_dtype(op, dy, x.dtype());
  for (const Tensor* t : {&w, &rstd}) detail::require_dtype(op, *t, DType::F32);
  ADAPT_REQUIRE(detail::same_matrix(dx, x) && detail::same_matrix(dy, x), ShapeError,
                "{}: dx '{}' {}, dy '{}' {} and x '{}' {} must have the same shape", op, dx.name(), dx.shape().str(),
                dy.name(), dy.shape().str(), x.name(), x.shape().str());
  const std::int64_t cols = x.dim(-1), rows = detail::rows_of(x);
  ADAPT_REQUIRE(w.numel() == cols && rstd.numel() == rows, ShapeError,
                "{}: weight '{}' {} must hold {} values and rstd '{}' {} one per row ({})", op, w.name(),
                w.shape().str(), cols, rstd.name(), rstd.shape().str(), rows);
  Tensor workspace;
  if (dw) {
    detail::require_dtype(op, *dw, DType::F32);
    ADAPT_REQUIRE(dw->numel() == cols, ShapeError, "{}: dw '{}' {} must hold {} values", op, dw->name(),
                  dw->shape().str(), cols);
    const std::int64_t ws = kernels::rms_norm_backward_workspace_elems(rows, cols);
    if (ws > 0)
      workspace = Tensor::empty({ws}, DType::F32, backend::cuda_allocator(dx.device().index), "rms_norm_dw_partial");
  }
  kernels::launch_rms_norm_backward(
      dx.raw(), detail::f32_ptr(dw), workspace.defined() ? detail::f32_ptr(workspace) : nullptr, dy.raw(), x.raw(),
      detail::f32_ptr(w), detail::f32_ptr(rstd), rows, cols, opts.accumulate, x.dtype(), nullptr);
  // The workspace goes back to the caching allocator, whose blocks are ordered on the default stream.
}

}  // namespace adapt::ops::cuda
