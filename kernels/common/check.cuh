// Launch-error check for kernels: throws CudaError with the launch site, the CUDA error name and text.
//
// A launch check sees configuration errors only; a fault inside a kernel (an illegal address) surfaces
// at the next synchronising call, named after that call. ADAPT_CUDA_SYNC_CHECK=1 in the environment
// makes every launch check wait for the device too, so such a fault is reported at the first checked
// launch after it: that kernel, or a GEMM or copy queued since the launch checked before (slow: for
// finding a fault, not for runs).
#pragma once

#include <cuda_runtime.h>

#include <cstdlib>
#include <string_view>

#include "core/error.h"

namespace adapt::kernels {

/// ADAPT_CUDA_SYNC_CHECK set to anything but "" or "0": launch checks synchronise the device.
inline bool launch_sync_check() {
  static const bool on = [] {
    const char* v = std::getenv("ADAPT_CUDA_SYNC_CHECK");
    return v != nullptr && *v != '\0' && std::string_view(v) != "0";
  }();
  return on;
}

}  // namespace adapt::kernels

#define ADAPT_CUDA_LAUNCH_CHECK(what)                                                                     \
  do {                                                                                                    \
    cudaError_t err_ = cudaGetLastError();                                                                \
    if (err_ != cudaSuccess)                                                                              \
      ADAPT_THROW(::adapt::CudaError, "kernel launch '{}' failed: {} ({})", what, cudaGetErrorName(err_), \
                  cudaGetErrorString(err_));                                                              \
    if (::adapt::kernels::launch_sync_check() && (err_ = cudaDeviceSynchronize()) != cudaSuccess)         \
      ADAPT_THROW(::adapt::CudaError,                                                                     \
                  "device fault at or before kernel '{}' (after the previous checked launch; GEMMs and "  \
                  "copies are not checked): {} ({}; ADAPT_CUDA_SYNC_CHECK)",                              \
                  what, cudaGetErrorName(err_), cudaGetErrorString(err_));                                \
  } while (0)

namespace adapt::kernels {
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
}  // namespace adapt::kernels
