// RoPE tables and rotation: one thread per (position, frequency) for the tables, one per
// (token, head, pair) for the rotation, grid-strided.
#include "kernels/common/check.cuh"
#include "kernels/common/elem_io.cuh"
#include "kernels/launch_plan.h"
#include "kernels/rope.h"

namespace adapt::kernels {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ void rope_table_entry(float* cos_out, float* sin_out, float pos, float inv_freq) {
  const float angle = pos * inv_freq;  // rounded to f32, as HF's f32 product of positions and inv_freq
  *cos_out = static_cast<float>(cos(static_cast<double>(angle)));
  *sin_out = static_cast<float>(sin(static_cast<double>(angle)));
}

__global__ void rope_table_fill_kernel(float* cos_t, float* sin_t, const float* inv_freq, int64_t half,
                                       int64_t pos_begin, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = i / half, f = i % half;
    rope_table_entry(cos_t + i, sin_t + i, static_cast<float>(pos_begin + p), inv_freq[f]);
  }
}

__global__ void rope_table_fill_positions_kernel(float* cos_t, float* sin_t, const float* inv_freq, int64_t half,
                                                 const void* positions, bool pos64, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t p = i / half, f = i % half;
    rope_table_entry(cos_t + i, sin_t + i, static_cast<float>(load_id(positions, pos64, p)), inv_freq[f]);
  }
}

// sign = +1: forward (rotate by θ); −1: backward (rotate by −θ).
template <typename T>
__global__ void rope_rotate_kernel(T* x, const float* cos_t, const float* sin_t, int64_t T_len, int64_t n_heads,
                                   int64_t half, bool per_sequence, float sign, int64_t n_pairs) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n_pairs;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t j = i % half;
    const int64_t head_row = i / half;  // (b·T + t)·n_heads + h
    const int64_t bt = head_row / n_heads;
    const int64_t table_row = per_sequence ? bt : bt % T_len;
    const float c = cos_t[table_row * half + j];
    const float s = sign * sin_t[table_row * half + j];
    T* xh = x + head_row * 2 * half;
    const float x0 = load_f32(xh + j), x1 = load_f32(xh + j + half);
    store_f32(xh + j, x0 * c - x1 * s);
    store_f32(xh + j + half, x1 * c + x0 * s);
  }
}

void rope_rotate(const char* what, void* x, const float* cos_t, const float* sin_t, std::int64_t B, std::int64_t T,
                 std::int64_t n_heads, std::int64_t head_dim, bool per_sequence, float sign, DType dtype,
                 cudaStream_t stream) {
  ADAPT_REQUIRE(head_dim > 0 && head_dim % 2 == 0, ShapeError, "{}: head dim {} must be even and positive", what,
                head_dim);
  const std::int64_t half = head_dim / 2, n_pairs = B * T * n_heads * half;
  if (n_pairs <= 0) return;
  dispatch_float(dtype, what, [&](auto tag) {
    using E = decltype(tag);
    rope_rotate_kernel<E><<<grid_stride_blocks(n_pairs, kThreads), kThreads, 0, stream>>>(
        static_cast<E*>(x), cos_t, sin_t, T, n_heads, half, per_sequence, sign, n_pairs);
  });
  ADAPT_CUDA_LAUNCH_CHECK(what);
}

}  // namespace

void launch_rope_table_fill(float* cos, float* sin, const float* inv_freq, std::int64_t half, std::int64_t pos_begin,
                            std::int64_t n_pos, cudaStream_t stream) {
  const std::int64_t n = n_pos * half;
  if (n <= 0) return;
  rope_table_fill_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(cos, sin, inv_freq, half, pos_begin,
                                                                                   n);
  ADAPT_CUDA_LAUNCH_CHECK("rope_table_fill");
}

void launch_rope_table_fill_positions(float* cos, float* sin, const float* inv_freq, std::int64_t half,
                                      const void* positions, DType pos_dtype, std::int64_t n, cudaStream_t stream) {
  const bool pos64 = ids_are_64(pos_dtype, "rope_table_fill_positions");
  const std::int64_t total = n * half;
  if (total <= 0) return;
  rope_table_fill_positions_kernel<<<grid_stride_blocks(total, kThreads), kThreads, 0, stream>>>(
      cos, sin, inv_freq, half, positions, pos64, total);
  ADAPT_CUDA_LAUNCH_CHECK("rope_table_fill_positions");
}

void launch_rope_forward(void* x, const float* cos, const float* sin, std::int64_t B, std::int64_t T,
                         std::int64_t n_heads, std::int64_t head_dim, bool per_sequence, DType dtype,
                         cudaStream_t stream) {
  rope_rotate("rope_forward", x, cos, sin, B, T, n_heads, head_dim, per_sequence, 1.0f, dtype, stream);
}

void launch_rope_backward(void* dx, const float* cos, const float* sin, std::int64_t B, std::int64_t T,
                          std::int64_t n_heads, std::int64_t head_dim, bool per_sequence, DType dtype,
                          cudaStream_t stream) {
  rope_rotate("rope_backward", dx, cos, sin, B, T, n_heads, head_dim, per_sequence, -1.0f, dtype, stream);
}

}  // namespace adapt::kernels
