#include "tensor/tensor.h"

#include <cstring>
#include <vector>

namespace adapt {

void Tensor::set_contiguous_strides() {
  std::int64_t s = 1;
  for (int i = rank() - 1; i >= 0; --i) {
    strides_[static_cast<std::size_t>(i)] = s;
    s *= shape_[i];
  }
}

Tensor Tensor::empty(const Shape& shape, DType dtype, Allocator& alloc, std::string name) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.name_ = std::move(name);
  t.set_contiguous_strides();
  t.storage_ = Storage::allocate(alloc, t.size_bytes());
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype, std::string name) {
  Tensor t = empty(shape, dtype, host_allocator(), std::move(name));
  t.zero();
  return t;
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, Device device, std::shared_ptr<const void> owner,
                    std::string name) {
  Tensor t;
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.name_ = std::move(name);
  t.set_contiguous_strides();
  t.storage_ = Storage::wrap(data, t.size_bytes(), device, std::move(owner));
  return t;
}

bool Tensor::is_contiguous() const {
  std::int64_t s = 1;
  for (int i = rank() - 1; i >= 0; --i) {
    if (shape_[i] != 1 && strides_[static_cast<std::size_t>(i)] != s) return false;
    s *= shape_[i];
  }
  return true;
}

void* Tensor::raw() const {
  ADAPT_CHECK(storage_ != nullptr, "tensor '{}' is undefined", name_);
  return static_cast<char*>(storage_->data()) + offset_ * static_cast<std::int64_t>(dtype_size(dtype_));
}

Tensor Tensor::narrow(int dim, std::int64_t start, std::int64_t length) const {
  if (dim < 0) dim += rank();
  ADAPT_REQUIRE(dim >= 0 && dim < rank(), ShapeError, "narrow: dim {} out of range for '{}' of shape {}", dim, name_,
                shape_.str());
  ADAPT_REQUIRE(start >= 0 && length >= 0 && start + length <= shape_[dim], ShapeError,
                "narrow: range [{}, {}) of dim {} is outside '{}' of shape {}", start, start + length, dim, name_,
                shape_.str());
  Tensor t = *this;
  t.offset_ += start * strides_[static_cast<std::size_t>(dim)];
  t.shape_[dim] = length;
  return t;
}

Tensor Tensor::reshape(const Shape& shape) const {
  ADAPT_REQUIRE(is_contiguous(), ShapeError, "reshape of non-contiguous tensor '{}' {}", name_, shape_.str());
  ADAPT_REQUIRE(shape.numel() == numel(), ShapeError, "cannot reshape '{}' from {} to {}: element counts differ", name_,
                shape_.str(), shape.str());
  Tensor t = *this;
  t.shape_ = shape;
  t.set_contiguous_strides();
  return t;
}

namespace {

// Calls fn(src_offset, dst_offset, n) for each contiguous run of the last dimension.
template <typename Fn>
void for_each_row(const Shape& shape, const std::array<std::int64_t, Shape::kMaxDims>& strides, Fn&& fn) {
  const int r = shape.rank();
  if (r == 0) {
    fn(0, 0, 1);
    return;
  }
  const std::int64_t n_last = shape[r - 1];
  std::int64_t n_rows = 1;
  for (int i = 0; i < r - 1; ++i) n_rows *= shape[i];
  std::vector<std::int64_t> idx(static_cast<std::size_t>(r), 0);
  for (std::int64_t row = 0; row < n_rows; ++row) {
    std::int64_t off = 0;
    for (int i = 0; i < r - 1; ++i) off += idx[static_cast<std::size_t>(i)] * strides[static_cast<std::size_t>(i)];
    fn(off, row * n_last, n_last);
    for (int i = r - 2; i >= 0; --i) {
      if (++idx[static_cast<std::size_t>(i)] < shape[i]) break;
      idx[static_cast<std::size_t>(i)] = 0;
    }
  }
}

}  // namespace

Tensor Tensor::to_host(DType dtype) const {
  Tensor out = empty(shape_, dtype, host_allocator(), name_);
  out.copy_from(*this);
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  ADAPT_REQUIRE(src.shape() == shape_, ShapeError, "copy into '{}' {} from '{}' {}: shapes differ", name_, shape_.str(),
                src.name(), src.shape().str());
  ADAPT_REQUIRE(device().host_accessible() && src.device().host_accessible(), UnsupportedError,
                "copy_from between {} and {} needs the backend (ops/), not Tensor::copy_from", src.device().str(),
                device().str());
  ADAPT_REQUIRE(is_contiguous(), ShapeError, "copy into non-contiguous tensor '{}'", name_);
  const std::size_t s_es = dtype_size(src.dtype());
  const auto* s = static_cast<const char*>(src.raw());
  auto* d = static_cast<char*>(raw());
  const std::int64_t last_stride = src.rank() ? src.stride(-1) : 1;
  for_each_row(src.shape_, src.strides_, [&](std::int64_t s_off, std::int64_t d_off, std::int64_t n) {
    if (last_stride == 1) {
      dtype_convert(d + d_off * static_cast<std::int64_t>(dtype_size(dtype_)), dtype_,
                    s + s_off * static_cast<std::int64_t>(s_es), src.dtype(), n);
    } else {
      for (std::int64_t i = 0; i < n; ++i)
        dtype_convert(d + (d_off + i) * static_cast<std::int64_t>(dtype_size(dtype_)), dtype_,
                      s + (s_off + i * last_stride) * static_cast<std::int64_t>(s_es), src.dtype(), 1);
    }
  });
}

void Tensor::zero() {
  ADAPT_REQUIRE(is_contiguous() && device().host_accessible(), UnsupportedError,
                "zero() needs a contiguous host tensor; '{}' is on {}", name_, device().str());
  std::memset(raw(), 0, size_bytes());
}

}  // namespace adapt
