#include "ops/cuda/elementwise_cuda.h"

#include "kernels/elementwise.h"
#include "ops/cuda/cuda_op_checks.h"

namespace adapt::ops::cuda {

using detail::f32_ptr;

void add(Tensor& out, const Tensor& a, const Tensor& b) {
  detail::require_device_contiguous("add", out, {&a, &b});
  kernels::launch_add(f32_ptr(out), f32_ptr(a), f32_ptr(b), out.numel(), nullptr);
}

void axpy(Tensor& y, const Tensor& x, float alpha) {
  detail::require_device_contiguous("axpy", y, {&x});
  kernels::launch_axpy(f32_ptr(y), f32_ptr(x), alpha, y.numel(), nullptr);
}

void scale(Tensor& x, float alpha) {
  detail::require_device_contiguous("scale", x, {});
  kernels::launch_scale(f32_ptr(x), alpha, x.numel(), nullptr);
}

void fill(Tensor& x, float value) {
  detail::require_device_contiguous("fill", x, {});
  kernels::launch_fill(f32_ptr(x), value, x.numel(), nullptr);
}

void copy(Tensor& dst, const Tensor& src) {
  detail::require_device_contiguous("copy", dst, {&src});
  if (dst.raw() == src.raw() || dst.numel() == 0) return;
  ADAPT_CUDA_CHECK(cudaMemcpyAsync(dst.raw(), src.raw(), dst.size_bytes(), cudaMemcpyDeviceToDevice, nullptr));
}

void column_sum(Tensor& out, const Tensor& x, float alpha) {
  detail::require_device_contiguous("column_sum", out, {&x});
  const std::int64_t cols = x.dim(-1);
  kernels::launch_column_sum(f32_ptr(out), f32_ptr(x), alpha, detail::rows_of(x), cols, nullptr);
}

void bias_add(Tensor& y, const Tensor& bias) {
  detail::require_device_contiguous("bias_add", y, {&bias});
  kernels::launch_bias_add(f32_ptr(y), f32_ptr(bias), detail::rows_of(y), y.dim(-1), nullptr);
}

void swap_middle(const char* op, Tensor& dst, const Tensor& src) {
  detail::require_device_contiguous(op, dst, {&src});
  kernels::launch_swap_middle(f32_ptr(dst), f32_ptr(src), src.dim(0), src.dim(1), src.dim(2), src.dim(3), nullptr);
}

void kv_cache_write(Tensor& cache, const Tensor& src, std::span<const std::int64_t> rows,
                    std::span<const std::int64_t> positions) {
  detail::require_device_contiguous("kv_cache_write", cache, {&src});
  if (cache.dtype() == DType::BF16) {
    kernels::launch_kv_cache_write_bf16(static_cast<std::uint16_t*>(cache.raw()), f32_ptr(src), rows.data(),
                                        positions.data(), src.dim(0), src.dim(1), src.dim(2), src.dim(3), cache.dim(2),
                                        nullptr);
    return;
  }
  kernels::launch_kv_cache_write(f32_ptr(cache), f32_ptr(src), rows.data(), positions.data(), src.dim(0), src.dim(1),
                                 src.dim(2), src.dim(3), cache.dim(2), nullptr);
}

}  // namespace adapt::ops::cuda
