#include "adapters/adapter_check.h"

#include "core/error.h"

namespace adapt::adapters {

std::int64_t matrix_rows(const char* op, const Tensor& t, const char* what) {
  ADAPT_REQUIRE(t.defined(), ShapeError, "{}: {} is undefined", op, what);
  ADAPT_REQUIRE(t.rank() == 2, ShapeError, "{}: {} '{}' has shape {}; the adapter hook passes (N, width) matrices", op,
                what, t.name(), t.shape().str());
  ADAPT_REQUIRE(t.dtype() == DType::F32 && t.is_contiguous() && t.device().host_accessible(), ShapeError,
                "{}: {} '{}' must be a contiguous f32 host tensor (got {}{}, {})", op, what, t.name(),
                dtype_name(t.dtype()), t.is_contiguous() ? "" : ", strided", t.device().str());
  return t.dim(0);
}

void check_matrix(const char* op, const Tensor& t, std::int64_t rows, std::int64_t cols, const char* what) {
  matrix_rows(op, t, what);
  ADAPT_REQUIRE(t.dim(0) == rows && t.dim(1) == cols, ShapeError, "{}: {} '{}' has shape {} but ({}, {}) is expected",
                op, what, t.name(), t.shape().str(), rows, cols);
}

}  // namespace adapt::adapters
