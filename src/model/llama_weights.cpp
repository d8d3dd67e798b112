#include "model/llama_weights.h"

#include "core/error.h"
#include "core/timer.h"
#include "io/sharded.h"
#include "model/weight_names.h"

namespace adapt::model {

namespace {

Tensor* slot(LlamaWeights& w, const WeightSpec& s) {
  if (s.layer < 0) {
    switch (s.kind) {
      case WeightKind::Embedding: return &w.embedding;
      case WeightKind::FinalNorm: return &w.final_norm;
      case WeightKind::LmHead: return &w.lm_head;
      default: break;
    }
    ADAPT_CHECK(false, "weight '{}' has no layer but is not a model-level tensor", s.name);
  }
  LayerWeights& l = w.layers[static_cast<std::size_t>(s.layer)];
  switch (s.kind) {
    case WeightKind::AttnNorm: return &l.attn_norm;
    case WeightKind::Wq: return &l.wq;
    case WeightKind::Wk: return &l.wk;
    case WeightKind::Wv: return &l.wv;
    case WeightKind::Wo: return &l.wo;
    case WeightKind::FfnNorm: return &l.ffn_norm;
    case WeightKind::WGate: return &l.w_gate;
    case WeightKind::WUp: return &l.w_up;
    case WeightKind::WDown: return &l.w_down;
    case WeightKind::BiasQ: return &l.bq;
    case WeightKind::BiasK: return &l.bk;
    case WeightKind::BiasV: return &l.bv;
    case WeightKind::BiasO: return &l.bo;
    case WeightKind::BiasGate: return &l.b_gate;
    case WeightKind::BiasUp: return &l.b_up;
    case WeightKind::BiasDown: return &l.b_down;
    case WeightKind::Embedding:
    case WeightKind::FinalNorm:
    case WeightKind::LmHead: break;
  }
  ADAPT_CHECK(false, "weight '{}' of layer {} is not a per-layer tensor", s.name, s.layer);
  return nullptr;
}

}  // namespace

LlamaModel llama_model_load(const std::filesystem::path& dir, const LlamaLoadOptions& opts, LlamaLoadStats* stats) {
  Timer timer;
  LlamaModel m;
  m.dir = dir;
  m.config = llama_config_load(dir);
  m.inv_freq = rope_inv_freq(m.config);
  m.weights.layers.resize(static_cast<std::size_t>(m.config.n_layers));
  io::ShardedSafetensors files(dir);
  const std::string cfg_path = (dir / "config.json").string();
  std::uint64_t resident = 0;
  for (const WeightSpec& s : llama_weight_specs(m.config)) {
    const io::TensorInfo* info = files.find(s.name);
    ADAPT_REQUIRE(
        info != nullptr, IoError,
        "{}: tensor '{}' {} is missing{}. The download may be incomplete, or {} (num_hidden_layers = {}, "
        "tie_word_embeddings = {}) does not belong to these weights; `adapt_model check {}` lists all problems.",
        dir.string(), s.name, s.shape.str(),
        s.kind == WeightKind::LmHead ? " (an untied model needs lm_head.weight; if the model ties its "
                                       "embeddings, config.json must say \"tie_word_embeddings\": true)"
                                     : "",
        cfg_path, m.config.n_layers, m.config.tie_word_embeddings, dir.string());
    ADAPT_REQUIRE(info->shape == s.shape, ShapeError,
                  "{}: tensor '{}' has shape {} but {} implies {}. The weights and config.json come from different "
                  "models.",
                  files.file_of(s.name).path().string(), s.name, info->shape.str(), cfg_path, s.shape.str());
    // Widen once here (the default), or keep bf16 matrices for the GEMMs to widen (docs/NUMERICS.md).
    const bool stored_bf16 = info->dtype == DType::BF16;
    const bool keep_bf16 = s.shape.rank() == 2 && (opts.storage == WeightStorage::Bf16 ||
                                                   (opts.storage == WeightStorage::AsStored && stored_bf16));
    Tensor t = files.read(s.name, keep_bf16 ? DType::BF16 : DType::F32);
    t.set_name(s.name);
    resident += t.size_bytes();
    *slot(m.weights, s) = std::move(t);
  }
  if (m.config.tie_word_embeddings) m.weights.lm_head = m.weights.embedding;
  if (stats) {
    stats->seconds = timer.seconds();
    stats->bytes_read = files.bytes_read();
    stats->bytes_resident = resident;
  }
  return m;
}

}  // namespace adapt::model
