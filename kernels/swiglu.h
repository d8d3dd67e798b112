// Host launchers of SwiGLU on the device (src/ops/swiglu.h): out = silu(gate) ⊙ up with
// silu(z) = z / (1 + exp(−z)), and its backward. Elementwise over n contiguous elements of f32, bf16
// or f16 (`dtype`, the same for every tensor); math in f32.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype/dtype.h"

namespace adapt::kernels {

/// out = silu(gate) ⊙ up. out may alias gate or up.
void launch_swiglu_forward(void* out, const void* gate, const void* up, std::int64_t n, DType dtype,
                           cudaStream_t stream);

/// dgate = dout ⊙ up ⊙ σ(g)·(1 + g·(1 − σ(g))), dup = dout ⊙ silu(g). dgate may alias gate and dup
/// may alias up (each element is read before it is written, by the same thread).
void launch_swiglu_backward(void* dgate, void* dup, const void* dout, const void* gate, const void* up, std::int64_t n,
                            DType dtype, cudaStream_t stream);

}  // namespace adapt::kernels
