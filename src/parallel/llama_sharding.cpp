#include "parallel/llama_sharding.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace adapt::parallel {

std::string llama_tensor_label(LlamaTensor t) {
  switch (t) {
    case LlamaTensor::Embedding: return "embedding";
    case LlamaTensor::AttnNorm: return "attn_norm";
    case LlamaTensor::Wq: return "wq";
    case LlamaTensor::Wk: return "wk";
    case LlamaTensor::Wv: return "wv";
    case LlamaTensor::Wo: return "wo";
    case LlamaTensor::FfnNorm: return "ffn_norm";
    case LlamaTensor::WGate: return "w_gate";
    case LlamaTensor::WUp: return "w_up";
    case LlamaTensor::WDown: return "w_down";
    case LlamaTensor::BiasQ: return "bq";
    case LlamaTensor::BiasK: return "bk";
    case LlamaTensor::BiasV: return "bv";
    case LlamaTensor::BiasO: return "bo";
    case LlamaTensor::BiasGate: return "b_gate";
    case LlamaTensor::BiasUp: return "b_up";
    case LlamaTensor::BiasDown: return "b_down";
    case LlamaTensor::FinalNorm: return "final_norm";
    case LlamaTensor::LmHead: return "lm_head";
  }
  return "?";
}

Shape llama_tensor_shape(LlamaTensor t, const LlamaDims& d) {
  const std::int64_t q = d.n_heads * d.head_dim, kv = d.n_kv_heads * d.head_dim;
  switch (t) {
    case LlamaTensor::Embedding:
    case LlamaTensor::LmHead: return {d.vocab, d.hidden};
    case LlamaTensor::AttnNorm:
    case LlamaTensor::FfnNorm:
    case LlamaTensor::FinalNorm:
    case LlamaTensor::BiasO:
    case LlamaTensor::BiasDown: return {d.hidden};
    case LlamaTensor::Wq: return {q, d.hidden};
    case LlamaTensor::Wk:
    case LlamaTensor::Wv: return {kv, d.hidden};
    case LlamaTensor::Wo: return {d.hidden, q};
    case LlamaTensor::WGate:
    case LlamaTensor::WUp: return {d.intermediate, d.hidden};
    case LlamaTensor::WDown: return {d.hidden, d.intermediate};
    case LlamaTensor::BiasQ: return {q};
    case LlamaTensor::BiasK:
    case LlamaTensor::BiasV: return {kv};
    case LlamaTensor::BiasGate:
    case LlamaTensor::BiasUp: return {d.intermediate};
  }
  return {};
}

ShardSpec llama_tp_spec(LlamaTensor t, const LlamaDims& d) {
  switch (t) {
    case LlamaTensor::Wq:
    case LlamaTensor::Wk:
    case LlamaTensor::Wv:
    case LlamaTensor::BiasQ:
    case LlamaTensor::BiasK:
    case LlamaTensor::BiasV: return {.dim = ShardDim::Rows, .block = d.head_dim};
    case LlamaTensor::Wo: return {.dim = ShardDim::Cols, .block = d.head_dim};
    case LlamaTensor::WGate:
    case LlamaTensor::WUp:
    case LlamaTensor::BiasGate:
    case LlamaTensor::BiasUp:
    case LlamaTensor::Embedding:
    case LlamaTensor::LmHead: return {.dim = ShardDim::Rows, .block = 1};
    case LlamaTensor::WDown: return {.dim = ShardDim::Cols, .block = 1};
    case LlamaTensor::AttnNorm:
    case LlamaTensor::FfnNorm:
    case LlamaTensor::FinalNorm:
    case LlamaTensor::BiasO:
    case LlamaTensor::BiasDown: return {};
  }
  return {};
}

Range stage_layers(std::int64_t n_layers, int pp_size, int pp_rank, double head_layers) {
  ADAPT_CHECK(pp_size <= n_layers, "{} pipeline stages for {} layers", pp_size, n_layers);
  ADAPT_CHECK(pp_rank >= 0 && pp_rank < pp_size, "pipeline stage {} of {}", pp_rank, pp_size);
  if (pp_size == 1) return {0, n_layers};
  // The last stage's layers: (L + h) / pp − h of the balanced work, within [1, the even split's].
  const std::int64_t even = split_range(n_layers, 1, pp_size, pp_size - 1).count;
  const double balanced = (static_cast<double>(n_layers) + head_layers) / pp_size - head_layers;
  const std::int64_t last = std::clamp<std::int64_t>(std::llround(balanced), 1, even);
  const std::int64_t rest = n_layers - last;
  if (pp_rank == pp_size - 1) return {rest, last};
  return split_range(rest, 1, pp_size - 1, pp_rank);
}

