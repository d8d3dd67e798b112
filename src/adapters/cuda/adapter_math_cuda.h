// CUDA glue of the adapter math (adapters/adapter_math.h): checks that every tensor is a contiguous
// f32 tensor on the same CUDA device, then calls the kernels/adapter_ops.h launchers (or the
// ops/elementwise.h ops) on the default stream. Compiled only with CUDA.
#pragma once

#include "adapters/adapter_config.h"
#include "adapters/lora_adapter.h"
#include "ops/workspace.h"
#include "tensor/tensor.h"

namespace adapt::adapters::detail::cuda {

void lora_dropout(Tensor& out, const Tensor& x, const LoraDropout& dropout, bool accumulate);
void bias_add_scaled(Tensor& y, const Tensor& bias, float alpha);
void activation_forward(Tensor& out, const Tensor& pre, BnActivation act);
void activation_backward(Tensor& grad, const Tensor& pre, BnActivation act);
void layer_norm_forward(Tensor& out, Tensor& stats, const Tensor& z, const Tensor& w, const Tensor& b, double eps);
void layer_norm_backward(Tensor& dz, Tensor& dw, Tensor& db, const Tensor& dzn, const Tensor& z, const Tensor& stats,
                         const Tensor& w, ops::Workspace& ws);

}  // namespace adapt::adapters::detail::cuda
