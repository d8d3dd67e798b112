// Entry point of the attention backward: shape checks against the forward's tensors, then
// cpu::attention_backward (flash-attention-2 style recomputation from the saved log-sum-exp).
#include <cmath>

#include "core/error.h"
#include "ops/attention.h"
#include "ops/cpu/backward_cpu.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/attention_cuda.h"
#endif

namespace adapt::ops {

void attention_backward(Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q, const Tensor& k,
                        const Tensor& v, const Tensor& out, const Tensor& lse, const AttentionOptions& opts) {
  constexpr const char* op = "attention_backward";
  detail::require_same_device(op, dq, {&dk, &dv, &dout, &q, &k, &v, &out, &lse});
  ADAPT_REQUIRE(!opts.bf16_products || dq.device().host_accessible(), UnsupportedError,
                "attention_backward: bf16_products is the CPU's rounding; on {} give bf16 tensors instead",
                dq.device().str());
#if ADAPT_HAVE_CUDA
  if (!dq.device().host_accessible()) return cuda::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, opts);
#endif
  if (!detail::on_cpu(op, dq)) return;
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dq, &dk, &dv, &dout, &q, &k, &v, &out, &lse}) {
    detail::require_dtype(op, *t, DType::F32);
    detail::require_contiguous(op, *t);
  }
  ADAPT_REQUIRE(q.rank() == 4 && k.rank() == 4, ShapeError,
                "attention_backward: q '{}' {} must be (B, T, H, D) and k '{}' {} (B, Hkv, S, D)", q.name(),
                q.shape().str(), k.name(), k.shape().str());
  const std::int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3), Hkv = k.dim(1), S = k.dim(2);
  ADAPT_REQUIRE(opts.q_pos_offsets.empty() && opts.kv_rows.empty(), UnsupportedError,
                "attention_backward: ragged batches (q_pos_offsets / kv_rows) are a generation feature; training "
                "attends within each row of the batch (use q_pos_offset and segment ids)");
  detail::require_shape(op, k, Shape{B, Hkv, S, D}, "(B, Hkv, S, D) with q's B and D");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dk, &dv, &v})
    detail::require_shape(op, *t, k.shape(), "same as k");
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dq, &dout, &out})
    detail::require_shape(op, *t, q.shape(), "same as q");
  detail::require_shape(op, lse, Shape{B, H, T}, "(B, H, T): the forward's log-sum-exp");
  ADAPT_REQUIRE(Hkv > 0 && H % Hkv == 0, ShapeError,
                "attention_backward: {} query heads in '{}' are not a multiple of {} KV heads in '{}'", H, q.name(),
                Hkv, k.name());
  ADAPT_REQUIRE(opts.q_pos_offset >= 0 && S >= opts.q_pos_offset + T, ShapeError,
                "attention_backward: {} queries at offset {} need {} keys but '{}' holds S = {}", T, opts.q_pos_offset,
                opts.q_pos_offset + T, k.name(), S);
  const std::span<const std::int32_t> segment_ids = opts.segment_ids;
  if (!segment_ids.empty()) {
    ADAPT_REQUIRE(static_cast<std::int64_t>(segment_ids.size()) == B * T && S == T && opts.q_pos_offset == 0,
                  ShapeError,
                  "attention_backward: segment ids ({} given) need one per query (B·T = {}) and keys that are the "
                  "queries' own tokens (S = {} == T = {}, offset {} == 0)",
                  segment_ids.size(), B * T, S, T, opts.q_pos_offset);
  }
  cpu::AttentionBackwardArgs a;
  a.q = q.data<float>(), a.k = k.data<float>(), a.v = v.data<float>();
  a.out = out.data<float>(), a.dout = dout.data<float>(), a.lse = lse.data<float>();
  a.dq = dq.data<float>(), a.dk = dk.data<float>(), a.dv = dv.data<float>();
  a.B = B, a.T = T, a.H = H, a.Hkv = Hkv, a.D = D, a.S = S;
  a.q_pos_offset = opts.q_pos_offset;
  a.segment_ids = segment_ids.empty() ? nullptr : segment_ids.data();
  a.scale = opts.scale != 0.0f ? opts.scale : 1.0f / std::sqrt(static_cast<float>(D));
  a.bf16_products = opts.bf16_products;
  if (B * H * D == 0) return;
  if (T == 0) {
    dk.zero();
    dv.zero();
    return;
  }
  cpu::attention_backward(a);
}

}  // namespace adapt::ops
