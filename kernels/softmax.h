// Host launchers of softmax and log-softmax over the last dimension on the device (src/ops/softmax.h):
// f32 rows, the row maximum subtracted first, Σ exp in double as the CPU op does.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace adapt::kernels {

/// y[r, :] = softmax(x[r, :]) (or log-softmax with `log`) for rows × cols contiguous f32; y may alias x.
void launch_softmax_forward(float* y, const float* x, std::int64_t rows, std::int64_t cols, bool log,
                            cudaStream_t stream);

}  // namespace adapt::kernels
