#include "ops/attention.h"

#include <cmath>

#include "core/error.h"
#include "ops/cpu/backward_cpu.h"
#include "ops/cpu/cpu_kernels.h"
#include "ops/op_checks.h"

#if ADAPT_HAVE_CUDA
#include "ops/cuda/attention_cuda.h"
#endif

namespace adapt::ops {

void attention_forward(Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v, const AttentionOptions& opts,
                       Tensor* lse) {
  constexpr const char* op = "attention_forward";
  detail::require_same_device(op, out, {&q, &k, &v});
  if (lse) detail::require_same_device(op, out, {lse});
  ADAPT_REQUIRE(!opts.bf16_products || out.device().host_accessible(), UnsupportedError,
                "attention_forward: bf16_products is the CPU's rounding; on {} give bf16 tensors instead",
                out.device().str());
#if ADAPT_HAVE_CUDA
  if (!out.device().host_accessible()) return cuda::attention_forward(out, q, k, v, opts, lse);
#endif
  if (!detail::on_cpu(op, out)) return;
  // q and out are f32; k and v are f32, or both bf16 (a bf16 KV cache).
  const bool kv_bf16 = k.dtype() == DType::BF16;
  for (const Tensor* t : std::initializer_list<const Tensor*>{&out, &q, &k, &v}) {
    detail::require_dtype(op, *t, (t == &k || t == &v) && kv_bf16 ? DType::BF16 : DType::F32);
    ADAPT_REQUIRE(t->rank() == 4, ShapeError,
                  "attention_forward: '{}' has shape {}; q and out are (B, T, H, D), k and v "
                  "(B, Hkv, S, D)",
                  t->name(), t->shape().str());
  }
  detail::require_contiguous(op, q);
  detail::require_contiguous(op, out);
  const std::int64_t B = q.dim(0), T = q.dim(1), H = q.dim(2), D = q.dim(3);
  const std::int64_t B_kv = k.dim(0), Hkv = k.dim(1), S = k.dim(2);
  detail::require_shape(op, out, q.shape(), "same as q");
  if (opts.kv_rows.empty()) {
    detail::require_shape(op, k, Shape{B, Hkv, S, D}, "(B, Hkv, S, D) with q's B and D");
  } else {
    detail::require_shape(op, k, Shape{B_kv, Hkv, S, D}, "(B_kv, Hkv, S, D) with q's D");
    ADAPT_REQUIRE(static_cast<std::int64_t>(opts.kv_rows.size()) == B, ShapeError,
                  "attention_forward: kv_rows has {} entries but q '{}' has B = {} sequences (one row of '{}' each)",
                  opts.kv_rows.size(), q.name(), B, k.name());
    for (std::size_t b = 0; b < opts.kv_rows.size(); ++b) {
      ADAPT_REQUIRE(opts.kv_rows[b] >= 0 && opts.kv_rows[b] < B_kv, ShapeError,
                    "attention_forward: kv_rows[{}] = {} is not a row of '{}' (B_kv = {})", b, opts.kv_rows[b],
                    k.name(), B_kv);
    }
  }
  detail::require_shape(op, v, k.shape(), "same as k");
  ADAPT_REQUIRE(
      Hkv > 0 && H % Hkv == 0, ShapeError,
      "attention_forward: {} query heads in '{}' are not a multiple of {} KV heads in '{}' (GQA shares each KV "
      "head among a whole number of query heads)",
      H, q.name(), Hkv, k.name());
  ADAPT_REQUIRE(opts.q_pos_offsets.empty() || static_cast<std::int64_t>(opts.q_pos_offsets.size()) == B, ShapeError,
                "attention_forward: q_pos_offsets has {} entries but q '{}' has B = {} sequences",
                opts.q_pos_offsets.size(), q.name(), B);
  for (std::int64_t b = 0; b < (opts.q_pos_offsets.empty() ? 1 : B); ++b) {
    const std::int64_t offset =
        opts.q_pos_offsets.empty() ? opts.q_pos_offset : opts.q_pos_offsets[static_cast<std::size_t>(b)];
    ADAPT_REQUIRE(offset >= 0 && S >= offset + T, ShapeError,
                  "attention_forward: {} queries at positions {}..{} (sequence {}) need {} keys but '{}' holds S = {}; "
                  "the KV cache is too small (allocate it with capacity >= prompt + generated tokens)",
                  T, offset, offset + T - 1, b, offset + T, k.name(), S);
  }
  for (const Tensor* t : std::initializer_list<const Tensor*>{&k, &v}) {
    ADAPT_REQUIRE(D <= 1 || t->stride(3) == 1, ShapeError,
                  "attention_forward: '{}' must have unit stride along D (got {})", t->name(), t->stride(3));
  }
  cpu::AttentionArgs a;
  a.q = q.data<float>();
  if (kv_bf16) {
    a.k_bf16 = static_cast<const std::uint16_t*>(k.raw());
    a.v_bf16 = static_cast<const std::uint16_t*>(v.raw());
  } else {
    a.k = k.data<float>();
    a.v = v.data<float>();
  }
  a.out = out.data<float>();
  if (lse) {
    detail::require_dtype(op, *lse, DType::F32);
    detail::require_contiguous(op, *lse);
    detail::require_shape(op, *lse, Shape{B, H, T}, "(B, H, T): one log-sum-exp per query row");
    a.lse = lse->data<float>();
  }
  a.B = B, a.T = T, a.H = H, a.Hkv = Hkv, a.D = D, a.S = S;
  a.k_stride_b = k.stride(0), a.k_stride_h = k.stride(1), a.k_stride_s = k.stride(2);
  a.v_stride_b = v.stride(0), a.v_stride_h = v.stride(1), a.v_stride_s = v.stride(2);
  a.q_pos_offset = opts.q_pos_offset;
  a.q_pos_offsets = opts.q_pos_offsets.empty() ? nullptr : opts.q_pos_offsets.data();
  a.kv_rows = opts.kv_rows.empty() ? nullptr : opts.kv_rows.data();
  a.scale = opts.scale != 0.0f ? opts.scale : 1.0f / std::sqrt(static_cast<float>(D));
  a.bf16_products = opts.bf16_products;
  if (!opts.segment_ids.empty()) {
    ADAPT_REQUIRE(!kv_bf16, UnsupportedError,
                  "attention_forward: segment ids mask packed training rows; their keys '{}' must be f32, not a bf16 "
                  "KV cache",
                  k.name());
    ADAPT_REQUIRE(opts.q_pos_offset == 0 && opts.q_pos_offsets.empty() && opts.kv_rows.empty() && S == T,
                  UnsupportedError,
                  "attention_forward: segment ids mask packed training rows, whose keys are the queries' own tokens "
                  "(S = {} must equal T = {}); they do not combine with KV-cache offsets or ragged batches",
                  S, T);
    ADAPT_REQUIRE(static_cast<std::int64_t>(opts.segment_ids.size()) == B * T, ShapeError,
                  "attention_forward: {} segment ids given but q '{}' has B·T = {} tokens", opts.segment_ids.size(),
                  q.name(), B * T);
    if (B * T * H == 0) return;
    cpu::attention_forward_segments(a, opts.segment_ids.data());  // its own kernel: the causal path is untouched
    return;
  }
  if (B * T * H == 0) return;
  cpu::attention_forward(a);
}

}  // namespace adapt::ops
