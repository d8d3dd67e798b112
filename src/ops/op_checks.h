// Shared argument checks of the op entry points (internal to ops/): device dispatch errors, dtype and
// shape checks with the op and tensor names in the message, and the matrix view every CPU kernel
// takes (rows with a common stride, unit stride along the last dimension).
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace adapt::ops::detail {

/// True when the op runs on the CPU path for `t`. Throws UnsupportedError naming `op` for device
/// tensors: without CUDA compiled in the message says how to rebuild; with CUDA it says the op has no
/// device implementation yet.
bool on_cpu(const char* op, const Tensor& t);
/// ShapeError unless every tensor lives on the same device as `first`.
void require_same_device(const char* op, const Tensor& first, std::initializer_list<const Tensor*> others);
void require_dtype(const char* op, const Tensor& t, DType dtype);
void require_contiguous(const char* op, const Tensor& t);
/// ShapeError "op: 'name' has shape (..) but (..) was expected (what)".
void require_shape(const char* op, const Tensor& t, const Shape& expected, const char* what);

/// A rows x cols f32 matrix in host memory: element (r, c) at data[r * ld + c].
struct MatrixView {
  float* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t ld = 0;
};
/// Views `t` (rank >= 1, f32) as a matrix whose rows are all leading dimensions flattened. Accepts
/// views (e.g. one position of every sequence) when the last dimension has unit stride and the
/// leading dimensions collapse to one row stride; ShapeError naming `op` otherwise.
MatrixView as_matrix(const char* op, const Tensor& t);

/// The same for any dtype (the caller checks it): data points at the first element.
struct RawMatrixView {
  void* data = nullptr;
  std::int64_t rows = 0;
  std::int64_t cols = 0;
  std::int64_t ld = 0;
};
RawMatrixView as_matrix_raw(const char* op, const Tensor& t);

}  // namespace adapt::ops::detail
