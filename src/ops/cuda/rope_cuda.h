// CUDA glue for the ops::rope_* entry points (src/ops/rope.h): the same tables (f32, filled on the
// device from the host's inverse frequencies, model::rope_inv_freq) and the rotation of f32, bf16 or
// f16 heads in place, by kernels/rope.h on the default stream.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "tensor/tensor.h"

namespace adapt::ops::cuda {

void rope_table_fill(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq, std::int64_t pos_begin);
void rope_table_fill(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq,
                     std::span<const std::int64_t> pos_begin);
/// positions: i32 or i64 on the same device (each >= 0; checked on the host).
void rope_table_fill_positions(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq, const Tensor& positions);
void rope_forward(Tensor& x, const Tensor& cos, const Tensor& sin);
void rope_backward(Tensor& dx, const Tensor& cos, const Tensor& sin);

}  // namespace adapt::ops::cuda
