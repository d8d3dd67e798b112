// CUDA glue for ops::rms_norm_forward / rms_norm_backward: checks devices, dtypes and shapes, then
// calls kernels/rms_norm.h on the default stream. x, y, dy, dx may be f32, bf16 or f16 (all the same);
// w, rstd and dw are f32, as on the CPU.
#pragma once

#include "ops/rms_norm.h"
#include "tensor/tensor.h"

namespace adapt::ops::cuda {

void rms_norm_forward(Tensor& y, const Tensor& x, const Tensor& w, float eps, Tensor* rstd);

/// dw, when given, is reduced without atomics (the same bits on every run) and before dx is written.
void rms_norm_backward(Tensor& dx, Tensor* dw, const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                       const RmsNormBackwardOptions& opts);

}  // namespace adapt::ops::cuda
