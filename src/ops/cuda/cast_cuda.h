// CUDA glue for ops::cast: checks contiguity and calls kernels::launch_cast.
#pragma once

#include "tensor/tensor.h"

namespace adapt::ops::cuda {

void cast(Tensor& dst, const Tensor& src);

}  // namespace adapt::ops::cuda
