#include "ops/elementwise.h"

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <vector>

#include "core/error.h"
#include "dtype/dtype.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/elementwise_cuda.h"
#endif

namespace adapt::ops {

namespace {

constexpr std::int64_t kParallelMinElements = 1 << 16;  // below: loops stay on the calling thread

void require_f32_contiguous(const char* op, std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts) {
    detail::require_dtype(op, *t, DType::F32);
    detail::require_contiguous(op, *t);
  }
}

void require_same_numel(const char* op, const Tensor& a, const Tensor& b) {
  ADAPT_REQUIRE(a.numel() == b.numel(), ShapeError,
                "op '{}': '{}' {} and '{}' {} must have the same number of elements", op, a.name(), a.shape().str(),
                b.name(), b.shape().str());
}

// (B, X, Y, D) → (B, Y, X, D): the permute both heads-major directions are.
void swap_middle(const char* op, Tensor& dst, const Tensor& src) {
  require_f32_contiguous(op, {&dst, &src});
  ADAPT_REQUIRE(src.rank() == 4 && dst.rank() == 4 && dst.dim(0) == src.dim(0) && dst.dim(1) == src.dim(2) &&
                    dst.dim(2) == src.dim(1) && dst.dim(3) == src.dim(3),
                ShapeError, "op '{}': '{}' {} must be '{}' {} with dimensions 1 and 2 swapped", op, dst.name(),
                dst.shape().str(), src.name(), src.shape().str());
}

void swap_middle_cpu(float* d, const float* s, std::int64_t B, std::int64_t X, std::int64_t Y, std::int64_t D) {
#pragma omp parallel for collapse(2) schedule(static) if (B * X * Y * D > kParallelMinElements)
  for (std::int64_t b = 0; b < B; ++b)
    for (std::int64_t x = 0; x < X; ++x)
      for (std::int64_t y = 0; y < Y; ++y)
        std::memcpy(d + ((b * Y + y) * X + x) * D, s + ((b * X + x) * Y + y) * D, static_cast<std::size_t>(D) * 4);
}

}  // namespace

void add(Tensor& out, const Tensor& a, const Tensor& b) {
  constexpr const char* op = "add";
  detail::require_same_device(op, out, {&a, &b});
  require_f32_contiguous(op, {&out, &a, &b});
  require_same_numel(op, out, a);
  require_same_numel(op, out, b);
#if ADAPT_HAVE_CUDA
  if (!out.device().host_accessible()) return cuda::add(out, a, b);
#endif
  if (!detail::on_cpu(op, out)) return;
  const float* pa = static_cast<const float*>(a.raw());
  const float* pb = static_cast<const float*>(b.raw());
  float* po = static_cast<float*>(out.raw());
  const std::int64_t n = out.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelMinElements)
  for (std::int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i];
}

void axpy(Tensor& y, const Tensor& x, float alpha) {
  constexpr const char* op = "axpy";
  detail::require_same_device(op, y, {&x});
  require_f32_contiguous(op, {&y, &x});
  require_same_numel(op, y, x);
#if ADAPT_HAVE_CUDA
  if (!y.device().host_accessible()) return cuda::axpy(y, x, alpha);
#endif
  if (!detail::on_cpu(op, y)) return;
  const float* px = static_cast<const float*>(x.raw());
  float* py = static_cast<float*>(y.raw());
  const std::int64_t n = y.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelMinElements)
  for (std::int64_t i = 0; i < n; ++i) py[i] += alpha * px[i];
}

void scale(Tensor& x, float alpha) {
  constexpr const char* op = "scale";
  require_f32_contiguous(op, {&x});
#if ADAPT_HAVE_CUDA
  if (!x.device().host_accessible()) return cuda::scale(x, alpha);
#endif
  if (!detail::on_cpu(op, x)) return;
  float* p = static_cast<float*>(x.raw());
  const std::int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelMinElements)
  for (std::int64_t i = 0; i < n; ++i) p[i] *= alpha;
}

void fill(Tensor& x, float value) {
  constexpr const char* op = "fill";
  require_f32_contiguous(op, {&x});
#if ADAPT_HAVE_CUDA
  if (!x.device().host_accessible()) return cuda::fill(x, value);
#endif
  if (!detail::on_cpu(op, x)) return;
  float* p = static_cast<float*>(x.raw());
  const std::int64_t n = x.numel();
#pragma omp parallel for simd schedule(static) if (n > kParallelMinElements)
  for (std::int64_t i = 0; i < n; ++i) p[i] = value;
}

void copy(Tensor& dst, const Tensor& src) {
  constexpr const char* op = "copy";
  detail::require_same_device(op, dst, {&src});
  require_f32_contiguous(op, {&dst, &src});
  require_same_numel(op, dst, src);
#if ADAPT_HAVE_CUDA
  if (!dst.device().host_accessible()) return cuda::copy(dst, src);
#endif
  if (!detail::on_cpu(op, dst)) return;
  // Blocks split over the threads (Tensor::copy_from is one memcpy on the calling thread).
  const float* ps = static_cast<const float*>(src.raw());
  float* po = static_cast<float*>(dst.raw());
  if (ps == po) return;
  const std::int64_t n = dst.numel();
  constexpr std::int64_t kBlock = 1 << 14;
#pragma omp parallel for schedule(static) if (n > kParallelMinElements)
  for (std::int64_t i0 = 0; i0 < n; i0 += kBlock)
    std::memcpy(po + i0, ps + i0, static_cast<std::size_t>(std::min(kBlock, n - i0)) * sizeof(float));
}

