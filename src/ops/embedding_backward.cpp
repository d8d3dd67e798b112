// Entry point of the embedding backward (scatter-add): id range and shape checks, then
// cpu::embedding_backward.
#include <vector>

#include "core/error.h"
#include "ops/cpu/backward_cpu.h"
#include "ops/embedding.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/embedding_cuda.h"
#endif

namespace adapt::ops {

void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids) {
  constexpr const char* op = "embedding_backward";
  detail::require_same_device(op, dtable, {&dout, &ids});
#if ADAPT_HAVE_CUDA
  if (!dtable.device().host_accessible()) return cuda::embedding_backward(dtable, dout, ids);
#endif
  if (!detail::on_cpu(op, dtable)) return;
  ADAPT_REQUIRE(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, ShapeError,
                "embedding_backward: token ids '{}' have dtype {}; i32 or i64 was expected", ids.name(),
                dtype_name(ids.dtype()));
  detail::require_contiguous(op, ids);
  detail::require_dtype(op, dtable, DType::F32);
  detail::require_contiguous(op, dtable);
  ADAPT_REQUIRE(dtable.rank() == 2, ShapeError, "embedding_backward: dtable '{}' has shape {}; (V, C) was expected",
                dtable.name(), dtable.shape().str());
  const std::int64_t V = dtable.dim(0), C = dtable.dim(1), n = ids.numel();
  std::vector<std::int64_t> want = ids.shape().to_vector();
  want.push_back(C);
  detail::require_shape(op, dout, Shape(want), "ids' shape followed by the embedding width C");
  const detail::MatrixView DO = detail::as_matrix(op, dout);
  const std::int32_t* ids32 = ids.dtype() == DType::I32 ? ids.data<std::int32_t>() : nullptr;
  const std::int64_t* ids64 = ids.dtype() == DType::I64 ? ids.data<std::int64_t>() : nullptr;
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t id = ids32 ? ids32[i] : ids64[i];
    ADAPT_REQUIRE(
        id >= 0 && id < V, ShapeError,
        "embedding_backward: token id {} at flat position {} of '{}' is outside the vocabulary [0, {}) of '{}'", id, i,
        ids.name(), V, dtable.name());
  }
  cpu::embedding_backward(dtable.data<float>(), C, DO.data, DO.ld, ids32, ids64, n);
}

}  // namespace adapt::ops
