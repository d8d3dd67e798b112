// Tensor and pipeline parallelism with the model on GPUs, under mpiexec: the tiny random Llama of
// tests/mpi/tp_test_util.h (vocabulary 53, which 2 does not divide) as tp2 and as pp2, every rank's
// shard or stage moved to its GPU (model::llama_model_to_device), against the whole model on the same
// GPU computed by every rank itself. Checked: forward logits (with and without a KV cache, decode steps
// included), a training step's loss, logits and LoRA + bottleneck gradients (tp2: each rank's slices
// against the whole gradients cut the same way, and the device set gathered back whole by
// AdapterSet::tp_gathered; pp2: 1F1B over 4 micro-batches, each stage's gradients
// summed over pp), all within 1e-5 relative with f32 weights. Communicators from
// comm::device_grid_comms: with ranks sharing GPU 0 it must choose MPI (device buffers staged through
// host memory); with a GPU per rank (as many visible GPUs as ranks) the same checks run again on NCCL.
// Also every collective of the MPI communicator on device buffers (staged). Every rank exits 77
// (skipped), saying why, when a rank sees no CUDA device.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "adapters/adapter_set.h"
#include "backend/backend.h"
#include "comm/comm_kind.h"
#include "comm/mpi_communicator.h"
#if ADAPT_HAVE_NCCL
#include "comm/nccl_communicator.h"
#endif
#include "core/log.h"
#include "gpu_mpi_main.h"
#include "model/kv_cache.h"
#include "model/llama_device.h"
#include "model/llama_forward.h"
#include "model/llama_pipeline.h"
#include "model/llama_train.h"
#include "model/model_folder.h"
#include "model/tensor_parallel.h"
#include "parallel/tp_ops.h"
#include "tests/mpi/tp_test_util.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::test::tp;

