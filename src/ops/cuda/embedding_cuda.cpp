#include "ops/cuda/embedding_cuda.h"

#include <vector>

#include "kernels/embedding.h"
#include "ops/cuda/cuda_op_checks.h"

namespace adapt::ops::cuda {

namespace {
// Checks ids against [0, vocab_size) and `rows` (ids' shape + C) against the table's width.
void check_lookup(const char* op, const Tensor& table, const Tensor& rows, const Tensor& ids, std::int64_t vocab_begin,
                  std::int64_t& vocab_size) {
  detail::require_ids(op, ids);
  ADAPT_REQUIRE(table.rank() == 2, ShapeError, "{}: table '{}' has shape {}; (V, C) was expected", op, table.name(),
                table.shape().str());
  if (vocab_size < 0) vocab_size = vocab_begin + table.dim(0);
  ADAPT_REQUIRE(vocab_begin >= 0 && vocab_begin + table.dim(0) <= vocab_size, ShapeError,
                "{}: table '{}' rows [{}, {}) do not fit the vocabulary of {}", op, table.name(), vocab_begin,
                vocab_begin + table.dim(0), vocab_size);
  std::vector<std::int64_t> want = ids.shape().to_vector();
  want.push_back(table.dim(1));
  ADAPT_REQUIRE(rows.shape() == Shape(want), ShapeError, "{}: '{}' has shape {} but {} was expected (ids' shape, C)",
                op, rows.name(), rows.shape().str(), Shape(want).str());
  const std::vector<std::int64_t> host = detail::ids_to_host(ids);
  for (std::size_t i = 0; i < host.size(); ++i) {
    ADAPT_REQUIRE(host[i] >= 0 && host[i] < vocab_size, ShapeError,
                  "{}: token id {} at flat position {} of '{}' is outside the vocabulary [0, {}); the tokenizer does "
                  "not belong to this model, or the ids are corrupt",
                  op, host[i], i, ids.name(), vocab_size);
  }
}
}  // namespace

void embedding_forward(Tensor& out, const Tensor& table, const Tensor& ids, std::int64_t vocab_begin,
                       std::int64_t vocab_size) {
  constexpr const char* op = "embedding_forward";
  detail::require_device_contiguous(op, out, {&table, &ids});
  detail::require_float(op, out);
  detail::require_float(op, table);
  check_lookup(op, table, out, ids, vocab_begin, vocab_size);
  kernels::launch_embedding_forward(out.raw(), out.dtype(), table.raw(), table.dtype(), ids.raw(), ids.dtype(),
                                    ids.numel(), table.dim(1), vocab_begin, table.dim(0), nullptr);
}

void embedding_backward(Tensor& dtable, const Tensor& dout, const Tensor& ids, std::int64_t vocab_begin,
                        std::int64_t vocab_size) {
  constexpr const char* op = "embedding_backward";
  detail::require_device_contiguous(op, dtable, {&dout, &ids});
  detail::require_dtype(op, dtable, DType::F32);
  detail::require_float(op, dout);
  check_lookup(op, dtable, dout, ids, vocab_begin, vocab_size);
  kernels::launch_embedding_backward(detail::f32_ptr(dtable), dout.raw(), dout.dtype(), ids.raw(), ids.dtype(),
                                     ids.numel(), dtable.dim(1), vocab_begin, dtable.dim(0), nullptr);
}

}  // namespace adapt::ops::cuda
