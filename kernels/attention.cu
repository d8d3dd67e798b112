// Causal GQA attention on tensor cores (bf16, head_dim 64 or 128) and the launchers of every path.
//
// Forward (flash-attention 2): a block of 4 warps owns 64 query rows of one (sequence, head); warp w
// owns rows 16w..16w+15. For each tile of 64 keys: S = Q·Kᵀ on wmma m16n16k16 (bf16 in, f32 out) into
// shared memory; an online softmax in f32 (two lanes per row, base-2 exponentials of scale·log2e-scaled
// scores) writes P in bf16 and the rescale factor of each row; O (f32, shared memory) is rescaled and
// O += P·V on wmma. Masked scores are −inf; a row that sees no key ends with out 0, lse −inf.
// Backward: delta = rowsum(dO ⊙ O); one kernel per 64-key tile computes dK and dV in wmma accumulators,
// looping over the query heads of the KV group and the query tiles that can see the keys (Sᵀ, dPᵀ,
// then dV += Pᵀ·dO, dK += dSᵀ·Q); another per 64-query tile computes dQ += dS·K. P is recomputed from
// the saved lse each time. Every output element has one writer: deterministic, no atomics.
// Shared-memory rows are padded (+8 bf16, +4 f32) against bank conflicts, keeping wmma's 32-byte
// alignment of every 16-row / 16-column fragment.
#include <cuda_bf16.h>
#include <mma.h>

#include <algorithm>
#include <cmath>

#include "kernels/attention.h"
#include "kernels/attention_internal.h"
#include "kernels/common/attention_device.cuh"
#include "kernels/common/check.cuh"

