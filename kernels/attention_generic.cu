// The generic attention kernels: one warp per query row (forward, dq) or per key row (dk/dv), f32
// arithmetic for every storage type. Each lane scores one key (or query) of a chunk of 32, the warp
// updates an online softmax, and lane l accumulates output columns l, l + 32, ... Used for f32 (exact
// parity with the CPU op), f16, bf16 head dims without a tensor-core kernel, and f32 queries over a
// bf16 KV cache (each element widened exactly, so it matches an f32 cache of the same values). Simple, not fast.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "kernels/attention_internal.h"
#include "kernels/common/attention_device.cuh"
#include "kernels/common/check.cuh"

namespace adapt::kernels::attn {
namespace {

constexpr int kMaxD = static_cast<int>(kGenericMaxHeadDim);
constexpr int kPerLane = kMaxD / 32;
constexpr int kWarps = kGenericRowsPerBlock;

// T: q and out; KV: k and v (T, or bf16 under f32 q: a bf16 KV cache).
template <class T, class KV = T>
__global__ void __launch_bounds__(kWarps * 32) generic_forward_kernel(AttentionForwardArgs a, float scale) {
  __shared__ float s_q[kWarps][kMaxD];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t t = blockIdx.x * static_cast<std::int64_t>(kWarps) + warp;
  const std::int64_t h = blockIdx.y, b = blockIdx.z;
  if (t >= a.T) return;  // whole warp leaves together; no block-wide barrier below
  const int D = static_cast<int>(a.D);
  const std::int64_t hk = h / (a.H / a.Hkv);
  const std::int64_t offset = a.q_pos_offsets ? a.q_pos_offsets[b] : a.q_pos_offset;
  const std::int64_t kv_b = a.kv_rows ? a.kv_rows[b] : b;
  const std::int32_t* seg = a.segment_ids ? a.segment_ids + b * a.T : nullptr;
  const T* q = static_cast<const T*>(a.q) + ((b * a.T + t) * a.H + h) * a.D;
  const KV* k = static_cast<const KV*>(a.k) + kv_b * a.k_stride_b + hk * a.k_stride_h;
  const KV* v = static_cast<const KV*>(a.v) + kv_b * a.v_stride_b + hk * a.v_stride_h;
  for (int d = lane; d < D; d += 32) s_q[warp][d] = to_f32(q[d]);
  __syncwarp();
  const std::int64_t limit = min(a.S, offset + t + 1);
  float m = -INFINITY, l = 0.0f, acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) acc[i] = 0.0f;
  for (std::int64_t k0 = 0; k0 < limit; k0 += 32) {
    const std::int64_t kj = k0 + lane;
    float s = -INFINITY;
    if (kj < limit && key_visible(t, kj, offset, seg)) {
      const KV* kr = k + kj * a.k_stride_s;
      float dot = 0.0f;
      for (int d = 0; d < D; ++d) dot = fmaf(s_q[warp][d], to_f32(kr[d]), dot);
      s = dot * scale;
    }
    const float p = online_softmax_step(s, m, l, acc);
    const int n = static_cast<int>(min(std::int64_t{32}, limit - k0));
    accumulate_rows(p, n, v + k0 * a.v_stride_s, a.v_stride_s, D, acc);
  }
  T* o = static_cast<T*>(a.out) + ((b * a.T + t) * a.H + h) * a.D;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < D) o[d] = from_f32<T>(acc[i] * inv);
  }
  if (a.lse && lane == 0) a.lse[(b * a.H + h) * a.T + t] = l > 0.0f ? m + logf(l) : -INFINITY;
}

template <class T>
__global__ void __launch_bounds__(kWarps * 32) delta_kernel(AttentionBackwardArgs a) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t row = blockIdx.x * static_cast<std::int64_t>(kWarps) + warp;  // (b, t, h) row-major
  if (row >= a.B * a.T * a.H) return;
  const T* o = static_cast<const T*>(a.out) + row * a.D;
  const T* go = static_cast<const T*>(a.dout) + row * a.D;
  float s = 0.0f;
  for (std::int64_t d = lane; d < a.D; d += 32) s = fmaf(to_f32(go[d]), to_f32(o[d]), s);
  s = warp_sum(s);
  const std::int64_t h = row % a.H, t = (row / a.H) % a.T, b = row / (a.H * a.T);
  if (lane == 0) a.delta[(b * a.H + h) * a.T + t] = s;
}

