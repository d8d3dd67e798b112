// Pipeline parallelism (DESIGN.md "Parallel layout"): one optimizer step's micro-batches through the
// stages of a model loaded with llama_model_load_tp on a grid with pp > 1, in the 1F1B order of
// parallel::schedule_1f1b, hidden states and their gradients exchanged with the neighbouring stages
// over the pp communicator (a send is paired with the next receive from the same neighbour through
// send_recv, so neighbours never wait on each other's sends).
// Memory and compute: a stage that is not the last keeps the activations of each micro-batch in flight
// (at most pp − stage of them, each in a `saved` workspace of its own: SplitTrainStep) and runs each
// forward once; with recompute, it keeps only its layers' inputs per micro-batch and runs each layer's
// forward again right before that layer's backward, as a single rank does. The last stage runs each
// micro-batch's forward and backward together (they are adjacent in 1F1B).
#pragma once

#include <functional>
#include <span>

#include "comm/communicator.h"
#include "model/adapter_hook.h"
#include "model/llama_train.h"
#include "model/llama_weights.h"

namespace adapt::model {

struct PipelineOptions {
  /// As TrainOptions::loss_scale: 1 / n_loss_tokens of the whole step (every micro-batch, every data
  /// replica) so that the accumulated gradients are those of the step's mean loss. 0: 1 / the loss
  /// tokens of all micro-batches given.
  float loss_scale = 0.0f;
  /// Per-layer recomputation inside the stage's backward pass (TrainOptions::recompute).
  bool recompute = false;
  /// With recompute and a tp group: each tp rank keeps a shard of every layer's input
  /// (TrainOptions::shard_saved_inputs).
  bool shard_saved_inputs = false;
  /// With recompute: the dtype the layers' inputs are kept in (TrainOptions::saved_input_dtype).
  DType saved_input_dtype = DType::F32;
  /// false: forward and loss only (evaluation): each micro-batch goes through the stages in order,
  /// nothing is kept and no gradient is computed.
  bool backward = true;
  /// Called with the micro-batch index before each pass over it (e.g. AdapterSet::set_step(step, i), so
  /// that dropout masks follow the micro-batch).
  std::function<void(int micro)> before_micro;
  /// Called once, right before the stage's last backward pass of the call (after before_micro): from
  /// there on the hook's parameter gradients of the stage's layers are final as each layer's backward
  /// completes (AdapterSet::arm_gradient_stream, so they can leave for the optimizer during it).
  std::function<void()> before_last_backward;
};

struct PipelineResult {
  double loss_sum = 0.0;           // over every micro-batch; the same on every stage
  std::int64_t n_loss_tokens = 0;  // likewise
  float loss_scale = 0.0f;
  double loss() const { return n_loss_tokens > 0 ? loss_sum / static_cast<double>(n_loss_tokens) : 0.0; }
};

/// Forward and backward of `micro` (every stage gets the same list: the first stage reads the ids, the
/// last the targets, all of them the shapes) on this rank's stage; the hook accumulates the gradients
/// of the stage's layers. `pp` is the rank's pipeline communicator (model.stage.size ranks, stage
/// order). With one stage: llama_train_step over the micro-batches in order. A stage on a CUDA device
/// (llama_model_to_device) keeps the hidden states it exchanges there and hands `pp` device buffers (an
/// NcclCommunicator, or an MpiCommunicator that stages them; comm::device_grid_comms picks).
PipelineResult llama_pipeline_train(const LlamaModel& model, std::span<const TrainInputs> micro, AdapterHook* hook,
                                    comm::Communicator& pp, const PipelineOptions& opts = {},
                                    TrainWorkspace* workspace = nullptr);

}  // namespace adapt::model
