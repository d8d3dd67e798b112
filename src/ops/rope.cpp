#include "ops/rope.h"

#include "core/error.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/op_checks.h"

namespace adapt::ops {

void rope_table_fill(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq, std::int64_t pos_begin) {
  constexpr const char* op = "rope_table_fill";
  detail::require_same_device(op, cos, {&sin});
  if (!detail::on_cpu(op, cos)) return;
  const std::int64_t half = static_cast<std::int64_t>(inv_freq.size());
  ADAPT_REQUIRE(cos.rank() == 2 && cos.dim(1) == half, ShapeError,
                "rope_table_fill: table '{}' has shape {} but (P, {}) was expected (one column per inverse frequency)",
                cos.name(), cos.shape().str(), half);
  detail::require_shape(op, sin, cos.shape(), "same as the cos table");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&cos, &sin}) {
    detail::require_dtype(op, *t, DType::F32);
    detail::require_contiguous(op, *t);
  }
  ADAPT_REQUIRE(pos_begin >= 0, ShapeError, "rope_table_fill: pos_begin = {} must be >= 0", pos_begin);
  cpu::rope_table_fill(cos.data<float>(), sin.data<float>(), inv_freq.data(), half, pos_begin, cos.dim(0));
}

void rope_forward(Tensor& x, const Tensor& cos, const Tensor& sin) {
  constexpr const char* op = "rope_forward";
  detail::require_same_device(op, x, {&cos, &sin});
  if (!detail::on_cpu(op, x)) return;
  ADAPT_REQUIRE(x.rank() == 4, ShapeError, "rope_forward: '{}' has shape {} but (B, T, heads, D) was expected", x.name(),
                x.shape().str());
  const std::int64_t B = x.dim(0), T = x.dim(1), Hx = x.dim(2), D = x.dim(3);
  ADAPT_REQUIRE(D % 2 == 0, ShapeError, "rope_forward: head dim D = {} of '{}' must be even", D, x.name());
  detail::require_dtype(op, x, DType::F32);
  detail::require_contiguous(op, x);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&cos, &sin}) {
    detail::require_dtype(op, *t, DType::F32);
    detail::require_contiguous(op, *t);
    detail::require_shape(op, *t, Shape{T, D / 2}, "(T, D/2): one row per token position (rope_table_fill)");
  }
  cpu::rope_forward(x.data<float>(), B, T, Hx, D, cos.data<float>(), sin.data<float>());
}

}  // namespace adapt::ops
