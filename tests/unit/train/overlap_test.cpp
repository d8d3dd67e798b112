// The adapter side of optim.overlap on one process (the CPU backend): AdapterSet's gradient stream hands
// every layer with adapters exactly once, highest first, with its parameters() range (layers without
// adapters skipped, the unstreamed rest at end_gradient_stream), and the gradients equal those of the
// plain path (tp_reduce_gradients); the forward gate is passed once per layer in layer order before the
// layer's parameters are read; and DpOptimizer's asynchronous step through that gate gives the weights
// and state of its synchronous step bit for bit. Against: the same set and batch without streaming.
// (tp-sharded streaming and the MPI layouts: tests/mpi/offload_mpi_test.cpp.)
#include <doctest/doctest.h>

#include <cstring>
#include <utility>
#include <vector>

#include "adapters/adapter_set.h"
#include "comm/local_communicator.h"
#include "model/llama_train.h"
#include "model/llama_weights.h"
#include "model/model_folder.h"
#include "tests/support/test_support.h"
#include "train/dp_optimizer.h"

using namespace adapt;

namespace {

model::LlamaConfig tiny_config() {
  model::LlamaConfig c;
  c.hidden_size = 32, c.intermediate_size = 40, c.n_layers = 4, c.n_heads = 4, c.n_kv_heads = 2, c.head_dim = 8;
  c.vocab_size = 50, c.max_position_embeddings = 64, c.rms_norm_eps = 1e-5, c.rope_theta = 10000.0;
  c.bos_token_id = 1, c.eos_token_ids = {2};
  c.torch_dtype = DType::F32;
  c.initializer_range = 0.2;
  return c;
}

/// LoRA on q, v, down and a Houlsby bottleneck with a LayerNorm, on layers 0, 2 and 3 (1 has none).
adapters::AdapterConfig adapter_config() {
  adapters::AdapterConfig a;
  a.kind = adapters::AdapterKind::LoraBottleneck;
  a.seed = 11;
  a.layers = {0, 2, 3};
  a.lora.r = 4, a.lora.alpha = 8.0, a.lora.dropout = 0.1;
  a.lora.targets = {"q", "v", "down"};
  a.bottleneck.size = 6;
  a.bottleneck.placement = adapters::BnPlacement::Houlsby;
  a.bottleneck.ln_before = true;
  return a;
}

/// Every parameter non-zero (B and the up projections start at 0), the same for each call.
adapters::AdapterSet make_set(const model::LlamaConfig& c) {
  adapters::AdapterSet set(c, adapter_config());
  std::uint32_t key = 1;
  for (adapters::AdapterParam& p : set.parameters())
    for (std::int64_t j = 0; j < p.value.numel(); ++j)
      p.value.data<float>()[j] =
          0.2f * static_cast<float>(((key * 7919u + static_cast<std::uint32_t>(j) * 104729u) % 2001u)) / 1000.0f - 0.2f;
  set.set_training(true);
  return set;
}

model::TrainInputs batch(const model::LlamaConfig& c, std::vector<std::int32_t>& ids, std::vector<std::int32_t>& tg,
                         int seed) {
  const std::int64_t B = 2, T = 9;
  ids.resize(B * T), tg.resize(B * T);
  for (std::int64_t i = 0; i < B * T; ++i) {
    ids[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 31 + seed * 17 + 5) % c.vocab_size);
    tg[static_cast<std::size_t>(i)] = static_cast<std::int32_t>((i * 13 + seed * 7 + 3) % c.vocab_size);
  }
  return {.ids = Tensor::wrap(ids.data(), Shape{B, T}, DType::I32, Device{}, nullptr, "ids"),
          .targets = Tensor::wrap(tg.data(), Shape{B, T}, DType::I32, Device{}, nullptr, "targets")};
}

std::int64_t diff_bits(const Tensor& a, const Tensor& b) {
  REQUIRE(a.numel() == b.numel());
  std::int64_t d = 0;
  for (std::int64_t i = 0; i < a.numel(); ++i) d += std::memcmp(a.data<float>() + i, b.data<float>() + i, 4) != 0;
  return d;
}

struct Handed {
  int layer;
  std::size_t first, end;
};

}  // namespace

