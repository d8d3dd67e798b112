// CUDA glue for ops/elementwise.h: the entry points check shapes, dtypes and devices on every path;
// these set the device and call the kernels/elementwise.h launchers on the legacy default stream.
#pragma once

#include <cstdint>
#include <span>

#include "tensor/tensor.h"

namespace adapt::ops::cuda {

void add(Tensor& out, const Tensor& a, const Tensor& b);
void axpy(Tensor& y, const Tensor& x, float alpha);
void scale(Tensor& x, float alpha);
void fill(Tensor& x, float value);
/// Device-to-device copy, asynchronous on the default stream.
void copy(Tensor& dst, const Tensor& src);
void column_sum(Tensor& out, const Tensor& x, float alpha);
/// ops::bias_add on the device: y contiguous (.., N) f32, bias (N) f32.
void bias_add(Tensor& y, const Tensor& bias);
/// dst (B, Y, X, D) = src (B, X, Y, D) (to_heads_major and from_heads_major).
void swap_middle(const char* op, Tensor& dst, const Tensor& src);
/// rows and positions (host, checked by the caller) travel as kernel arguments: no copy, no sync.
void kv_cache_write(Tensor& cache, const Tensor& src, std::span<const std::int64_t> rows,
                    std::span<const std::int64_t> positions);

}  // namespace adapt::ops::cuda
