// Pipeline stages (and pipeline × tensor parallelism) under mpiexec: the world split as tp × pp with
// pp >= 2 (2 ranks: pp2; 4 ranks: tp2 × pp2 and pp4) on a tiny random Llama of 6 layers, its stages
// split by work as adapt_train loads them. Every rank computes the single-rank reference itself (the
// whole model, llama_train_step over the same 4 micro-batches with the step's loss scale, gradients
// accumulated), then runs its stage through
// model::llama_pipeline_train (1F1B, hidden states and their gradients exchanged with send/recv) and
// compares the step's loss and every adapter gradient (summed over tp for whole LoRA factors, gathered
// whole over tp, summed over pp since each stage fills its own layers' gradients) with the reference.
// LoRA dropout is on, with masks keyed by micro-batch (set_step before each pass). Tolerance 1e-5
// relative, as tests/mpi/tp_model_mpi_test.cpp.
#include <doctest/doctest.h>
#include <mpi.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "adapters/adapter_set.h"
#include "comm/mpi_communicator.h"
#include "model/llama_pipeline.h"
#include "model/llama_train.h"
#include "model/llama_weights.h"
#include "model/model_folder.h"
#include "model/tensor_parallel.h"
#include "tests/mpi/tp_test_util.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::test::tp;

namespace {

struct Micro {
  Tensor ids, targets;
};

std::vector<Micro> micro_batches(std::int64_t V) {
  std::vector<Micro> out;
  for (std::uint64_t i = 0; i < 4; ++i) {
    Micro m{ids_tensor(2, 8, V, 300 + i), ids_tensor(2, 8, V, 400 + i)};
    m.targets.data<std::int32_t>()[static_cast<std::int64_t>(i) + 1] = model::kIgnoreIndex;  // a different count each
    out.push_back(m);
  }
  return out;
}

void run_layout(int tp_size, bool recompute) {
  auto world = comm::MpiCommunicator::world({.timeout_s = 120});
  const int pp_size = world->size() / tp_size;
  CAPTURE(tp_size);
  CAPTURE(pp_size);
  test::TempDir dir("adapt-pp-model");
  // 6 layers and a vocabulary large enough that the head weighs 2.7 layers: training's split by work
  // gives the last stage fewer layers (pp2: 4 | 2; pp4: 2 | 2 | 1 | 1).
  model::LlamaConfig cfg = tiny_config(Variant{.tied = true}, 6);
  cfg.vocab_size = 600;
  model::random_model_write(dir.path(), cfg, {.seed = 13, .dtype = DType::F32, .max_shard_bytes = 20000});
  const comm::ProcessGrid grid =
      comm::ProcessGrid::make(world->size(), tp_size, pp_size,
                              {.n_heads = cfg.n_heads, .n_kv_heads = cfg.n_kv_heads, .n_layers = cfg.n_layers});
  comm::GridComms comms = comm::grid_comms_split(*world, grid);
  const model::LlamaModel whole = model::llama_model_load(dir.path());
  model::LlamaLoadStats stats;
  const model::LlamaModel part = model::llama_model_load_tp(dir.path(), grid, world->rank(), *comms.tp,
                                                            {.stage_split = parallel::kTrainSplit}, &stats);
  REQUIRE(part.stage.size == pp_size);
  CHECK(stats.bytes_read == stats.bytes_share);
  const parallel::Range mine = model::stage_layer_range(cfg, part.stage);
  if (pp_size == 2) CHECK(mine == (part.stage.last() ? parallel::Range{4, 2} : parallel::Range{0, 4}));
  for (std::int64_t l = 0; l < cfg.n_layers; ++l)  // only the stage's layers are loaded
    CHECK(part.weights.layers[static_cast<std::size_t>(l)].wq.defined() == (l >= mine.begin && l < mine.end()));

  const std::vector<Micro> micro = micro_batches(cfg.vocab_size);
  std::vector<model::TrainInputs> inputs;
  for (const Micro& m : micro) inputs.push_back({.ids = m.ids, .targets = m.targets});

  // One rank: the micro-batches one after the other, gradients accumulated with the step's scale.
  adapters::AdapterSet set_whole = adapter_set(cfg, 0.1, nullptr);
  set_whole.set_training(true);
  std::int64_t n_tokens = 0;
  for (const Micro& m : micro)
    for (std::int64_t i = 0; i < m.targets.numel(); ++i)
      n_tokens += m.targets.data<std::int32_t>()[i] != model::kIgnoreIndex;
  const float scale = 1.0f / static_cast<float>(n_tokens);
  double loss_whole = 0;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    set_whole.set_step(5, static_cast<std::int64_t>(i));
    loss_whole += model::llama_train_step(whole, inputs[i], &set_whole, {.loss_scale = scale}).loss_sum;
  }

