// Elementwise f32 kernels: grid-stride, one element per thread per step; the column sum with one
// thread per (column, row lane) and a fixed-order reduction of the lanes in shared memory.
#include "kernels/common/check.cuh"
#include "kernels/common/convert.cuh"
#include "kernels/elementwise.h"
#include "kernels/launch_plan.h"

namespace adapt::kernels {
namespace {

constexpr int kThreads = 256;

#define ADAPT_GRID_STRIDE(i, n)                                                          \
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void add_kernel(float* out, const float* a, const float* b, int64_t n) {
  ADAPT_GRID_STRIDE(i, n) out[i] = __fadd_rn(a[i], b[i]);
}

__global__ void axpy_kernel(float* y, const float* x, float alpha, int64_t n) {
  ADAPT_GRID_STRIDE(i, n) y[i] = __fadd_rn(y[i], __fmul_rn(alpha, x[i]));
}

__global__ void scale_kernel(float* x, float alpha, int64_t n) {
  ADAPT_GRID_STRIDE(i, n) x[i] = __fmul_rn(x[i], alpha);
}

__global__ void fill_kernel(float* x, float value, int64_t n) { ADAPT_GRID_STRIDE(i, n) x[i] = value; }

__global__ void bias_add_kernel(float* y, const float* bias, int64_t rows, int64_t cols) {
  ADAPT_GRID_STRIDE(i, rows * cols) y[i] = __fadd_rn(y[i], bias[i % cols]);
}

// Block (32 columns, kLanes row lanes): lane y sums rows y, y + kLanes, ... of its column in double,
// then lane 0 adds the lanes' partial sums in lane order.
constexpr int kLanes = 32;
__global__ void __launch_bounds__(kLanes * 32)
    column_sum_kernel(float* out, const float* x, double alpha, int64_t rows, int64_t cols) {
  __shared__ double part[kLanes][33];
  const int64_t c = blockIdx.x * 32LL + threadIdx.x;
  double acc = 0.0;
  if (c < cols)
    for (int64_t r = threadIdx.y; r < rows; r += kLanes) acc += static_cast<double>(x[r * cols + c]);
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    double s = 0.0;
    for (int l = 0; l < kLanes; ++l) s += part[l][threadIdx.x];
    out[c] = __fadd_rn(out[c], static_cast<float>(alpha * s));
  }
}

// One thread per element of dst (B, Y, X, D), reading src (B, X, Y, D).
__global__ void swap_middle_kernel(float* dst, const float* src, int64_t B, int64_t X, int64_t Y, int64_t D) {
  const int64_t n = B * X * Y * D;
  ADAPT_GRID_STRIDE(i, n) {
    const int64_t d = i % D;
    int64_t rest = i / D;
    const int64_t x = rest % X;
    rest /= X;
    const int64_t y = rest % Y;
    const int64_t b = rest / Y;
    dst[i] = src[((b * X + x) * Y + y) * D + d];
  }
}

// The cache rows and first positions of up to kKvChunk sequences, passed by value (1 KiB of arguments).
constexpr int kKvChunk = 64;
struct KvChunk {
  int64_t rows[kKvChunk];
  int64_t positions[kKvChunk];
};

// One thread per element of src[b0 .. b0 + nb) (B, T, G, D).
// A cache element from an f32: as is, or as bf16 bits rounded to nearest even (the host's rounding).
__device__ __forceinline__ float kv_element(float x, float*) { return x; }
__device__ __forceinline__ uint16_t kv_element(float x, uint16_t*) { return f32_to_bf16_bits(x); }

template <class C>
__global__ void kv_cache_write_kernel(C* cache, const float* src, KvChunk chunk, int64_t b0, int64_t nb, int64_t T,
                                      int64_t G, int64_t D, int64_t S) {
  const int64_t n = nb * T * G * D;
  ADAPT_GRID_STRIDE(i, n) {
    const int64_t d = i % D;
    int64_t rest = i / D;
    const int64_t g = rest % G;
    rest /= G;
    const int64_t t = rest % T;
    const int64_t b = rest / T;
    cache[((chunk.rows[b] * G + g) * S + chunk.positions[b] + t) * D + d] =
        kv_element(src[(((b0 + b) * T + t) * G + g) * D + d], cache);
  }
}

}  // namespace

