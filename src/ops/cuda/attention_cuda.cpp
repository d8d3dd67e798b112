#include "ops/cuda/attention_cuda.h"

#include <algorithm>
#include <cstddef>
#include <vector>

#include "backend/backend.h"
#include "kernels/attention.h"
#include "kernels/decode_attention.h"
#include "ops/cuda/cuda_op_checks.h"

namespace adapt::ops::cuda {
namespace {

template <class T>
const T* device_ptr(const Tensor& t) {
  return t.defined() ? static_cast<const T*>(t.raw()) : nullptr;
}

void require_same_device(const char* op, const Tensor& first, std::initializer_list<const Tensor*> others) {
  ADAPT_REQUIRE(!first.device().host_accessible(), ShapeError, "{}: '{}' is on {}, not a CUDA device", op, first.name(),
                first.device().str());
  for (const Tensor* t : others) {
    ADAPT_REQUIRE(t->device() == first.device(), ShapeError, "{}: '{}' is on {} but '{}' is on {}", op, t->name(),
                  t->device().str(), first.name(), first.device().str());
  }
  ADAPT_CUDA_CHECK(cudaSetDevice(first.device().index));
}

/// The type k and v must have: q's, or bf16 under f32 q (a bf16 KV cache).
DType kv_cache_type(const Tensor& q, const Tensor& k) {
  return q.dtype() == DType::F32 && k.dtype() == DType::BF16 ? DType::BF16 : q.dtype();
}

void require_rank4(const char* op, const Tensor& t, const char* layout) {
  ADAPT_REQUIRE(t.rank() == 4, ShapeError, "{}: '{}' has shape {}; expected {}", op, t.name(), t.shape().str(), layout);
}

void require_shape(const char* op, const Tensor& t, const Shape& want, const char* what) {
  ADAPT_REQUIRE(t.shape() == want, ShapeError, "{}: '{}' has shape {}; expected {} ({})", op, t.name(), t.shape().str(),
                want.str(), what);
}

}  // namespace

void attention_forward(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opts,
                       Tensor* lse) {
  constexpr const char* op = "attention_forward";
  require_same_device(op, out, {&q, &k, &v});
  if (lse) require_same_device(op, out, {lse});
  detail::require_float(op, q);
  const DType kv_dtype = kv_cache_type(q, k);
  detail::require_dtype(op, out, q.dtype());
  for (const Tensor* t : std::initializer_list<const Tensor*>{&k, &v}) detail::require_dtype(op, *t, kv_dtype);
  require_rank4(op, q, "(B, T, H, D)");
  require_rank4(op, k, "(B_kv, Hkv, S, D)");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&q, &out})
    ADAPT_REQUIRE(t->is_contiguous(), ShapeError, "{}: '{}' must be contiguous", op, t->name());
  const std::int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3);
  const std::int64_t B_kv = k.dim(0), Hkv = k.dim(1), S = k.dim(2);
  require_shape(op, out, q.shape(), "same as q");
  require_shape(op, k, Shape{opts.kv_rows.empty() ? B : B_kv, Hkv, S, D}, "(B, Hkv, S, D), or B_kv rows with kv_rows");
  require_shape(op, v, k.shape(), "same as k");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&k, &v})
    ADAPT_REQUIRE(D <= 1 || t->stride(3) == 1, ShapeError, "{}: '{}' must have unit stride along D", op, t->name());
  ADAPT_REQUIRE(opts.q_pos_offsets.empty() || static_cast<std::int64_t>(opts.q_pos_offsets.size()) == B, ShapeError,
                "{}: q_pos_offsets has {} entries for B = {} sequences", op, opts.q_pos_offsets.size(), B);
  ADAPT_REQUIRE(opts.kv_rows.empty() || static_cast<std::int64_t>(opts.kv_rows.size()) == B, ShapeError,
                "{}: kv_rows has {} entries for B = {} sequences", op, opts.kv_rows.size(), B);
  for (std::size_t b = 0; b < opts.kv_rows.size(); ++b)
    ADAPT_REQUIRE(opts.kv_rows[b] >= 0 && opts.kv_rows[b] < B_kv, ShapeError,
                  "{}: kv_rows[{}] = {} is not a row of '{}' (B_kv = {})", op, b, opts.kv_rows[b], k.name(), B_kv);
  for (std::size_t b = 0; b < opts.q_pos_offsets.size(); ++b)
    ADAPT_REQUIRE(opts.q_pos_offsets[b] >= 0 && S >= opts.q_pos_offsets[b] + T, ShapeError,
                  "{}: {} queries at offset {} (sequence {}) need {} keys but '{}' holds S = {}", op, T,
                  opts.q_pos_offsets[b], b, opts.q_pos_offsets[b] + T, k.name(), S);
  ADAPT_REQUIRE(opts.segment_ids.empty() || static_cast<std::int64_t>(opts.segment_ids.size()) == B * T, ShapeError,
                "{}: {} segment ids given for B·T = {} tokens", op, opts.segment_ids.size(), B * T);
  if (lse) {
    detail::require_dtype(op, *lse, DType::F32);
    ADAPT_REQUIRE(lse->is_contiguous(), ShapeError, "{}: '{}' must be contiguous", op, lse->name());
    require_shape(op, *lse, Shape{B, H, T}, "(B, H, T): one log-sum-exp per query row");
  }
  const Tensor offsets = detail::to_device_kept(opts.q_pos_offsets, out, "q_pos_offsets");
  const Tensor rows = detail::to_device_kept(opts.kv_rows, out, "kv_rows");
  const Tensor segments = detail::to_device_kept(opts.segment_ids, out, "segment_ids");
  kernels::AttentionForwardArgs a;
  a.q = q.raw(), a.k = k.raw(), a.v = v.raw(), a.out = out.raw(), a.lse = lse ? detail::f32_ptr(*lse) : nullptr;
  a.B = B, a.T = T, a.H = H, a.Hkv = Hkv, a.D = D, a.S = S, a.B_kv = B_kv;
  a.k_stride_b = k.stride(0), a.k_stride_h = k.stride(1), a.k_stride_s = k.stride(2);
  a.v_stride_b = v.stride(0), a.v_stride_h = v.stride(1), a.v_stride_s = v.stride(2);
  a.q_pos_offset = opts.q_pos_offset;
  a.q_pos_offsets = device_ptr<std::int64_t>(offsets);
  a.kv_rows = device_ptr<std::int64_t>(rows);
  a.segment_ids = device_ptr<std::int32_t>(segments);
  a.scale = opts.scale;
  kernels::launch_attention_forward(a, q.dtype(), kv_dtype, nullptr);
  // The device copies go back to the caching allocator, whose blocks are ordered on the default stream.
}

