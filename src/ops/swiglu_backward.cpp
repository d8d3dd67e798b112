// Entry point of the SwiGLU backward: shape checks, then cpu::swiglu_backward.
#include "core/error.h"
#include "ops/cpu/backward_cpu.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/swiglu_cuda.h"
#endif
#include "ops/swiglu.h"

namespace adapt::ops {

void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate, const Tensor& up) {
  constexpr const char* op = "swiglu_backward";
  detail::require_same_device(op, dgate, {&dup, &dout, &gate, &up});
#if ADAPT_HAVE_CUDA
  if (!dgate.device().host_accessible()) return cuda::swiglu_backward(dgate, dup, dout, gate, up);
#endif
  if (!detail::on_cpu(op, dgate)) return;
  const detail::MatrixView DG = detail::as_matrix(op, dgate), DU = detail::as_matrix(op, dup),
                           DO = detail::as_matrix(op, dout), G = detail::as_matrix(op, gate),
                           U = detail::as_matrix(op, up);
  for (const detail::MatrixView* m : {&DG, &DU, &DO, &U}) {
    ADAPT_REQUIRE(
        m->rows == G.rows && m->cols == G.cols, ShapeError,
        "swiglu_backward: dgate '{}' {}, dup '{}' {}, dout '{}' {}, gate '{}' {} and up '{}' {} must have the "
        "same shape",
        dgate.name(), dgate.shape().str(), dup.name(), dup.shape().str(), dout.name(), dout.shape().str(), gate.name(),
        gate.shape().str(), up.name(), up.shape().str());
  }
  cpu::swiglu_backward(DG.data, DG.ld, DU.data, DU.ld, DO.data, DO.ld, G.data, G.ld, U.data, U.ld, G.rows, G.cols);
}

}  // namespace adapt::ops
