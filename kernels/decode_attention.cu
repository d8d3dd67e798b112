// Decode attention: one query token per sequence over a KV cache, split-K (flash-decoding).
// Block (split, group of G query heads sharing one KV head, sequence) takes the keys
// [split·keys_per_split, …) of its sequence's chunk; each of its 4 warps scores every 4th group of 32
// keys (one key per lane) for the G heads at once, so each key and value is read once for all of them,
// keeps an online softmax per head, and lane l accumulates output columns l, l + 32, … of each head;
// the warps merge in shared memory and the block writes a partial (max, sum, unnormalised output) per
// head to the workspace. The combine kernel merges the splits of each (sequence, head). f32 arithmetic
// throughout for every storage type; the cache may be bf16 under f32 queries (a bf16 KV cache: elements
// widened exactly). Per head the same operations in the same order whatever G.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>

#include "kernels/common/attention_device.cuh"
#include "kernels/common/check.cuh"
#include "kernels/decode_attention.h"

namespace adapt::kernels {
namespace {

using attn::from_f32;
using attn::to_f32;

constexpr int kMaxD = static_cast<int>(kGenericMaxHeadDim);
constexpr int kPerLane = kMaxD / 32;
constexpr int kWarps = kDecodeWarps;

// T: q and out; KV: the cache (T, or bf16 under f32 q); G: query heads of one KV head per block.
template <class T, class KV, int G>
__global__ void __launch_bounds__(kWarps * 32)
    decode_split_kernel(DecodeAttentionArgs a, std::int64_t n_splits, std::int64_t keys_per_split, float scale) {
  __shared__ float s_q[G][kMaxD];
  __shared__ float s_acc[kWarps][kMaxD];
  __shared__ float s_m[kWarps], s_l[kWarps];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t split = blockIdx.x, h0 = blockIdx.y * static_cast<std::int64_t>(G), b = blockIdx.z;
  const int D = static_cast<int>(a.D);
  const std::int64_t hk = h0 / (a.H / a.Hkv);  // G divides H / Hkv: the block's heads share this KV head
  const std::int64_t kv_b = a.kv_rows ? a.kv_rows[b] : b;
  const std::int64_t len = min(min(a.seq_lens[b], a.S_max), n_splits * keys_per_split);
  const std::int64_t s0 = split * keys_per_split;
  const std::int64_t s1 = min(len, s0 + keys_per_split);
  for (int g = 0; g < G; ++g) {
    const T* q = static_cast<const T*>(a.q) + (b * a.H + h0 + g) * a.D;
    for (int d = threadIdx.x; d < D; d += blockDim.x) s_q[g][d] = to_f32(q[d]);
  }
  __syncthreads();
  const KV* k = static_cast<const KV*>(a.k) + kv_b * a.k_stride_b + hk * a.k_stride_h;
  const KV* v = static_cast<const KV*>(a.v) + kv_b * a.v_stride_b + hk * a.v_stride_h;
  float m[G], l[G], acc[G][kPerLane];
#pragma unroll
  for (int g = 0; g < G; ++g) {
    m[g] = -INFINITY, l[g] = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) acc[g][i] = 0.0f;
  }
  for (std::int64_t g0 = s0 + warp * 32; g0 < s1; g0 += kWarps * 32) {
    const std::int64_t kj = g0 + lane;
    float s[G];
#pragma unroll
    for (int g = 0; g < G; ++g) s[g] = -INFINITY;
    if (kj < s1) {
      const KV* kr = k + kj * a.k_stride_s;
      float dot[G];
#pragma unroll
      for (int g = 0; g < G; ++g) dot[g] = 0.0f;
      for (int d = 0; d < D; ++d) {
        const float kd = to_f32(kr[d]);
#pragma unroll
        for (int g = 0; g < G; ++g) dot[g] = fmaf(s_q[g][d], kd, dot[g]);
      }
#pragma unroll
      for (int g = 0; g < G; ++g) s[g] = dot[g] * scale;
    }
    float p[G];
#pragma unroll
    for (int g = 0; g < G; ++g) p[g] = attn::online_softmax_step(s[g], m[g], l[g], acc[g]);
    const int n = static_cast<int>(min(std::int64_t{32}, s1 - g0));
    attn::accumulate_rows<G>(p, n, v + g0 * a.v_stride_s, a.v_stride_s, D, acc);
  }
  // Merge the warps, head by head.
#pragma unroll
  for (int g = 0; g < G; ++g) {
    float* part = a.workspace + ((b * a.H + h0 + g) * n_splits + split) * (a.D + 2);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int d = lane + 32 * i;
      if (d < D) s_acc[warp][d] = acc[g][i];
    }
    if (lane == 0) s_m[warp] = m[g], s_l[warp] = l[g];
    __syncthreads();
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, s_m[w]);
    float wgt[kWarps];
    float sum = 0.0f;
    for (int w = 0; w < kWarps; ++w) {
      wgt[w] = mx == -INFINITY ? 0.0f : expf(s_m[w] - mx);
      sum += s_l[w] * wgt[w];
    }
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float o = 0.0f;
      for (int w = 0; w < kWarps; ++w) o += s_acc[w][d] * wgt[w];
      part[2 + d] = o;
    }
    if (threadIdx.x == 0) part[0] = mx, part[1] = sum;
    __syncthreads();  // s_acc, s_m, s_l are the next head's
  }
}