namespace adapt::kernels {
namespace {

using namespace nvcuda;
using attn::grid_of;
using attn::key_visible;
using bf16_t = __nv_bfloat16;

constexpr int kBr = static_cast<int>(kTcTileQ);
constexpr int kBc = static_cast<int>(kTcTileK);
constexpr int kThreads = 128;  // 4 warps × 16 rows
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

using FragA = wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16_t, wmma::row_major>;
using FragBRow = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16_t, wmma::row_major>;
using FragBCol = wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16_t, wmma::col_major>;
using FragC = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

constexpr std::size_t align128(std::size_t x) { return (x + 127) / 128 * 128; }

template <int D>
struct Tc {
  static constexpr int ldh = D + 8;    // bf16 rows of D
  static constexpr int lds = kBc + 4;  // f32 rows of 64 (scores)
  static constexpr int ldp = kBc + 8;  // bf16 rows of 64 (probabilities)
  static constexpr int ldo = D + 4;    // f32 rows of D
  static constexpr std::size_t tile_h = align128(sizeof(bf16_t) * 64 * ldh);
  static constexpr std::size_t tile_s = align128(sizeof(float) * 64 * lds);
  static constexpr std::size_t tile_p = align128(sizeof(bf16_t) * 64 * ldp);
  static constexpr std::size_t tile_o = align128(sizeof(float) * 64 * ldo);
  static constexpr std::size_t rows = align128(sizeof(float) * 64);
  // forward: Q K V | S | P | O | m l alpha
  static constexpr std::size_t fwd_bytes = 3 * tile_h + tile_s + tile_p + tile_o + 3 * rows;
  // dq: Q dO K V | S dP | dS | lse delta   (the f32 dq staging reuses K,V at the end)
  static constexpr std::size_t dq_bytes = 4 * tile_h + 2 * tile_s + tile_p + 2 * rows;
  // dk/dv: K V Q dO | Sᵀ dPᵀ | Pᵀ dSᵀ | lse delta   (the staging reuses Q,dO at the end)
  static constexpr std::size_t dkdv_bytes = 4 * tile_h + 2 * tile_s + 2 * tile_p + 2 * rows;
  static_assert(2 * tile_h >= sizeof(float) * 64 * ldo, "staging of a 64×D f32 tile must fit in two bf16 tiles");
  // sm_80 allows at most 163 KiB of shared memory per block (sm_90: 227 KiB).
  static_assert(fwd_bytes <= 163 * 1024 && dq_bytes <= 163 * 1024 && dkdv_bytes <= 163 * 1024,
                "too much shared memory for sm_80");
};

/// Copies rows [r0, r0 + 64) of a (rows, D) bf16 matrix with row stride `ld` (elements) into shared
/// memory (row stride D + 8), 16 bytes at a time; rows at or past `n_rows` become zeros.
template <int D>
__device__ __forceinline__ void load_tile(bf16_t* dst, const bf16_t* src, std::int64_t ld, std::int64_t r0,
                                          std::int64_t n_rows) {
  constexpr int vec_per_row = D / 8;
  for (int i = threadIdx.x; i < 64 * vec_per_row; i += kThreads) {
    const int r = i / vec_per_row, c = (i % vec_per_row) * 8;
    uint4 val = make_uint4(0, 0, 0, 0);
    if (r0 + r < n_rows) val = *reinterpret_cast<const uint4*>(src + (r0 + r) * ld + c);
    *reinterpret_cast<uint4*>(dst + r * Tc<D>::ldh + c) = val;
  }
}

/// dst (16 × 64, f32, ld lds) = A (16 × D rows of `a`) · Bᵀ where B is 64 × D rows of `b` (both bf16,
/// row stride D + 8): one warp.
template <int D>
__device__ __forceinline__ void warp_abt(float* dst, const bf16_t* a, const bf16_t* b) {
  for (int n = 0; n < kBc / 16; ++n) {
    FragC c;
    wmma::fill_fragment(c, 0.0f);
    for (int kk = 0; kk < D / 16; ++kk) {
      FragA fa;
      FragBCol fb;
      wmma::load_matrix_sync(fa, a + kk * 16, Tc<D>::ldh);
      wmma::load_matrix_sync(fb, b + n * 16 * Tc<D>::ldh + kk * 16, Tc<D>::ldh);
      wmma::mma_sync(c, fa, fb, c);
    }
    wmma::store_matrix_sync(dst + n * 16, c, Tc<D>::lds, wmma::mem_row_major);
  }
}

/// acc[n] (16 × 16 column block n of a 16 × D result) += P (16 × 64 bf16, ld ldp) · B (64 × D bf16).
template <int D>
__device__ __forceinline__ void warp_pb(FragC* acc, const bf16_t* p, const bf16_t* b) {
  for (int kk = 0; kk < kBc / 16; ++kk) {
    FragA fa;
    wmma::load_matrix_sync(fa, p + kk * 16, Tc<D>::ldp);
    for (int n = 0; n < D / 16; ++n) {
      FragBRow fb;
      wmma::load_matrix_sync(fb, b + kk * 16 * Tc<D>::ldh + n * 16, Tc<D>::ldh);
      wmma::mma_sync(acc[n], fa, fb, acc[n]);
    }
  }
}

/// Loads the query tile [q0, q0 + 64) of head h of sequence b for the backward: Q and dO (zeros past
/// T), lse (scaled to base 2) and delta.
template <int D>
__device__ __forceinline__ void load_query_tile(const AttentionBackwardArgs& a, std::int64_t b, std::int64_t h,
                                                std::int64_t q0, bf16_t* sQ, bf16_t* sdO, float* sLse, float* sDelta) {
  const std::int64_t row0 = ((b * a.T + q0) * a.H + h) * D;
  load_tile<D>(sQ, static_cast<const bf16_t*>(a.q) + row0, a.H * D, 0, a.T - q0);
  load_tile<D>(sdO, static_cast<const bf16_t*>(a.dout) + row0, a.H * D, 0, a.T - q0);
  if (threadIdx.x < 64) {
    const std::int64_t t = q0 + threadIdx.x;
    sLse[threadIdx.x] = t < a.T ? a.lse[(b * a.H + h) * a.T + t] * kLog2e : 0.0f;
    sDelta[threadIdx.x] = t < a.T ? a.delta[(b * a.H + h) * a.T + t] : 0.0f;
  }
}

/// Writes this warp's 16 × D accumulator rows, times `mul`, as bf16 rows r0 + warp·16 + i (i < 16,
/// only those below n_rows) of dst with row stride ld, through the f32 staging tile `stage`.
template <int D>
__device__ __forceinline__ void store_warp_rows(FragC* acc, float mul, float* stage, bf16_t* dst, std::int64_t ld,
                                                std::int64_t r0, std::int64_t n_rows) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int n = 0; n < D / 16; ++n) {
    for (int i = 0; i < acc[n].num_elements; ++i) acc[n].x[i] *= mul;
    wmma::store_matrix_sync(stage + warp * 16 * Tc<D>::ldo + n * 16, acc[n], Tc<D>::ldo, wmma::mem_row_major);
  }
  __syncwarp();
  for (int i = lane; i < 16 * D; i += 32) {
    const int rr = warp * 16 + i / D, cc = i % D;
    if (r0 + rr < n_rows) dst[(r0 + rr) * ld + cc] = __float2bfloat16_rn(stage[rr * Tc<D>::ldo + cc]);
  }
  __syncwarp();  // the staging rows may be written again
}

