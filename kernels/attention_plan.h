// Host-side planning for the attention kernels (kernels/attention.cu, kernels/decode_attention.cu):
// the argument structs of the launchers, their validation, which kernel runs for a shape, grid sizes,
// and the split-K plan of decode attention. Plain C++ with no CUDA headers, so the CPU unit tests
// (tests/unit/ops/attention_plan_test.cpp) exercise it on machines without a GPU.
//
// Layouts are those of the CPU op (src/ops/attention.h):
//   q, out (B, T, H, D) contiguous; k, v (B_kv, Hkv, S, D) with the given strides (unit along D);
//   lse, delta (B, H, T) f32; GQA: query head h reads KV head h / (H / Hkv).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "core/error.h"
#include "dtype/dtype.h"

namespace adapt::kernels {

/// Arguments of launch_attention_forward. Pointers are device memory; q/k/v/out share `dtype`.
struct AttentionForwardArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;  // (B, H, T) natural-log log-sum-exp per query row, or null
  std::int64_t B = 0, T = 0, H = 0, Hkv = 0, D = 0, S = 0;
  std::int64_t B_kv = 0;                                        // rows of k/v (== B unless kv_rows is given)
  std::int64_t k_stride_b = 0, k_stride_h = 0, k_stride_s = 0;  // in elements
  std::int64_t v_stride_b = 0, v_stride_h = 0, v_stride_s = 0;
  std::int64_t q_pos_offset = 0;                // position of query 0 among the keys
  const std::int64_t* q_pos_offsets = nullptr;  // (B) device, per-sequence offsets, or null
  const std::int64_t* kv_rows = nullptr;        // (B) device, k/v row of each sequence, or null
  const std::int32_t* segment_ids = nullptr;    // (B·T) device, packed documents (S == T, no offsets), or null
  float scale = 0.0f;                           // 0: 1/sqrt(D)
};

/// Arguments of launch_attention_backward (no ragged fields: training attends within each row).
/// q, k, v, out, dout, dq, dk, dv share `dtype`; every tensor contiguous; k, v, dk, dv (B, Hkv, S, D).
struct AttentionBackwardArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* out = nullptr;
  const void* dout = nullptr;
  const float* lse = nullptr;  // (B, H, T) from the forward
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  float* delta = nullptr;  // workspace (B, H, T) f32: rowsum(dout ⊙ out); attention_backward_workspace_bytes
  std::int64_t B = 0, T = 0, H = 0, Hkv = 0, D = 0, S = 0;
  std::int64_t q_pos_offset = 0;
  const std::int32_t* segment_ids = nullptr;
  float scale = 0.0f;
};

/// Which kernel family runs a forward/backward.
enum class AttentionPath {
  TensorCore,  // bf16, D ∈ {64, 128}: 64×64 tiles on wmma m16n16k16 bf16 with f32 accumulation
  Generic,     // any dtype in {f32, bf16, f16}, D ≤ kGenericMaxHeadDim: one warp per row, f32 arithmetic
};

constexpr std::int64_t kTcTileQ = 64;  // query rows per block of the tensor-core kernels (4 warps × 16)
constexpr std::int64_t kTcTileK = 64;  // keys per tile
constexpr std::int64_t kGenericMaxHeadDim = 256;
constexpr int kGenericRowsPerBlock = 4;  // warps (rows) per block of the generic kernels

inline bool attention_dtype_supported(DType dt) { return dt == DType::F32 || dt == DType::BF16 || dt == DType::F16; }

inline AttentionPath choose_attention_path(DType dt, std::int64_t D) {
  if (dt == DType::BF16 && (D == 64 || D == 128)) return AttentionPath::TensorCore;
  return AttentionPath::Generic;
}

inline float attention_scale(float scale, std::int64_t D) {
  return scale != 0.0f ? scale : 1.0f / std::sqrt(static_cast<float>(D));
}

