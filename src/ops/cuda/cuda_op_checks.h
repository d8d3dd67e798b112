// Checks shared by the CUDA glue of the row ops (internal to ops/cuda/): every tensor on the same
// CUDA device and contiguous, the current device set to it; ShapeError naming the op and the tensor.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "backend/cuda/cuda_runtime.h"
#include "core/error.h"
#include "tensor/tensor.h"

namespace adapt::ops::cuda::detail {

/// Sets the current device to first's and checks that `first` and `others` (null entries skipped)
/// are contiguous tensors on that device.
inline void require_device_contiguous(const char* op, const Tensor& first,
                                      std::initializer_list<const Tensor*> others) {
  ADAPT_REQUIRE(!first.device().host_accessible(), ShapeError, "{}: '{}' is on {}, not a CUDA device", op, first.name(),
                first.device().str());
  for (const Tensor* t : others) {
    if (!t) continue;
    ADAPT_REQUIRE(t->device() == first.device(), ShapeError, "{}: '{}' is on {} but '{}' is on {}", op, t->name(),
                  t->device().str(), first.name(), first.device().str());
  }
  for (const Tensor* t : others) {
    if (!t) continue;
    ADAPT_REQUIRE(t->is_contiguous(), ShapeError, "{}: '{}' {} must be contiguous on the device", op, t->name(),
                  t->shape().str());
  }
  ADAPT_REQUIRE(first.is_contiguous(), ShapeError, "{}: '{}' {} must be contiguous on the device", op, first.name(),
                first.shape().str());
  ADAPT_CUDA_CHECK(cudaSetDevice(first.device().index));
}

inline void require_dtype(const char* op, const Tensor& t, DType dtype) {
  ADAPT_REQUIRE(t.dtype() == dtype, ShapeError, "{}: '{}' has dtype {}; {} was expected", op, t.name(),
                dtype_name(t.dtype()), dtype_name(dtype));
}

inline void require_float(const char* op, const Tensor& t) {
  ADAPT_REQUIRE(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::F16, ShapeError,
                "{}: '{}' has dtype {}; f32, bf16 or f16 was expected on the device", op, t.name(),
                dtype_name(t.dtype()));
}

inline void require_ids(const char* op, const Tensor& t) {
  ADAPT_REQUIRE(t.dtype() == DType::I32 || t.dtype() == DType::I64, ShapeError,
                "{}: '{}' has dtype {}; i32 or i64 was expected", op, t.name(), dtype_name(t.dtype()));
}

/// The f32 device pointer of t (Tensor::data is for host memory); null for a null tensor.
inline float* f32_ptr(const Tensor* t) { return t ? static_cast<float*>(t->raw()) : nullptr; }
inline float* f32_ptr(const Tensor& t) { return static_cast<float*>(t.raw()); }

/// Rows of the (.., cols) matrix view of t (all leading dimensions flattened), cols = last dimension.
inline std::int64_t rows_of(const Tensor& t) {
  const std::int64_t cols = t.rank() == 0 ? 1 : t.dim(-1);
  return cols == 0 ? 0 : t.numel() / cols;
}

/// Whether a and b are the same (rows, cols) matrix view (as the CPU ops compare them: (B, T, C) and
/// (B·T, C) alike).
inline bool same_matrix(const Tensor& a, const Tensor& b) {
  return a.rank() >= 1 && b.rank() >= 1 && a.dim(-1) == b.dim(-1) && rows_of(a) == rows_of(b);
}

/// A device copy of host values (the host span may go away after the call), queued on the compute
/// stream. Empty span: an undefined tensor. Every layer of a forward passes the same per-sequence values
/// (query positions, cache rows and lengths) and every step the same RoPE frequencies: the calling
/// thread keeps its last upload under each name and returns it again while the values are the same, so
/// only the first layer of a step uploads. An upload goes through pinned memory and cudaMemcpyAsync: a
/// copy from pageable memory would first wait for the work queued so far, and the host would stop
/// feeding the GPU at every decode step. The pinned copy is kept until the next upload under that name,
/// which first waits for its copy (long done by then: the step read its tokens back since). The kept
/// device tensor is never written after its upload; new values get a new tensor (the old block goes
/// back to the caching allocator, which reuses it in stream order).
template <class T>
Tensor to_device_kept(std::span<const T> values, const Tensor& like, const char* name) {
  if (values.empty()) return Tensor{};
  struct Kept {
    Tensor staged;  // pinned: the values, read by the copy
    std::unique_ptr<backend::cuda::Event> copied;
    Tensor on_device;
  };
  // Per (name, device): an event belongs to the device it was made on.
  thread_local std::map<std::pair<std::string, int>, Kept> kept;  // destroyed at thread exit, before the allocators
  const int device = like.device().index;
  Kept& k = kept[{name, device}];
  const std::size_t n_bytes = values.size() * sizeof(T);
  if (k.on_device.defined() && k.on_device.device().index == device && k.on_device.dtype() == dtype_of<T>() &&
      k.staged.size_bytes() == n_bytes && std::memcmp(k.staged.raw(), values.data(), n_bytes) == 0) {
    return k.on_device;
  }
  const auto n = static_cast<std::int64_t>(values.size());
  Tensor t = Tensor::empty({n}, dtype_of<T>(), backend::cuda_allocator(device), name);
  if (k.copied) k.copied->synchronize();  // the previous pinned copy may go back to its allocator
  k.staged = Tensor::empty({n}, dtype_of<T>(), backend::pinned_host_allocator(), name);
  std::memcpy(k.staged.raw(), values.data(), n_bytes);
  const auto stream = static_cast<cudaStream_t>(backend::cuda_compute_stream());
  ADAPT_CUDA_CHECK(cudaMemcpyAsync(t.raw(), k.staged.raw(), n_bytes, cudaMemcpyHostToDevice, stream));
  if (!k.copied) k.copied = std::make_unique<backend::cuda::Event>(/*timing=*/false);
  k.copied->record(stream);
  k.on_device = t;
  return t;
}

/// The ids of `t` (i32 or i64, on the device) as int64 on the host (one synchronous copy), for the
/// range checks the kernels cannot throw.
std::vector<std::int64_t> ids_to_host(const Tensor& t);

}  // namespace adapt::ops::cuda::detail