template <int D>
__global__ void __launch_bounds__(kThreads) tc_forward_kernel(AttentionForwardArgs a, float scale) {
  using L = Tc<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16_t* sQ = reinterpret_cast<bf16_t*>(smem);
  bf16_t* sK = reinterpret_cast<bf16_t*>(smem + L::tile_h);
  bf16_t* sV = reinterpret_cast<bf16_t*>(smem + 2 * L::tile_h);
  float* sS = reinterpret_cast<float*>(smem + 3 * L::tile_h);
  bf16_t* sP = reinterpret_cast<bf16_t*>(smem + 3 * L::tile_h + L::tile_s);
  float* sO = reinterpret_cast<float*>(smem + 3 * L::tile_h + L::tile_s + L::tile_p);
  float* sM = reinterpret_cast<float*>(smem + 3 * L::tile_h + L::tile_s + L::tile_p + L::tile_o);
  float* sL = sM + 64;
  float* sAlpha = sL + 64;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t q0 = blockIdx.x * static_cast<std::int64_t>(kBr);
  const std::int64_t h = blockIdx.y, b = blockIdx.z;
  const std::int64_t hk = h / (a.H / a.Hkv);
  const std::int64_t offset = a.q_pos_offsets ? a.q_pos_offsets[b] : a.q_pos_offset;
  const std::int64_t kv_b = a.kv_rows ? a.kv_rows[b] : b;
  const std::int32_t* seg = a.segment_ids ? a.segment_ids + b * a.T : nullptr;
  const bf16_t* k = static_cast<const bf16_t*>(a.k) + kv_b * a.k_stride_b + hk * a.k_stride_h;
  const bf16_t* v = static_cast<const bf16_t*>(a.v) + kv_b * a.v_stride_b + hk * a.v_stride_h;
  // Q rows of this block: (b, q0 + r, h, :) with row stride H·D.
  load_tile<D>(sQ, static_cast<const bf16_t*>(a.q) + ((b * a.T + q0) * a.H + h) * D, a.H * D, 0, a.T - q0);
  for (int i = threadIdx.x; i < 64 * L::ldo; i += kThreads) sO[i] = 0.0f;
  if (threadIdx.x < 64) sM[threadIdx.x] = -INFINITY, sL[threadIdx.x] = 0.0f, sAlpha[threadIdx.x] = 1.0f;

  const std::int64_t q_end = min(a.T, q0 + kBr);
  const std::int64_t key_limit = min(a.S, offset + q_end);  // keys any row of the block can see
  const float scale2 = scale * kLog2e;
  // The row this lane's softmax works on, and its half of the 64 columns: every other one, so that the
  // warp's 32 lanes meet 16 shared-memory banks (halves of 32 columns side by side met 8).
  const int r = warp * 16 + lane / 2;
  const int c0 = lane % 2;
  const std::int64_t qi = q0 + r;

  for (std::int64_t k0 = 0; k0 < key_limit; k0 += kBc) {
    __syncthreads();  // previous tile's K, V fully used (and the initial stores visible)
    load_tile<D>(sK, k, a.k_stride_s, k0, key_limit);
    load_tile<D>(sV, v, a.v_stride_s, k0, key_limit);
    __syncthreads();
    warp_abt<D>(sS + warp * 16 * L::lds, sQ + warp * 16 * L::ldh, sK);
    __syncwarp();
    // Online softmax on row r, columns c0, c0 + 2, .., c0 + 62.
    float* srow = sS + r * L::lds;
    float mx = -INFINITY;
    for (int c = c0; c < kBc; c += 2) {
      const std::int64_t kj = k0 + c;
      const bool vis = qi < a.T && kj < key_limit && key_visible(qi, kj, offset, seg);
      const float s = vis ? srow[c] * scale2 : -INFINITY;
      srow[c] = s;
      mx = fmaxf(mx, s);
    }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    const float m_old = sM[r];
    const float m_new = fmaxf(m_old, mx);
    const float alpha = m_new == -INFINITY ? 1.0f : exp2f(m_old - m_new);
    float sum = 0.0f;
    for (int c = c0; c < kBc; c += 2) {
      const float p = srow[c] == -INFINITY ? 0.0f : exp2f(srow[c] - m_new);
      sum += p;
      sP[r * L::ldp + c] = __float2bfloat16_rn(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    __syncwarp();  // both lanes of the row have read sM[r]
    if (lane % 2 == 0) sM[r] = m_new, sL[r] = sL[r] * alpha + sum, sAlpha[r] = alpha;
    __syncwarp();
    // O = O · alpha (per row) + P · V for this warp's 16 rows.
    float* o_w = sO + warp * 16 * L::ldo;
    for (int i = lane; i < 16 * D; i += 32) {
      const int rr = i / D, cc = i % D;
      o_w[rr * L::ldo + cc] *= sAlpha[warp * 16 + rr];
    }
    __syncwarp();
    for (int n = 0; n < D / 16; ++n) {
      FragC acc;
      wmma::load_matrix_sync(acc, o_w + n * 16, L::ldo, wmma::mem_row_major);
      for (int kk = 0; kk < kBc / 16; ++kk) {
        FragA fa;
        FragBRow fb;
        wmma::load_matrix_sync(fa, sP + warp * 16 * L::ldp + kk * 16, L::ldp);
        wmma::load_matrix_sync(fb, sV + kk * 16 * L::ldh + n * 16, L::ldh);
        wmma::mma_sync(acc, fa, fb, acc);
      }
      wmma::store_matrix_sync(o_w + n * 16, acc, L::ldo, wmma::mem_row_major);
    }
    __syncwarp();
  }
  __syncthreads();
  // Write this warp's rows: out = O / l, lse = (m + log2 l) · ln 2.
  for (int i = lane; i < 16 * D; i += 32) {
    const int rr = warp * 16 + i / D, cc = i % D;
    const std::int64_t t = q0 + rr;
    if (t >= a.T) continue;
    const float l = sL[rr];
    const float val = l > 0.0f ? sO[rr * L::ldo + cc] / l : 0.0f;
    static_cast<bf16_t*>(a.out)[((b * a.T + t) * a.H + h) * D + cc] = __float2bfloat16_rn(val);
  }
  if (a.lse && lane < 16) {
    const int rr = warp * 16 + lane;
    const std::int64_t t = q0 + rr;
    if (t < a.T) a.lse[(b * a.H + h) * a.T + t] = sL[rr] > 0.0f ? (sM[rr] + log2f(sL[rr])) * kLn2 : -INFINITY;
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads) tc_dq_kernel(AttentionBackwardArgs a, float scale) {
  using L = Tc<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16_t* sQ = reinterpret_cast<bf16_t*>(smem);
  bf16_t* sdO = reinterpret_cast<bf16_t*>(smem + L::tile_h);
  bf16_t* sK = reinterpret_cast<bf16_t*>(smem + 2 * L::tile_h);
  bf16_t* sV = reinterpret_cast<bf16_t*>(smem + 3 * L::tile_h);
  float* sS = reinterpret_cast<float*>(smem + 4 * L::tile_h);
  float* sdP = reinterpret_cast<float*>(smem + 4 * L::tile_h + L::tile_s);
  bf16_t* sdS = reinterpret_cast<bf16_t*>(smem + 4 * L::tile_h + 2 * L::tile_s);
  float* sLse = reinterpret_cast<float*>(smem + 4 * L::tile_h + 2 * L::tile_s + L::tile_p);
  float* sDelta = sLse + 64;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t q0 = blockIdx.x * static_cast<std::int64_t>(kBr);
  const std::int64_t h = blockIdx.y, b = blockIdx.z;
  const std::int64_t hk = h / (a.H / a.Hkv);
  const std::int64_t offset = a.q_pos_offset;
  const std::int32_t* seg = a.segment_ids ? a.segment_ids + b * a.T : nullptr;
  const bf16_t* k = static_cast<const bf16_t*>(a.k) + (b * a.Hkv + hk) * a.S * D;
  const bf16_t* v = static_cast<const bf16_t*>(a.v) + (b * a.Hkv + hk) * a.S * D;
  load_query_tile<D>(a, b, h, q0, sQ, sdO, sLse, sDelta);
  FragC acc[D / 16];
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(acc[n], 0.0f);

  const std::int64_t q_end = min(a.T, q0 + kBr);
  const std::int64_t key_limit = min(a.S, offset + q_end);
  const float scale2 = scale * kLog2e;
  const int r = warp * 16 + lane / 2, c0 = lane % 2;  // query row r, every other key column from c0
  const std::int64_t qi = q0 + r;
  for (std::int64_t k0 = 0; k0 < key_limit; k0 += kBc) {
    __syncthreads();
    load_tile<D>(sK, k, D, k0, key_limit);
    load_tile<D>(sV, v, D, k0, key_limit);
    __syncthreads();
    warp_abt<D>(sS + warp * 16 * L::lds, sQ + warp * 16 * L::ldh, sK);
    warp_abt<D>(sdP + warp * 16 * L::lds, sdO + warp * 16 * L::ldh, sV);
    __syncwarp();
    for (int c = c0; c < kBc; c += 2) {
      const std::int64_t kj = k0 + c;
      float ds = 0.0f;
      if (qi < a.T && kj < key_limit && key_visible(qi, kj, offset, seg)) {
        const float p = exp2f(sS[r * L::lds + c] * scale2 - sLse[r]);
        ds = p * (sdP[r * L::lds + c] - sDelta[r]);
      }
      sdS[r * L::ldp + c] = __float2bfloat16_rn(ds);
    }
    __syncwarp();
    warp_pb<D>(acc, sdS + warp * 16 * L::ldp, sK);
  }
  __syncthreads();  // every warp is done with sK, sV: reuse them as the f32 staging tile
  // dq rows (b, t, h, :) have stride H·D; the tile starts at row q0.
  store_warp_rows<D>(acc, scale, reinterpret_cast<float*>(sK), static_cast<bf16_t*>(a.dq) + (b * a.T * a.H + h) * D,
                     a.H * D, q0, a.T);
}

template <int D>
__global__ void __launch_bounds__(kThreads) tc_dkdv_kernel(AttentionBackwardArgs a, float scale) {
  using L = Tc<D>;
  extern __shared__ __align__(128) unsigned char smem[];
  bf16_t* sK = reinterpret_cast<bf16_t*>(smem);
  bf16_t* sV = reinterpret_cast<bf16_t*>(smem + L::tile_h);
  bf16_t* sQ = reinterpret_cast<bf16_t*>(smem + 2 * L::tile_h);
  bf16_t* sdO = reinterpret_cast<bf16_t*>(smem + 3 * L::tile_h);
  float* sS = reinterpret_cast<float*>(smem + 4 * L::tile_h);               // Sᵀ: rows keys, columns queries
  float* sdP = reinterpret_cast<float*>(smem + 4 * L::tile_h + L::tile_s);  // dPᵀ
  bf16_t* sP = reinterpret_cast<bf16_t*>(smem + 4 * L::tile_h + 2 * L::tile_s);
  bf16_t* sdS = reinterpret_cast<bf16_t*>(smem + 4 * L::tile_h + 2 * L::tile_s + L::tile_p);
  float* sLse = reinterpret_cast<float*>(smem + 4 * L::tile_h + 2 * L::tile_s + 2 * L::tile_p);
  float* sDelta = sLse + 64;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const std::int64_t k0 = blockIdx.x * static_cast<std::int64_t>(kBc);
  const std::int64_t hk = blockIdx.y, b = blockIdx.z;
  const std::int64_t n_rep = a.H / a.Hkv;
  const std::int64_t offset = a.q_pos_offset;
  const std::int32_t* seg = a.segment_ids ? a.segment_ids + b * a.T : nullptr;
  const std::int64_t kv_base = (b * a.Hkv + hk) * a.S * D;
  load_tile<D>(sK, static_cast<const bf16_t*>(a.k) + kv_base, D, k0, a.S);
  load_tile<D>(sV, static_cast<const bf16_t*>(a.v) + kv_base, D, k0, a.S);
  FragC acc_k[D / 16], acc_v[D / 16];
  for (int n = 0; n < D / 16; ++n) wmma::fill_fragment(acc_k[n], 0.0f), wmma::fill_fragment(acc_v[n], 0.0f);

  const float scale2 = scale * kLog2e;
  const int r = warp * 16 + lane / 2, c0 = lane % 2;  // key row r, every other query column from c0
  const std::int64_t kj = k0 + r;
  const std::int64_t t_first = k0 > offset ? k0 - offset : 0;  // first query that sees key k0
  const std::int64_t qt_first = t_first / kBr * kBr;
  for (std::int64_t hh = 0; hh < n_rep; ++hh) {
    const std::int64_t h = hk * n_rep + hh;
    for (std::int64_t q0 = qt_first; q0 < a.T; q0 += kBr) {
      __syncthreads();  // previous tile's Q, dO, lse, delta fully used
      load_query_tile<D>(a, b, h, q0, sQ, sdO, sLse, sDelta);
      __syncthreads();
      warp_abt<D>(sS + warp * 16 * L::lds, sK + warp * 16 * L::ldh, sQ);    // Sᵀ = K·Qᵀ
      warp_abt<D>(sdP + warp * 16 * L::lds, sV + warp * 16 * L::ldh, sdO);  // dPᵀ = V·dOᵀ
      __syncwarp();
      for (int c = c0; c < kBr; c += 2) {
        const std::int64_t qi = q0 + c;
        float p = 0.0f, ds = 0.0f;
        if (kj < a.S && qi < a.T && key_visible(qi, kj, offset, seg)) {
          p = exp2f(sS[r * L::lds + c] * scale2 - sLse[c]);
          ds = p * (sdP[r * L::lds + c] - sDelta[c]);
        }
        sP[r * L::ldp + c] = __float2bfloat16_rn(p);
        sdS[r * L::ldp + c] = __float2bfloat16_rn(ds);
      }
      __syncwarp();
      warp_pb<D>(acc_v, sP + warp * 16 * L::ldp, sdO);  // dV += Pᵀ·dO
      warp_pb<D>(acc_k, sdS + warp * 16 * L::ldp, sQ);  // dK += dSᵀ·Q
    }
  }
  __syncthreads();  // done with sQ, sdO: reuse them as the f32 staging tile
  float* stage = reinterpret_cast<float*>(sQ);
  store_warp_rows<D>(acc_v, 1.0f, stage, static_cast<bf16_t*>(a.dv) + kv_base, D, k0, a.S);
  store_warp_rows<D>(acc_k, scale, stage, static_cast<bf16_t*>(a.dk) + kv_base, D, k0, a.S);
}

template <class Kernel>
void set_smem(Kernel kernel, std::size_t bytes, const char* what) {
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  ADAPT_REQUIRE(e == cudaSuccess, CudaError,
                "{}: cannot reserve {} bytes of shared memory per block: {} (the tensor-core kernels need sm_80 or "
                "newer)",
                what, bytes, cudaGetErrorString(e));
}

// The most shared memory any of head width D's tensor-core kernels takes per block.
std::size_t tc_bytes(std::int64_t D) {
  const auto most = [](auto tc) { return std::max({tc.fwd_bytes, tc.dq_bytes, tc.dkdv_bytes}); };
  return D == 64 ? most(Tc<64>{}) : most(Tc<128>{});
}

// The dynamic shared memory a block may opt in to on the current device.
std::size_t shared_memory_optin() {
  int device = 0, bytes = 0;
  cudaError_t e = cudaGetDevice(&device);
  if (e == cudaSuccess) e = cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  ADAPT_REQUIRE(e == cudaSuccess, CudaError, "attention: cannot read the shared memory per block of the device: {}",
                cudaGetErrorString(e));
  return static_cast<std::size_t>(bytes);
}

template <int D>
void tc_forward(const AttentionForwardArgs& a, float scale, cudaStream_t stream) {
  set_smem(tc_forward_kernel<D>, Tc<D>::fwd_bytes, "attention_forward");
  tc_forward_kernel<D>
      <<<grid_of(attention_query_grid(AttentionPath::TensorCore, a.B, a.T, a.H)), kThreads, Tc<D>::fwd_bytes, stream>>>(
          a, scale);
  ADAPT_CUDA_LAUNCH_CHECK("attention_forward (tensor cores)");
}

template <int D>
void tc_backward(const AttentionBackwardArgs& a, float scale, cudaStream_t stream) {
  set_smem(tc_dq_kernel<D>, Tc<D>::dq_bytes, "attention_backward dq");
  set_smem(tc_dkdv_kernel<D>, Tc<D>::dkdv_bytes, "attention_backward dk/dv");
  tc_dq_kernel<D>
      <<<grid_of(attention_query_grid(AttentionPath::TensorCore, a.B, a.T, a.H)), kThreads, Tc<D>::dq_bytes, stream>>>(
          a, scale);
  ADAPT_CUDA_LAUNCH_CHECK("attention_backward dq (tensor cores)");
  tc_dkdv_kernel<D><<<grid_of(attention_key_grid(AttentionPath::TensorCore, a.B, a.S, a.Hkv)), kThreads,
                      Tc<D>::dkdv_bytes, stream>>>(a, scale);
  ADAPT_CUDA_LAUNCH_CHECK("attention_backward dk/dv (tensor cores)");
}

}  // namespace

AttentionPath attention_path_on_device(DType dtype, std::int64_t D) {
  const AttentionPath path = choose_attention_path(dtype, D);
  if (path == AttentionPath::TensorCore && tc_bytes(D) > shared_memory_optin()) return AttentionPath::Generic;
  return path;
}

void launch_attention_forward(const AttentionForwardArgs& a, DType dtype, DType kv_dtype, cudaStream_t stream) {
  validate_attention_forward(a, dtype, kv_dtype);
  if (a.B * a.T * a.H == 0) return;
  const float scale = attention_scale(a.scale, a.D);
  if (kv_dtype == dtype && attention_path_on_device(dtype, a.D) == AttentionPath::TensorCore) {
    if (a.D == 64) return tc_forward<64>(a, scale, stream);
    return tc_forward<128>(a, scale, stream);
  }
  attn::generic_forward(a, dtype, kv_dtype, scale, stream);
}

void launch_attention_forward(const AttentionForwardArgs& a, DType dtype, cudaStream_t stream) {
  launch_attention_forward(a, dtype, dtype, stream);
}

void launch_attention_backward(const AttentionBackwardArgs& a, DType dtype, cudaStream_t stream) {
  validate_attention_backward(a, dtype);
  if (a.B * a.H * a.S == 0) {
    if (a.B * a.T * a.H > 0) {  // no keys: nothing flows to q
      cudaError_t e =
          cudaMemsetAsync(a.dq, 0, static_cast<std::size_t>(a.B * a.T * a.H * a.D) * dtype_size(dtype), stream);
      ADAPT_REQUIRE(e == cudaSuccess, CudaError, "attention_backward: clearing dq failed: {}", cudaGetErrorString(e));
    }
    return;
  }
  if (a.T == 0) {  // no queries: dk = dv = 0
    const std::size_t bytes = static_cast<std::size_t>(a.B * a.Hkv * a.S * a.D) * dtype_size(dtype);
    cudaError_t e = cudaMemsetAsync(a.dk, 0, bytes, stream);
    if (e == cudaSuccess) e = cudaMemsetAsync(a.dv, 0, bytes, stream);
    ADAPT_REQUIRE(e == cudaSuccess, CudaError, "attention_backward: clearing dk/dv failed: {}", cudaGetErrorString(e));
    return;
  }
  const float scale = attention_scale(a.scale, a.D);
  attn::backward_delta(a, dtype, stream);
  if (attention_path_on_device(dtype, a.D) == AttentionPath::TensorCore) {
    if (a.D == 64) return tc_backward<64>(a, scale, stream);
    return tc_backward<128>(a, scale, stream);
  }
  attn::generic_backward_dq(a, dtype, scale, stream);
  attn::generic_backward_dkdv(a, dtype, scale, stream);
}

}  // namespace adapt::kernels