template <class T>
__global__ void decode_combine_kernel(DecodeAttentionArgs a, std::int64_t n_splits) {
  const std::int64_t h = blockIdx.x, b = blockIdx.y;
  const float* parts = a.workspace + (b * a.H + h) * n_splits * (a.D + 2);
  float mx = -INFINITY;
  for (std::int64_t s = 0; s < n_splits; ++s) mx = fmaxf(mx, parts[s * (a.D + 2)]);
  float den = 0.0f;
  for (std::int64_t s = 0; s < n_splits; ++s) {
    const float ms = parts[s * (a.D + 2)];
    if (ms != -INFINITY) den += parts[s * (a.D + 2) + 1] * expf(ms - mx);
  }
  const float inv = den > 0.0f ? 1.0f / den : 0.0f;
  T* out = static_cast<T*>(a.out) + (b * a.H + h) * a.D;
  for (std::int64_t d = threadIdx.x; d < a.D; d += blockDim.x) {
    float num = 0.0f;
    for (std::int64_t s = 0; s < n_splits; ++s) {
      const float ms = parts[s * (a.D + 2)];
      if (ms != -INFINITY) num += parts[s * (a.D + 2) + 2 + d] * expf(ms - mx);
    }
    out[d] = from_f32<T>(num * inv);
  }
}

template <class T, class KV, int G>
void run_split(const DecodeAttentionArgs& a, const DecodePlan& plan, float scale, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(plan.n_splits), static_cast<unsigned>(a.H / G), static_cast<unsigned>(a.B));
  decode_split_kernel<T, KV, G><<<grid, kWarps * 32, 0, stream>>>(a, plan.n_splits, plan.keys_per_split, scale);
  ADAPT_CUDA_LAUNCH_CHECK("decode_attention split");
}

template <class T, class KV = T>
void run(const DecodeAttentionArgs& a, const DecodePlan& plan, float scale, cudaStream_t stream) {
  static_assert(kDecodeMaxHeadsPerBlock == 8, "run() instantiates G = 1, 2, 4, 8");
  switch (decode_heads_per_block(a.H, a.Hkv)) {
    case 8: run_split<T, KV, 8>(a, plan, scale, stream); break;
    case 4: run_split<T, KV, 4>(a, plan, scale, stream); break;
    case 2: run_split<T, KV, 2>(a, plan, scale, stream); break;
    default: run_split<T, KV, 1>(a, plan, scale, stream); break;
  }
  decode_combine_kernel<T>
      <<<dim3(static_cast<unsigned>(a.H), static_cast<unsigned>(a.B)), 128, 0, stream>>>(a, plan.n_splits);
  ADAPT_CUDA_LAUNCH_CHECK("decode_attention combine");
}

}  // namespace

DecodePlan decode_attention_plan_for_device(std::int64_t B, std::int64_t H, std::int64_t Hkv,
                                            std::int64_t max_seq_len) {
  int dev = 0, n_sms = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&n_sms, cudaDevAttrMultiProcessorCount, dev);
  ADAPT_REQUIRE(e == cudaSuccess, CudaError, "decode_attention: cannot read the SM count: {}", cudaGetErrorString(e));
  return plan_decode_attention(B, H, max_seq_len, n_sms, decode_heads_per_block(H, Hkv));
}

void launch_decode_attention(const DecodeAttentionArgs& a, const DecodePlan& plan, DType dtype, cudaStream_t stream) {
  launch_decode_attention(a, plan, dtype, dtype, stream);
}

void launch_decode_attention(const DecodeAttentionArgs& a, const DecodePlan& plan, DType dtype, DType kv_dtype,
                             cudaStream_t stream) {
  validate_decode_attention(a, dtype, kv_dtype);
  ADAPT_REQUIRE(plan.n_splits >= 1 && plan.n_splits <= kDecodeMaxSplits && plan.keys_per_split >= 1 &&
                    plan.n_splits * plan.keys_per_split >= a.max_seq_len,
                ShapeError,
                "launch_decode_attention: the plan ({} splits of {} keys) does not cover max_seq_len = {}; make it "
                "with decode_attention_plan_for_device for this length",
                plan.n_splits, plan.keys_per_split, a.max_seq_len);
  ADAPT_REQUIRE(a.H <= 65535 && a.B <= 65535, UnsupportedError,
                "launch_decode_attention: H = {} or B = {} is past the grid limit of 65,535", a.H, a.B);
  if (a.B * a.H == 0) return;
  const float scale = attention_scale(a.scale, a.D);
  if (kv_dtype != dtype) return run<float, __nv_bfloat16>(a, plan, scale, stream);  // f32 q, bf16 cache
  switch (dtype) {
    case DType::F32: return run<float>(a, plan, scale, stream);
    case DType::BF16: return run<__nv_bfloat16>(a, plan, scale, stream);
    case DType::F16: return run<__half>(a, plan, scale, stream);
    case DType::I32:
    case DType::I64:
    case DType::U8:
      ADAPT_THROW(UnsupportedError, "launch_decode_attention: dtype {} is not a float type", dtype_name(dtype));
  }
}

}  // namespace adapt::kernels
