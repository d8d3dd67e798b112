// Device helpers shared by the attention kernels: element loads/stores in f32 arithmetic for the
// storage types, warp reductions, and the causal/segment visibility rule of src/ops/attention.h.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace adapt::kernels::attn {

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }

template <class T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) {
  return x;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) {
  return __float2half_rn(x);
}

__device__ __forceinline__ float warp_max(float x) {
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}
__device__ __forceinline__ float warp_sum(float x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

/// One chunk of 32 scores (one per lane of the warp, −inf where masked) into the warp's online
/// softmax: updates the running max m and sum l, rescales acc, and returns this lane's probability
/// relative to the new max (0 where masked, and for every lane while nothing has been visible).
template <int N>
__device__ __forceinline__ float online_softmax_step(float s, float& m, float& l, float (&acc)[N]) {
  const float m_new = fmaxf(m, warp_max(s));
  if (m_new == -INFINITY) return 0.0f;
  const float alpha = expf(m - m_new);
  const float p = s == -INFINITY ? 0.0f : expf(s - m_new);
  l = l * alpha + warp_sum(p);
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] *= alpha;
  m = m_new;
  return p;
}

/// acc[g][i] (column lane + 32·i of head g) += Σ_jj w[g]_jj · rows[jj·stride + column] for the first n
/// lanes' weights (lane jj holds w[g]_jj), G heads reading each row once; rows of D elements of type T.
/// A row whose weights are all zero is skipped (warp-uniform), and so is each zero weight.
template <int G, class T, int N>
__device__ __forceinline__ void accumulate_rows(const float (&w)[G], int n, const T* rows, std::int64_t stride, int D,
                                                float (&acc)[G][N]) {
  const int lane = threadIdx.x % 32;
  for (int jj = 0; jj < n; ++jj) {
    float wj[G];
    bool any = false;
#pragma unroll
    for (int g = 0; g < G; ++g) {
      wj[g] = __shfl_sync(0xffffffffu, w[g], jj);
      any = any || wj[g] != 0.0f;
    }
    if (!any) continue;  // every lane holds the shuffled weights
    const T* r = rows + jj * stride;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      const int d = lane + 32 * i;
      if (d < D) {
        const float x = to_f32(r[d]);
#pragma unroll
        for (int g = 0; g < G; ++g)
          if (wj[g] != 0.0f) acc[g][i] = fmaf(wj[g], x, acc[g][i]);
      }
    }
  }
}

/// The same for one head: acc[i] += Σ_jj w_jj · rows[jj·stride + lane + 32·i].
template <class T, int N>
__device__ __forceinline__ void accumulate_rows(float w, int n, const T* rows, std::int64_t stride, int D,
                                                float (&acc)[N]) {
  const float w1[1] = {w};
  float acc1[1][N];
#pragma unroll
  for (int i = 0; i < N; ++i) acc1[0][i] = acc[i];
  accumulate_rows<1>(w1, n, rows, stride, D, acc1);
#pragma unroll
  for (int i = 0; i < N; ++i) acc[i] = acc1[0][i];
}

/// Query qi (0-based among the T queries, at position offset + qi) sees key kj: causal, and with
/// segment ids (row-local, S == T) only keys of its own non-negative segment.
__device__ __forceinline__ bool key_visible(std::int64_t qi, std::int64_t kj, std::int64_t offset,
                                            const std::int32_t* seg_row) {
  if (kj > offset + qi) return false;
  if (seg_row) {
    const std::int32_t s = seg_row[qi];
    return s >= 0 && seg_row[kj] == s;
  }
  return true;
}

}  // namespace adapt::kernels::attn
