#include "ops/cuda/softmax_cuda.h"

#include "kernels/softmax.h"
#include "ops/cuda/cuda_op_checks.h"

namespace adapt::ops::cuda {

void softmax_forward(Tensor& y, const Tensor& x, bool log) {
  const char* op = log ? "log_softmax_forward" : "softmax_forward";
  detail::require_device_contiguous(op, y, {&x});
  detail::require_dtype(op, x, DType::F32);
  detail::require_dtype(op, y, DType::F32);
  kernels::launch_softmax_forward(detail::f32_ptr(y), detail::f32_ptr(x), detail::rows_of(x), x.dim(-1), log, nullptr);
}

}  // namespace adapt::ops::cuda
