#include "ops/cuda/rope_cuda.h"

#include "backend/backend.h"
#include "kernels/rope.h"
#include "ops/cuda/cuda_op_checks.h"

namespace adapt::ops::cuda {

namespace {

// The inverse frequencies on the device: uploaded once, then kept while they stay the same (a decode
// step fills its tables again; a synchronous upload would wait for the work queued so far).
Tensor upload_inv_freq(const std::vector<float>& inv_freq, const Tensor& like) {
  return detail::to_device_kept(std::span<const float>(inv_freq), like, "rope_inv_freq");
}

void check_tables(const char* op, const Tensor& cos, const Tensor& sin, const Shape& want) {
  for (const Tensor* t : {&cos, &sin}) {
    detail::require_dtype(op, *t, DType::F32);
    ADAPT_REQUIRE(t->shape() == want, ShapeError, "{}: table '{}' has shape {} but {} was expected", op, t->name(),
                  t->shape().str(), want.str());
  }
}

void rotate(const char* op, Tensor& x, const Tensor& cos, const Tensor& sin, bool forward) {
  detail::require_device_contiguous(op, x, {&cos, &sin});
  detail::require_float(op, x);
  ADAPT_REQUIRE(x.rank() == 4 && x.dim(3) % 2 == 0, ShapeError,
                "{}: '{}' has shape {} but (B, T, heads, D) with D even was expected", op, x.name(), x.shape().str());
  const std::int64_t B = x.dim(0), T = x.dim(1), H = x.dim(2), D = x.dim(3);
  const bool per_sequence = cos.rank() == 3;
  check_tables(op, cos, sin, per_sequence ? Shape{B, T, D / 2} : Shape{T, D / 2});
  if (forward) {
    kernels::launch_rope_forward(x.raw(), detail::f32_ptr(cos), detail::f32_ptr(sin), B, T, H, D, per_sequence,
                                 x.dtype(), nullptr);
  } else {
    kernels::launch_rope_backward(x.raw(), detail::f32_ptr(cos), detail::f32_ptr(sin), B, T, H, D, per_sequence,
                                  x.dtype(), nullptr);
  }
}

}  // namespace

void rope_table_fill(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq, std::int64_t pos_begin) {
  constexpr const char* op = "rope_table_fill";
  detail::require_device_contiguous(op, cos, {&sin});
  const auto half = static_cast<std::int64_t>(inv_freq.size());
  ADAPT_REQUIRE(cos.rank() == 2 && pos_begin >= 0, ShapeError, "{}: table '{}' {} must be (P, {}), pos_begin {} >= 0",
                op, cos.name(), cos.shape().str(), half, pos_begin);
  check_tables(op, cos, sin, Shape{cos.dim(0), half});
  const Tensor inv = upload_inv_freq(inv_freq, cos);
  kernels::launch_rope_table_fill(detail::f32_ptr(cos), detail::f32_ptr(sin), detail::f32_ptr(inv), half, pos_begin,
                                  cos.dim(0), nullptr);
}

void rope_table_fill(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq,
                     std::span<const std::int64_t> pos_begin) {
  constexpr const char* op = "rope_table_fill";
  detail::require_device_contiguous(op, cos, {&sin});
  const auto half = static_cast<std::int64_t>(inv_freq.size());
  const auto B = static_cast<std::int64_t>(pos_begin.size());
  ADAPT_REQUIRE(cos.rank() == 3, ShapeError, "{}: table '{}' {} must be ({}, P, {})", op, cos.name(), cos.shape().str(),
                B, half);
  const std::int64_t P = cos.dim(1);
  check_tables(op, cos, sin, Shape{B, P, half});
  const Tensor inv = upload_inv_freq(inv_freq, cos);
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t p0 = pos_begin[static_cast<std::size_t>(b)];
    ADAPT_REQUIRE(p0 >= 0, ShapeError, "{}: pos_begin[{}] = {} must be >= 0", op, b, p0);
    kernels::launch_rope_table_fill(detail::f32_ptr(cos) + b * P * half, detail::f32_ptr(sin) + b * P * half,
                                    detail::f32_ptr(inv), half, p0, P, nullptr);
  }
}

void rope_table_fill_positions(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq, const Tensor& positions) {
  constexpr const char* op = "rope_table_fill_positions";
  detail::require_device_contiguous(op, cos, {&sin, &positions});
  detail::require_ids(op, positions);
  const auto half = static_cast<std::int64_t>(inv_freq.size());
  std::vector<std::int64_t> want = positions.shape().to_vector();
  want.push_back(half);
  check_tables(op, cos, sin, Shape(want));
  const std::vector<std::int64_t> pos = detail::ids_to_host(positions);
  for (std::size_t i = 0; i < pos.size(); ++i)
    ADAPT_REQUIRE(pos[i] >= 0, ShapeError, "{}: position {} at flat index {} of '{}' must be >= 0", op, pos[i], i,
                  positions.name());
  const Tensor inv = upload_inv_freq(inv_freq, cos);
  kernels::launch_rope_table_fill_positions(detail::f32_ptr(cos), detail::f32_ptr(sin), detail::f32_ptr(inv), half,
                                            positions.raw(), positions.dtype(), positions.numel(), nullptr);
}

void rope_forward(Tensor& x, const Tensor& cos, const Tensor& sin) { rotate("rope_forward", x, cos, sin, true); }

void rope_backward(Tensor& dx, const Tensor& cos, const Tensor& sin) { rotate("rope_backward", dx, cos, sin, false); }

}  // namespace adapt::ops::cuda
