#include "adapters/adapter_check.h"

#include "core/error.h"

namespace adapt::adapters {

std::int64_t matrix_rows(const char* op, const Tensor& t, const char* what) {
  ADAPT_REQUIRE(t.defined(), ShapeError, "{}: {} is undefined", op, what);
  ADAPT_REQUIRE(t.rank() == 2, ShapeError, "{}: {} '{}' has shape {}; the adapter hook passes (N, width) matrices", op,
                what, t.name(), t.shape().str());
  ADAPT_REQUIRE(t.dtype() == DType::F32 && t.is_contiguous(), ShapeError,
                "{}: {} '{}' must be a contiguous f32 tensor (got {}{}, {})", op, what, t.name(), dtype_name(t.dtype()),
                t.is_contiguous() ? "" : ", strided", t.device().str());
  return t.dim(0);
}

void check_matrix(const char* op, const Tensor& t, std::int64_t rows, std::int64_t cols, const char* what) {
  matrix_rows(op, t, what);
  ADAPT_REQUIRE(t.dim(0) == rows && t.dim(1) == cols, ShapeError, "{}: {} '{}' has shape {} but ({}, {}) is expected",
                op, what, t.name(), t.shape().str(), rows, cols);
}

void check_device(const char* op, const Tensor& t, Device device, const char* what) {
  // Host and pinned host memory are interchangeable for the CPU loops.
  const bool ok = t.device() == device || (t.device().host_accessible() && device.host_accessible());
  ADAPT_REQUIRE(ok, ShapeError,
                "{}: {} '{}' is on {} but the adapter parameters are on {}; move the adapters to the model's device "
                "with AdapterSet::to_device (or back with to_host)",
                op, what, t.name(), t.device().str(), device.str());
}

}  // namespace adapt::adapters