namespace detail {
inline void check_common_sizes(const char* op, DType dt, std::int64_t B, std::int64_t T, std::int64_t H,
                               std::int64_t Hkv, std::int64_t D, std::int64_t S) {
  ADAPT_REQUIRE(attention_dtype_supported(dt), UnsupportedError,
                "{}: dtype {} is not supported on the GPU (f32, bf16 or f16)", op, dtype_name(dt));
  ADAPT_REQUIRE(B >= 0 && T >= 0 && H > 0 && Hkv > 0 && S >= 0, ShapeError,
                "{}: sizes must be non-negative with H, Hkv > 0 (B {}, T {}, H {}, Hkv {}, S {})", op, B, T, H, Hkv, S);
  ADAPT_REQUIRE(H % Hkv == 0, ShapeError,
                "{}: {} query heads are not a multiple of {} KV heads (GQA shares each KV head among a whole number "
                "of query heads)",
                op, H, Hkv);
  ADAPT_REQUIRE(D > 0 && D <= kGenericMaxHeadDim && D % 8 == 0, UnsupportedError,
                "{}: head_dim {} is not supported on the GPU (a multiple of 8 up to {}; 64 and 128 use tensor cores "
                "in bf16)",
                op, D, kGenericMaxHeadDim);
  ADAPT_REQUIRE(B <= 65535 && H <= 65535, UnsupportedError,
                "{}: B = {} or H = {} is past the CUDA grid limit of 65,535 (launch in batches)", op, B, H);
  ADAPT_REQUIRE(T <= (std::int64_t{1} << 31) - 1 && S <= (std::int64_t{1} << 31) - 1, UnsupportedError,
                "{}: T = {} or S = {} is past 2^31 − 1 positions", op, T, S);
}
inline bool aligned16(const void* p) { return (reinterpret_cast<std::uintptr_t>(p) & 15u) == 0; }
/// k and v share q's type, or are bf16 under f32 queries (a bf16 KV cache read by an f32 forward).
inline void check_kv_dtype(const char* op, DType dt, DType kv_dt) {
  ADAPT_REQUIRE(kv_dt == dt || (dt == DType::F32 && kv_dt == DType::BF16), UnsupportedError,
                "{}: k/v of type {} under q of type {}; k and v take q's type, or bf16 under f32 q", op,
                dtype_name(kv_dt), dtype_name(dt));
}
}  // namespace detail

/// Throws ShapeError/UnsupportedError (naming the field) for arguments the forward kernels cannot run.
/// Checks only what the host can see: per-sequence offsets and kv_rows live on the device, so the
/// caller (the op glue) validates their values as the CPU op does.
/// `kv_dt` is the type of k and v: `dt` (that of q and out), or bf16 with f32 q (a bf16 KV cache).
inline void validate_attention_forward(const AttentionForwardArgs& a, DType dt, DType kv_dt) {
  constexpr const char* op = "launch_attention_forward";
  detail::check_kv_dtype(op, dt, kv_dt);
  detail::check_common_sizes(op, dt, a.B, a.T, a.H, a.Hkv, a.D, a.S);
  ADAPT_REQUIRE(a.kv_rows || a.B_kv == 0 || a.B_kv == a.B, ShapeError,
                "{}: B_kv = {} differs from B = {} without kv_rows", op, a.B_kv, a.B);
  ADAPT_REQUIRE(!a.kv_rows || a.B_kv > 0, ShapeError, "{}: kv_rows given but B_kv = {}", op, a.B_kv);
  if (!a.q_pos_offsets) {
    ADAPT_REQUIRE(a.q_pos_offset >= 0 && a.S >= a.q_pos_offset + a.T, ShapeError,
                  "{}: {} queries at offset {} need {} keys but k holds S = {}", op, a.T, a.q_pos_offset,
                  a.q_pos_offset + a.T, a.S);
  }
  if (a.segment_ids) {
    ADAPT_REQUIRE(a.S == a.T && a.q_pos_offset == 0 && !a.q_pos_offsets && !a.kv_rows, UnsupportedError,
                  "{}: segment ids mask packed rows whose keys are the queries' own tokens (S = {} must equal T = {}, "
                  "no offsets, no kv_rows)",
                  op, a.S, a.T);
  }
  if (a.B * a.T == 0) return;
  ADAPT_REQUIRE(a.q && a.k && a.v && a.out, ShapeError, "{}: null q, k, v or out", op);
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(kv_dt));
  const std::int64_t strides[] = {a.k_stride_b, a.k_stride_h, a.k_stride_s, a.v_stride_b, a.v_stride_h, a.v_stride_s};
  for (std::int64_t s : strides) {
    ADAPT_REQUIRE(s >= 0 && (s * es) % 16 == 0, UnsupportedError,
                  "{}: k/v strides must be multiples of 16 bytes for vector loads (got a stride of {} elements of {})",
                  op, s, dtype_name(kv_dt));
  }
  ADAPT_REQUIRE(a.k_stride_s >= a.D && a.v_stride_s >= a.D, ShapeError,
                "{}: k/v position strides ({}, {}) are smaller than D = {}", op, a.k_stride_s, a.v_stride_s, a.D);
  ADAPT_REQUIRE(detail::aligned16(a.q) && detail::aligned16(a.k) && detail::aligned16(a.v) && detail::aligned16(a.out),
                UnsupportedError, "{}: q, k, v and out must be 16-byte aligned", op);
}
inline void validate_attention_forward(const AttentionForwardArgs& a, DType dt) {
  validate_attention_forward(a, dt, dt);
}

