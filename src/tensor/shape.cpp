#include "tensor/shape.h"

#include <fmt/format.h>

#include "core/error.h"

namespace adapt {

Shape::Shape(std::initializer_list<std::int64_t> dims) : Shape(std::vector<std::int64_t>(dims)) {}

Shape::Shape(const std::vector<std::int64_t>& dims) {
  ADAPT_REQUIRE(dims.size() <= kMaxDims, ShapeError, "shape has {} dimensions; at most {} are supported", dims.size(),
                kMaxDims);
  rank_ = static_cast<int>(dims.size());
  for (std::size_t i = 0; i < dims.size(); ++i) {
    ADAPT_REQUIRE(dims[i] >= 0, ShapeError, "shape dimension {} is negative ({})", i, dims[i]);
    dims_[i] = dims[i];
  }
}

std::int64_t Shape::numel() const {
  std::int64_t n = 1;
  for (int i = 0; i < rank_; ++i) {
    ADAPT_REQUIRE(!__builtin_mul_overflow(n, dims_[static_cast<std::size_t>(i)], &n), ShapeError,
                  "shape {} has more elements than fit in 64 bits", str());
  }
  return n;
}

std::vector<std::int64_t> Shape::to_vector() const {
  return std::vector<std::int64_t>(dims_.begin(), dims_.begin() + rank_);
}

std::string Shape::str() const {
  std::string s = "(";
  for (int i = 0; i < rank_; ++i) s += (i ? ", " : "") + std::to_string(dims_[static_cast<std::size_t>(i)]);
  return s + (rank_ == 1 ? ",)" : ")");
}

bool operator==(const Shape& a, const Shape& b) {
  if (a.rank_ != b.rank_) return false;
  for (int i = 0; i < a.rank_; ++i)
    if (a.dims_[static_cast<std::size_t>(i)] != b.dims_[static_cast<std::size_t>(i)]) return false;
  return true;
}

}  // namespace adapt
