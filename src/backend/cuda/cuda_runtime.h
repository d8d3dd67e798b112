// CUDA runtime glue: checked calls (ADAPT_CUDA_CHECK), device discovery and selection, streams and
// events (RAII; event timing), and the caching device and pinned-host allocators (CachingAllocator
// over cudaMalloc / cudaHostAlloc). Only backend/cuda, ops/cuda and comm/nccl include CUDA headers.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "backend/caching_allocator.h"
#include "core/error.h"
#include "tensor/storage.h"

/// Checks a CUDA runtime call; throws CudaError with the call text, error name and string, device.
#define ADAPT_CUDA_CHECK(expr)                                                            \
  do {                                                                                    \
    cudaError_t adapt_err_ = (expr);                                                      \
    if (adapt_err_ != cudaSuccess) {                                                      \
      int adapt_dev_ = -1;                                                                \
      cudaGetDevice(&adapt_dev_);                                                         \
      ADAPT_THROW(::adapt::CudaError, "{} failed on cuda:{}: {} ({})", #expr, adapt_dev_, \
                  cudaGetErrorName(adapt_err_), cudaGetErrorString(adapt_err_));          \
    }                                                                                     \
  } while (0)

namespace adapt::backend::cuda {

int device_count();
std::string unavailable_reason();
std::string device_name(int index);
/// UnsupportedError unless 0 <= index < device_count(); the message names the index and the count.
void require_device(int index);
/// Makes cuda:index current for the calling thread (checked as by require_device).
void set_device(int index);
int current_device();
/// Free and total memory of cuda:index (cudaMemGetInfo).
MemoryInfo device_memory_info(int index);

/// Makes cuda:index current for a scope and restores the previous device on exit.
class DeviceGuard {
 public:
  explicit DeviceGuard(int index);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

/// The caching allocator of cuda:index (created on first use, lives until the process exits).
CachingAllocator& device_allocator(int index);
/// True once device_allocator() was first used in this process (before that, no device memory came
/// from it, and backend::pointer_device answers "host" without a CUDA call).
bool device_allocators_made();
/// The caching allocator of page-locked host memory (cudaHostAlloc, portable to every device).
/// Blocks are cached per stream id 0: the caller synchronises an asynchronous copy before freeing.
CachingAllocator& pinned_host_allocator();

void memcpy_sync(void* dst, const void* src, std::size_t n_bytes);
void synchronize(int index);
/// "CUDA runtime 13.0, cuBLASLt 13.0.1, NCCL 2.28.9": the libraries linked into this binary.
std::string library_versions();

/// An owned, non-blocking CUDA stream on one device.
class Stream {
 public:
  /// On the current device.
  Stream();
  /// On cuda:device (the current device is left unchanged).
  explicit Stream(int device);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  cudaStream_t get() const { return stream_; }
  StreamId id() const { return reinterpret_cast<StreamId>(stream_); }
  int device() const { return device_; }
  void synchronize() const;
  /// True when all work queued so far is done.
  bool query() const;

 private:
  cudaStream_t stream_ = nullptr;
  int device_ = 0;
};

/// An owned CUDA event on the current device. With timing (the default) it can measure the time
/// between two recorded events; without, it is cheaper for pure ordering.
class Event {
 public:
  explicit Event(bool timing = true);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  cudaEvent_t get() const { return event_; }
  void record(cudaStream_t stream);
  /// Makes `stream` wait for the work recorded before this event (no host blocking).
  void block(cudaStream_t stream) const;
  void synchronize() const;
  /// True when the recorded work is done.
  bool query() const;
  /// Milliseconds from `start` to this event; both recorded with timing, this one completed (call
  /// synchronize() first).
  float elapsed_ms_since(const Event& start) const;

 private:
  cudaEvent_t event_ = nullptr;
  bool timing_ = true;
};

}  // namespace adapt::backend::cuda