std::int64_t layer_matmul_params(const LlamaDims& d) {
  return d.hidden * (2 * d.n_heads * d.head_dim + 2 * d.n_kv_heads * d.head_dim + 3 * d.intermediate);
}

double head_layer_share(const LlamaDims& d) {
  const std::int64_t layer = layer_matmul_params(d);
  return layer > 0 ? static_cast<double>(d.vocab * d.hidden) / static_cast<double>(layer) : 0.0;
}

namespace {
// stage_layers' head_layers for `split`: head_layer_share(d), or 0 for Even.
double stage_head_layers(const LlamaDims& d, StageSplit split) {
  return split == StageSplit::ByWork ? head_layer_share(d) : 0.0;
}
}  // namespace

Range stage_layers(const LlamaDims& d, int pp_size, int pp_rank, StageSplit split) {
  return stage_layers(d.n_layers, pp_size, pp_rank, stage_head_layers(d, split));
}

std::vector<std::int64_t> stage_layer_counts(const LlamaDims& d, int pp_size, StageSplit split) {
  std::vector<std::int64_t> counts;
  for (int p = 0; p < pp_size; ++p) counts.push_back(stage_layers(d, pp_size, p, split).count);
  return counts;
}

std::vector<TensorShard> llama_rank_shards(const LlamaDims& d, const comm::ProcessGrid& grid, int world_rank,
                                           StageSplit split) {
  ADAPT_CHECK(d.n_heads % grid.tp_size() == 0 && d.n_kv_heads % grid.tp_size() == 0,
              "tp {} does not divide the heads {} / KV heads {}", grid.tp_size(), d.n_heads, d.n_kv_heads);
  const comm::GridCoord c = grid.coord(world_rank);
  const bool first = c.pp == 0, last = c.pp == grid.pp_size() - 1;
  std::vector<TensorShard> out;
  auto add = [&](LlamaTensor t, int layer) {
    out.push_back({.tensor = t,
                   .layer = layer,
                   .slice = shard_slice(llama_tensor_shape(t, d), llama_tp_spec(t, d), grid.tp_size(), c.tp)});
  };
  if (first || (last && d.tie_word_embeddings)) add(LlamaTensor::Embedding, -1);
  const Range layers = stage_layers(d, grid.pp_size(), c.pp, split);
  for (std::int64_t i = layers.begin; i < layers.end(); ++i) {
    const int l = static_cast<int>(i);
    for (LlamaTensor t : {LlamaTensor::AttnNorm, LlamaTensor::Wq, LlamaTensor::Wk, LlamaTensor::Wv, LlamaTensor::Wo,
                          LlamaTensor::FfnNorm, LlamaTensor::WGate, LlamaTensor::WUp, LlamaTensor::WDown}) {
      add(t, l);
    }
    if (d.attention_bias) {
      for (LlamaTensor t : {LlamaTensor::BiasQ, LlamaTensor::BiasK, LlamaTensor::BiasV, LlamaTensor::BiasO}) add(t, l);
    }
    if (d.mlp_bias) {
      for (LlamaTensor t : {LlamaTensor::BiasGate, LlamaTensor::BiasUp, LlamaTensor::BiasDown}) add(t, l);
    }
  }
  if (last) {
    add(LlamaTensor::FinalNorm, -1);
    if (!d.tie_word_embeddings) add(LlamaTensor::LmHead, -1);
  }
  return out;
}

LoraShard lora_shard(LlamaTensor base, std::int64_t rank_r, const LlamaDims& d, int tp_size, int tp_rank) {
  const ShardSpec spec = llama_tp_spec(base, d);
  const Shape w = llama_tensor_shape(base, d);
  ADAPT_CHECK(w.rank() == 2 && spec.dim != ShardDim::None && base != LlamaTensor::Embedding,
              "LoRA does not attach to {}", llama_tensor_label(base));
  const Shape a{rank_r, w[1]}, b{w[0], rank_r};
  if (spec.dim == ShardDim::Rows) {
    return {.a = shard_slice(a, {}, tp_size, tp_rank),
            .b = shard_slice(b, {.dim = ShardDim::Rows, .block = spec.block}, tp_size, tp_rank)};
  }
  return {.a = shard_slice(a, {.dim = ShardDim::Cols, .block = spec.block}, tp_size, tp_rank),
          .b = shard_slice(b, {}, tp_size, tp_rank)};
}

BottleneckShard bottleneck_shard(std::int64_t width_m, const LlamaDims& d) {
  return {.down = shard_slice({width_m, d.hidden}, {}, 1, 0), .up = shard_slice({d.hidden, width_m}, {}, 1, 0)};
}

}  // namespace adapt::parallel