namespace {

// tp_test_util.h's tiny model with head_dim 8: the device attention takes multiples of 8 (4 there).
model::LlamaConfig gpu_config(model::LlamaConfig c) {
  c.head_dim = 8;
  return c;
}

int g_devices = 0;  // the fewest CUDA devices any rank sees

// The groups of one layout: MPI ones on host buffers (for the test's own reductions) and the ones the
// model uses, from device_grid_comms.
struct Layout {
  comm::ProcessGrid grid{1, 1, 1};
  comm::GridComms host;
  comm::GridComms device;
  std::array<comm::CommKindChoice, 3> kinds;
};

Layout make_layout(comm::MpiCommunicator& world, int tp_size, int pp_size, const model::LlamaConfig& cfg, int device) {
  Layout l;
  l.grid = comm::ProcessGrid::make(world.size(), tp_size, pp_size,
                                   {.n_heads = cfg.n_heads, .n_kv_heads = cfg.n_kv_heads, .n_layers = cfg.n_layers});
  l.host = comm::grid_comms_split(world, l.grid);
  comm::GridComms boot = comm::grid_comms_split(world, l.grid);
  l.device = comm::device_grid_comms(boot, device, {.timeout_s = 120}, &l.kinds);
  return l;
}

// The kind chosen for a group of more than one rank: NCCL with a GPU per rank (and NCCL built), else MPI.
void check_kind(const comm::CommKindChoice& c, bool gpu_per_rank) {
  CAPTURE(c.reason);
  const bool nccl = gpu_per_rank && comm::nccl_built();
  CHECK(c.kind == (nccl ? comm::CommKind::Nccl : comm::CommKind::Mpi));
  if (!gpu_per_rank) CHECK(c.reason.find("share GPU") != std::string::npos);
}

Tensor targets_for(const Tensor& ids, std::int64_t V, std::uint64_t key, int ignored_at) {
  Tensor t = ids_tensor(ids.dim(0), ids.dim(1), V, key);
  t.data<std::int32_t>()[ignored_at] = model::kIgnoreIndex;
  return t;
}

// Forward logits of the parallel model (whole sequence, then prefill + 4 decode steps through a KV
// cache) against the whole model on the device.
void check_forward(const model::LlamaModel& part, const model::LlamaModel& whole, comm::Communicator* pp, int device) {
  const std::int64_t V = whole.config.vocab_size;
  const Tensor ids = ids_tensor(2, 8, V, 101);
  const double d_full =
      rel_diff(model::llama_forward(part, ids, nullptr, {.pp = pp}), model::llama_forward(whole, ids));
  CHECK(d_full <= kTol);
  Allocator& alloc = backend::cuda_allocator(device);
  model::KvCache kw(whole.config, 2, 16, 1, alloc), kp(part.config, 2, 16, part.tp.size, alloc);
  Tensor lw = model::llama_forward(whole, ids, &kw, {.last_position_only = true});
  Tensor lp = model::llama_forward(part, ids, &kp, {.last_position_only = true, .pp = pp});
  double d_decode = rel_diff(lp, lw);
  Tensor step = Tensor::empty({2, 1}, DType::I32, host_allocator(), "step_ids");
  for (int s = 0; s < 4; ++s) {
    for (std::int64_t b = 0; b < 2; ++b) step.data<std::int32_t>()[b] = argmax(lw.data<float>() + b * V, V);
    lw = model::llama_forward(whole, step, &kw, {.last_position_only = true});
    lp = model::llama_forward(part, step, &kp, {.last_position_only = true, .pp = pp});
    d_decode = std::max(d_decode, rel_diff(lp, lw));
  }
  CHECK(d_decode <= kTol);
  MESSAGE("forward logits rel diff " << d_full << ", prefill + decode " << d_decode);
}

void run_tp2(comm::MpiCommunicator& world, int device, bool gpu_per_rank) {
  test::TempDir dir("adapt-tp-device");
  const model::LlamaConfig cfg = gpu_config(tiny_config(Variant{.biases = true}, 2));
  model::random_model_write(dir.path(), cfg, {.seed = 21, .dtype = DType::F32, .max_shard_bytes = 20000});
  Layout lay = make_layout(world, 2, 1, cfg, device);
  check_kind(lay.kinds[static_cast<std::size_t>(comm::GridAxis::Tp)], gpu_per_rank);
#if ADAPT_HAVE_NCCL
  // NCCL groups run asynchronously (the compute stream waits for each collective, the host does not).
  if (const auto* nccl = dynamic_cast<const comm::NcclCommunicator*>(lay.device.tp.get())) CHECK(nccl->async());
#endif
  const model::LlamaModel whole = model::llama_model_to_device(model::llama_model_load(dir.path()), device, DType::F32);
  const model::LlamaModel part = model::llama_model_to_device(
      model::llama_model_load_tp(dir.path(), lay.grid, world.rank(), *lay.device.tp, {}), device, DType::F32);
  REQUIRE(part.tp.size == 2);
  REQUIRE(model::model_device(part).str() == "cuda:" + std::to_string(device));
  check_forward(part, whole, nullptr, device);

  // One training step with LoRA on every projection + bottleneck: loss, logits, every gradient.
  const std::int64_t V = cfg.vocab_size;
  const Tensor ids = ids_tensor(2, 8, V, 201);
  const model::TrainInputs in{.ids = ids, .targets = targets_for(ids, V, 202, 3)};
  adapters::AdapterSet set_whole = adapter_set(cfg, 0.0, nullptr);
  adapters::AdapterSet set_part = adapter_set(cfg, 0.0, &part.tp);
  const std::vector<parallel::TensorSlice> slices = set_part.tp_param_slices();
  set_whole.to_device(device);
  set_part.to_device(device);
  Tensor logits_w = Tensor::zeros({2, 8, V}, DType::F32, "logits_whole");
  Tensor logits_p = Tensor::zeros({2, 8, V}, DType::F32, "logits_tp");
  model::TrainWorkspace ws_w(model::model_allocator(whole)), ws_p(model::model_allocator(part));
  const model::TrainResult rw = model::llama_train_step(whole, in, &set_whole, {.logits = &logits_w}, &ws_w);
  const model::TrainResult rp = model::llama_train_step(part, in, &set_part, {.logits = &logits_p}, &ws_p);
  set_whole.gradients_to_host();
  set_part.tp_reduce_gradients();
  set_part.gradients_to_host();
  REQUIRE(rp.n_loss_tokens == rw.n_loss_tokens);
  const double d_loss = std::abs(rp.loss_sum - rw.loss_sum) / std::abs(rw.loss_sum);
  CHECK(d_loss <= kTol);
  const double d_logits = rel_diff(logits_p, logits_w);
  CHECK(d_logits <= kTol);
  const std::vector<adapters::AdapterParam> gw = set_whole.host_parameters(), gp = set_part.host_parameters();
  REQUIRE(gw.size() == gp.size());
  REQUIRE(slices.size() == gp.size());
  double worst = 0;
  for (std::size_t i = 0; i < gw.size(); ++i) {
    CAPTURE(gw[i].name);
    REQUIRE(gp[i].name == gw[i].name);
    CHECK(max_abs(gw[i].grad) > 0);
    const double d = rel_diff(gp[i].grad, parallel::shard_take(gw[i].grad, slices[i]));
    CHECK(d <= kTol);
    worst = std::max(worst, d);
  }
  // tp_gathered of the device set (what checkpoints and the export read) gathers the device parts over
  // the set's tp communicator, NCCL's included: the whole set's values exactly, its gradients within kTol.
  const adapters::AdapterSet back = set_part.tp_gathered();
  const std::vector<adapters::AdapterParam> gb = back.parameters();
  REQUIRE(gb.size() == gw.size());
  for (std::size_t i = 0; i < gw.size(); ++i) {
    CAPTURE(gw[i].name);
    REQUIRE(gb[i].name == gw[i].name);
    REQUIRE(gb[i].value.device().host_accessible());
    CHECK(rel_diff(gb[i].value, gw[i].value) == 0.0);
    CHECK(rel_diff(gb[i].grad, gw[i].grad) <= kTol);
  }
  // Recomputation with each rank keeping half of every layer's input (shard_saved_inputs), gathered over
  // the device tp group before the layer is recomputed: the same bits as keeping the inputs whole, also
  // for 7 rows (the second rank's shard padded).
  const Tensor ids7 = ids_tensor(1, 7, V, 203);
  for (const model::TrainInputs& x : {in, model::TrainInputs{.ids = ids7, .targets = targets_for(ids7, V, 204, 1)}}) {
    CAPTURE(x.ids.numel());
    double losses[2] = {0, 0};
    std::int64_t gathers[2] = {0, 0};
    std::vector<float> grads[2];
    for (const bool shard : {false, true}) {
      set_part.zero_grad();
      const std::int64_t before = lay.device.tp->stats()[comm::Collective::AllGather].calls;
      losses[shard] =
          model::llama_train_step(part, x, &set_part, {.recompute = true, .shard_saved_inputs = shard}, &ws_p).loss_sum;
      gathers[shard] = lay.device.tp->stats()[comm::Collective::AllGather].calls - before;
      set_part.gradients_to_host();
      for (const adapters::AdapterParam& p : set_part.host_parameters())
        grads[shard].insert(grads[shard].end(), p.grad.data<float>(), p.grad.data<float>() + p.grad.numel());
    }
    CHECK(losses[0] == losses[1]);
    CHECK(grads[0] == grads[1]);
    CHECK(gathers[1] - gathers[0] == cfg.n_layers);  // one per layer: the shards were kept and gathered
    // The inputs kept in bf16 (saved_input_dtype: the device casts, a bf16 all-gather when sharded): the
    // f32 loss, the same bits whole and sharded, gradients near the f32 ones but not equal.
    std::vector<float> bf16_grads[2];
    for (const bool shard : {false, true}) {
      set_part.zero_grad();
      const double loss = model::llama_train_step(
                              part, x, &set_part,
                              {.recompute = true, .shard_saved_inputs = shard, .saved_input_dtype = DType::BF16}, &ws_p)
                              .loss_sum;
      CHECK(loss == losses[0]);
      set_part.gradients_to_host();
      for (const adapters::AdapterParam& p : set_part.host_parameters())
        bf16_grads[shard].insert(bf16_grads[shard].end(), p.grad.data<float>(), p.grad.data<float>() + p.grad.numel());
    }
    CHECK(bf16_grads[0] == bf16_grads[1]);
    double most = 0.0, scale = 0.0;
    for (std::size_t i = 0; i < grads[0].size(); ++i) {
      most = std::max(most, static_cast<double>(std::abs(bf16_grads[0][i] - grads[0][i])));
      scale = std::max(scale, static_cast<double>(std::abs(grads[0][i])));
    }
    CHECK(most > 0.0);
    CHECK(most < 5e-2 * scale);
  }
  if (world.rank() == 0)
    std::printf("tp2 on %s (%s): loss rel diff %.2e, logits %.2e, %zu gradients max rel diff %.2e\n",
                gpu_per_rank ? "a GPU per rank" : "one shared GPU",
                std::string(comm::comm_kind_name(lay.kinds[0].kind)).c_str(), d_loss, d_logits, gw.size(), worst);
}

void run_pp2(comm::MpiCommunicator& world, int device, bool gpu_per_rank) {
  test::TempDir dir("adapt-pp-device");
  const model::LlamaConfig cfg = gpu_config(tiny_config(Variant{.tied = true}, 4));
  model::random_model_write(dir.path(), cfg, {.seed = 23, .dtype = DType::F32, .max_shard_bytes = 20000});
  Layout lay = make_layout(world, 1, 2, cfg, device);
  check_kind(lay.kinds[static_cast<std::size_t>(comm::GridAxis::Pp)], gpu_per_rank);
  const model::LlamaModel whole = model::llama_model_to_device(model::llama_model_load(dir.path()), device, DType::F32);
  const model::LlamaModel part = model::llama_model_to_device(
      model::llama_model_load_tp(dir.path(), lay.grid, world.rank(), *lay.device.tp, {}), device, DType::F32);
  REQUIRE(part.stage.size == 2);
  REQUIRE(model::model_device(part).str() == "cuda:" + std::to_string(device));
  check_forward(part, whole, lay.device.pp.get(), device);

  // 4 micro-batches through the stages (1F1B) against one rank accumulating them with the step's scale.
  const std::int64_t V = cfg.vocab_size;
  std::vector<model::TrainInputs> inputs;
  std::int64_t n_tokens = 0;
  for (int i = 0; i < 4; ++i) {
    const Tensor ids = ids_tensor(2, 8, V, 300 + static_cast<std::uint64_t>(i));
    inputs.push_back({.ids = ids, .targets = targets_for(ids, V, 400 + static_cast<std::uint64_t>(i), i + 1)});
    n_tokens += 2 * 8 - 1;
  }
  const float scale = 1.0f / static_cast<float>(n_tokens);
  adapters::AdapterSet set_whole = adapter_set(cfg, 0.0, nullptr);
  adapters::AdapterSet set_part = adapter_set(cfg, 0.0, nullptr);
  set_whole.to_device(device);
  set_part.to_device(device);
  model::TrainWorkspace ws_w(model::model_allocator(whole));
  double loss_whole = 0;
  for (const model::TrainInputs& in : inputs)
    loss_whole += model::llama_train_step(whole, in, &set_whole, {.loss_scale = scale}, &ws_w).loss_sum;
  const model::PipelineResult r = model::llama_pipeline_train(part, inputs, &set_part, *lay.device.pp);
  set_whole.gradients_to_host();
  set_part.gradients_to_host();
  CHECK(r.n_loss_tokens == n_tokens);
  CHECK(r.loss_scale == scale);
  const double d_loss = std::abs(r.loss_sum - loss_whole) / std::abs(loss_whole);
  CHECK(d_loss <= kTol);
  // Each stage fills its own layers' gradients: summed over pp (host MPI group), they are the whole's.
  const std::vector<adapters::AdapterParam> gw = set_whole.host_parameters(), gp = set_part.host_parameters();
  REQUIRE(gw.size() == gp.size());
  const parallel::Range mine = model::stage_layer_range(cfg, part.stage);
  double worst = 0;
  for (std::size_t i = 0; i < gw.size(); ++i) {
    CAPTURE(gw[i].name);
    const int layer = std::stoi(gp[i].name.substr(gp[i].name.find('.') + 1));
    if (layer < mine.begin || layer >= mine.end()) CHECK(max_abs(gp[i].grad) == 0.0);
    Tensor g = gp[i].grad;
    lay.host.pp->all_reduce(g, comm::ReduceOp::Sum);
    CHECK(max_abs(gw[i].grad) > 0);
    const double d = rel_diff(g, gw[i].grad);
    CHECK(d <= kTol);
    worst = std::max(worst, d);
  }
  if (world.rank() == 0)
    std::printf("pp2 on %s (%s), 4 micro-batches: loss rel diff %.2e, %zu gradients max rel diff %.2e\n",
                gpu_per_rank ? "a GPU per rank" : "one shared GPU",
                std::string(comm::comm_kind_name(lay.kinds[1].kind)).c_str(), d_loss, gw.size(), worst);
}

}  // namespace