  // The stages.
  adapters::AdapterSet set_part = adapter_set(cfg, 0.1, &part.tp);
  set_part.set_training(true);
  const std::int64_t gathers_before = comms.tp->stats()[comm::Collective::AllGather].calls;
  const model::PipelineResult r =
      model::llama_pipeline_train(part, inputs, &set_part, *comms.pp,
                                  {.recompute = recompute, .before_micro = [&](int i) { set_part.set_step(5, i); }});
  const std::int64_t gathers_plain = comms.tp->stats()[comm::Collective::AllGather].calls - gathers_before;
  set_part.tp_reduce_gradients();
  CHECK(r.n_loss_tokens == n_tokens);
  CHECK(r.loss_scale == scale);
  const double d_loss = std::abs(r.loss_sum - loss_whole) / std::abs(loss_whole);
  CHECK(d_loss <= kTol);

  // Each stage holds its own layers' gradients: gathered whole over tp, summed over pp.
  adapters::AdapterSet gathered = set_part.tp_gathered();
  for (adapters::AdapterParam& p : gathered.parameters()) {
    const int layer = std::stoi(p.name.substr(p.name.find('.') + 1));
    if (layer < mine.begin || layer >= mine.end()) CHECK(max_abs(p.grad) == 0.0);
    comms.pp->all_reduce(p.grad, comm::ReduceOp::Sum);
  }
  const std::vector<adapters::AdapterParam> pw = set_whole.parameters(), pg = gathered.parameters();
  double worst = 0;
  for (std::size_t i = 0; i < pw.size(); ++i) {
    CAPTURE(pw[i].name);
    CHECK(max_abs(pw[i].grad) > 0);
    const double d = rel_diff(pg[i].grad, pw[i].grad);
    CHECK(d <= kTol);
    worst = std::max(worst, d);
  }
  if (world->rank() == 0)
    std::printf("tp%d x pp%d (recompute %d), 4 micro-batches: loss rel diff %.2e, %zu gradients max rel diff %.2e\n",
                tp_size, pp_size, recompute, d_loss, pw.size(), worst);

  // Evaluation (forward only): every micro-batch through the stages once; one rank's loss, no gradient.
  adapters::AdapterSet eval_whole = adapter_set(cfg, 0.1, nullptr), eval_part = adapter_set(cfg, 0.1, &part.tp);
  eval_whole.set_training(false);
  eval_part.set_training(false);
  double loss_eval = 0;
  for (const model::TrainInputs& in : inputs)
    loss_eval += model::llama_train_step(whole, in, &eval_whole, {.backward = false}).loss_sum;
  const model::PipelineResult e =
      model::llama_pipeline_train(part, inputs, &eval_part, *comms.pp, {.recompute = recompute, .backward = false});
  CHECK(e.n_loss_tokens == n_tokens);
  CHECK(std::abs(e.loss_sum - loss_eval) / std::abs(loss_eval) <= kTol);
  for (const adapters::AdapterParam& p : eval_part.parameters()) CHECK(max_abs(p.grad) == 0.0);

