// Shape: up to kMaxDims int64 dimensions. Element counts are int64 everywhere; byte counts size_t.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace adapt {

class Shape {
 public:
  static constexpr int kMaxDims = 8;

  Shape() = default;
  Shape(std::initializer_list<std::int64_t> dims);
  explicit Shape(const std::vector<std::int64_t>& dims);

  int rank() const { return rank_; }
  std::int64_t operator[](int i) const { return dims_[static_cast<std::size_t>(i < 0 ? i + rank_ : i)]; }
  std::int64_t& operator[](int i) { return dims_[static_cast<std::size_t>(i < 0 ? i + rank_ : i)]; }
  /// Product of the dimensions (1 for a scalar). Throws ShapeError on overflow.
  std::int64_t numel() const;
  std::vector<std::int64_t> to_vector() const;
  /// "(4096, 14336)".
  std::string str() const;

  friend bool operator==(const Shape& a, const Shape& b);
  friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

 private:
  std::array<std::int64_t, kMaxDims> dims_{};
  int rank_ = 0;
};

}  // namespace adapt
