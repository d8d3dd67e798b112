// One training step of the Llama model in f32, on the CPU or on the model's CUDA device (llama_device.h):
// a forward that keeps what the backward needs (or, with recomputation, only each layer's input,
// running the layer's forward again just before its backward), the fused cross-entropy, and the
// backward through lm_head, the final norm and every layer down to the embedding output. The base
// model is frozen: no weight gets a gradient; the gradients that leave the model go to the adapter
// hook (linear sites and sub-block ends).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "model/adapter_hook.h"
#include "model/llama_weights.h"
#include "ops/workspace.h"
#include "tensor/tensor.h"

namespace adapt::model {

/// A target without loss (HF's ignore_index; train::kIgnoreIndex has the same value).
inline constexpr std::int32_t kIgnoreIndex = -100;

/// The rows of one micro-batch, as train::Batch holds them (wrap its vectors with Tensor::wrap).
struct TrainInputs {
  Tensor ids;          // (B, T) i32 or i64: the tokens fed to the model
  Tensor targets;      // (B, T) i32 or i64: the token that logits[b, t] is scored against (already shifted:
                       // targets[t] = ids[t + 1]), or −100 (no loss), as train::Batch::targets
  Tensor positions;    // (B, T) i32 or i64, optional: RoPE positions (undefined: 0 .. T−1 in every row)
  Tensor segment_ids;  // (B, T) i32, optional: t attends to s <= t only when segment_ids[s] ==
                       // segment_ids[t]; a negative id is padding (sees nothing, seen by nothing).
                       // Undefined: plain causal attention within each row
};

struct TrainOptions {
  /// Keep only each layer's input during the forward and run the layer's forward again right before
  /// its backward (hook forwards are called again too; AdapterHook's contract). Same gradients, bit
  /// for bit; about one more forward of compute for a fraction of the activation memory.
  bool recompute = false;
  /// With recompute and a tp group (model.tp): each tp rank keeps 1/tp of the rows of every layer's
  /// input instead of the whole input, and the layer's input is all-gathered from the ranks right before
  /// its recomputation (Megatron's distributed saved activations). Same bits; one all-gather of a
  /// (B, T, C) hidden state per layer in the backward, for 1/tp of the memory that grows with the layers,
  /// but two whole hidden states in turn (the backward gathers into one and recomputes into the other):
  /// adapt_train sets it (from train.shard_saved_inputs) where that saves memory, shard_saved_inputs_pays.
  bool shard_saved_inputs = false;
  /// With recompute: the dtype each layer's kept input is stored in (the rank's shard with
  /// shard_saved_inputs, else the whole input, beside two f32 hidden states in turn). F32: the same bits
  /// as without it. BF16: half the memory that grows with the layers; the loss is unchanged, and the
  /// recomputed layer starts from the input rounded to bf16, so the gradients are those at the rounded
  /// inputs (within bf16 rounding of the f32 ones). adapt_train: train.saved_inputs_dtype, applied where
  /// it saves memory (compact_saved_inputs_pays).
  DType saved_input_dtype = DType::F32;
  /// The gradients are those of loss_sum · loss_scale. 0: 1 / n_loss_tokens of this call, i.e. HF's
  /// mean over non-ignored targets. With gradient accumulation over micro-batches or data-parallel
  /// ranks, pass 1 / n_loss_tokens_global of the whole global batch on every call, so the summed
  /// gradients equal those of the global batch's mean loss.
  float loss_scale = 0.0f;
  /// false: forward and loss only (evaluation): nothing is kept for a backward and no hook backward runs.
  bool backward = true;
  /// Rows (tokens) of logits formed at a time: lm_head, the loss and lm_head's backward run chunk by
  /// chunk, so the (N, V) logits are never held whole (at Llama 3's V = 128256 they are 0.5 MB per
  /// token). 0: all N rows at once. The hook sees the LmHead site once per chunk, forward then
  /// backward. The loss and gradients are the same up to the GEMM's summation order for fewer rows.
  /// Every caller in adapt (training, evaluation, the pipeline stages) keeps the default.
  std::int64_t logits_chunk_rows = 256;
  /// When given, receives a copy of the logits (B, T, V) before the loss overwrites them (tests, eval).
  Tensor* logits = nullptr;
  /// When given, (B, T) f32 on the model's device, contiguous: each position's loss, −log softmax of its
  /// logits at its target (0 where the target is −100), chunk by chunk as the loss is formed, so a
  /// scorer never holds the (N, V) logits (adapt_eval). Not with a tp group (ConfigError).
  Tensor* row_loss = nullptr;
  /// When given, receives d(loss_sum · loss_scale) / d(embedding output) (B, T, C): the gradient that
  /// would enter the (frozen) embedding table. Tests check it against finite differences.
  Tensor* d_embedded = nullptr;
  /// Pipeline stages (model.stage, llama_pipeline.h), which run their own layers only:
  ///  * stage_input (B, T, C): on every stage but the first, the hidden state entering the stage's first
  ///    layer (the previous stage's output), in place of the embedding; d_embedded then receives its
  ///    gradient;
  ///  * stage_output (B, T, C): on every stage but the last, receives the last layer's output; there is
  ///    no head and no loss there;
  ///  * stage_output_grad (B, T, C): on every stage but the last, with backward, d(loss_sum ·
  ///    loss_scale)/d(stage output) from the next stage, where the backward starts.
  const Tensor* stage_input = nullptr;
  Tensor* stage_output = nullptr;
  const Tensor* stage_output_grad = nullptr;
};

/// Whether keeping each layer's input apart from the forward's hidden states saves memory on a stage of
/// `stage_layers` layers, each rank keeping 1/tp of the rows (TrainOptions::shard_saved_inputs; tp = 1
/// without) in `bytes` per element (4: f32, 2: bf16, TrainOptions::saved_input_dtype): whole, the stage
/// keeps stage_layers + 1 f32 hidden states; kept apart, two f32 ones and stage_layers · bytes / (4 · tp)
/// of them, so it pays when 4 · tp · (stage_layers − 1) > stage_layers · bytes (leaving out the shards'
/// padding, at most tp − 1 rows each). In f32: stage_layers · (tp − 1) > tp.
bool compact_saved_inputs_pays(int tp, std::int64_t stage_layers, int bytes = 4);

/// What adapt_train keeps of each layer's input with recomputation, on a stage of `stage_layers` layers at
/// tp ranks (adapt_plan plans the same): the shards and dtype asked for (TrainOptions'
/// shard_saved_inputs, with tp > 1, and saved_input_dtype) where compact_saved_inputs_pays, else whole
/// f32 inputs.
struct SavedInputs {
  bool shard = false;
  DType dtype = DType::F32;
};
SavedInputs saved_inputs_for(int tp, std::int64_t stage_layers, bool shard, DType dtype);

/// Bytes one step held, from the workspaces' high-water marks.
struct TrainMemory {
  std::size_t saved_bytes = 0;    // activations kept from the forward for the backward, plus the running gradient
  std::size_t scratch_bytes = 0;  // the largest set of temporaries alive at once (a layer's, or the logits)
  std::size_t total_bytes() const { return saved_bytes + scratch_bytes; }
};

struct TrainResult {
  double loss_sum = 0.0;           // Σ −log p(target) over the targets != −100 of this call
  std::int64_t n_loss_tokens = 0;  // targets != −100 of this call
  float loss_scale = 0.0f;         // the scale the gradients were computed with (resolved from the options)
  TrainMemory memory;
  /// Mean over this call's targets (HF's loss); 0 when there were none.
  double loss() const { return n_loss_tokens > 0 ? loss_sum / static_cast<double>(n_loss_tokens) : 0.0; }
};

/// The memory of training steps: reuse one across steps so that steps of the same shape allocate
/// nothing once warm. Not thread-safe. For a model on a CUDA device, construct it from
/// model_allocator(model) (llama_device.h): the activations live where the weights are.
struct TrainWorkspace {
  TrainWorkspace() = default;
  explicit TrainWorkspace(Allocator& alloc) : saved(alloc), scratch(alloc), alloc_(&alloc) {}
  ops::Workspace saved;    // reset at the start of each step
  ops::Workspace scratch;  // reset per layer
  /// The `saved` of a pipeline stage's micro-batch in flight (llama_pipeline.h: 1F1B keeps up to
  /// pp − stage of them between their forward and backward): made on first use, kept across steps.
  ops::Workspace& in_flight(std::size_t slot);

