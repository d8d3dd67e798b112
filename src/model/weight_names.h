// The single table of base-weight names and shapes (HF LlamaForCausalLM, SPEC-llama.md §3.1), in the
// order HF writes them. Everything that loads, makes or checks a model goes through it.
#pragma once

#include <string>
#include <vector>

#include "model/llama_config.h"
#include "tensor/shape.h"

namespace adapt::model {

enum class WeightKind {
  Embedding,  // model.embed_tokens.weight            (V, C)
  AttnNorm,   // model.layers.{i}.input_layernorm.weight      (C)
  Wq,         // model.layers.{i}.self_attn.q_proj.weight     (H*D, C)
  Wk,         // model.layers.{i}.self_attn.k_proj.weight     (Hkv*D, C)
  Wv,         // model.layers.{i}.self_attn.v_proj.weight     (Hkv*D, C)
  Wo,         // model.layers.{i}.self_attn.o_proj.weight     (C, H*D)
  FfnNorm,    // model.layers.{i}.post_attention_layernorm.weight (C)
  WGate,      // model.layers.{i}.mlp.gate_proj.weight        (F, C)
  WUp,        // model.layers.{i}.mlp.up_proj.weight          (F, C)
  WDown,      // model.layers.{i}.mlp.down_proj.weight        (C, F)
  BiasQ,
  BiasK,
  BiasV,
  BiasO,  // only when attention_bias
  BiasGate,
  BiasUp,
  BiasDown,   // only when mlp_bias
  FinalNorm,  // model.norm.weight                     (C)
  LmHead,     // lm_head.weight                        (V, C), absent when tied
};

struct WeightSpec {
  WeightKind kind;
  int layer;  // -1 for non-layer weights
  std::string name;
  Shape shape;
  bool is_norm() const {
    return kind == WeightKind::AttnNorm || kind == WeightKind::FfnNorm || kind == WeightKind::FinalNorm;
  }
  bool is_bias() const { return kind >= WeightKind::BiasQ && kind <= WeightKind::BiasDown; }
};

std::string weight_name(WeightKind kind, int layer);
/// Every tensor a checkpoint of `cfg` holds, in HF order (embedding, layers, norm, lm_head).
std::vector<WeightSpec> llama_weight_specs(const LlamaConfig& cfg);
/// True for names HF checkpoints may carry that adapt ignores (e.g. rotary_emb.inv_freq).
bool weight_name_ignored(const std::string& name);

}  // namespace adapt::model