// `values` as an f32 tensor on cuda:0, and back.
Tensor on_device(const std::vector<float>& values, const char* name) {
  Tensor h = Tensor::empty({static_cast<std::int64_t>(values.size())}, DType::F32, host_allocator(), name);
  std::copy(values.begin(), values.end(), h.data<float>());
  Tensor d = Tensor::empty(h.shape(), DType::F32, backend::cuda_allocator(0), name);
  backend::copy(d, h);
  return d;
}
std::vector<float> to_vector(const Tensor& d) {
  Tensor h = Tensor::empty(d.shape(), DType::F32, host_allocator(), d.name());
  backend::copy(h, d);
  return {h.data<float>(), h.data<float>() + h.numel()};
}

TEST_CASE("MpiCommunicator stages device buffers through host memory in every collective") {
  auto world = comm::MpiCommunicator::world({.timeout_s = 120, .max_elems_per_call = 3});  // chunked too
  const int r = world->rank(), n = world->size(), peer = (r + 1) % n;
  const auto fr = static_cast<float>(r);
  Tensor a = on_device({fr, fr + 1, fr + 2, fr + 3, fr + 4}, "all_reduce");
  REQUIRE(comm::mpi_stages_buffer(a.raw()));
  world->all_reduce(a, comm::ReduceOp::Sum);
  const float s = static_cast<float>(n * (n - 1) / 2);
  CHECK(to_vector(a) == std::vector<float>{s, s + n, s + 2 * n, s + 3 * n, s + 4 * n});

  Tensor mine = on_device({fr, 10 + fr, 20 + fr, 30 + fr}, "all_gather.send");
  Tensor all = on_device(std::vector<float>(static_cast<std::size_t>(4 * n), -1.0f), "all_gather.recv");
  world->all_gather(mine.raw(), all.raw(), 4, comm::CommDType::F32);
  std::vector<float> want;
  for (int q = 0; q < n; ++q)
    for (float base : {0.0f, 10.0f, 20.0f, 30.0f}) want.push_back(base + static_cast<float>(q));
  CHECK(to_vector(all) == want);

  std::vector<float> blocks;
  for (int q = 0; q < n; ++q) blocks.insert(blocks.end(), {fr + q, 2 * fr + q, 1.0f, 0.5f});
  Tensor rs_in = on_device(blocks, "reduce_scatter.send");
  Tensor rs_out = on_device(std::vector<float>(4, -1.0f), "reduce_scatter.recv");
  world->reduce_scatter(rs_in.raw(), rs_out.raw(), 4, comm::CommDType::F32, comm::ReduceOp::Sum);
  CHECK(to_vector(rs_out) == std::vector<float>{s + n * r, 2 * s + n * r, static_cast<float>(n), 0.5f * n});

  Tensor b = on_device({fr, fr, fr, fr}, "broadcast");
  world->broadcast(b, /*root=*/n - 1);
  CHECK(to_vector(b) == std::vector<float>(4, static_cast<float>(n - 1)));

  // Around the ring: send_recv, then a plain send / recv pair (even ranks send first).
  Tensor out = on_device({fr, fr + 0.5f, fr + 0.25f, fr, fr, fr, fr}, "send");
  Tensor in = on_device(std::vector<float>(7, -1.0f), "recv");
  const int from = (r + n - 1) % n;
  world->send_recv(out.raw(), 7, peer, comm::Tag::Activation, in.raw(), 7, from, comm::Tag::Activation,
                   comm::CommDType::F32);
  const auto ff = static_cast<float>(from);
  CHECK(to_vector(in) == std::vector<float>{ff, ff + 0.5f, ff + 0.25f, ff, ff, ff, ff});
  Tensor in2 = on_device(std::vector<float>(7, -1.0f), "recv2");
  if (r % 2 == 0) {
    world->send(out.raw(), 7, comm::CommDType::F32, peer, comm::Tag::ActivationGrad);
    world->recv(in2.raw(), 7, comm::CommDType::F32, from, comm::Tag::ActivationGrad);
  } else {
    world->recv(in2.raw(), 7, comm::CommDType::F32, from, comm::Tag::ActivationGrad);
    world->send(out.raw(), 7, comm::CommDType::F32, peer, comm::Tag::ActivationGrad);
  }
  CHECK(to_vector(in2) == to_vector(in));
}

