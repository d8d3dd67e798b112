// SwiGLU, the Llama MLP's activation: silu(gate) ⊙ up, with silu(z) = z / (1 + exp(−z)) as torch
// computes it.
#pragma once

#include "tensor/tensor.h"

namespace adapt::ops {

/// out (.., F) = silu(gate) ⊙ up, f32; gate, up (.., F). out may alias gate or up.
void swiglu_forward(Tensor& out, const Tensor& gate, const Tensor& up);

}  // namespace adapt::ops
