// CUDA glue for ops::softmax_forward / log_softmax_forward: contiguous f32 (.., V) on one device,
// kernels/softmax.h on the default stream.
#pragma once

#include "tensor/tensor.h"

namespace adapt::ops::cuda {

void softmax_forward(Tensor& y, const Tensor& x, bool log);

}  // namespace adapt::ops::cuda
