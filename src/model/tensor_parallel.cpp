#include "model/tensor_parallel.h"

#include "core/error.h"
#include "core/timer.h"
#include "io/sharded.h"
#include "model/llama_weights.h"
#include "model/weight_names.h"
#include "parallel/shard_loader.h"

namespace adapt::model {

namespace {

// parallel::LlamaTensor lists the tensors in WeightKind's order (both are HF's).
WeightKind kind_of(parallel::LlamaTensor t) { return static_cast<WeightKind>(static_cast<int>(t)); }
static_assert(static_cast<int>(parallel::LlamaTensor::LmHead) == static_cast<int>(WeightKind::LmHead) &&
              static_cast<int>(parallel::LlamaTensor::BiasDown) == static_cast<int>(WeightKind::BiasDown) &&
              static_cast<int>(parallel::LlamaTensor::WDown) == static_cast<int>(WeightKind::WDown));

Tensor& slot(LlamaWeights& w, WeightKind kind, int layer) {
  switch (kind) {
    case WeightKind::Embedding: return w.embedding;
    case WeightKind::FinalNorm: return w.final_norm;
    case WeightKind::LmHead: return w.lm_head;
    default: break;
  }
  LayerWeights& l = w.layers[static_cast<std::size_t>(layer)];
  switch (kind) {
    case WeightKind::AttnNorm: return l.attn_norm;
    case WeightKind::Wq: return l.wq;
    case WeightKind::Wk: return l.wk;
    case WeightKind::Wv: return l.wv;
    case WeightKind::Wo: return l.wo;
    case WeightKind::FfnNorm: return l.ffn_norm;
    case WeightKind::WGate: return l.w_gate;
    case WeightKind::WUp: return l.w_up;
    case WeightKind::WDown: return l.w_down;
    case WeightKind::BiasQ: return l.bq;
    case WeightKind::BiasK: return l.bk;
    case WeightKind::BiasV: return l.bv;
    case WeightKind::BiasO: return l.bo;
    case WeightKind::BiasGate: return l.b_gate;
    case WeightKind::BiasUp: return l.b_up;
    case WeightKind::BiasDown: return l.b_down;
    default: break;
  }
  ADAPT_CHECK(false, "weight kind {} has no slot", static_cast<int>(kind));
  return w.embedding;
}

}  // namespace

parallel::Range stage_layer_range(const LlamaConfig& c, const PipelineStage& stage) {
  return parallel::stage_layers(llama_dims(c), stage.size, stage.rank, stage.split);
}

TpLocalDims tp_local_dims(const LlamaConfig& c, const TensorParallel& tp) {
  ADAPT_REQUIRE(tp.size >= 1 && c.n_heads % tp.size == 0 && c.n_kv_heads % tp.size == 0, ConfigError,
                "tensor parallelism over {} ranks needs num_attention_heads = {} and num_key_value_heads = {} to be "
                "multiples of it (hint: choose a tp that divides both)",
                tp.size, c.n_heads, c.n_kv_heads);
  return {.heads = c.n_heads / tp.size,
          .kv_heads = c.n_kv_heads / tp.size,
          .ffn = parallel::split_range(c.intermediate_size, 1, tp.size, tp.rank).count,
          .vocab = parallel::split_range(c.vocab_size, 1, tp.size, tp.rank)};
}

parallel::LlamaDims llama_dims(const LlamaConfig& c) {
  return {.hidden = c.hidden_size,
          .intermediate = c.intermediate_size,
          .n_layers = c.n_layers,
          .n_heads = c.n_heads,
          .n_kv_heads = c.n_kv_heads,
          .head_dim = c.head_dim,
          .vocab = c.vocab_size,
          .tie_word_embeddings = c.tie_word_embeddings,
          .attention_bias = c.attention_bias,
          .mlp_bias = c.mlp_bias};
}

LlamaModel llama_model_load_tp(const std::filesystem::path& dir, const comm::ProcessGrid& grid, int world_rank,
                               comm::Communicator& tp, const LlamaLoadOptions& opts, LlamaLoadStats* stats) {
  Timer timer;
  ADAPT_REQUIRE(tp.size() == grid.tp_size() && tp.rank() == grid.coord(world_rank).tp, ConfigError,
                "llama_model_load_tp: the tp communicator '{}' (rank {} of {}) is not the tp group of world rank {} "
                "in a grid with tp = {}",
                tp.name(), tp.rank(), tp.size(), world_rank, grid.tp_size());
  LlamaModel m;
  m.dir = dir;
  m.config = llama_config_load(dir);
  m.inv_freq = rope_inv_freq(m.config);
  m.tp = TensorParallel::of(tp);
  m.stage = {.rank = grid.coord(world_rank).pp, .size = grid.pp_size()};
  (void)tp_local_dims(m.config, m.tp);  // ConfigError with a hint when tp does not divide the heads
  m.weights.layers.resize(static_cast<std::size_t>(m.config.n_layers));
  io::ShardedSafetensors files(dir);
  const parallel::LlamaDims dims = llama_dims(m.config);
  m.stage.split = opts.stage_split;
  // As llama_model_load: AsStored keeps the matrices in bf16 when they are stored so; Bf16 also rounds
  // them from an f32 or f16 checkpoint as they are read; norms and biases f32 (llama_rank_load).
  bool keep_bf16 = opts.storage != WeightStorage::F32;
  for (const WeightSpec& s : llama_weight_specs(m.config)) {
    if (s.shape.rank() != 2 || opts.storage == WeightStorage::Bf16) continue;
    const io::TensorInfo* info = files.find(s.name);
    keep_bf16 = keep_bf16 && info != nullptr && info->dtype == DType::BF16;
  }
  parallel::ShardLoadStats load;
  std::vector<parallel::LoadedShard> shards = parallel::llama_rank_load(
      files, dims, grid, world_rank, [](parallel::LlamaTensor t, int layer) { return weight_name(kind_of(t), layer); },
      keep_bf16 ? DType::BF16 : DType::F32, &load, m.stage.split);
  std::uint64_t resident = 0;
  for (parallel::LoadedShard& s : shards) {
    Tensor t = std::move(s.value);
    resident += t.size_bytes();
    slot(m.weights, kind_of(s.shard.tensor), s.shard.layer) = std::move(t);
  }
  if (m.config.tie_word_embeddings) m.weights.lm_head = m.weights.embedding;
  if (stats) {
    stats->seconds = timer.seconds();
    stats->bytes_read = load.bytes_read;
    stats->bytes_resident = resident;
    stats->bytes_share = load.bytes_share;
  }
  return m;
}

}  // namespace adapt::model
