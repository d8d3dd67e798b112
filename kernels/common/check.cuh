// Launch-error check for kernels: throws CudaError with the launch site, the CUDA error name and text.
#pragma once

#include <cuda_runtime.h>

#include "core/error.h"

#define ADAPT_CUDA_LAUNCH_CHECK(what)                                                                   \
  do {                                                                                                  \
    cudaError_t err_ = cudaGetLastError();                                                              \
    if (err_ != cudaSuccess)                                                                            \
      ADAPT_THROW(::adapt::CudaError, "kernel launch '{}' failed: {} ({})", what, cudaGetErrorName(err_), \
                  cudaGetErrorString(err_));                                                            \
  } while (0)

namespace adapt::kernels {
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace adapt::kernels
