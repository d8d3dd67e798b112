// Entry points of the RoPE backward (the inverse rotation) and of per-token RoPE tables (packed
// rows whose positions restart at each document).
#include <vector>

#include "core/error.h"
#include "ops/cpu/backward_cpu.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/rope_cuda.h"
#endif
#include "ops/rope.h"

namespace adapt::ops {

void rope_backward(Tensor& dx, const Tensor& cos, const Tensor& sin) {
  constexpr const char* op = "rope_backward";
  detail::require_same_device(op, dx, {&cos, &sin});
#if ADAPT_HAVE_CUDA
  if (!dx.device().host_accessible()) return cuda::rope_backward(dx, cos, sin);
#endif
  if (!detail::on_cpu(op, dx)) return;
  ADAPT_REQUIRE(dx.rank() == 4, ShapeError, "rope_backward: '{}' has shape {} but (B, T, heads, D) was expected",
                dx.name(), dx.shape().str());
  const std::int64_t B = dx.dim(0), T = dx.dim(1), Hx = dx.dim(2), D = dx.dim(3), half = D / 2;
  ADAPT_REQUIRE(D % 2 == 0, ShapeError, "rope_backward: head dim D = {} of '{}' must be even", D, dx.name());
  detail::require_dtype(op, dx, DType::F32);
  detail::require_contiguous(op, dx);
  const bool per_sequence = cos.rank() == 3;
  for (const Tensor* t : {&cos, &sin}) {
    detail::require_dtype(op, *t, DType::F32);
    detail::require_contiguous(op, *t);
    if (per_sequence) {
      detail::require_shape(op, *t, Shape{B, T, half}, "(B, T, D/2): one table per sequence, as in the forward");
    } else {
      detail::require_shape(op, *t, Shape{T, half}, "(T, D/2): one row per token position, as in the forward");
    }
  }
  if (!per_sequence) {
    cpu::rope_backward(dx.data<float>(), B, T, Hx, D, cos.data<float>(), sin.data<float>());
    return;
  }
  for (std::int64_t b = 0; b < B; ++b) {
    cpu::rope_backward(dx.data<float>() + b * T * Hx * D, 1, T, Hx, D, cos.data<float>() + b * T * half,
                       sin.data<float>() + b * T * half);
  }
}

void rope_table_fill_positions(Tensor& cos, Tensor& sin, const std::vector<float>& inv_freq, const Tensor& positions) {
  constexpr const char* op = "rope_table_fill_positions";
  detail::require_same_device(op, cos, {&sin, &positions});
#if ADAPT_HAVE_CUDA
  if (!cos.device().host_accessible()) return cuda::rope_table_fill_positions(cos, sin, inv_freq, positions);
#endif
  if (!detail::on_cpu(op, cos)) return;
  ADAPT_REQUIRE(positions.dtype() == DType::I32 || positions.dtype() == DType::I64, ShapeError,
                "{}: positions '{}' have dtype {}; i32 or i64 was expected", op, positions.name(),
                dtype_name(positions.dtype()));
  detail::require_contiguous(op, positions);
  const auto half = static_cast<std::int64_t>(inv_freq.size());
  std::vector<std::int64_t> want = positions.shape().to_vector();
  want.push_back(half);
  for (const Tensor* t : {&cos, &sin}) {
    detail::require_dtype(op, *t, DType::F32);
    detail::require_contiguous(op, *t);
    detail::require_shape(op, *t, Shape(want), "the positions' shape followed by D/2 (one row per token)");
  }
  const std::int32_t* p32 = positions.dtype() == DType::I32 ? positions.data<std::int32_t>() : nullptr;
  const std::int64_t* p64 = positions.dtype() == DType::I64 ? positions.data<std::int64_t>() : nullptr;
  const std::int64_t n = positions.numel();
  for (std::int64_t i = 0; i < n; ++i) {
    const std::int64_t p = p32 ? p32[i] : p64[i];
    ADAPT_REQUIRE(p >= 0, ShapeError, "{}: position {} at flat index {} of '{}' must be >= 0", op, p, i,
                  positions.name());
  }
  cpu::rope_table_fill_positions(cos.data<float>(), sin.data<float>(), inv_freq.data(), half, p32, p64, n);
}

}  // namespace adapt::ops