void launch_add(float* out, const float* a, const float* b, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  add_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(out, a, b, n);
  ADAPT_CUDA_LAUNCH_CHECK("add");
}

void launch_axpy(float* y, const float* x, float alpha, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  axpy_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(y, x, alpha, n);
  ADAPT_CUDA_LAUNCH_CHECK("axpy");
}

void launch_scale(float* x, float alpha, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  scale_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(x, alpha, n);
  ADAPT_CUDA_LAUNCH_CHECK("scale");
}

void launch_fill(float* x, float value, std::int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  fill_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(x, value, n);
  ADAPT_CUDA_LAUNCH_CHECK("fill");
}

void launch_column_sum(float* out, const float* x, float alpha, std::int64_t rows, std::int64_t cols,
                       cudaStream_t stream) {
  if (cols <= 0) return;
  const dim3 block(32, kLanes);
  const auto blocks = static_cast<unsigned>(ceil_div(cols, 32));
  column_sum_kernel<<<blocks, block, 0, stream>>>(out, x, static_cast<double>(alpha), rows, cols);
  ADAPT_CUDA_LAUNCH_CHECK("column_sum");
}

void launch_bias_add(float* y, const float* bias, std::int64_t rows, std::int64_t cols, cudaStream_t stream) {
  const std::int64_t n = rows * cols;
  if (n <= 0) return;
  bias_add_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(y, bias, rows, cols);
  ADAPT_CUDA_LAUNCH_CHECK("bias_add");
}

void launch_swap_middle(float* dst, const float* src, std::int64_t B, std::int64_t X, std::int64_t Y, std::int64_t D,
                        cudaStream_t stream) {
  const std::int64_t n = B * X * Y * D;
  if (n <= 0) return;
  swap_middle_kernel<<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(dst, src, B, X, Y, D);
  ADAPT_CUDA_LAUNCH_CHECK("swap_middle");
}

namespace {

template <class C>
void kv_cache_write(C* cache, const float* src, const std::int64_t* rows, const std::int64_t* positions, std::int64_t B,
                    std::int64_t T, std::int64_t G, std::int64_t D, std::int64_t S, cudaStream_t stream) {
  for (std::int64_t b0 = 0; b0 < B; b0 += kKvChunk) {
    const std::int64_t nb = std::min<std::int64_t>(kKvChunk, B - b0), n = nb * T * G * D;
    if (n <= 0) return;
    KvChunk chunk{};
    for (std::int64_t b = 0; b < nb; ++b) chunk.rows[b] = rows[b0 + b], chunk.positions[b] = positions[b0 + b];
    kv_cache_write_kernel<C>
        <<<grid_stride_blocks(n, kThreads), kThreads, 0, stream>>>(cache, src, chunk, b0, nb, T, G, D, S);
    ADAPT_CUDA_LAUNCH_CHECK("kv_cache_write");
  }
}

}  // namespace

void launch_kv_cache_write(float* cache, const float* src, const std::int64_t* rows, const std::int64_t* positions,
                           std::int64_t B, std::int64_t T, std::int64_t G, std::int64_t D, std::int64_t S,
                           cudaStream_t stream) {
  kv_cache_write(cache, src, rows, positions, B, T, G, D, S, stream);
}

void launch_kv_cache_write_bf16(std::uint16_t* cache, const float* src, const std::int64_t* rows,
                                const std::int64_t* positions, std::int64_t B, std::int64_t T, std::int64_t G,
                                std::int64_t D, std::int64_t S, cudaStream_t stream) {
  kv_cache_write(cache, src, rows, positions, B, T, G, D, S, stream);
}

}  // namespace adapt::kernels