template <class T>
__global__ void __launch_bounds__(kWarps * 32) generic_dq_kernel(AttentionBackwardArgs a, float scale) {
  __shared__ float s_q[kWarps][kMaxD];
  __shared__ float s_do[kWarps][kMaxD];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t t = blockIdx.x * static_cast<std::int64_t>(kWarps) + warp;
  const std::int64_t h = blockIdx.y, b = blockIdx.z;
  if (t >= a.T) return;
  const int D = static_cast<int>(a.D);
  const std::int64_t hk = h / (a.H / a.Hkv);
  const std::int32_t* seg = a.segment_ids ? a.segment_ids + b * a.T : nullptr;
  const std::int64_t qrow = ((b * a.T + t) * a.H + h) * a.D;
  const T* q = static_cast<const T*>(a.q) + qrow;
  const T* go = static_cast<const T*>(a.dout) + qrow;
  const T* k = static_cast<const T*>(a.k) + (b * a.Hkv + hk) * a.S * a.D;
  const T* v = static_cast<const T*>(a.v) + (b * a.Hkv + hk) * a.S * a.D;
  for (int d = lane; d < D; d += 32) s_q[warp][d] = to_f32(q[d]), s_do[warp][d] = to_f32(go[d]);
  __syncwarp();
  const float lse = a.lse[(b * a.H + h) * a.T + t];
  const float delta = a.delta[(b * a.H + h) * a.T + t];
  const std::int64_t limit = min(a.S, a.q_pos_offset + t + 1);
  float acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) acc[i] = 0.0f;
  for (std::int64_t k0 = 0; k0 < limit; k0 += 32) {
    const std::int64_t kj = k0 + lane;
    float ds = 0.0f;
    if (kj < limit && key_visible(t, kj, a.q_pos_offset, seg)) {
      const T* kr = k + kj * a.D;
      const T* vr = v + kj * a.D;
      float dot = 0.0f, dp = 0.0f;
      for (int d = 0; d < D; ++d) {
        dot = fmaf(s_q[warp][d], to_f32(kr[d]), dot);
        dp = fmaf(s_do[warp][d], to_f32(vr[d]), dp);
      }
      const float p = expf(dot * scale - lse);
      ds = p * (dp - delta);
    }
    const int n = static_cast<int>(min(std::int64_t{32}, limit - k0));
    accumulate_rows(ds, n, k + k0 * a.D, a.D, D, acc);
  }
  T* dq = static_cast<T*>(a.dq) + qrow;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < D) dq[d] = from_f32<T>(acc[i] * scale);
  }
}

template <class T>
__global__ void __launch_bounds__(kWarps * 32) generic_dkdv_kernel(AttentionBackwardArgs a, float scale) {
  __shared__ float s_k[kWarps][kMaxD];
  __shared__ float s_v[kWarps][kMaxD];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t j = blockIdx.x * static_cast<std::int64_t>(kWarps) + warp;
  const std::int64_t hk = blockIdx.y, b = blockIdx.z;
  if (j >= a.S) return;
  const int D = static_cast<int>(a.D);
  const std::int64_t n_rep = a.H / a.Hkv;
  const std::int32_t* seg = a.segment_ids ? a.segment_ids + b * a.T : nullptr;
  const std::int64_t krow = ((b * a.Hkv + hk) * a.S + j) * a.D;
  const T* kr = static_cast<const T*>(a.k) + krow;
  const T* vr = static_cast<const T*>(a.v) + krow;
  for (int d = lane; d < D; d += 32) s_k[warp][d] = to_f32(kr[d]), s_v[warp][d] = to_f32(vr[d]);
  __syncwarp();
  float acc_k[kPerLane], acc_v[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) acc_k[i] = 0.0f, acc_v[i] = 0.0f;
  const std::int64_t t_first = j > a.q_pos_offset ? j - a.q_pos_offset : 0;
  for (std::int64_t r = 0; r < n_rep; ++r) {
    const std::int64_t h = hk * n_rep + r;
    for (std::int64_t t0 = t_first; t0 < a.T; t0 += 32) {
      const std::int64_t t = t0 + lane;
      float p = 0.0f, ds = 0.0f;
      if (t < a.T && key_visible(t, j, a.q_pos_offset, seg)) {
        const std::int64_t qrow = ((b * a.T + t) * a.H + h) * a.D;
        const T* q = static_cast<const T*>(a.q) + qrow;
        const T* go = static_cast<const T*>(a.dout) + qrow;
        float dot = 0.0f, dp = 0.0f;
        for (int d = 0; d < D; ++d) {
          dot = fmaf(to_f32(q[d]), s_k[warp][d], dot);
          dp = fmaf(to_f32(go[d]), s_v[warp][d], dp);
        }
        const std::int64_t st = (b * a.H + h) * a.T + t;
        p = expf(dot * scale - a.lse[st]);
        ds = p * (dp - a.delta[st]);
      }
      // query rows (b, t, h, :) are H·D apart
      const int n = static_cast<int>(min(std::int64_t{32}, a.T - t0));
      const std::int64_t qrow0 = ((b * a.T + t0) * a.H + h) * a.D;
      accumulate_rows(p, n, static_cast<const T*>(a.dout) + qrow0, a.H * a.D, D, acc_v);
      accumulate_rows(ds, n, static_cast<const T*>(a.q) + qrow0, a.H * a.D, D, acc_k);
    }
  }
  T* dk = static_cast<T*>(a.dk) + krow;
  T* dv = static_cast<T*>(a.dv) + krow;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int d = lane + 32 * i;
    if (d < D) dk[d] = from_f32<T>(acc_k[i] * scale), dv[d] = from_f32<T>(acc_v[i]);
  }
}

