// The Megatron-style sharding rules of a Llama model, as pure functions of the model's shape and a
// rank's grid coordinate: which rows or columns of each base tensor (and of each LoRA A/B and
// bottleneck adapter) a tensor-parallel rank holds, and which layers a pipeline stage holds.
//   column-parallel (split output rows): q, k, v (whole heads), gate, up, and their biases;
//   row-parallel (split input columns): o (whole heads), down; their biases are replicated (added
//     once, after the all-reduce);
//   vocab-parallel (split rows of V): embed_tokens, lm_head;
//   replicated: the RMSNorm weights.
// Pipeline stages hold contiguous, balanced layer ranges (the first L % pp stages one layer more);
// the embedding lives on the first stage, the final norm and lm_head on the last (with tied
// embeddings the last stage also holds its vocab rows of embed_tokens, used as lm_head).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "comm/process_grid.h"
#include "parallel/shard_spec.h"

namespace adapt::parallel {

/// What sharding needs of a model's hyper-parameters (filled from model::LlamaConfig).
struct LlamaDims {
  std::int64_t hidden = 0;        // C
  std::int64_t intermediate = 0;  // F
  std::int64_t n_layers = 0;      // L
  std::int64_t n_heads = 0;       // H
  std::int64_t n_kv_heads = 0;    // Hkv
  std::int64_t head_dim = 0;      // D
  std::int64_t vocab = 0;         // V
  bool tie_word_embeddings = false;
  bool attention_bias = false;
  bool mlp_bias = false;
};

/// The base tensors of a Llama checkpoint, in HF order (model::WeightKind names them in files).
enum class LlamaTensor {
  Embedding,  // (V, C)
  AttnNorm,   // (C)
  Wq,         // (H*D, C)
  Wk,         // (Hkv*D, C)
  Wv,         // (Hkv*D, C)
  Wo,         // (C, H*D)
  FfnNorm,    // (C)
  WGate,      // (F, C)
  WUp,        // (F, C)
  WDown,      // (C, F)
  BiasQ,
  BiasK,
  BiasV,
  BiasO,  // (H*D), (Hkv*D), (Hkv*D), (C): only with attention_bias
  BiasGate,
  BiasUp,
  BiasDown,   // (F), (F), (C): only with mlp_bias
  FinalNorm,  // (C)
  LmHead,     // (V, C): only when the embeddings are not tied
};
std::string llama_tensor_label(LlamaTensor t);  // "wq", "embedding", ...

/// Global shape of `t`.
Shape llama_tensor_shape(LlamaTensor t, const LlamaDims& dims);
/// How `t` is split over the tp group (heads are never cut: q/k/v/o split in blocks of D).
ShardSpec llama_tp_spec(LlamaTensor t, const LlamaDims& dims);

/// The layers pipeline stage `pp_rank` of `pp_size` holds: contiguous ranges, in stage order. The
/// last stage also runs the head (lm_head and the loss), as much work per token as `head_layers`
/// decoder layers (head_layer_share), so it gets that many fewer layers, at least one and never more
/// than an even split would give it; the other stages share the rest evenly (the first ones one more
/// where it does not divide). head_layers = 0: the even split.
Range stage_layers(std::int64_t n_layers, int pp_size, int pp_rank, double head_layers = 0.0);
/// How a job splits the layers over pipeline stages. Training runs the head for every token, so its
/// stages are balanced by work; generation runs it for one position per sequence and step (and the
/// stages of a decode step run one after another, so balance gains nothing there): even, which
/// balances memory (the embedding on the first stage, lm_head on the last).
enum class StageSplit { Even, ByWork };
/// The splits adapt_train and adapt_gen load their stages with (and adapt_plan plans them with).
inline constexpr StageSplit kTrainSplit = StageSplit::ByWork;
inline constexpr StageSplit kGenSplit = StageSplit::Even;
/// A decoder layer's projection parameters (q, k, v, o, gate, up, down): C·(2·H·D + 2·Hkv·D + 3·F).
std::int64_t layer_matmul_params(const LlamaDims& d);
/// lm_head's multiply-adds per token (V·C) over a decoder layer's (its projections: q, k, v, o, gate,
/// up, down), the share of the pipeline's last stage that the head takes: 3.9 for the bench preset
/// (vocabulary 32,000, hidden 768), 2.4 for Llama 3.1 8B, 1.2 for 70B, 0.66 for 405B.
double head_layer_share(const LlamaDims& d);
Range stage_layers(const LlamaDims& d, int pp_size, int pp_rank, StageSplit split);
/// The number of layers of each of the pp_size stages, in stage order.
std::vector<std::int64_t> stage_layer_counts(const LlamaDims& d, int pp_size, StageSplit split);

/// One base tensor a rank holds: which, of which layer (-1 for model-level tensors), which slice.
struct TensorShard {
  LlamaTensor tensor;
  int layer = -1;
  TensorSlice slice;
};

/// Every base tensor `world_rank` of `grid` holds, in HF order. Ranks that differ only in dp hold the
/// same shards. InternalError when the grid does not fit the model (ProcessGrid::make checks that).
std::vector<TensorShard> llama_rank_shards(const LlamaDims& dims, const comm::ProcessGrid& grid, int world_rank,
                                           StageSplit split = StageSplit::Even);

/// The parts of one LoRA pair a tp rank holds. Globally A is (r, in) and B is (out, r) for a base
/// weight (out, in). On a column-parallel weight A is replicated and B is split like the weight's
/// rows; on a row-parallel weight A is split like the weight's columns and B is replicated; so
/// x·Aᵀ·Bᵀ needs no collective beyond the base weight's own.
struct LoraShard {
  TensorSlice a;
  TensorSlice b;
};
/// InternalError for tensors LoRA does not attach to (norms, biases, embedding).
LoraShard lora_shard(LlamaTensor base, std::int64_t rank_r, const LlamaDims& dims, int tp_size, int tp_rank);

/// A bottleneck adapter acts on the full hidden state after the all-reduce: down (m, C) and up (C, m)
/// are replicated over tp.
struct BottleneckShard {
  TensorSlice down;
  TensorSlice up;
};
BottleneckShard bottleneck_shard(std::int64_t width_m, const LlamaDims& dims);

}  // namespace adapt::parallel
