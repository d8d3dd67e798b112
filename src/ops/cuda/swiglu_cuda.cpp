#include "ops/cuda/swiglu_cuda.h"

#include "kernels/swiglu.h"
#include "ops/cuda/cuda_op_checks.h"

namespace adapt::ops::cuda {

namespace {
void check_same(const char* op, const Tensor& first, std::initializer_list<const Tensor*> others) {
  detail::require_device_contiguous(op, first, others);
  detail::require_float(op, first);
  for (const Tensor* t : others) {
    detail::require_dtype(op, *t, first.dtype());
    ADAPT_REQUIRE(t->shape() == first.shape(), ShapeError, "{}: '{}' {} and '{}' {} must have the same shape", op,
                  t->name(), t->shape().str(), first.name(), first.shape().str());
  }
}
}  // namespace

void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up) {
  check_same("swiglu_forward", gate, {&up, &out});
  kernels::launch_swiglu_forward(out.raw(), gate.raw(), up.raw(), gate.numel(), gate.dtype(), nullptr);
}

void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate, const Tensor& up) {
  check_same("swiglu_backward", gate, {&up, &dout, &dgate, &dup});
  kernels::launch_swiglu_backward(dgate.raw(), dup.raw(), dout.raw(), gate.raw(), up.raw(), gate.numel(), gate.dtype(),
                                  nullptr);
}

}  // namespace adapt::ops::cuda
