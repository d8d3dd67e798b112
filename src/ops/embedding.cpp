#include "ops/embedding.h"

#include <vector>

#include "core/error.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/embedding_cuda.h"
#endif

namespace adapt::ops {

namespace {
template <typename Id>
void check_ids(const Id* ids, std::int64_t n, std::int64_t V, const Tensor& table, const Tensor& ids_t) {
  for (std::int64_t i = 0; i < n; ++i) {
    ADAPT_REQUIRE(ids[i] >= 0 && ids[i] < V, ShapeError,
                  "embedding_forward: token id {} at flat position {} of '{}' is outside the vocabulary [0, {}) of "
                  "'{}'; the tokenizer does not belong to this model, or the ids are corrupt",
                  static_cast<std::int64_t>(ids[i]), i, ids_t.name(), V, table.name());
  }
}
}  // namespace

void embedding_forward(Tensor& out, const Tensor& table, const Tensor& ids) {
  constexpr const char* op = "embedding_forward";
  detail::require_same_device(op, out, {&table, &ids});
#if ADAPT_HAVE_CUDA
  if (!out.device().host_accessible()) return cuda::embedding_forward(out, table, ids);
#endif
  if (!detail::on_cpu(op, out)) return;
  ADAPT_REQUIRE(ids.dtype() == DType::I32 || ids.dtype() == DType::I64, ShapeError,
                "embedding_forward: token ids '{}' have dtype {}; i32 or i64 was expected", ids.name(),
                dtype_name(ids.dtype()));
  detail::require_contiguous(op, ids);
  ADAPT_REQUIRE(table.dtype() == DType::F32 || table.dtype() == DType::BF16, ShapeError,
                "embedding_forward: table '{}' has dtype {}; f32 or bf16 was expected", table.name(),
                dtype_name(table.dtype()));
  detail::require_contiguous(op, table);
  ADAPT_REQUIRE(table.rank() == 2, ShapeError, "embedding_forward: table '{}' has shape {}; (V, C) was expected",
                table.name(), table.shape().str());
  const std::int64_t V = table.dim(0), C = table.dim(1), n = ids.numel();
  std::vector<std::int64_t> want = ids.shape().to_vector();
  want.push_back(C);
  detail::require_shape(op, out, Shape(want), "ids' shape followed by the embedding width C");
  const detail::MatrixView O = detail::as_matrix(op, out);
  const std::int32_t* ids32 = ids.dtype() == DType::I32 ? ids.data<std::int32_t>() : nullptr;
  const std::int64_t* ids64 = ids.dtype() == DType::I64 ? ids.data<std::int64_t>() : nullptr;
  if (ids32) check_ids(ids32, n, V, table, ids);
  if (ids64) check_ids(ids64, n, V, table, ids);
  cpu::embedding_forward(O.data, O.ld, table.raw(), table.dtype() == DType::BF16, C, ids32, ids64, n);
}

}  // namespace adapt::ops
