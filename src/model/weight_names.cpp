#include "model/weight_names.h"

#include <fmt/format.h>

#include "core/error.h"

namespace adapt::model {

std::string weight_name(WeightKind kind, int layer) {
  auto l = [&](const char* suffix) { return fmt::format("model.layers.{}.{}", layer, suffix); };
  switch (kind) {
    case WeightKind::Embedding: return "model.embed_tokens.weight";
    case WeightKind::AttnNorm: return l("input_layernorm.weight");
    case WeightKind::Wq: return l("self_attn.q_proj.weight");
    case WeightKind::Wk: return l("self_attn.k_proj.weight");
    case WeightKind::Wv: return l("self_attn.v_proj.weight");
    case WeightKind::Wo: return l("self_attn.o_proj.weight");
    case WeightKind::FfnNorm: return l("post_attention_layernorm.weight");
    case WeightKind::WGate: return l("mlp.gate_proj.weight");
    case WeightKind::WUp: return l("mlp.up_proj.weight");
    case WeightKind::WDown: return l("mlp.down_proj.weight");
    case WeightKind::BiasQ: return l("self_attn.q_proj.bias");
    case WeightKind::BiasK: return l("self_attn.k_proj.bias");
    case WeightKind::BiasV: return l("self_attn.v_proj.bias");
    case WeightKind::BiasO: return l("self_attn.o_proj.bias");
    case WeightKind::BiasGate: return l("mlp.gate_proj.bias");
    case WeightKind::BiasUp: return l("mlp.up_proj.bias");
    case WeightKind::BiasDown: return l("mlp.down_proj.bias");
    case WeightKind::FinalNorm: return "model.norm.weight";
    case WeightKind::LmHead: return "lm_head.weight";
  }
  ADAPT_CHECK(false, "unknown WeightKind {}", static_cast<int>(kind));
}

std::vector<WeightSpec> llama_weight_specs(const LlamaConfig& c) {
  const std::int64_t C = c.hidden_size, F = c.intermediate_size;
  const std::int64_t q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  std::vector<WeightSpec> specs;
  auto add = [&](WeightKind k, int layer, Shape shape) { specs.push_back({k, layer, weight_name(k, layer), shape}); };
  add(WeightKind::Embedding, -1, {c.vocab_size, C});
  for (int i = 0; i < c.n_layers; ++i) {
    add(WeightKind::AttnNorm, i, {C});
    add(WeightKind::Wq, i, {q, C});
    add(WeightKind::Wk, i, {kv, C});
    add(WeightKind::Wv, i, {kv, C});
    add(WeightKind::Wo, i, {C, q});
    if (c.attention_bias) {
      add(WeightKind::BiasQ, i, {q});
      add(WeightKind::BiasK, i, {kv});
      add(WeightKind::BiasV, i, {kv});
      add(WeightKind::BiasO, i, {C});
    }
    add(WeightKind::FfnNorm, i, {C});
    add(WeightKind::WGate, i, {F, C});
    add(WeightKind::WUp, i, {F, C});
    add(WeightKind::WDown, i, {C, F});
    if (c.mlp_bias) {
      add(WeightKind::BiasGate, i, {F});
      add(WeightKind::BiasUp, i, {F});
      add(WeightKind::BiasDown, i, {C});
    }
  }
  add(WeightKind::FinalNorm, -1, {C});
  if (!c.tie_word_embeddings) add(WeightKind::LmHead, -1, {c.vocab_size, C});
  return specs;
}

bool weight_name_ignored(const std::string& name) {
  const std::string suffix = "self_attn.rotary_emb.inv_freq";
  return name.size() > suffix.size() && name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace adapt::model
