// Host launcher of one AdamW step on the device over fp32 master weights and moments (src/optim/adamw.h:
// PyTorch's single-tensor AdamW, decoupled weight decay, bias correction), with an optional copy of
// the updated weights in bf16/f16 for the forward pass. The scalars come from adamw_scalars
// (launch_plan.h), computed on the host exactly as src/optim does; the elementwise update uses the
// same f32 operations in the same order, each rounded on its own (no fused multiply-add), so it gives
// the CPU optimiser's bits.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "dtype/dtype.h"
#include "kernels/launch_plan.h"

namespace adapt::kernels {

/// For i < n: p ← p·decay; m ← m·β1 + g·(1 − β1); v ← v·β2 + g·g·(1 − β2);
/// p ← p − step_size · m / (sqrt(v) / bc2_sqrt + eps); then copy[i] = p rounded to copy_dtype when
/// `copy` is not null (bf16, f16 or f32). All pointers are device memory; param, m, v are updated in place.
void launch_adamw_step(float* param, const float* grad, float* m, float* v, void* copy, DType copy_dtype,
                       std::int64_t n, const AdamWScalars& s, cudaStream_t stream);

}  // namespace adapt::kernels
