// The optimizer state offloaded to host RAM (optim.offload = true) against the same optimizer without
// it, under mpiexec (2 and 4 ranks): one rank alone, the world as dp (averaging and ZeRO-1) and, at 4
// ranks, tp2 × dp2 with tp-sharded parameters. On the CPU both run the same f32 operations, so weights,
// norms, moments and checkpoint state must agree bit for bit; both must also match one process's
// update of the mean gradient (as train_dp_mpi checks for the plain path). optim.overlap: the
// asynchronous step (step_async, wait_params, finish) gives the same bits at each of those layouts,
// ZeRO-1 over dp included, with one unit or several (each all-gathered when the forward first waits
// for it, the rest in finish), and a tp-sharded AdapterSet's gradient stream (per-layer tp reduction
// during the backward) gives tp_reduce_gradients' gradients bit for bit, at tp2 and tp4.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "comm/local_communicator.h"
#include "comm/mpi_communicator.h"
#include "dp_param_util.h"
#include "model/llama_train.h"
#include "model/llama_weights.h"
#include "model/model_folder.h"
#include "tests/mpi/tp_test_util.h"
#include "tests/support/test_support.h"
#include "train/dp_optimizer.h"

using namespace adapt;
using test::fill_dp_grads, test::fill_dp_mean_grads, test::max_rel_diff;

namespace {

std::vector<Shape> shapes() {  // the dp tests' shapes and one long tensor
  std::vector<Shape> s = test::kDpParamShapes;
  s.push_back(Shape{1000});
  return s;
}

std::vector<adapters::AdapterParam> make_params(const char* tag, bool tp_sharded) {
  return test::make_dp_params(tag, shapes(), tp_sharded);
}

/// Elements whose bits differ.
std::int64_t bit_diffs(const Tensor& a, const Tensor& b) {
  REQUIRE(a.numel() == b.numel());
  std::int64_t n = 0;
  for (std::int64_t k = 0; k < a.numel(); ++k) n += std::memcmp(a.data<float>() + k, b.data<float>() + k, 4) != 0;
  return n;
}

/// Small buckets and chunks and two threads, so the offloaded update is cut in many pieces.
const optim::OffloadOptions kOffload{.threads = 2, .bucket_elems = 300, .chunk_elems = 64};
const optim::AdamWOptions kAdamW{.beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1};

/// Runs `steps` steps of an offloaded and a plain optimizer on the same groups and gradients; checks
/// that norms, weights and state agree bit for bit; then restores an offloaded optimizer from the
/// plain one's state and checks one more step.
/// `bucket`: elements per ZeRO-1 unit and averaging bucket (small: several units).
void check_offload_matches(comm::Communicator& dp, comm::Communicator* tp, bool zero1, double max_norm, int grad_rank,
                           std::int64_t bucket = parallel::kDpBucketElems) {
  std::vector<adapters::AdapterParam> plain = make_params("plain.", tp != nullptr);
  std::vector<adapters::AdapterParam> off = make_params("off.", tp != nullptr);
  std::vector<adapters::AdapterParam> ovl = make_params("ovl.", tp != nullptr);
  const train::DpOptimizerOptions plain_o{.zero1 = zero1, .tp = tp, .bucket_elems = bucket};
  train::DpOptimizerOptions off_o = plain_o, ovl_o = plain_o;
  off_o.offload = ovl_o.offload = kOffload;
  ovl_o.overlap = true;
  train::DpOptimizer plain_opt(plain, kAdamW, dp, plain_o);
  train::DpOptimizer off_opt(off, kAdamW, dp, off_o);
  train::DpOptimizer ovl_opt(ovl, kAdamW, dp, ovl_o);
  REQUIRE(off_opt.offloaded() != nullptr);
  CHECK(plain_opt.offloaded() == nullptr);
  CHECK_FALSE(off_opt.overlapped());
  CHECK(ovl_opt.overlapped());
  for (int s = 0; s < 4; ++s) {
    fill_dp_grads(plain, grad_rank, s);
    fill_dp_grads(off, grad_rank, s);
    const double n_plain = plain_opt.reduce_and_clip(max_norm);
    const double n_off = off_opt.reduce_and_clip(max_norm);
    CHECK(std::memcmp(&n_plain, &n_off, sizeof(double)) == 0);
    ovl_opt.finish();  // the gradients below are the parameters' own: the last update must be complete
    fill_dp_grads(ovl, grad_rank, s);
    const double n_ovl = ovl_opt.reduce_and_clip(max_norm);
    CHECK(std::memcmp(&n_plain, &n_ovl, sizeof(double)) == 0);
    plain_opt.step(1e-2);
    off_opt.step(1e-2);
    if (ovl_opt.overlapped()) {
      ovl_opt.step_async(1e-2);
      ovl_opt.wait_params(0, ovl.size() / 2);  // a forward's first layers
    } else {
      ovl_opt.step(1e-2);
    }
  }
  CHECK(off_opt.n_steps() == 4);
  CHECK(ovl_opt.n_steps() == 4);
  ovl_opt.finish();
  for (std::size_t i = 0; i < plain.size(); ++i) {
    CAPTURE(plain[i].name);
    CHECK(bit_diffs(off[i].value, plain[i].value) == 0);
    CHECK(bit_diffs(ovl[i].value, plain[i].value) == 0);
  }
  const auto st_plain = plain_opt.state(), st_off = off_opt.state(), st_ovl = ovl_opt.state();
  REQUIRE(st_plain.size() == st_off.size());
  REQUIRE(st_plain.size() == st_ovl.size());
  for (const auto& [key, t] : st_plain) {
    CAPTURE(key);
    REQUIRE(st_off.count(key) == 1);
    CHECK(st_off.at(key).shape() == t.shape());
    CHECK(bit_diffs(st_off.at(key), t) == 0);
    CHECK(bit_diffs(st_ovl.at(key), t) == 0);
  }
  // Resume: an offloaded optimizer restored from the plain one's state takes the same next step.
  std::vector<adapters::AdapterParam> back = make_params("back.", tp != nullptr);
  train::DpOptimizer back_opt(back, kAdamW, dp, off_o);
  back_opt.restore([&](const std::string& key) -> const Tensor& { return st_plain.at(key); });
  back_opt.set_n_steps(plain_opt.n_steps());
  fill_dp_grads(back, grad_rank, 9);
  fill_dp_grads(plain, grad_rank, 9);
  back_opt.reduce_and_clip(max_norm);
  plain_opt.reduce_and_clip(max_norm);
  back_opt.step(1e-2);
  plain_opt.step(1e-2);
  for (std::size_t i = 0; i < plain.size(); ++i) CHECK(bit_diffs(back[i].value, plain[i].value) == 0);
}

}  // namespace

