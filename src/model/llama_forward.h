// The Llama forward pass of HF LlamaForCausalLM (SPEC-llama.md §3.5–3.7) on the CPU in f32:
// embedding → L pre-norm decoder layers (RMSNorm, GQA attention with RoPE, residual; RMSNorm, SwiGLU
// MLP, residual) → final RMSNorm → lm_head. Every projection goes through linear(), the one call site
// where adapters attach (STYLE principle 5); activations come from an ops::Workspace, so a pass does
// not allocate per op or per layer.
#pragma once

#include "model/kv_cache.h"
#include "model/llama_weights.h"
#include "model/weight_names.h"
#include "ops/workspace.h"
#include "tensor/tensor.h"

namespace adapt::model {

/// Which projection a linear() call computes: adapters (LoRA) key on this.
struct LinearSite {
  int layer = -1;                      // -1 for lm_head
  WeightKind kind = WeightKind::Wq;    // Wq, Wk, Wv, Wo, WGate, WUp, WDown or LmHead
};

struct LinearOptions {
  bool accumulate = false;  // y += x · Wᵀ (+ b): fuses the residual add into the GEMM
};

/// y (.., out) = x (.., in) · Wᵀ (+ bias) for w (out, in), or += with accumulate. The single call site
/// of every projection of the model: adapters hook in here (none yet: this is where a LoRA delta
/// (alpha/r) · (x · Aᵀ) · Bᵀ will be added for the site's weight).
void linear(Tensor& y, const Tensor& x, const Tensor& w, const Tensor* bias, const LinearSite& site,
            const LinearOptions& opts = {});

struct ForwardOptions {
  bool last_position_only = false;  // logits of the last position only: (B, V) instead of (B, T, V)
};

/// Runs the model on token ids (B, T) (i32 or i64) and returns f32 logits (B, T, V), or (B, V) with
/// last_position_only.
///   cache == nullptr: positions 0 .. T−1, nothing is kept.
///   cache != nullptr: positions continue at cache->n_past(); the new keys/values are appended and the
///     cache advances by T (prefill with T prompt tokens, then decode with T = 1). ShapeError when the
///     cache has another batch size or too little room, before anything is computed.
/// `workspace`, when given, holds the activations and is reset() on entry (tensors taken from it
/// earlier become invalid); reusing one across calls makes later calls allocation-free except for the
/// returned logits. Not thread-safe per workspace or cache; the model itself is read-only.
Tensor llama_forward(const LlamaModel& model, const Tensor& ids, KvCache* cache = nullptr,
                     const ForwardOptions& opts = {}, ops::Workspace* workspace = nullptr);

}  // namespace adapt::model