TEST_CASE("tp2 and pp2 on one shared GPU (MPI with staged device buffers) equal the whole model there") {
  auto world = comm::MpiCommunicator::world({.timeout_s = 120});
  REQUIRE(world->size() == 2);
  run_tp2(*world, /*device=*/0, /*gpu_per_rank=*/false);
  run_pp2(*world, /*device=*/0, /*gpu_per_rank=*/false);
}

TEST_CASE("tp2 and pp2 with a GPU per rank (NCCL when built) equal the whole model there") {
  auto world = comm::MpiCommunicator::world({.timeout_s = 120});
  if (g_devices < world->size()) {
    MESSAGE("not run: " << g_devices << " GPU(s) visible for " << world->size() << " ranks");
    return;
  }
  // The device ops launch on the thread's current device: make it this rank's GPU, as the apps do
  // (apps/app_device.h), rather than rely on an NCCL communicator's constructor to set it (without
  // NCCL the groups get MPI and nothing else would).
  backend::cuda_use_device(world->rank());
  run_tp2(*world, world->rank(), /*gpu_per_rank=*/true);
  run_pp2(*world, world->rank(), /*gpu_per_rank=*/true);
}

int main(int argc, char** argv) {
  return test::gpu_mpi_main(argc, argv, "", [](const test::GpuMpiWorld& w) {
    g_devices = w.min_devices;
    if (w.rank == 0)
      std::printf("running on %s, %d ranks, %d GPU(s) visible\n", backend::cuda_device_name(0).c_str(), w.size,
                  g_devices);
  });
}
