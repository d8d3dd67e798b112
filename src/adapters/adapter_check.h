// Shape, dtype and device checks for the tensors the hook hands to adapters (internal to adapters/).
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace adapt::adapters {

/// Rows of a 2-D, contiguous, f32 tensor (host or device); ShapeError naming `op` and `what` otherwise.
std::int64_t matrix_rows(const char* op, const Tensor& t, const char* what);
/// ShapeError unless t is a contiguous f32 (rows, cols) matrix.
void check_matrix(const char* op, const Tensor& t, std::int64_t rows, std::int64_t cols, const char* what);
/// ShapeError unless t lives on `device`, the device of the adapter parameters.
void check_device(const char* op, const Tensor& t, Device device, const char* what);

}  // namespace adapt::adapters
