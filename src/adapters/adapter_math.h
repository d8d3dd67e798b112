// The elementwise and row math of the adapters (internal to adapters/), one entry point per step, each
// dispatching on the tensors' device: the CPU loops (the reference, bit for bit what LoraAdapter and
// BottleneckAdapter always computed) or the CUDA kernels of kernels/adapter_ops.h (through
// adapters/cuda/adapter_math_cuda.h). All tensors are contiguous f32 on one device; `ws` (on that
// device) provides scratch memory.
#pragma once

#include <functional>

#include "adapters/adapter_config.h"
#include "adapters/lora_adapter.h"
#include "ops/workspace.h"
#include "tensor/tensor.h"

namespace adapt::adapters::detail {

/// out (N, in) = mask ⊙ x / (1 − p) (out may alias x).
void lora_dropout_apply(Tensor& out, const Tensor& x, const LoraDropout& dropout);
/// dx (N, in) += mask ⊙ g / (1 − p): dropped elements leave dx unchanged.
void lora_dropout_accumulate(Tensor& dx, const Tensor& g, const LoraDropout& dropout);

/// y (N, C) += alpha · bias (C) on every row (alpha · bias rounded to f32 first).
void bias_add_scaled(Tensor& y, const Tensor& bias, float alpha, ops::Workspace& ws);

/// out = act(pre), elementwise (out may alias pre).
void activation_forward(Tensor& out, const Tensor& pre, BnActivation act);
/// grad *= act'(pre), elementwise.
void activation_backward(Tensor& grad, const Tensor& pre, BnActivation act);

/// out (N, C) = LayerNorm(z) with weight w and bias b (C), eps; stats (N, 2) receives each row's
/// (mean, 1/σ) in f32.
void layer_norm_forward(Tensor& out, Tensor& stats, const Tensor& z, const Tensor& w, const Tensor& b, double eps);
/// From the gradient dzn of the LayerNorm output: dz (N, C) = the input gradient (overwritten);
/// dw += Σ_rows dzn ⊙ ẑ and db += Σ_rows dzn (C).
void layer_norm_backward(Tensor& dz, Tensor& dw, Tensor& db, const Tensor& dzn, const Tensor& z, const Tensor& stats,
                         const Tensor& w, ops::Workspace& ws);

/// A copy of t (same shape, dtype and name) in the memory of `alloc` (synchronous).
Tensor copy_to(const Tensor& t, Allocator& alloc);
/// Runs `fill` on t when it is in host memory, otherwise on a host tensor of t's shape whose values
/// are then copied into t: initial values are always drawn on the host.
void fill_on_host(Tensor& t, const std::function<void(Tensor&)>& fill);

}  // namespace adapt::adapters::detail
