#include "ops/rope.h"

#include "core/error.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/rope_cuda.h"
#endif

namespace adapt::ops {

void rope_table_fill(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq, std::int64_t pos_begin) {
  constexpr const char* op = "rope_table_fill";
  detail::require_same_device(op, cos, {&sin});
#if ADAPT_HAVE_CUDA
  if (!cos.device().host_accessible()) return cuda::rope_table_fill(cos, sin, inv_freq, pos_begin);
#endif
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

void rope_table_fill(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq,
                     std::span<const std::int64_t> pos_begin) {
  constexpr const char* op = "rope_table_fill";
  detail::require_same_device(op, cos, {&sin});
#if ADAPT_HAVE_CUDA
  if (!cos.device().host_accessible()) return cuda::rope_table_fill(cos, sin, inv_freq, pos_begin);
#endif
  if (!detail::on_cpu(op, cos)) return;
  const std::int64_t half = static_cast<std::int64_t>(inv_freq.size());
  const auto B = static_cast<std::int64_t>(pos_begin.size());
  ADAPT_REQUIRE(cos.rank() == 3 && cos.dim(0) == B && cos.dim(2) == half, ShapeError,
                "rope_table_fill: table '{}' has shape {} but ({}, P, {}) was expected (one table per sequence, one "
                "column per inverse frequency)",
                cos.name(), cos.shape().str(), B, half);
  detail::require_shape(op, sin, cos.shape(), "same as the cos table");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&cos, &sin}) {
    detail::require_dtype(op, *t, DType::F32);
    detail::require_contiguous(op, *t);
  }
  const std::int64_t P = cos.dim(1);
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t p0 = pos_begin[static_cast<std::size_t>(b)];
    ADAPT_REQUIRE(p0 >= 0, ShapeError, "rope_table_fill: pos_begin[{}] = {} must be >= 0", b, p0);
    cpu::rope_table_fill(cos.data<float>() + b * P * half, sin.data<float>() + b * P * half, inv_freq.data(), half, p0,
                         P);
  }
}

void rope_forward(Tensor& x, const Tensor& cos, const Tensor& sin) {
  constexpr const char* op = "rope_forward";
  detail::require_same_device(op, x, {&cos, &sin});
#if ADAPT_HAVE_CUDA
  if (!x.device().host_accessible()) return cuda::rope_forward(x, cos, sin);
#endif
  if (!detail::on_cpu(op, x)) return;
  ADAPT_REQUIRE(x.rank() == 4, ShapeError, "rope_forward: '{}' has shape {} but (B, T, heads, D) was expected",
                x.name(), x.shape().str());
  const std::int64_t B = x.dim(0), T = x.dim(1), Hx = x.dim(2), D = x.dim(3);
  ADAPT_REQUIRE(D % 2 == 0, ShapeError, "rope_forward: head dim D = {} of '{}' must be even", D, x.name());
  detail::require_dtype(op, x, DType::F32);
  detail::require_contiguous(op, x);
  const bool per_sequence = cos.rank() == 3;
  for (const Tensor* t : std::initializer_list<const Tensor*>{&cos, &sin}) {
    detail::require_dtype(op, *t, DType::F32);
    detail::require_contiguous(op, *t);
    if (per_sequence) {
      detail::require_shape(op, *t, Shape{B, T, D / 2}, "(B, T, D/2): one table per sequence (rope_table_fill)");
    } else {
      detail::require_shape(op, *t, Shape{T, D / 2}, "(T, D/2): one row per token position (rope_table_fill)");
    }
  }
  if (!per_sequence) {
    cpu::rope_forward(x.data<float>(), B, T, Hx, D, cos.data<float>(), sin.data<float>());
    return;
  }
  // One sequence at a time with its own table: the same kernel and arithmetic as the shared table.
  const std::int64_t half = D / 2;
  for (std::int64_t b = 0; b < B; ++b) {
    cpu::rope_forward(x.data<float>() + b * T * Hx * D, 1, T, Hx, D, cos.data<float>() + b * T * half,
                      sin.data<float>() + b * T * half);
  }
}

}  // namespace adapt::ops
