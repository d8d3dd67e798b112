// Internal entry points shared by kernels/attention.cu (launchers, tensor-core kernels) and
// kernels/attention_generic.cu (the warp-per-row kernels). Arguments are already validated.
#pragma once

#include <cuda_runtime.h>

#include "dtype/dtype.h"
#include "kernels/attention_plan.h"

namespace adapt::kernels::attn {

inline dim3 grid_of(Grid3 g) {
  return dim3(static_cast<unsigned>(g.x), static_cast<unsigned>(g.y), static_cast<unsigned>(g.z));
}

/// q/out of type dt; k/v of type kv_dt (dt, or bf16 under f32).
void generic_forward(const AttentionForwardArgs& a, DType dt, DType kv_dt, float scale, cudaStream_t stream);
/// delta (B, H, T) = rowsum(dout ⊙ out), f32.
void backward_delta(const AttentionBackwardArgs& a, DType dt, cudaStream_t stream);
void generic_backward_dq(const AttentionBackwardArgs& a, DType dt, float scale, cudaStream_t stream);
void generic_backward_dkdv(const AttentionBackwardArgs& a, DType dt, float scale, cudaStream_t stream);

}  // namespace adapt::kernels::attn
