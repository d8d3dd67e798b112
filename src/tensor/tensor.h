// Tensor: a typed, shaped view (offset + strides, in elements) into shared Storage on the host,
// pinned host memory or a CUDA device. Views share storage; narrow() gives the row or column range a
// tensor-parallel rank owns without copying. Contiguity matters to ops and I/O and is checked there.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "core/error.h"
#include "dtype/dtype.h"
#include "tensor/shape.h"
#include "tensor/storage.h"

namespace adapt {

class Tensor {
 public:
  Tensor() = default;

  /// Uninitialised contiguous tensor from `alloc` (host memory by default).
  static Tensor empty(const Shape& shape, DType dtype, Allocator& alloc = host_allocator(), std::string name = {});
  /// Zero-filled host tensor.
  static Tensor zeros(const Shape& shape, DType dtype, std::string name = {});
  /// Contiguous view of external memory kept alive by `owner` (e.g. a mapped safetensors file).
  static Tensor wrap(void* data, const Shape& shape, DType dtype, Device device, std::shared_ptr<const void> owner,
                     std::string name = {});

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  std::int64_t dim(int i) const { return shape_[i]; }
  int rank() const { return shape_.rank(); }
  std::int64_t numel() const { return shape_.numel(); }
  std::int64_t stride(int i) const { return strides_[static_cast<std::size_t>(i < 0 ? i + rank() : i)]; }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device{}; }
  const std::string& name() const { return name_; }
  Tensor& set_name(std::string name) {
    name_ = std::move(name);
    return *this;
  }
  bool is_contiguous() const;
  /// Bytes covered by the elements (numel * dtype size).
  std::size_t size_bytes() const { return static_cast<std::size_t>(numel()) * dtype_size(dtype_); }

  /// Raw pointer to the first element (any device).
  void* raw() const;
  /// Typed host pointer; checks the dtype and that the memory is host-accessible.
  template <typename T>
  T* data() const {
    ADAPT_REQUIRE(dtype_of<T>() == dtype_, ShapeError, "tensor '{}' has dtype {}, accessed as {}", name_,
                  dtype_name(dtype_), dtype_name(dtype_of<T>()));
    ADAPT_REQUIRE(device().host_accessible(), UnsupportedError,
                  "tensor '{}' lives on {}; copy it to the host before reading it on the CPU", name_, device().str());
    return static_cast<T*>(raw());
  }

  /// View of elements [start, start + length) along `dim` (shares storage; may be non-contiguous).
  Tensor narrow(int dim, std::int64_t start, std::int64_t length) const;
  /// Same elements, new shape; requires a contiguous tensor with the same element count.
  Tensor reshape(const Shape& shape) const;
  /// Contiguous host copy converted to `dtype` (handles strided views).
  Tensor to_host(DType dtype) const;
  /// Element-wise copy of `src` (same shape; any dtypes; host-accessible memory on both sides).
  void copy_from(const Tensor& src);
  /// Sets every element to zero (contiguous, host-accessible).
  void zero();

 private:
  std::shared_ptr<Storage> storage_;
  std::int64_t offset_ = 0;  // elements from storage start
  Shape shape_;
  std::array<std::int64_t, Shape::kMaxDims> strides_{};
  DType dtype_ = DType::F32;
  std::string name_;

  void set_contiguous_strides();
};

}  // namespace adapt
