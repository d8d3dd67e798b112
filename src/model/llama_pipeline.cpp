#include "model/llama_pipeline.h"

#include <memory>
#include <optional>
#include <vector>

#include "core/error.h"
#include "model/llama_device.h"
#include "parallel/pipeline_schedule.h"
#include "parallel/tp_ops.h"

namespace adapt::model {

namespace {

std::int64_t count_targets(const Tensor& targets) {
  std::int64_t n = 0;
  for (std::int64_t i = 0; i < targets.numel(); ++i) {
    const std::int64_t y =
        targets.dtype() == DType::I32 ? targets.data<std::int32_t>()[i] : targets.data<std::int64_t>()[i];
    n += y != kIgnoreIndex;
  }
  return n;
}

// A hidden state exchanged between stages, next to the model's weights (host or device memory: the pp
// communicator moves device buffers too).
Tensor hidden_like(const LlamaModel& m, const TrainInputs& in, const char* name) {
  return Tensor::empty({in.ids.dim(0), in.ids.dim(1), m.config.hidden_size}, DType::F32, model_allocator(m), name);
}

// A message between neighbouring stages: what is sent after a step, and what the next step receives.
struct Message {
  const Tensor* send = nullptr;
  int send_peer = -1;
  comm::Tag send_tag = comm::Tag::Activation;
};

// The loss lives on the last stage; every stage reports it.
PipelineResult share_loss(const LlamaModel& model, comm::Communicator& pp, PipelineResult result) {
  double totals[2] = {result.loss_sum, static_cast<double>(result.n_loss_tokens)};
  if (model.stage.active())
    parallel::all_reduce_host_values(pp, std::span<double>(totals, 2), comm::ReduceOp::Sum, model_device(model));
  result.loss_sum = totals[0];
  result.n_loss_tokens = static_cast<std::int64_t>(totals[1]);
  return result;
}

// Without backward (evaluation): each micro-batch through the stages in order, a stage's forward once.
PipelineResult pipeline_forward(const LlamaModel& model, std::span<const TrainInputs> micro, AdapterHook* hook,
                                comm::Communicator& pp, const std::function<void(int)>& before, PipelineResult result,
                                TrainWorkspace& ws) {
  const PipelineStage& stage = model.stage;
  for (std::size_t i = 0; i < micro.size(); ++i) {
    const TrainInputs& in = micro[i];
    Tensor input, output;
    if (!stage.first()) {
      input = hidden_like(model, in, "stage_input");
      pp.recv(input.raw(), input.numel(), comm::CommDType::F32, stage.rank - 1, comm::Tag::Activation);
    }
    if (!stage.last()) output = hidden_like(model, in, "stage_output");
    before(static_cast<int>(i));
    const TrainResult r = llama_train_step(model, in, hook,
                                           {.loss_scale = result.loss_scale,
                                            .backward = false,
                                            .stage_input = stage.first() ? nullptr : &input,
                                            .stage_output = stage.last() ? nullptr : &output},
                                           &ws);
    result.loss_sum += r.loss_sum;
    result.n_loss_tokens += r.n_loss_tokens;
    if (!stage.last())
      pp.send(output.raw(), output.numel(), comm::CommDType::F32, stage.rank + 1, comm::Tag::Activation);
  }
  return share_loss(model, pp, result);
}

}  // namespace

PipelineResult llama_pipeline_train(const LlamaModel& model, std::span<const TrainInputs> micro, AdapterHook* hook,
                                    comm::Communicator& pp, const PipelineOptions& opts, TrainWorkspace* workspace) {
  const PipelineStage& stage = model.stage;
  ADAPT_REQUIRE(!micro.empty(), ShapeError, "llama_pipeline_train: no micro-batches");
  ADAPT_REQUIRE(pp.size() == stage.size && pp.rank() == stage.rank, ConfigError,
                "llama_pipeline_train: the pp communicator '{}' (rank {} of {}) is not the model's stage {} of {}",
                pp.name(), pp.rank(), pp.size(), stage.rank, stage.size);
  TrainWorkspace local(model_allocator(model));
  TrainWorkspace& ws = workspace ? *workspace : local;
  PipelineResult result;
  std::int64_t n_targets = 0;
  for (const TrainInputs& in : micro) n_targets += count_targets(in.targets);
  result.loss_scale =
      opts.loss_scale != 0.0f ? opts.loss_scale : (n_targets > 0 ? 1.0f / static_cast<float>(n_targets) : 0.0f);
  const int n = static_cast<int>(micro.size());
  auto before = [&](int i) {
    if (opts.before_micro) opts.before_micro(i);
  };
  if (!opts.backward) return pipeline_forward(model, micro, hook, pp, before, result, ws);

  // Per micro-batch: its input (until its forward has copied it), the gradient from the next stage, the
  // gradient of its input for the previous stage, its output, and on a stage that is not the last its
  // forward's activations, kept for its backward in a `saved` workspace of its own (a slot).
  std::vector<Tensor> input(static_cast<std::size_t>(n)), grad_out(static_cast<std::size_t>(n));
  Tensor output, grad_in;
  std::vector<std::unique_ptr<SplitTrainStep>> pending(static_cast<std::size_t>(n));
  std::vector<std::size_t> slot_of(static_cast<std::size_t>(n)), free_slots;
  std::size_t n_slots = 0;
  const std::vector<parallel::PipeStep> steps = parallel::schedule_1f1b(stage.size, stage.rank, n);
  // What step k receives, and whether an earlier send_recv already received it.
  auto incoming = [&](const parallel::PipeStep& s) -> std::pair<Tensor*, int> {
    const std::size_t i = static_cast<std::size_t>(s.micro);
    if (s.op == parallel::PipeOp::Forward && !stage.first()) {
      if (!input[i].defined()) input[i] = hidden_like(model, micro[i], "stage_input");
      return {&input[i], stage.rank - 1};
    }
    if (s.op == parallel::PipeOp::Backward && !stage.last()) {
      if (!grad_out[i].defined()) grad_out[i] = hidden_like(model, micro[i], "stage_output_grad");
      return {&grad_out[i], stage.rank + 1};
    }
    return {nullptr, -1};
  };
  auto tag_of = [](const parallel::PipeStep& s) {
    return s.op == parallel::PipeOp::Forward ? comm::Tag::Activation : comm::Tag::ActivationGrad;
  };
  std::vector<bool> received(steps.size(), false);
  std::size_t last_backward = steps.size();
  for (std::size_t k = 0; k < steps.size(); ++k)
    if (steps[k].op == parallel::PipeOp::Backward) last_backward = k;
  for (std::size_t k = 0; k < steps.size(); ++k) {
    const parallel::PipeStep& s = steps[k];
    const std::size_t i = static_cast<std::size_t>(s.micro);
    const TrainInputs& in = micro[i];
    if (!received[k]) {
      auto [buf, peer] = incoming(s);
      if (buf) pp.recv(buf->raw(), buf->numel(), comm::CommDType::F32, peer, tag_of(s));
    }
    Message out;
    if (s.op == parallel::PipeOp::Forward) {
      // The last stage runs the whole micro-batch in its backward, right after.
      if (!stage.last()) {
        before(s.micro);
        output = hidden_like(model, in, "stage_output");
        if (free_slots.empty()) free_slots.push_back(n_slots++);
        slot_of[i] = free_slots.back();
        free_slots.pop_back();
        pending[i] = std::make_unique<SplitTrainStep>(model, in, hook,
                                                      TrainOptions{.recompute = opts.recompute,
                                                                   .shard_saved_inputs = opts.shard_saved_inputs,
                                                                   .saved_input_dtype = opts.saved_input_dtype,
                                                                   .loss_scale = result.loss_scale,
                                                                   .stage_input = stage.first() ? nullptr : &input[i],
                                                                   .stage_output = &output},
                                                      ws.in_flight(slot_of[i]), ws.scratch);
        input[i] = Tensor();  // copied into the slot
        out = {&output, stage.rank + 1, comm::Tag::Activation};
      }
    } else {
      before(s.micro);
      if (k == last_backward && opts.before_last_backward) opts.before_last_backward();
      if (!stage.first()) grad_in = hidden_like(model, in, "stage_input_grad");
      Tensor* d_in = stage.first() ? nullptr : &grad_in;
      TrainResult r;
      if (stage.last()) {
        r = llama_train_step(model, in, hook,
                             {.recompute = opts.recompute,
                              .shard_saved_inputs = opts.shard_saved_inputs,
                              .saved_input_dtype = opts.saved_input_dtype,
                              .loss_scale = result.loss_scale,
                              .d_embedded = d_in,
                              .stage_input = stage.first() ? nullptr : &input[i]},
                             &ws);
      } else {
        r = pending[i]->backward(grad_out[i], d_in);
        pending[i].reset();
        free_slots.push_back(slot_of[i]);
      }
      result.loss_sum += r.loss_sum;
      result.n_loss_tokens += r.n_loss_tokens;
      input[i] = Tensor();  // this micro-batch is done here
      grad_out[i] = Tensor();
      if (!stage.first()) out = {&grad_in, stage.rank - 1, comm::Tag::ActivationGrad};
    }
    if (!out.send) continue;
    // Pair the send with the next step's receive when both go to the same neighbour.
    if (k + 1 < steps.size()) {
      auto [buf, peer] = incoming(steps[k + 1]);
      if (buf && peer == out.send_peer) {
        pp.send_recv(out.send->raw(), out.send->numel(), out.send_peer, out.send_tag, buf->raw(), buf->numel(), peer,
                     tag_of(steps[k + 1]), comm::CommDType::F32);
        received[k + 1] = true;
        continue;
      }
    }
    pp.send(out.send->raw(), out.send->numel(), comm::CommDType::F32, out.send_peer, out.send_tag);
  }
  return share_loss(model, pp, result);
}

}  // namespace adapt::model
