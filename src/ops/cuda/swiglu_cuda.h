// CUDA glue for ops::swiglu_forward / swiglu_backward: same-shape contiguous f32, bf16 or f16 tensors
// on one device, kernels/swiglu.h on the default stream.
#pragma once

#include "tensor/tensor.h"

namespace adapt::ops::cuda {

void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up);
void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate, const Tensor& up);

}  // namespace adapt::ops::cuda