TEST_CASE("AdapterSet streams each layer's gradients once, highest first, as the plain path computes them") {
  const model::LlamaConfig c = tiny_config();
  test::TempDir dir("adapt-overlap");
  model::random_model_write(dir.path(), c, {.seed = 5, .dtype = DType::F32});
  const model::LlamaModel model = model::llama_model_load(dir.path());
  std::vector<std::int32_t> ids, tg;

  // layer_params: layer-major, contiguous, empty for layer 1.
  adapters::AdapterSet plain = make_set(c), streamed = make_set(c);
  const std::size_t n_params = plain.parameters().size();
  CHECK(plain.layer_params(0) ==
        std::pair<std::size_t, std::size_t>{0, 18});  // 3 LoRA sites x 2 + 2 x 6 (LN) bottleneck
  CHECK(plain.layer_params(1).first == plain.layer_params(1).second);
  CHECK(plain.layer_params(3).second == n_params);

  std::vector<Handed> handed;
  streamed.set_gradient_stream([&](int layer, std::size_t first, std::size_t end) {
    handed.push_back({layer, first, end});
  });
  for (const bool recompute : {false, true}) {
    CAPTURE(recompute);
    for (int micro = 0; micro < 2; ++micro) {  // the stream is armed for the last micro-batch only
      plain.set_step(3, micro);
      streamed.set_step(3, micro);
      model::llama_train_step(model, batch(c, ids, tg, micro), &plain, {.recompute = recompute, .loss_scale = 0.05f});
      if (micro == 1) streamed.arm_gradient_stream();
      model::llama_train_step(model, batch(c, ids, tg, micro), &streamed,
                              {.recompute = recompute, .loss_scale = 0.05f});
      CHECK(handed.size() == (micro == 1 ? 3u : 0u));  // handed during the backward
    }
    streamed.end_gradient_stream();
    plain.tp_reduce_gradients();
    REQUIRE(handed.size() == 3);
    const int want[] = {3, 2, 0};
    std::size_t covered = 0;
    for (std::size_t k = 0; k < handed.size(); ++k) {
      CHECK(handed[k].layer == want[k]);
      CHECK(streamed.layer_params(handed[k].layer) == std::pair{handed[k].first, handed[k].end});
      covered += handed[k].end - handed[k].first;
    }
    CHECK(covered == n_params);
    const std::vector<adapters::AdapterParam> pp = plain.parameters(), ps = streamed.parameters();
    for (std::size_t i = 0; i < pp.size(); ++i) {
      CAPTURE(pp[i].name);
      CHECK(diff_bits(ps[i].grad, pp[i].grad) == 0);
    }
    // Not armed: end_gradient_stream hands every layer (as under the pipeline schedule), once.
    handed.clear();
    streamed.end_gradient_stream();
    CHECK(handed.size() == 3);
    handed.clear();
    plain.zero_grad();
    streamed.zero_grad();
  }
}

TEST_CASE(
    "The forward gate: once per layer with adapters, in layer order, before the layer is read; "
    "DpOptimizer's overlapped step equals its synchronous step") {
  const model::LlamaConfig c = tiny_config();
  test::TempDir dir("adapt-overlap");
  model::random_model_write(dir.path(), c, {.seed = 5, .dtype = DType::F32});
  const model::LlamaModel model = model::llama_model_load(dir.path());
  std::vector<std::int32_t> ids, tg;
  comm::LocalCommunicator local;
  const optim::AdamWOptions adamw{.beta1 = 0.9, .beta2 = 0.99, .eps = 1e-8, .weight_decay = 0.1};
  const optim::OffloadOptions offload{.threads = 2, .bucket_elems = 50, .chunk_elems = 16};

  adapters::AdapterSet sync_set = make_set(c), async_set = make_set(c);
  train::DpOptimizer sync_opt(sync_set.parameters(), adamw, local, {.offload = offload});
  train::DpOptimizer async_opt(async_set.parameters(), adamw, local, {.offload = offload, .overlap = true});
  CHECK_FALSE(sync_opt.overlapped());
  REQUIRE(async_opt.overlapped());
  std::vector<int> gated;
  std::int64_t stale = 0;  // parameters of a gated layer that do not yet hold the synchronous step's values
  async_set.set_forward_gate([&](int layer, std::size_t first, std::size_t end) {
    gated.push_back(layer);
    async_opt.wait_params(first, end);
    const std::vector<adapters::AdapterParam> a = async_set.parameters(), s = sync_set.parameters();
    for (std::size_t i = first; i < end; ++i) stale += diff_bits(a[i].value, s[i].value);
  });
  async_set.set_gradient_stream([&](int, std::size_t first, std::size_t end) { async_opt.stream_grads(first, end); });
  for (int step = 0; step < 4; ++step) {
    CAPTURE(step);
    gated.clear();
    for (auto* set : {&sync_set, &async_set}) {
      set->zero_grad();
      set->set_step(step, 0);
    }
    model::llama_train_step(model, batch(c, ids, tg, step), &sync_set, {.loss_scale = 0.05f});
    async_set.arm_gradient_stream();
    model::llama_train_step(model, batch(c, ids, tg, step), &async_set, {.loss_scale = 0.05f});
    CHECK(gated == (step == 0 ? std::vector<int>{} : std::vector<int>{0, 2, 3}));
    async_set.end_gradient_stream();
    async_opt.wait_streamed_grads();
    const double n_sync = sync_opt.reduce_and_clip(0.5), n_async = async_opt.reduce_and_clip(0.5);
    CHECK(std::memcmp(&n_sync, &n_async, sizeof(double)) == 0);
    sync_opt.step(1e-2);
    async_opt.step_async(1e-2);
    async_set.arm_forward_gate();
  }
  CHECK(stale == 0);
  async_opt.finish();
  const std::vector<adapters::AdapterParam> a = async_set.parameters(), s = sync_set.parameters();
  for (std::size_t i = 0; i < a.size(); ++i) {
    CAPTURE(a[i].name);
    CHECK(diff_bits(a[i].value, s[i].value) == 0);
  }
  const auto st_sync = sync_opt.state(), st_async = async_opt.state();
  for (const auto& [key, t] : st_sync) {
    CAPTURE(key);
    CHECK(diff_bits(st_async.at(key), t) == 0);
  }
  CHECK(async_opt.n_steps() == 4);
}