void column_sum(Tensor& out, const Tensor& x, float alpha) {
  constexpr const char* op = "column_sum";
  detail::require_same_device(op, out, {&x});
  require_f32_contiguous(op, {&out, &x});
  ADAPT_REQUIRE(x.rank() >= 1 && out.rank() == 1 && out.dim(0) == x.dim(-1), ShapeError,
                "op '{}': output '{}' {} must be (C) for the (.., C) input '{}' {}", op, out.name(), out.shape().str(),
                x.name(), x.shape().str());
#if ADAPT_HAVE_CUDA
  if (!out.device().host_accessible()) return cuda::column_sum(out, x, alpha);
#endif
  if (!detail::on_cpu(op, out)) return;
  const std::int64_t cols = x.dim(-1), rows = cols == 0 ? 0 : x.numel() / cols;
  const float* s = static_cast<const float*>(x.raw());
  float* d = static_cast<float*>(out.raw());
  // Each column summed over the rows in order, in double: the same bits for any split of the columns.
  constexpr std::int64_t kColBlock = 64;
#pragma omp parallel for schedule(static) if (rows * cols > kParallelMinElements)
  for (std::int64_t j0 = 0; j0 < cols; j0 += kColBlock) {
    const std::int64_t n = std::min(kColBlock, cols - j0);
    double acc[kColBlock] = {};
    for (std::int64_t i = 0; i < rows; ++i)
      for (std::int64_t j = 0; j < n; ++j) acc[j] += s[i * cols + j0 + j];
    for (std::int64_t j = 0; j < n; ++j) d[j0 + j] += static_cast<float>(static_cast<double>(alpha) * acc[j]);
  }
}

void to_heads_major(Tensor& dst, const Tensor& src) {
  constexpr const char* op = "to_heads_major";
  detail::require_same_device(op, dst, {&src});
  swap_middle(op, dst, src);
#if ADAPT_HAVE_CUDA
  if (!dst.device().host_accessible()) return cuda::swap_middle(op, dst, src);
#endif
  if (!detail::on_cpu(op, dst)) return;
  swap_middle_cpu(static_cast<float*>(dst.raw()), static_cast<const float*>(src.raw()), src.dim(0), src.dim(1),
                  src.dim(2), src.dim(3));
}

void from_heads_major(Tensor& dst, const Tensor& src) {
  constexpr const char* op = "from_heads_major";
  detail::require_same_device(op, dst, {&src});
  swap_middle(op, dst, src);
#if ADAPT_HAVE_CUDA
  if (!dst.device().host_accessible()) return cuda::swap_middle(op, dst, src);
#endif
  if (!detail::on_cpu(op, dst)) return;
  swap_middle_cpu(static_cast<float*>(dst.raw()), static_cast<const float*>(src.raw()), src.dim(0), src.dim(1),
                  src.dim(2), src.dim(3));
}

void kv_cache_write(Tensor& cache, const Tensor& src, std::span<const std::int64_t> rows,
                    std::span<const std::int64_t> positions) {
  constexpr const char* op = "kv_cache_write";
  detail::require_same_device(op, cache, {&src});
  require_f32_contiguous(op, {&src});
  detail::require_contiguous(op, cache);
  ADAPT_REQUIRE(cache.dtype() == DType::F32 || cache.dtype() == DType::BF16, ShapeError,
                "op '{}': cache '{}' is {}; a KV cache is f32 or bf16", op, cache.name(), dtype_name(cache.dtype()));
  ADAPT_REQUIRE(cache.rank() == 4 && src.rank() == 4 && src.dim(2) == cache.dim(1) && src.dim(3) == cache.dim(3),
                ShapeError, "op '{}': cache '{}' {} must be (R, G, S, D) and the new entries '{}' {} (B, T, G, D)", op,
                cache.name(), cache.shape().str(), src.name(), src.shape().str());
  const std::int64_t B = src.dim(0), T = src.dim(1), G = src.dim(2), D = src.dim(3);
  const std::int64_t R = cache.dim(0), S = cache.dim(2);
  ADAPT_REQUIRE(static_cast<std::int64_t>(rows.size()) == B && static_cast<std::int64_t>(positions.size()) == B,
                ShapeError, "op '{}': {} rows and {} positions given for the {} sequences of '{}'", op, rows.size(),
                positions.size(), B, src.name());
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t r = rows[static_cast<std::size_t>(b)], p = positions[static_cast<std::size_t>(b)];
    ADAPT_REQUIRE(r >= 0 && r < R && p >= 0 && p + T <= S, ShapeError,
                  "op '{}': sequence {} goes to row {} at positions [{}, {}) but cache '{}' has rows [0, {}) and {} "
                  "positions",
                  op, b, r, p, p + T, cache.name(), R, S);
  }
#if ADAPT_HAVE_CUDA
  if (!cache.device().host_accessible()) return cuda::kv_cache_write(cache, src, rows, positions);
#endif
  if (!detail::on_cpu(op, cache)) return;
  // One (b, t, g) row of D elements at a time: copied into an f32 cache, rounded to nearest even into
  // a bf16 one.
  const float* s = static_cast<const float*>(src.raw());
  auto* d = static_cast<std::byte*>(cache.raw());
  const std::size_t elem = dtype_size(cache.dtype());
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t r = rows[static_cast<std::size_t>(b)], pos0 = positions[static_cast<std::size_t>(b)];
    for (std::int64_t t = 0; t < T; ++t)
      for (std::int64_t g = 0; g < G; ++g)
        dtype_convert(d + static_cast<std::size_t>(((r * G + g) * S + pos0 + t) * D) * elem, cache.dtype(),
                      s + ((b * T + t) * G + g) * D, DType::F32, D);
  }
}

}  // namespace adapt::ops
