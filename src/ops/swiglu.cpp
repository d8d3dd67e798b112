#include "ops/swiglu.h"

#include "core/error.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/swiglu_cuda.h"
#endif

namespace adapt::ops {

void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up) {
  constexpr const char* op = "swiglu_forward";
  detail::require_same_device(op, out, {&gate, &up});
#if ADAPT_HAVE_CUDA
  if (!out.device().host_accessible()) return cuda::swiglu_forward(out, gate, up);
#endif
  if (!detail::on_cpu(op, out)) return;
  const detail::MatrixView O = detail::as_matrix(op, out), G = detail::as_matrix(op, gate),
                           U = detail::as_matrix(op, up);
  ADAPT_REQUIRE(G.rows == U.rows && G.cols == U.cols && O.rows == G.rows && O.cols == G.cols, ShapeError,
                "swiglu_forward: gate '{}' {}, up '{}' {} and out '{}' {} must have the same shape", gate.name(),
                gate.shape().str(), up.name(), up.shape().str(), out.name(), out.shape().str());
  cpu::swiglu_forward(O.data, O.ld, G.data, G.ld, U.data, U.ld, O.rows, O.cols);
}

}  // namespace adapt::ops
