#include "ops/rms_norm.h"

#include "core/error.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/rms_norm_cuda.h"
#endif

namespace adapt::ops {

void rms_norm_forward(Tensor& y, const Tensor& x, const Tensor& w, float eps, Tensor* rstd) {
  constexpr const char* op = "rms_norm_forward";
  detail::require_same_device(op, y, {&x, &w});
  if (rstd) detail::require_same_device(op, y, {rstd});
#if ADAPT_HAVE_CUDA
  if (!y.device().host_accessible()) return cuda::rms_norm_forward(y, x, w, eps, rstd);
#endif
  if (!detail::on_cpu(op, y)) return;
  const detail::MatrixView X = detail::as_matrix(op, x), Y = detail::as_matrix(op, y);
  ADAPT_REQUIRE(Y.rows == X.rows && Y.cols == X.cols, ShapeError,
                "rms_norm_forward: output '{}' {} and input '{}' {} differ", y.name(), y.shape().str(), x.name(),
                x.shape().str());
  detail::require_dtype(op, w, DType::F32);
  detail::require_contiguous(op, w);
  detail::require_shape(op, w, Shape{X.cols}, "one weight per column of x");
  float* rstd_data = nullptr;
  if (rstd) {
    detail::require_dtype(op, *rstd, DType::F32);
    detail::require_contiguous(op, *rstd);
    detail::require_shape(op, *rstd, Shape{X.rows}, "one value per row of x");
    rstd_data = rstd->data<float>();
  }
  cpu::rms_norm_forward(Y.data, Y.ld, rstd_data, X.data, X.ld, w.data<float>(), X.rows, X.cols, eps);
}

}  // namespace adapt::ops
