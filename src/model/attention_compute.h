// Attention in the model's compute type (LlamaModel::attention_dtype): the one place where the passes
// call ops::attention_forward / attention_backward. f32 runs the op on the f32 activations as they
// are; bf16 on a device gives the op bf16 copies (from the device's caching allocator, released in
// stream order), so that a head_dim of 64 or 128 runs on the tensor-core kernels (kernels/attention.h),
// and widens what it computes back into the f32 activations; bf16 on the CPU runs the f32 op with the
// operands of its products rounded to bf16 (ops::AttentionOptions::bf16_products). The passes keep their
// activations f32 either way.
#pragma once

#include <optional>
#include <string>

#include "dtype/dtype.h"
#include "model/attention_options.h"
#include "ops/attention.h"
#include "tensor/tensor.h"

namespace adapt::model {

struct LlamaModel;  // llama_weights.h

/// What `model` computes attention in for `setting`, on the device model_device() names: bf16 for
/// AttentionDtype::BF16, f32 for F32; Auto is bf16 on a device when its weight matrices are bf16 and
/// head_dim is 64 or 128, and on the CPU when ops::cpu_matmul_dtype() is bf16; f32 otherwise. The apps
/// set LlamaModel::attention_dtype to it after llama_model_to_device (and ops::set_cpu_matmul_dtype).
DType resolve_attention_dtype(const LlamaModel& model, AttentionDtype setting);

/// What attention over a KV cache of `kv_dtype` computes in: model.attention_dtype over a bf16 cache, f32
/// over an f32 one (a bf16 copy of every key read would cost more than the tensor cores save).
DType attention_dtype_over_cache(const LlamaModel& model, DType kv_dtype);

/// For the apps' logs: "attention in bf16 on tensor cores", "attention in bf16", "attention in bf16 products
/// (f32 sums)" (the CPU) or "attention in f32";
/// with `kv_dtype` (a generation, which attends over its KV cache) as attention_dtype_over_cache says.
std::string attention_note(const LlamaModel& model, std::optional<DType> kv_dtype = std::nullopt);

/// ops::attention_forward computed in `dtype` (F32 or BF16). With BF16, q, k and v are read as bf16
/// (copies of those that are not bf16 already: a bf16 KV cache is read where it is; k and v must
/// then be contiguous or bf16), the output is computed in bf16 and widened into `out` (f32); lse
/// stays f32. On the host, BF16 rounds the operands of the products only (q, k, v, the probabilities)
/// and computes the output in f32.
void attention_forward_in(DType dtype, Tensor& out, const Tensor& q, const Tensor& k, const Tensor& v,
                          const ops::AttentionOptions& opts = {}, Tensor* lse = nullptr);

/// ops::attention_backward computed in `dtype`. With BF16: bf16 copies of dout, q, k, v and out (out
/// as attention_forward_in produced it: widened from bf16, so its copy has the forward's bits), the
/// gradients computed in bf16 and widened into dq, dk, dv (f32). On the host, BF16 rounds the operands of
/// the products only (q, k, v, dout, P and dS), as the forward.
void attention_backward_in(DType dtype, Tensor& dq, Tensor& dk, Tensor& dv, const Tensor& dout, const Tensor& q,
                           const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                           const ops::AttentionOptions& opts = {});

}  // namespace adapt::model