template <template <class> class Launch, class... Args>
void dispatch(DType dt, Args&&... args) {
  switch (dt) {
    case DType::F32: Launch<float>::run(args...); return;
    case DType::BF16: Launch<__nv_bfloat16>::run(args...); return;
    case DType::F16: Launch<__half>::run(args...); return;
    case DType::I32:
    case DType::I64:
    case DType::U8: ADAPT_THROW(UnsupportedError, "attention on the GPU: dtype {} is not a float type", dtype_name(dt));
  }
}

template <class T>
struct ForwardLaunch {
  static void run(const AttentionForwardArgs& a, float scale, cudaStream_t s) {
    const dim3 grid = grid_of(attention_query_grid(AttentionPath::Generic, a.B, a.T, a.H));
    generic_forward_kernel<T><<<grid, kWarps * 32, 0, s>>>(a, scale);
  }
};
template <class T>
struct DeltaLaunch {
  static void run(const AttentionBackwardArgs& a, cudaStream_t s) {
    const std::int64_t rows = a.B * a.T * a.H;
    delta_kernel<T><<<static_cast<unsigned>((rows + kWarps - 1) / kWarps), kWarps * 32, 0, s>>>(a);
  }
};
template <class T>
struct DqLaunch {
  static void run(const AttentionBackwardArgs& a, float scale, cudaStream_t s) {
    const dim3 grid = grid_of(attention_query_grid(AttentionPath::Generic, a.B, a.T, a.H));
    generic_dq_kernel<T><<<grid, kWarps * 32, 0, s>>>(a, scale);
  }
};
template <class T>
struct DkdvLaunch {
  static void run(const AttentionBackwardArgs& a, float scale, cudaStream_t s) {
    const dim3 grid = grid_of(attention_key_grid(AttentionPath::Generic, a.B, a.S, a.Hkv));
    generic_dkdv_kernel<T><<<grid, kWarps * 32, 0, s>>>(a, scale);
  }
};

}  // namespace

void generic_forward(const AttentionForwardArgs& a, DType dt, DType kv_dt, float scale, cudaStream_t stream) {
  if (kv_dt == dt) {
    dispatch<ForwardLaunch>(dt, a, scale, stream);
  } else {  // f32 queries over a bf16 KV cache (checked by validate_attention_forward)
    const dim3 grid = grid_of(attention_query_grid(AttentionPath::Generic, a.B, a.T, a.H));
    generic_forward_kernel<float, __nv_bfloat16><<<grid, kWarps * 32, 0, stream>>>(a, scale);
  }
  ADAPT_CUDA_LAUNCH_CHECK("attention_forward (generic)");
}
void backward_delta(const AttentionBackwardArgs& a, DType dt, cudaStream_t stream) {
  dispatch<DeltaLaunch>(dt, a, stream);
  ADAPT_CUDA_LAUNCH_CHECK("attention_backward delta");
}
void generic_backward_dq(const AttentionBackwardArgs& a, DType dt, float scale, cudaStream_t stream) {
  dispatch<DqLaunch>(dt, a, scale, stream);
  ADAPT_CUDA_LAUNCH_CHECK("attention_backward dq (generic)");
}
void generic_backward_dkdv(const AttentionBackwardArgs& a, DType dt, float scale, cudaStream_t stream) {
  dispatch<DkdvLaunch>(dt, a, scale, stream);
  ADAPT_CUDA_LAUNCH_CHECK("attention_backward dk/dv (generic)");
}

}  // namespace adapt::kernels::attn
