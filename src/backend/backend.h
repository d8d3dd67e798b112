// Device discovery, allocators and copies that work whether or not CUDA is compiled in. CPU-only
// builds answer "no device" with the reason, so callers and GPU tests can say why they skip.
#pragma once

#include <string>

#include "backend/caching_allocator.h"
#include "tensor/tensor.h"

namespace adapt::backend {

/// Number of visible CUDA devices; 0 when none is visible or the build has no CUDA. Never throws.
int cuda_device_count();
/// Why cuda_device_count() is 0, e.g. "this binary was built with ADAPT_CUDA=OFF" or the driver's
/// message ("CUDA driver version is insufficient", "no CUDA-capable device is detected"). Empty when
/// a device is visible.
std::string cuda_unavailable_reason();
/// "NVIDIA H200 (sm_90, 139.8 GiB)" for device `index`.
std::string cuda_device_name(int index);

/// The CUDA libraries this binary links, e.g. "CUDA runtime 13.0, cuBLASLt 13.0.1, NCCL 2.28.9", or
/// why there are none. Works without a GPU.
std::string cuda_library_versions();

/// Page-locked host memory for fast, asynchronous host<->device copies, cached (CachingAllocator).
/// Needs a CUDA device; UnsupportedError (with the reason) otherwise.
Allocator& pinned_host_allocator();
/// Device memory on cuda:`index` from its caching allocator (blocks on the default stream).
/// UnsupportedError naming the index and the number of visible devices when there is no such device.
Allocator& cuda_allocator(int index);
/// Current/peak/reserved bytes and raw allocation counts of cuda:`index`'s caching allocator.
MemoryStats cuda_memory_stats(int index);
/// Free and total memory of cuda:`index` as the driver sees it (cudaMemGetInfo: what the caching
/// allocator holds counts as used); `known` = false without CUDA or when the driver does not answer.
MemoryInfo cuda_memory_info(int index);
/// Makes cuda:`index` the calling thread's current device (cudaSetDevice). A rank calls it once for its
/// GPU, and so does every thread of it that issues CUDA calls: a thread starts on device 0, and since
/// CUDA 12 switching to a device creates its context, so a rank on cuda:3 that touched device 0 would
/// hold a context (hundreds of MiB) on another rank's GPU, or fail under EXCLUSIVE_PROCESS compute mode.
/// UnsupportedError without CUDA or with no such device.
void cuda_use_device(int index);
/// Gives cuda:`index`'s wholly free cached segments back to the driver; returns the bytes released.
std::size_t cuda_empty_cache(int index);
/// The same for the pinned host allocator.
MemoryStats pinned_memory_stats();

/// Copies `src` into `dst` (same shape and dtype, both contiguous) between any two devices,
/// synchronously. On a GPU this is a cudaMemcpy on the legacy default stream: it comes after the work
/// queued there, not after copies or collectives on other streams (an OffloadCopier's, NCCL's), which
/// the caller orders first (order_before, synchronize, the collective's done event).
void copy(Tensor& dst, const Tensor& src);

/// Blocks until all work queued on cuda:`index` is done (no-op without CUDA).
void synchronize(int index);

/// The CUDA device whose memory `ptr` points into (device or managed memory), or -1 for host memory
/// (pageable, pinned or registered), for nullptr, and in builds without CUDA. Never throws. Lets
/// host-buffer code (the MPI communicator) tell device buffers apart. Until the process first uses a
/// device allocator (cuda_allocator) every pointer counts as host memory without a CUDA call (no
/// context is created for CPU runs): memory from a bare cudaMalloc before that is not recognised.
int pointer_device(const void* ptr);
/// Copies n_bytes from `src` to `dst`, each host or device memory, synchronously (after the work
/// queued on the default stream; as copy(), not after other streams' work). UnsupportedError without
/// CUDA when either side is device memory.
void copy_bytes(void* dst, const void* src, std::size_t n_bytes);
/// The identity of cuda:`index` (its UUID, 32 hex digits), equal for two processes only when they
/// use the same physical GPU; checked as cuda_allocator is.
std::string cuda_device_uuid(int index);
/// The stream the device ops enqueue their work on (CUDA's legacy default stream), as an opaque
/// cudaStream_t for NcclCommunicator::set_compute_stream; nullptr without CUDA.
void* cuda_compute_stream();

}  // namespace adapt::backend
