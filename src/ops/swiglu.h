// SwiGLU, the Llama MLP's activation: silu(gate) ⊙ up, with silu(z) = z / (1 + exp(−z)) as torch
// computes it.
#pragma once

#include "tensor/tensor.h"

namespace adapt::ops {

/// out (.., F) = silu(gate) ⊙ up, f32; gate, up (.., F). out may alias gate or up.
void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up);

/// The backward (SPEC §3.8), f32: dgate = dout ⊙ up ⊙ silu'(gate) with silu'(z) = σ(z)·(1 + z·(1 − σ(z))),
/// dup = dout ⊙ silu(gate). All (.., F). dgate may alias gate and dup may alias up, so the forward's
/// saved pre-activations can take their own gradients in place.
void swiglu_backward(Tensor& dgate, Tensor& dup, const Tensor& dout, const Tensor& gate, const Tensor& up);

}  // namespace adapt::ops
