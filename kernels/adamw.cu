// AdamW step: elementwise, grid-stride. Every product and sum is an explicitly rounded intrinsic
// (__fmul_rn, __fadd_rn, __fsqrt_rn, __fdiv_rn), so nvcc cannot contract them into FMAs and the result
// is that of the host's f32 loop in src/optim/adamw.cpp.
#include "kernels/adamw.h"
#include "kernels/common/check.cuh"
#include "kernels/common/elem_io.cuh"

namespace adapt::kernels {
namespace {

constexpr int kThreads = 256;

template <typename TC>
__global__ void adamw_step_kernel(float* p, const float* g, float* m, float* v, TC* copy, int64_t n, AdamWScalars s) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    float pi = __fmul_rn(p[i], s.decay);
    const float mi = __fadd_rn(__fmul_rn(m[i], s.beta1), __fmul_rn(gi, s.one_minus_beta1));
    const float vi = __fadd_rn(__fmul_rn(v[i], s.beta2), __fmul_rn(__fmul_rn(gi, gi), s.one_minus_beta2));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
    pi = __fadd_rn(pi, __fmul_rn(-s.step_size, __fdiv_rn(mi, denom)));
    m[i] = mi;
    v[i] = vi;
    p[i] = pi;
    if (copy) store_f32(copy + i, pi);
  }
}

}  // namespace

void launch_adamw_step(float* param, const float* grad, float* m, float* v, void* copy, DType copy_dtype,
                       std::int64_t n, const AdamWScalars& s, cudaStream_t stream) {
  if (n <= 0) return;
  const int blocks = grid_stride_blocks(n, kThreads);
  if (!copy) {
    adamw_step_kernel<float><<<blocks, kThreads, 0, stream>>>(param, grad, m, v, nullptr, n, s);
  } else {
    dispatch_float(copy_dtype, "adamw_step (weight copy)", [&](auto tag) {
      using TC = decltype(tag);
      adamw_step_kernel<TC><<<blocks, kThreads, 0, stream>>>(param, grad, m, v, static_cast<TC*>(copy), n, s);
    });
  }
  ADAPT_CUDA_LAUNCH_CHECK("adamw_step");
}

}  // namespace adapt::kernels
