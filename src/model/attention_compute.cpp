#include "model/attention_compute.h"

#include <fmt/format.h>

#include "backend/backend.h"
#include "core/error.h"
#include "model/linear.h"
#include "model/llama_device.h"
#include "model/llama_weights.h"
#include "ops/cast.h"
#include "ops/matmul.h"

namespace adapt::model {

namespace {

// An uninitialised tensor of t's shape in `dtype` on t's device, from its caching allocator.
Tensor empty_like_in(const Tensor& t, DType dtype) {
  return Tensor::empty(t.shape(), dtype, backend::cuda_allocator(t.device().index),
                       fmt::format("{}.{}", t.name(), dtype_name(dtype)));
}

void require_compute_dtype(const char* op, DType dtype, const Tensor& q) {
  ADAPT_CHECK(dtype == DType::F32 || dtype == DType::BF16, "{}: attention computes in f32 or bf16 (asked: {} on {})",
              op, dtype_name(dtype), q.device().str());
}

// On the host, bf16 attention is the f32 op with its products' operands rounded to bf16.
ops::AttentionOptions host_bf16(const ops::AttentionOptions& opts) {
  ops::AttentionOptions o = opts;
  o.bf16_products = true;
  return o;
}

}  // namespace

DType resolve_attention_dtype(const LlamaModel& model, AttentionDtype setting) {
  if (model_device(model).host_accessible()) {
    return host_attention_dtype(setting, ops::cpu_matmul_dtype());
  }
  // The weight matrices' dtype on the device: lm_head's or the embedding's, else (a middle pipeline
  // stage) its first layer's.
  const Tensor* w = model.weights.lm_head.defined() ? &model.weights.lm_head : &model.weights.embedding;
  for (const LayerWeights& l : model.weights.layers)
    if (!w->defined() && l.wq.defined()) w = &l.wq;
  if (!w->defined()) return DType::F32;
  const std::int64_t D = model.config.head_dim;
  switch (setting) {
    case AttentionDtype::F32: return DType::F32;
    case AttentionDtype::BF16: return DType::BF16;
    case AttentionDtype::Auto:
      return w->dtype() == DType::BF16 && attention_tensor_cores_take(D) ? DType::BF16 : DType::F32;
  }
  return DType::F32;
}

DType attention_dtype_over_cache(const LlamaModel& model, DType kv_dtype) {
  return kv_dtype == DType::BF16 ? model.attention_dtype : DType::F32;
}

std::string attention_note(const LlamaModel& model, std::optional<DType> kv_dtype) {
  // f32 attention on a GPU runs on CUDA cores, one warp per query row, its work growing with T².
  const bool gpu = !model_device(model).host_accessible();
  const char* slow = gpu ? "; on a GPU that path is untiled and slow beyond a few thousand tokens" : "";
  if (kv_dtype && attention_dtype_over_cache(model, *kv_dtype) != model.attention_dtype)
    return fmt::format("attention in f32 over the f32 KV cache (kv_cache_dtype = \"bf16\" runs prefills in bf16{})",
                       slow);
  if (model.attention_dtype != DType::BF16)
    return gpu ? "attention in f32 (untiled on a GPU and slow beyond a few thousand tokens: bf16 weights with "
                 "runtime.attention_dtype = \"auto\" use the tensor cores)"
               : "attention in f32";
  if (gpu && !attention_tensor_cores_take(model.config.head_dim))
    return fmt::format(
        "attention in bf16 on CUDA cores (the tensor-core kernels take head_dim 64 or 128, not {}): "
        "untiled and slow beyond a few thousand tokens",
        model.config.head_dim);
  return gpu ? "attention in bf16 on tensor cores" : "attention in bf16 products (f32 sums)";
}

void attention_forward_in(DType dtype, Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v,
                          const ops::AttentionOptions& opts, Tensor* lse) {
  require_compute_dtype("attention_forward_in", dtype, q);
  if (dtype == q.dtype()) {
    ops::attention_forward(out, q, k, v, opts, lse);
    return;
  }
  if (q.device().host_accessible()) {
    ops::attention_forward(out, q, k, v, host_bf16(opts), lse);
    return;
  }
  const Tensor qc = device_in_dtype(q, dtype), kc = device_in_dtype(k, dtype);
  const Tensor vc = device_in_dtype(v, dtype);
  Tensor oc = empty_like_in(out, dtype);
  ops::attention_forward(oc, qc, kc, vc, opts, lse);
  ops::cast(out, oc);
}

void attention_backward_in(DType dtype, Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                           const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                           const ops::AttentionOptions& opts) {
  require_compute_dtype("attention_backward_in", dtype, q);
  if (dtype == q.dtype()) {
    ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, opts);
    return;
  }
  if (q.device().host_accessible()) {
    ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, host_bf16(opts));
    return;
  }
  const Tensor doc = device_in_dtype(dout, dtype), qc = device_in_dtype(q, dtype), kc = device_in_dtype(k, dtype);
  const Tensor vc = device_in_dtype(v, dtype), oc = device_in_dtype(out, dtype);
  Tensor dqc = empty_like_in(dq, dtype), dkc = empty_like_in(dk, dtype), dvc = empty_like_in(dv, dtype);
  ops::attention_backward(dqc, dkc, dvc, doc, qc, kc, vc, oc, lse, opts);
  ops::cast(dq, dqc);
  ops::cast(dk, dkc);
  ops::cast(dv, dvc);
}

}  // namespace adapt::model