TEST_CASE("Offloaded optimizer state: one rank alone, bit for bit as without offload") {
  comm::LocalCommunicator local;
  for (const double max_norm : {0.0, 0.5}) {
    CAPTURE(max_norm);
    check_offload_matches(local, nullptr, /*zero1=*/false, max_norm, /*grad_rank=*/0);
  }
}

TEST_CASE("Offloaded optimizer state: the world as dp, averaging and ZeRO-1, bit for bit as without offload") {
  auto dp = comm::MpiCommunicator::world({.timeout_s = 60});
  for (const bool zero1 : {false, true}) {
    for (const double max_norm : {0.0, 0.5}) {
      for (const std::int64_t bucket : {parallel::kDpBucketElems, std::int64_t{300}}) {  // 1 or 3 ZeRO-1 units
        CAPTURE(zero1);
        CAPTURE(max_norm);
        CAPTURE(bucket);
        check_offload_matches(*dp, nullptr, zero1, max_norm, dp->rank(), bucket);
      }
    }
  }
}

TEST_CASE("Offloaded optimizer state: tp2 x dp2 with tp-sharded parameters, bit for bit as without offload") {
  auto world = comm::MpiCommunicator::world({.timeout_s = 60});
  if (world->size() != 4) {
    MESSAGE("needs 4 ranks for tp2 x dp2; skipped at " << world->size());
    return;
  }
  comm::GridComms g = comm::grid_comms_split(*world, comm::ProcessGrid(2, 1, 2));
  for (const bool zero1 : {false, true}) {
    CAPTURE(zero1);
    // Ranks of a tp group see different gradients for their shards: use the world rank.
    check_offload_matches(*g.dp, g.tp.get(), zero1, /*max_norm=*/0.5, world->rank());
    check_offload_matches(*g.dp, g.tp.get(), zero1, /*max_norm=*/0.5, world->rank(), /*bucket=*/300);
  }
}

