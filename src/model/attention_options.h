// What attention computes in (runtime.attention_dtype of adapt_train and adapt_gen, adapt_eval's
// --attention-dtype): a plain enum that the config structs hold.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string_view>
#include <utility>

#include "dtype/dtype.h"

namespace adapt::model {

/// Element type of attention's q, k, v and output on a CUDA device; the softmax, its log-sum-exp and
/// every sum stay f32. On the CPU, bf16 rounds the operands of attention's products (q, k, v, the
/// probabilities) and keeps the output f32.
///   Auto: on a device, bf16 when its weights are bf16 and head_dim is 64 or 128 (the tensor-core
///         kernels); on the CPU, bf16 when runtime.cpu_matmul_dtype is bf16; f32 otherwise.
///   F32:  f32 (one warp per query row on CUDA cores): the CPU's arithmetic, slower.
///   BF16: bf16 for any head_dim (64 and 128 on tensor cores, others on the generic kernel).
enum class AttentionDtype : std::uint8_t { Auto, F32, BF16 };

/// Whether the tensor-core attention kernels take this head_dim (kernels/attention_plan.h): AttentionDtype::
/// Auto computes in bf16 there (with bf16 weights), and adapt_plan counts the bf16 operand copies for it.
inline bool attention_tensor_cores_take(std::int64_t head_dim) { return head_dim == 64 || head_dim == 128; }

/// What attention computes in on the CPU under `setting`: Auto follows the products by the base weights
/// (runtime.cpu_matmul_dtype), F32 or BF16 otherwise.
inline DType host_attention_dtype(AttentionDtype setting, DType cpu_matmul_dtype) {
  if (setting == AttentionDtype::Auto) return cpu_matmul_dtype == DType::BF16 ? DType::BF16 : DType::F32;
  return setting == AttentionDtype::BF16 ? DType::BF16 : DType::F32;
}

/// The names the settings are written with, in the order the documentation gives them.
inline constexpr std::array<std::pair<std::string_view, AttentionDtype>, 3> kAttentionDtypeNames{
    {{"auto", AttentionDtype::Auto}, {"bf16", AttentionDtype::BF16}, {"f32", AttentionDtype::F32}}};

/// "auto", "bf16" or "f32" as an AttentionDtype; nullopt for anything else.
inline std::optional<AttentionDtype> attention_dtype_parse(std::string_view text) {
  for (const auto& [name, value] : kAttentionDtypeNames)
    if (name == text) return value;
  return std::nullopt;
}

}  // namespace adapt::model
