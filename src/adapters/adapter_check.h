// Shape and dtype checks for the tensors the hook hands to adapters (internal to adapters/).
#pragma once

#include <cstdint>

#include "tensor/tensor.h"

namespace adapt::adapters {

/// Rows of a 2-D, contiguous, f32 host tensor; ShapeError naming `op` and `what` otherwise.
std::int64_t matrix_rows(const char* op, const Tensor& t, const char* what);
/// ShapeError unless t is a contiguous f32 host (rows, cols) matrix.
void check_matrix(const char* op, const Tensor& t, std::int64_t rows, std::int64_t cols, const char* what);

}  // namespace adapt::adapters
