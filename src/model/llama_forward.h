// The Llama forward pass of HF LlamaForCausalLM (SPEC-llama.md §3.5–3.7) in f32, on the CPU or on the
// model's CUDA device (llama_device.h; logits come back to the host):
// embedding → L pre-norm decoder layers (RMSNorm, GQA attention with RoPE, residual; RMSNorm, SwiGLU
// MLP, residual) → final RMSNorm → lm_head. Every projection goes through linear() (linear.h), the one
// call site where adapters attach (STYLE principle 5), and block adapters run at the end of each
// sub-block; activations come from an ops::Workspace, so a pass does not allocate per op or per layer.
// With a KV cache, each sequence continues at its own cache row's length (ragged batch), computed
// exactly as if it ran alone. The training pass (llama_train.h) computes the same logits.
#pragma once

#include <span>

#include "comm/communicator.h"
#include "model/adapter_hook.h"
#include "model/kv_cache.h"
#include "model/linear.h"
#include "model/llama_weights.h"
#include "model/weight_names.h"
#include "ops/workspace.h"
#include "tensor/tensor.h"

namespace adapt::model {

struct ForwardOptions {
  bool last_position_only = false;  // logits of the last position only: (B, V) instead of (B, T, V)
  // With a cache: (B) the cache row of each sequence of ids (distinct). Empty: rows 0 .. B − 1 of a
  // cache made for exactly B sequences. The span must stay valid for the call.
  std::span<const std::int64_t> cache_rows;
  // Adapters (unmerged LoRA, bottleneck): linear_forward at every projection, block_forward at the end
  // of every attention and MLP sub-block, as llama_train_step calls them. Null: the base model.
  AdapterHook* hook = nullptr;
  // Pipeline stages (model.stage active): the pp communicator (stage order). Needed then, unused otherwise.
  comm::Communicator* pp = nullptr;
  // Host memory for the returned logits (contiguous f32, at least B · T_out · V elements), which are
  // then a view of it: a buffer reused across decode steps (pinned for a model on a GPU, so that the
  // logits come back by DMA with no fresh pages to fault in). Null: a new host tensor per call.
  const Tensor* logits_out = nullptr;
};

/// Runs the model on token ids (B, T) (i32 or i64, host memory) and returns f32 host logits (B, T, V),
/// or (B, V) with last_position_only. A model on a CUDA device computes there (the workspace and cache
/// must be on its device: model_allocator) and copies only the returned logits to the host.
///   cache == nullptr: positions 0 .. T−1, nothing is kept.
///   cache != nullptr: sequence b goes to cache row r = cache_rows[b] (or b) and continues at that row's
///     length: its tokens get positions n_past(r) .. n_past(r) + T − 1 (RoPE) and attend causally to
///     row r's keys only; the new keys/values are appended and row r advances by T. Rows may have
///     different lengths (ragged batch): prefill one sequence into a free row with B = 1, then decode
///     every active row together with T = 1. Rows not named are left untouched. ShapeError when the
///     cache has another batch size (without cache_rows), a row is named twice or does not exist, or a
///     row has too little room, before anything is computed. Layers the cache keeps in host RAM
///     (KvPlacement::device_layers) are staged to the model's device as each layer begins.
/// A sequence's logits do not depend on the other sequences of the call as far as the ops compute each
/// row alike whatever the batch: attention, RoPE and the row-wise ops do; matmul does when its kernel
/// for B·T rows sums each row as it does for one row (tests/golden/llama_forward checks decode batches
/// bit for bit against single sequences).
/// `workspace`, when given, holds the activations and is reset() on entry (tensors taken from it
/// earlier become invalid); reusing one across calls makes later calls allocation-free except for the
/// returned logits. Not thread-safe per workspace or cache; the model itself is read-only.
/// Tensor parallelism (model.tp, tensor_parallel.h): every rank of the tp group calls this together
/// with the same ids; the cache holds the rank's KV heads (KvCache(cfg, B, S, tp.size)); every rank
/// returns the same whole logits, gathered over the vocabulary.
/// Pipeline parallelism (model.stage active, opts.pp its communicator): every stage calls this together
/// with the same ids and its own cache (holding at least the stage's layers: KvPlacement::layers =
/// stage_layer_range(config, stage); ShapeError otherwise);
/// the first stage embeds, each stage runs its layers on the hidden state received from the previous
/// one and sends its output on, and the last stage's logits are broadcast, so every stage returns them.
/// The stages run one after the other (no overlap): for generation that fits the weights, not for speed.
/// Keeping groups of rows in flight on different stages would not decode faster at the batches adapt_gen
/// runs: a decode step reads each stage's weights once whatever its rows (below ~150 rows per step on an
/// A100, its FLOP/byte ratio), so pp groups in flight make as many tokens per weight read as one batch of
/// all their rows does here, with the same KV cache; a larger runtime.batch_size is the way to fill the
/// stages' time. Only compute-bound batches would gain.
/// A tp shard or stage on a CUDA device (llama_model_to_device) runs the same way, its collectives on
/// device buffers (the communicators must take them: NCCL, or MPI staging them; comm::device_grid_comms).
Tensor llama_forward(const LlamaModel& model, const Tensor& ids, KvCache* cache = nullptr,
                     const ForwardOptions& opts = {}, ops::Workspace* workspace = nullptr);

/// One llama_forward call, as far as its workspace is concerned.
struct ForwardCall {
  std::int64_t batch = 1, tokens = 1;  // ids (B, T)
  bool cache = true;                   // over a KV cache (else k and v are copied heads-major)
  bool ragged = false;                 // with a cache: rows at different positions (a RoPE table each)
  bool last_position_only = true;
  bool block_adapters = false;  // the hook has a block adapter on some layer
  bool on_device = false;       // the model is on a CUDA device
};

/// The bytes llama_forward takes from its workspace for `call` on tp rank `tp` of pipeline stage
/// `stage`: its takes replayed one by one, 64-byte aligned as ops::Workspace hands them out. A
/// workspace reused across calls holds the largest of its calls (ops::Workspace::high_water_bytes).
/// The adapters' terms (their own workspace), the GEMMs' operand casts and the returned logits are not
/// in it.
std::uint64_t llama_forward_workspace_bytes(const LlamaConfig& c, const TensorParallel& tp, const PipelineStage& stage,
                                            const ForwardCall& call);

}  // namespace adapt::model
