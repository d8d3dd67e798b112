// OffloadCopier: asynchronous copies between a device and host RAM, with their ordering against the
// compute stream: the optimizer state offloaded to host RAM (optim/offload_adamw.h, train/dp_optimizer.h)
// and the KV cache's layers spilled to host RAM (model/kv_cache.h). CUDA-free interface: the host
// version copies at once (device == host), the CUDA version (cuda/offload_copier_cuda.cpp, built with
// ADAPT_HAVE_CUDA) queues cudaMemcpyAsync on its own copy stream into pinned memory and orders it
// against the compute stream with events, as llm.c's zero.cuh.
// Thread-safe: the training thread queues gradient copies while the CPU AdamW's thread queues
// write-backs (optim.overlap); every call takes the copier's lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "tensor/storage.h"

namespace adapt::backend {

/// One copy of `n_bytes` from `src` (on the parameters' device) to `host_dst`, for OffloadCopier::to_host;
/// with rows > 1, `rows` such blocks, the i-th from src + i · src_pitch to host_dst + i · dst_pitch (one
/// cudaMemcpy2DAsync: e.g. a KV cache row's heads, each a run of positions at a head's stride).
struct HostCopy {
  void* host_dst = nullptr;
  const void* src = nullptr;
  std::size_t n_bytes = 0;
  std::size_t rows = 1;
  std::size_t dst_pitch = 0;  // bytes, >= n_bytes when rows > 1
  std::size_t src_pitch = 0;
};

class OffloadCopier {
 public:
  virtual ~OffloadCopier() = default;

  /// Queues `copies`, after the work already queued on `compute_stream` (a cudaStream_t; nullptr: the
  /// device's legacy default stream). Returns one ticket for all of them, for wait_host(): one event
  /// per call, however many copies (a layer's parameters go together).
  virtual std::int64_t to_host(std::span<const HostCopy> copies, void* compute_stream) = 0;
  /// Blocks the calling thread until the copy of `ticket` (and every copy queued before it) is done.
  /// Tickets are waited for from one thread (the one that queues the gradient copies).
  virtual void wait_host(std::int64_t ticket) = 0;
  /// Queues a copy of `n_bytes` from `host_src` to `dst` (on the device). `host_src` must stay unchanged
  /// until synchronize() returns.
  virtual void to_device(void* dst, const void* host_src, std::size_t n_bytes) = 0;
  /// The same for `rows` blocks of `n_bytes`, the i-th from host_src + i · src_pitch to dst + i · dst_pitch
  /// (pitches >= n_bytes), in one call.
  virtual void to_device_rows(void* dst, std::size_t dst_pitch, const void* host_src, std::size_t src_pitch,
                              std::size_t n_bytes, std::size_t rows) = 0;
  /// Makes `compute_stream` wait (without blocking the host) for every copy queued so far.
  virtual void order_before(void* compute_stream) = 0;
  /// Makes every copy queued from now on wait for the work queued so far on `compute_stream` (without
  /// blocking the host): a fence before overwriting device memory that compute may still read.
  virtual void order_after(void* compute_stream) = 0;
  /// Blocks until every queued copy is done.
  virtual void synchronize() = 0;
  /// Where the host buffers for this copier come from: pinned memory for CUDA, plain host otherwise.
  virtual Allocator& host_allocator() = 0;
  /// Makes the parameters' device current on the calling thread (a thread other than the one that made
  /// the copier, before its first call: see backend::cuda_use_device). Host copier: nothing.
  virtual void bind_thread() {}
};

/// Plain memcpy, for parameters in host memory (the CPU backend).
std::unique_ptr<OffloadCopier> offload_copier_host();
/// cudaMemcpyAsync on a copy stream of cuda:`device`. UnsupportedError in builds without CUDA (naming
/// ADAPT_CUDA) or when the device does not exist.
std::unique_ptr<OffloadCopier> offload_copier_cuda(int device);
/// The copier for parameters on `device`: CUDA for a CUDA device, host otherwise.
std::unique_ptr<OffloadCopier> offload_copier_for(Device device);

}  // namespace adapt::backend
