// Device discovery, allocators and copies that work whether or not CUDA is compiled in. CPU-only
// builds answer "no device" with the reason, so callers and GPU tests can say why they skip.
#pragma once

#include <string>

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

/// Page-locked host memory for fast, asynchronous host<->device copies. Needs a CUDA device;
/// UnsupportedError (with the reason) otherwise.
Allocator& pinned_host_allocator();
/// Device memory on cuda:`index`. UnsupportedError when CUDA is not available.
Allocator& cuda_allocator(int index);

/// Copies `src` into `dst` (same shape and dtype, both contiguous) between any two devices,
/// synchronously.
void copy(Tensor& dst, const Tensor& src);

/// Blocks until all work queued on cuda:`index` is done (no-op without CUDA).
void synchronize(int index);

}  // namespace adapt::backend