 private:
  Allocator* alloc_ = &host_allocator();
  std::vector<std::unique_ptr<ops::Workspace>> in_flight_;
};

/// One forward (and, unless opts.backward is false, backward) pass over a micro-batch.
///   Forward: as llama_forward without a cache (HF LlamaForCausalLM), plus per-token positions and
///   segment masking for packed rows; every projection goes through linear() and so through
///   hook->linear_forward, and hook->block_forward runs at the end of each attention and MLP
///   sub-block (h = the sub-block's input, f = its output, out = h + f). With no hook, the logits are
///   bit for bit those of llama_forward.
///   Loss: cross-entropy of logits[b, t] against targets[b, t], summed over targets != −100.
///   Backward: gradients of loss_sum · loss_scale flow to the hook (linear_backward with the same x as
///   the forward, block_backward), in reverse layer order; the hook accumulates its parameter
///   gradients. No base weight gets a gradient.
/// `hook` may be null (no adapters). `workspace`, when given, is reused (tensors taken from it before
/// become invalid). ShapeError names the tensor for wrong shapes, dtypes or token ids, before any work.
/// A model on a CUDA device (llama_model_to_device): the inputs stay host tensors (copied to the
/// device here), the hook receives device tensors, `logits` and `d_embedded` may be host or device
/// tensors; a tp shard or pipeline stage runs there too, its collectives on device buffers (the tp
/// communicator must take them: NCCL, or MPI staging them; stage_input / stage_output / stage_output_grad
/// may be host or device tensors).
/// Tensor parallelism (model.tp, tensor_parallel.h): every rank of the tp group calls this together
/// with the same inputs and gets the same loss; the hook sees the rank's slices (its gradients of whole
/// LoRA factors are partial sums over tp: AdapterSet::tp_reduce_gradients); logits and d_embedded are whole.
TrainResult llama_train_step(const LlamaModel& model, const TrainInputs& inputs, AdapterHook* hook,
                             const TrainOptions& opts = {}, TrainWorkspace* workspace = nullptr);

class TrainPass;

/// llama_train_step in two calls, for a pipeline stage that is not the last (llama_pipeline.h), where
/// other micro-batches run between a micro-batch's forward and its backward (1F1B). The constructor
/// runs the forward: `opts` as llama_train_step's, with backward = true, stage_output given, and
/// stage_output_grad and d_embedded left out (backward() takes them). What the backward reads stays
/// in `saved` (one per micro-batch in flight, untouched until backward() returns); `scratch` is reset
/// per layer and may be shared by every split step of the thread. `inputs`, `hook` and both
/// workspaces must outlive the object. Forward and backward together compute what llama_train_step
/// computes, bit for bit, running the forward once (or, with opts.recompute, each layer's forward
/// again right before its backward, as llama_train_step does).
class SplitTrainStep {
 public:
  SplitTrainStep(const LlamaModel& model, const TrainInputs& inputs, AdapterHook* hook, const TrainOptions& opts,
                 ops::Workspace& saved, ops::Workspace& scratch);
  ~SplitTrainStep();
  SplitTrainStep(const SplitTrainStep&) = delete;
  SplitTrainStep& operator=(const SplitTrainStep&) = delete;

  /// The backward from d(loss_sum · loss_scale)/d(stage output) (B, T, C), host or device tensor;
  /// d_embedded (optional, as TrainOptions::d_embedded) receives the gradient of the stage's input.
  /// Once only.
  TrainResult backward(const Tensor& stage_output_grad, Tensor* d_embedded);

 private:
  std::unique_ptr<TrainPass> pass_;
  bool done_ = false;
};

}  // namespace adapt::model
