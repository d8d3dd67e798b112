// Entry point of the RMSNorm backward: shape and dtype checks, then cpu::rms_norm_backward.
#include "core/error.h"
#include "ops/cpu/backward_cpu.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/rms_norm_cuda.h"
#endif
#include "ops/rms_norm.h"

namespace adapt::ops {

void rms_norm_backward(Tensor& dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                       const RmsNormBackwardOptions& opts) {
  constexpr const char* op = "rms_norm_backward";
  detail::require_same_device(op, dx, {&dy, &x, &w, &rstd});
  if (dw) detail::require_same_device(op, dx, {dw});
#if ADAPT_HAVE_CUDA
  if (!dx.device().host_accessible()) return cuda::rms_norm_backward(dx, dw, dy, x, w, rstd, opts);
#endif
  if (!detail::on_cpu(op, dx)) return;
  const detail::MatrixView DX = detail::as_matrix(op, dx), DY = detail::as_matrix(op, dy), X = detail::as_matrix(op, x);
  ADAPT_REQUIRE(DX.rows == X.rows && DX.cols == X.cols && DY.rows == X.rows && DY.cols == X.cols, ShapeError,
                "rms_norm_backward: dx '{}' {}, dy '{}' {} and x '{}' {} must have the same shape", dx.name(),
                dx.shape().str(), dy.name(), dy.shape().str(), x.name(), x.shape().str());
  for (const Tensor* t : {&w, &rstd}) {
    detail::require_dtype(op, *t, DType::F32);
    detail::require_contiguous(op, *t);
  }
  detail::require_shape(op, w, Shape{X.cols}, "one weight per column of x");
  detail::require_shape(op, rstd, Shape{X.rows}, "one saved rstd per row of x (rms_norm_forward)");
  float* dw_data = nullptr;
  if (dw) {
    detail::require_dtype(op, *dw, DType::F32);
    detail::require_contiguous(op, *dw);
    detail::require_shape(op, *dw, Shape{X.cols}, "one gradient per weight");
    dw_data = dw->data<float>();
  }
  cpu::rms_norm_backward(DX.data, DX.ld, opts.accumulate, dw_data, DY.data, DY.ld, X.data, X.ld, w.data<float>(),
                         rstd.data<float>(), X.rows, X.cols);
}

}  // namespace adapt::ops
