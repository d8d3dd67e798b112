// CUDA runtime glue: checked calls (ADAPT_CUDA_CHECK), device discovery, device and pinned-host
// allocators, streams. Only backend/cuda, ops/cuda and comm/nccl include CUDA headers.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "core/error.h"
#include "tensor/storage.h"

/// Checks a CUDA runtime call; throws CudaError with the call text, error name and string, device.
#define ADAPT_CUDA_CHECK(expr)                                                                          \
  do {                                                                                                  \
    cudaError_t adapt_err_ = (expr);                                                                    \
    if (adapt_err_ != cudaSuccess) {                                                                    \
      int adapt_dev_ = -1;                                                                              \
      cudaGetDevice(&adapt_dev_);                                                                       \
      ADAPT_THROW(::adapt::CudaError, "{} failed on cuda:{}: {} ({})", #expr, adapt_dev_,               \
                  cudaGetErrorName(adapt_err_), cudaGetErrorString(adapt_err_));                        \
    }                                                                                                   \
  } while (0)

namespace adapt::backend::cuda {

int device_count();
std::string unavailable_reason();
std::string device_name(int index);
Allocator& pinned_host_allocator();
Allocator& device_allocator(int index);
void memcpy_sync(void* dst, const void* src, std::size_t n_bytes);
void synchronize(int index);
/// "CUDA runtime 13.0, cuBLASLt 13.0.1, NCCL 2.28.9": the libraries linked into this binary.
std::string library_versions();

/// An owned CUDA stream on the current device.
class Stream {
 public:
  Stream();
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  void synchronize() const;

 private:
  cudaStream_t stream_ = nullptr;
};

}  // namespace adapt::backend::cuda