inline void validate_attention_backward(const AttentionBackwardArgs& a, DType dt) {
  constexpr const char* op = "launch_attention_backward";
  detail::check_common_sizes(op, dt, a.B, a.T, a.H, a.Hkv, a.D, a.S);
  ADAPT_REQUIRE(a.q_pos_offset >= 0 && a.S >= a.q_pos_offset + a.T, ShapeError,
                "{}: {} queries at offset {} need {} keys but k holds S = {}", op, a.T, a.q_pos_offset,
                a.q_pos_offset + a.T, a.S);
  if (a.segment_ids) {
    ADAPT_REQUIRE(a.S == a.T && a.q_pos_offset == 0, UnsupportedError,
                  "{}: segment ids need keys that are the queries' own tokens (S = {} == T = {}, offset 0)", op, a.S,
                  a.T);
  }
  if (a.B * a.S == 0) return;
  ADAPT_REQUIRE(a.q && a.k && a.v && a.dk && a.dv, ShapeError, "{}: null q, k, v, dk or dv", op);
  if (a.T > 0) {
    ADAPT_REQUIRE(a.out && a.dout && a.lse && a.dq && a.delta, ShapeError,
                  "{}: null out, dout, lse, dq or delta workspace", op);
  }
  for (const void* p : {a.q, a.k, a.v, a.out, a.dout, static_cast<const void*>(a.dq), static_cast<const void*>(a.dk),
                        static_cast<const void*>(a.dv)}) {
    ADAPT_REQUIRE(!p || detail::aligned16(p), UnsupportedError, "{}: every tensor must be 16-byte aligned", op);
  }
}

/// Bytes of the `delta` workspace of the backward: (B, H, T) f32.
inline std::int64_t attention_backward_workspace_bytes(std::int64_t B, std::int64_t H, std::int64_t T) {
  return B * H * T * static_cast<std::int64_t>(sizeof(float));
}

/// Grid of the forward and of the backward's dq kernel: (query tiles, H, B).
struct Grid3 {
  std::int64_t x = 0, y = 0, z = 0;
};
inline Grid3 attention_query_grid(AttentionPath path, std::int64_t B, std::int64_t T, std::int64_t H) {
  const std::int64_t rows = path == AttentionPath::TensorCore ? kTcTileQ : kGenericRowsPerBlock;
  return {(T + rows - 1) / rows, H, B};
}
/// Grid of the backward's dk/dv kernel: (key tiles, Hkv, B); each block sums over its group's query heads.
inline Grid3 attention_key_grid(AttentionPath path, std::int64_t B, std::int64_t S, std::int64_t Hkv) {
  const std::int64_t rows = path == AttentionPath::TensorCore ? kTcTileK : kGenericRowsPerBlock;
  return {(S + rows - 1) / rows, Hkv, B};
}
/// Keys a block of queries [q_begin, q_end) at `offset` can see (causal): min(S, offset + q_end).
inline std::int64_t causal_key_limit(std::int64_t offset, std::int64_t q_end, std::int64_t S) {
  return std::min(S, offset + q_end);
}
/// First query that sees key `key` (causal, at `offset`): max(0, key − offset).
inline std::int64_t causal_first_query(std::int64_t offset, std::int64_t key) {
  return std::max<std::int64_t>(0, key - offset);
}

// ---------------------------------------------------------------------------------------------------
// Decode attention: one new query token per sequence over a KV cache.

/// Arguments of launch_decode_attention. q, out (B, H, D) contiguous; k, v (B_kv, Hkv, S_max, D) with
/// strides (unit along D); all in `dtype`. Sequence b attends to keys [0, seq_lens[b]) of k/v row
/// kv_rows[b] (row b when null): the new token's key must already be in the cache at seq_lens[b] − 1.
/// A sequence with seq_lens[b] == 0 gets out 0.
struct DecodeAttentionArgs {
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* out = nullptr;
  const std::int64_t* seq_lens = nullptr;  // (B) device
  const std::int64_t* kv_rows = nullptr;   // (B) device, or null
  std::int64_t B = 0, H = 0, Hkv = 0, D = 0, S_max = 0, B_kv = 0;
  std::int64_t k_stride_b = 0, k_stride_h = 0, k_stride_s = 0;
  std::int64_t v_stride_b = 0, v_stride_h = 0, v_stride_s = 0;
  std::int64_t max_seq_len = 0;  // host-side upper bound of seq_lens (≤ S_max): sizes the split plan
  float scale = 0.0f;
  float* workspace = nullptr;  // decode_attention_workspace_bytes(plan, B, H, D)
};