TEST_CASE("Offloaded ZeRO-1 over dp matches one process's update of the mean gradient") {
  auto dp = comm::MpiCommunicator::world({.timeout_s = 60});
  const int P = dp->size();
  std::vector<adapters::AdapterParam> ref = make_params("ref.", false);
  comm::LocalCommunicator local;
  train::DpOptimizer ref_opt(ref, kAdamW, local);
  std::vector<adapters::AdapterParam> mine = make_params("mine.", false);
  train::DpOptimizer opt(mine, kAdamW, *dp, {.zero1 = true, .offload = kOffload});
  for (int s = 0; s < 3; ++s) {
    fill_dp_mean_grads(ref, P, s);
    fill_dp_grads(mine, dp->rank(), s);
    const double ref_norm = ref_opt.reduce_and_clip(0.5);
    const double norm = opt.reduce_and_clip(0.5);
    CHECK(std::fabs(norm - ref_norm) <= 1e-6 * ref_norm);
    ref_opt.step(1e-2);
    opt.step(1e-2);
  }
  for (std::size_t i = 0; i < ref.size(); ++i) CHECK(max_rel_diff(mine[i].value, ref[i].value) <= 1e-6);
}

TEST_CASE("A tp-sharded AdapterSet's gradient stream gives tp_reduce_gradients' gradients bit for bit") {
  namespace tpu = test::tp;
  auto world = comm::MpiCommunicator::world({.timeout_s = 120});
  test::TempDir dir("adapt-overlap-tp");
  const model::LlamaConfig cfg = tpu::tiny_config(tpu::Variant{}, 3);
  // Each rank writes its own copy (the same bytes): no shared folder needed.
  model::random_model_write(dir.path(), cfg, {.seed = 11, .dtype = DType::F32, .max_shard_bytes = 20000});
  const comm::ProcessGrid grid =
      comm::ProcessGrid::make(world->size(), world->size(), 1,
                              {.n_heads = cfg.n_heads, .n_kv_heads = cfg.n_kv_heads, .n_layers = cfg.n_layers});
  comm::GridComms comms = comm::grid_comms_split(*world, grid);
  const model::LlamaModel part = model::llama_model_load_tp(dir.path(), grid, world->rank(), *comms.tp, {});
  REQUIRE(part.tp.size == world->size());
  adapters::AdapterSet plain = tpu::adapter_set(cfg, 0.1, &part.tp);
  adapters::AdapterSet streamed = tpu::adapter_set(cfg, 0.1, &part.tp);
  plain.set_training(true);
  streamed.set_training(true);
  std::vector<int> handed;
  streamed.set_gradient_stream([&](int layer, std::size_t, std::size_t) { handed.push_back(layer); });
  const Tensor ids = tpu::ids_tensor(2, 7, cfg.vocab_size, 31), targets = tpu::ids_tensor(2, 7, cfg.vocab_size, 32);
  for (int micro = 0; micro < 2; ++micro) {
    const model::TrainInputs in{.ids = ids, .targets = targets};
    plain.set_step(1, micro);
    streamed.set_step(1, micro);
    model::llama_train_step(part, in, &plain, {.loss_scale = 0.03f});
    if (micro == 1) streamed.arm_gradient_stream();
    model::llama_train_step(part, in, &streamed, {.loss_scale = 0.03f});
  }
  CHECK(handed == std::vector<int>{2, 1, 0});  // during the last backward
  streamed.end_gradient_stream();
  CHECK(handed.size() == 3);
  plain.tp_reduce_gradients();
  const std::vector<adapters::AdapterParam> pp = plain.parameters(), ps = streamed.parameters();
  std::int64_t diffs = 0;
  for (std::size_t i = 0; i < pp.size(); ++i) diffs += bit_diffs(ps[i].grad, pp[i].grad);
  CHECK(diffs == 0);
}