  // The same pipeline with the gradient stream armed before the stage's last backward (as adapt_train
  // does with optim.overlap): the stage's own layers are handed during that backward, highest first,
  // the others by end_gradient_stream after it, every layer once; the gradients are the same bits as
  // tp_reduce_gradients gives after the pipeline.
  adapters::AdapterSet set_stream = adapter_set(cfg, 0.1, &part.tp);
  set_stream.set_training(true);
  bool in_pipeline = true;
  std::vector<int> during, after;
  set_stream.set_gradient_stream(
      [&](int layer, std::size_t, std::size_t) { (in_pipeline ? during : after).push_back(layer); });
  int armed = 0;
  // With recompute, the tp ranks keep shards of the layers' inputs here (shard_saved_inputs): the same
  // bits, with one more all-gather per layer and micro-batch.
  const std::int64_t gathers_stream = comms.tp->stats()[comm::Collective::AllGather].calls;
  model::llama_pipeline_train(part, inputs, &set_stream, *comms.pp,
                              {.recompute = recompute,
                               .shard_saved_inputs = recompute,
                               .before_micro = [&](int i) { set_stream.set_step(5, i); },
                               .before_last_backward =
                                   [&] {
                                     ++armed;
                                     set_stream.arm_gradient_stream();
                                   }});
  in_pipeline = false;
  set_stream.end_gradient_stream();
  CHECK(comms.tp->stats()[comm::Collective::AllGather].calls - gathers_stream - gathers_plain ==
        (recompute && tp_size > 1 ? mine.count * static_cast<std::int64_t>(inputs.size()) : 0));
  CHECK(armed == 1);
  std::vector<int> stage_layers, other_layers;
  for (int l = static_cast<int>(cfg.n_layers) - 1; l >= 0; --l)
    (l >= mine.begin && l < mine.end() ? stage_layers : other_layers).push_back(l);
  CHECK(during == stage_layers);
  CHECK(after == other_layers);
  const std::vector<adapters::AdapterParam> ps = set_stream.parameters(), pp_ = set_part.parameters();
  REQUIRE(ps.size() == pp_.size());
  for (std::size_t i = 0; i < ps.size(); ++i) {
    CAPTURE(ps[i].name);
    REQUIRE(ps[i].grad.shape() == pp_[i].grad.shape());
    CHECK(std::memcmp(ps[i].grad.raw(), pp_[i].grad.raw(),
                      static_cast<std::size_t>(ps[i].grad.numel()) * sizeof(float)) == 0);
  }
  if (!recompute) return;
  // The layers' inputs kept in bf16 (saved_input_dtype; sharded where tp > 1): the same loss, the
  // gradients at the rounded inputs, near the f32 ones.
  adapters::AdapterSet set_bf16 = adapter_set(cfg, 0.1, &part.tp);
  set_bf16.set_training(true);
  const model::PipelineResult rb = model::llama_pipeline_train(
      part, inputs, &set_bf16, *comms.pp,
      {.recompute = true, .shard_saved_inputs = true, .saved_input_dtype = DType::BF16, .before_micro = [&](int i) {
         set_bf16.set_step(5, i);
       }});
  set_bf16.tp_reduce_gradients();
  CHECK(rb.loss_sum == r.loss_sum);
  const std::vector<adapters::AdapterParam> pb = set_bf16.parameters();
  double most = 0.0;
  for (std::size_t i = 0; i < pb.size(); ++i) most = std::max(most, rel_diff(pb[i].grad, pp_[i].grad));
  if (world->rank() == 0)
    std::printf("tp%d x pp%d, bf16 layer inputs: gradients within %.2e\n", tp_size, pp_size, most);
  CHECK(most > 0.0);
  CHECK(most < 5e-2);
}

}  // namespace

TEST_CASE("pipeline stages with 1F1B: the step's loss and gradients equal one rank's") {
  int size = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  run_layout(1, false);  // pp = world
  run_layout(1, true);
  if (size == 4) {  // tp2 × pp2
    run_layout(2, false);
    run_layout(2, true);
  }
}
