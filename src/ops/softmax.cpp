#include "ops/softmax.h"

#include "core/error.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/softmax_cuda.h"
#endif

namespace adapt::ops {

namespace {
void softmax_impl(const char* op, Tensor& y, const Tensor& x, bool log) {
  detail::require_same_device(op, y, {&x});
  const detail::MatrixView X = detail::as_matrix(op, x), Y = detail::as_matrix(op, y);
  ADAPT_REQUIRE(X.rows == Y.rows && X.cols == Y.cols, ShapeError, "{}: output '{}' {} and input '{}' {} differ", op,
                y.name(), y.shape().str(), x.name(), x.shape().str());
  ADAPT_REQUIRE(X.cols > 0, ShapeError, "{}: '{}' {} has an empty last dimension", op, x.name(), x.shape().str());
#if ADAPT_HAVE_CUDA
  if (!y.device().host_accessible()) return cuda::softmax_forward(y, x, log);
#endif
  if (!detail::on_cpu(op, y)) return;
  cpu::softmax_forward(Y.data, Y.ld, X.data, X.ld, X.rows, X.cols, log);
}
}  // namespace

void softmax_forward(Tensor& y, const Tensor& x) { softmax_impl("softmax_forward", y, x, false); }
void log_softmax_forward(Tensor& y, const Tensor& x) { softmax_impl("log_softmax_forward", y, x, true); }

}  // namespace adapt::ops