void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& out, const Tensor& lse, const AttentionOptions& opts) {
  constexpr const char* op = "attention_backward";
  detail::require_device_contiguous(op, dq, {&dk, &dv, &dout, &q, &k, &v, &out, &lse});
  detail::require_float(op, q);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dq, &dk, &dv, &dout, &k, &v, &out})
    detail::require_dtype(op, *t, q.dtype());
  detail::require_dtype(op, lse, DType::F32);
  ADAPT_REQUIRE(opts.q_pos_offsets.empty() && opts.kv_rows.empty(), UnsupportedError,
                "{}: ragged batches (q_pos_offsets / kv_rows) are a generation feature; training attends within "
                "each row of the batch (use q_pos_offset and segment ids)",
                op);
  require_rank4(op, q, "(B, T, H, D)");
  require_rank4(op, k, "(B, Hkv, S, D)");
  const std::int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3), Hkv = k.dim(1), S = k.dim(2);
  require_shape(op, k, Shape{B, Hkv, S, D}, "(B, Hkv, S, D) with q's B and D");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dk, &dv, &v})
    require_shape(op, *t, k.shape(), "same as k");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dq, &dout, &out})
    require_shape(op, *t, q.shape(), "same as q");
  require_shape(op, lse, Shape{B, H, T}, "(B, H, T): the forward's log-sum-exp");
  ADAPT_REQUIRE(opts.segment_ids.empty() || static_cast<std::int64_t>(opts.segment_ids.size()) == B * T, ShapeError,
                "{}: {} segment ids given for B·T = {} tokens", op, opts.segment_ids.size(), B * T);
  const Tensor segments = detail::to_device_kept(opts.segment_ids, dq, "segment_ids");
  const std::int64_t ws = kernels::attention_backward_workspace_bytes(B, H, T) / 4;
  Tensor delta;
  if (ws > 0) delta = Tensor::empty({ws}, DType::F32, backend::cuda_allocator(dq.device().index), "attention_delta");
  kernels::AttentionBackwardArgs a;
  a.q = q.raw(), a.k = k.raw(), a.v = v.raw(), a.out = out.raw(), a.dout = dout.raw(), a.lse = detail::f32_ptr(lse);
  a.dq = dq.raw(), a.dk = dk.raw(), a.dv = dv.raw(), a.delta = delta.defined() ? detail::f32_ptr(delta) : nullptr;
  a.B = B, a.T = T, a.H = H, a.Hkv = Hkv, a.D = D, a.S = S, a.q_pos_offset = opts.q_pos_offset;
  a.segment_ids = device_ptr<std::int32_t>(segments);
  a.scale = opts.scale;
  kernels::launch_attention_backward(a, q.dtype(), nullptr);
}