/// Split-K plan: the keys of every sequence are cut into n_splits chunks of keys_per_split keys; each
/// (sequence, group of query heads sharing a KV head, chunk) is one block writing a partial (max, sum,
/// unnormalised output) per head, and a combine kernel merges the chunks. Short contexts get one split;
/// long ones enough blocks to fill the GPU (about 2 waves), with chunks of at least kDecodeMinKeysPerSplit
/// keys.
struct DecodePlan {
  std::int64_t n_splits = 1;
  std::int64_t keys_per_split = 0;
};
constexpr std::int64_t kDecodeMinKeysPerSplit = 256;
constexpr std::int64_t kDecodeMaxSplits = 1024;
constexpr int kDecodeWarps = 4;  // warps per block; each takes every 4th key of the block's chunk

constexpr int kDecodeMaxHeadsPerBlock = 8;

/// Query heads one decode block takes: the most of 8, 4, 2, 1 that divides the heads sharing a KV head
/// (H / Hkv), so that the block reads each key and value of its chunk once for all of them (Llama 3.1
/// 70B: 64 / 8 heads, 8 a block, an eighth of the cache reads of one block per head).
inline int decode_heads_per_block(std::int64_t H, std::int64_t Hkv) {
  const std::int64_t n_rep = Hkv > 0 && H % Hkv == 0 ? H / Hkv : 1;
  int g = kDecodeMaxHeadsPerBlock;
  while (g > 1 && n_rep % g != 0) g /= 2;
  return g;
}

/// The plan for B sequences of H query heads, `heads_per_block` of them a block (decode_heads_per_block).
inline DecodePlan plan_decode_attention(std::int64_t B, std::int64_t H, std::int64_t max_seq_len, int n_sms,
                                        int heads_per_block = 1) {
  DecodePlan p;
  const std::int64_t len = std::max<std::int64_t>(max_seq_len, 1);
  const std::int64_t heads = std::max<std::int64_t>(B * H / std::max(heads_per_block, 1), 1);
  const std::int64_t target_blocks = 2 * static_cast<std::int64_t>(std::max(n_sms, 1));
  std::int64_t splits = (target_blocks + heads - 1) / heads;                           // enough blocks to fill the GPU
  splits = std::min(splits, std::max<std::int64_t>(1, len / kDecodeMinKeysPerSplit));  // chunks ≥ the minimum
  splits = std::clamp<std::int64_t>(splits, 1, kDecodeMaxSplits);
  p.keys_per_split = (len + splits - 1) / splits;
  p.n_splits = (len + p.keys_per_split - 1) / p.keys_per_split;  // no empty trailing chunk
  return p;
}

/// Workspace of launch_decode_attention: per (sequence, head, split) a max, a sum and D outputs (f32).
inline std::int64_t decode_attention_workspace_bytes(const DecodePlan& plan, std::int64_t B, std::int64_t H,
                                                     std::int64_t D) {
  return B * H * plan.n_splits * (D + 2) * static_cast<std::int64_t>(sizeof(float));
}

inline void validate_decode_attention(const DecodeAttentionArgs& a, DType dt, DType kv_dt) {
  constexpr const char* op = "launch_decode_attention";
  detail::check_kv_dtype(op, dt, kv_dt);
  detail::check_common_sizes(op, dt, a.B, 1, a.H, a.Hkv, a.D, a.S_max);
  ADAPT_REQUIRE(a.max_seq_len >= 0 && a.max_seq_len <= a.S_max, ShapeError,
                "{}: max_seq_len {} is outside [0, S_max = {}]", op, a.max_seq_len, a.S_max);
  ADAPT_REQUIRE(a.kv_rows ? a.B_kv > 0 : (a.B_kv == 0 || a.B_kv == a.B), ShapeError,
                "{}: B_kv = {} does not fit B = {} {} kv_rows", op, a.B_kv, a.B, a.kv_rows ? "with" : "without");
  if (a.B == 0) return;
  ADAPT_REQUIRE(a.q && a.k && a.v && a.out && a.seq_lens && a.workspace, ShapeError,
                "{}: null q, k, v, out, seq_lens or workspace", op);
  const std::int64_t es = static_cast<std::int64_t>(dtype_size(kv_dt));
  const std::int64_t strides[] = {a.k_stride_b, a.k_stride_h, a.k_stride_s, a.v_stride_b, a.v_stride_h, a.v_stride_s};
  for (std::int64_t s : strides) {
    ADAPT_REQUIRE(s >= 0 && (s * es) % 16 == 0, UnsupportedError,
                  "{}: cache strides must be multiples of 16 bytes (got a stride of {} elements of {})", op, s,
                  dtype_name(kv_dt));
  }
  ADAPT_REQUIRE(detail::aligned16(a.q) && detail::aligned16(a.k) && detail::aligned16(a.v) && detail::aligned16(a.out),
                UnsupportedError, "{}: q, k, v and out must be 16-byte aligned", op);
}
inline void validate_decode_attention(const DecodeAttentionArgs& a, DType dt) { validate_decode_attention(a, dt, dt); }

}  // namespace adapt::kernels
