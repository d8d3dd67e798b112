// Casts between dtypes on any device: dispatch by the tensors' device. The CPU path is
// dtype_convert (the reference); the CUDA path calls kernels/cast and must agree bit for bit.
#pragma once

#include "tensor/tensor.h"

namespace adapt::ops {

/// dst = src converted to dst's dtype. Same shape, same device, both contiguous. Device work is
/// queued on the default stream and finished before returning.
void cast(Tensor& dst, const Tensor& src);

}  // namespace adapt::ops