void decode_attention(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v,
                      std::span<const std::int64_t> seq_lens, std::span<const std::int64_t> kv_rows, float scale) {
  constexpr const char* op = "decode_attention";
  require_same_device(op, out, {&q, &k, &v});
  detail::require_float(op, q);
  const DType kv_dtype = kv_cache_type(q, k);
  detail::require_dtype(op, out, q.dtype());
  for (const Tensor* t : std::initializer_list<const Tensor*>{&k, &v}) detail::require_dtype(op, *t, kv_dtype);
  ADAPT_REQUIRE(q.rank() == 3 && q.is_contiguous() && out.is_contiguous(), ShapeError,
                "{}: q '{}' {} and out must be contiguous (B, H, D)", op, q.name(), q.shape().str());
  require_rank4(op, k, "(B_kv, Hkv, S_max, D)");
  require_shape(op, out, q.shape(), "same as q");
  require_shape(op, v, k.shape(), "same as k");
  const std::int64_t B = q.dim(0), H = q.dim(1), D = q.dim(2), B_kv = k.dim(0), Hkv = k.dim(1), S_max = k.dim(2);
  ADAPT_REQUIRE(k.dim(3) == D, ShapeError, "{}: '{}' {} has head_dim {} but q has {}", op, k.name(), k.shape().str(),
                k.dim(3), D);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&k, &v})
    ADAPT_REQUIRE(D <= 1 || t->stride(3) == 1, ShapeError, "{}: '{}' must have unit stride along D", op, t->name());
  ADAPT_REQUIRE(static_cast<std::int64_t>(seq_lens.size()) == B, ShapeError,
                "{}: {} sequence lengths given for B = {} queries", op, seq_lens.size(), B);
  ADAPT_REQUIRE(kv_rows.empty() ? B_kv == B : static_cast<std::int64_t>(kv_rows.size()) == B, ShapeError,
                "{}: {} kv_rows for B = {} queries and a cache of {} rows", op, kv_rows.size(), B, B_kv);
  for (std::size_t b = 0; b < kv_rows.size(); ++b)
    ADAPT_REQUIRE(kv_rows[b] >= 0 && kv_rows[b] < B_kv, ShapeError, "{}: kv_rows[{}] = {} is not a row of '{}' ({})",
                  op, b, kv_rows[b], k.name(), B_kv);
  std::int64_t max_len = 0;
  for (std::size_t b = 0; b < seq_lens.size(); ++b) {
    ADAPT_REQUIRE(seq_lens[b] >= 0 && seq_lens[b] <= S_max, ShapeError,
                  "{}: sequence {} has {} keys but the cache '{}' holds S_max = {}", op, b, seq_lens[b], k.name(),
                  S_max);
    max_len = std::max(max_len, seq_lens[b]);
  }
  const kernels::DecodePlan plan = kernels::decode_attention_plan_for_device(B, H, Hkv, max_len);
  const std::int64_t ws = kernels::decode_attention_workspace_bytes(plan, B, H, D) / 4;
  Tensor workspace = Tensor::empty({std::max<std::int64_t>(ws, 1)}, DType::F32,
                                   backend::cuda_allocator(out.device().index), "decode_attention_partials");
  const Tensor lens = detail::to_device_kept(seq_lens, out, "seq_lens");
  const Tensor rows = detail::to_device_kept(kv_rows, out, "kv_rows");
  kernels::DecodeAttentionArgs a;
  a.q = q.raw(), a.k = k.raw(), a.v = v.raw(), a.out = out.raw();
  a.seq_lens = device_ptr<std::int64_t>(lens);
  a.kv_rows = device_ptr<std::int64_t>(rows);
  a.B = B, a.H = H, a.Hkv = Hkv, a.D = D, a.S_max = S_max, a.B_kv = B_kv;
  a.k_stride_b = k.stride(0), a.k_stride_h = k.stride(1), a.k_stride_s = k.stride(2);
  a.v_stride_b = v.stride(0), a.v_stride_h = v.stride(1), a.v_stride_s = v.stride(2);
  a.max_seq_len = max_len;
  a.scale = scale;
  a.workspace = detail::f32_ptr(workspace);
  kernels::launch_decode_attention(a, plan, q.dtype(), kv_dtype, nullptr);
}

}  // namespace adapt::ops::cuda
