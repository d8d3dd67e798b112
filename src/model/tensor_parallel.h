// Tensor parallelism inside the model (DESIGN.md "Parallel layout", Megatron): the tp group a model's
// weights are sharded over, the rank's share of the heads, FFN width and vocabulary, and loading only
// the rank's byte ranges of a HF model folder (parallel::llama_rank_load). A LlamaModel carries its
// TensorParallel; with one rank (the default) every pass runs exactly the single-rank code.
//   column-parallel q, k, v, gate, up: the rank's output features (whole heads), no collective
//     forward; the input gradient of the sub-block's projections is summed over tp in the backward;
//   row-parallel o, down: the rank's input features; each rank's partial product plus its adapter
//     term (LoRA with A split) is summed over tp, then the bias is added once;
//   embedding and lm_head: the rank's vocabulary rows (vocab-parallel lookup and cross-entropy; the
//     forward's logits are gathered whole for the sampler);
//   attention runs on the rank's H/tp query heads and Hkv/tp KV heads (and its KV cache holds only
//     those).
#pragma once

#include <cstdint>
#include <filesystem>

#include "comm/communicator.h"
#include "comm/process_grid.h"
#include "model/llama_config.h"
#include "parallel/llama_sharding.h"
#include "parallel/shard_spec.h"

namespace adapt::model {

struct LlamaModel;
struct LlamaLoadOptions;
struct LlamaLoadStats;

/// The tp group of a model. Default: one rank, no communicator (the single-rank code paths).
struct TensorParallel {
  comm::Communicator* comm = nullptr;  // the tp group (comm::GridComms::tp); must outlive the model
  int rank = 0;
  int size = 1;
  bool active() const { return size > 1; }
  /// The group of `tp` (its rank and size).
  static TensorParallel of(comm::Communicator& tp) { return {.comm = &tp, .rank = tp.rank(), .size = tp.size()}; }
};

/// A pipeline stage (DESIGN.md: contiguous, balanced layer ranges, parallel::stage_layers): the first
/// stage holds the embedding, the last the final norm and lm_head. Default: one stage, the whole model.
struct PipelineStage {
  int rank = 0;
  int size = 1;
  /// How the layers are split over the stages: by work when loaded for training
  /// (LlamaLoadOptions::stage_split), else evenly.
  parallel::StageSplit split = parallel::StageSplit::Even;
  bool active() const { return size > 1; }
  bool first() const { return rank == 0; }
  bool last() const { return rank == size - 1; }
};
/// The decoder layers `stage` holds: [begin, end) of c.n_layers (all of them with one stage), split as
/// stage.split says.
parallel::Range stage_layer_range(const LlamaConfig& c, const PipelineStage& stage);

/// What one tp rank holds of the model's widths.
struct TpLocalDims {
  std::int64_t heads = 0;     // H / tp
  std::int64_t kv_heads = 0;  // Hkv / tp
  std::int64_t ffn = 0;       // the rank's part of F (balanced: the first F % tp ranks one more)
  parallel::Range vocab;      // the vocabulary rows of embed_tokens / lm_head (balanced)
};
/// ConfigError when tp does not divide the heads or KV heads (ProcessGrid::make lists what works).
TpLocalDims tp_local_dims(const LlamaConfig& c, const TensorParallel& tp);

/// The sharding rules' view of a config.
parallel::LlamaDims llama_dims(const LlamaConfig& c);

/// Loads config.json and the slices of the base weights that `world_rank` of `grid` holds, reading
/// only their byte ranges (parallel::llama_rank_load); `tp` is the rank's tp communicator (grid.tp_size()
/// ranks). The model runs through llama_forward / llama_train_step like a whole one, every rank of the
/// tp group calling them together. With grid.pp_size() > 1 the model holds its stage's layers only
/// (model.stage; the other entries of weights.layers stay undefined) and trains through
/// llama_pipeline_train (llama_pipeline.h); llama_forward runs it stage after stage (ForwardOptions::pp).
/// `opts.storage` as llama_model_load (AsStored keeps bf16 matrices); stats->bytes_share receives the
/// rank's share of the stored bytes, stats->bytes_read what was read (equal when only the share is read).
LlamaModel llama_model_load_tp(const std::filesystem::path& dir, const comm::ProcessGrid& grid, int world_rank,
                               comm::Communicator& tp, const LlamaLoadOptions& opts, LlamaLoadStats* stats = nullptr);

}  // namespace adapt::model
