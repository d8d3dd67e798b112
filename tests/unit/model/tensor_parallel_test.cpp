// The single-process side of model parallelism (tensor_parallel.h, llama_train.h's stage options):
// loading through llama_model_load_tp on a grid of one rank gives llama_model_load's model bit for
// bit; the rank's share of the widths; two pipeline stages run one after the other in one process
// (stage 0's output handed to stage 1, stage 1's input gradient handed back) give the whole model's
// loss and adapter gradients bit for bit; and the errors for missing stage tensors. The multi-rank
// cases are in tests/mpi/tp_model_mpi_test.cpp and tp_pipeline_mpi_test.cpp.
#include <doctest/doctest.h>

#include <cstring>
#include <vector>

#include "adapters/adapter_set.h"
#include "comm/local_communicator.h"
#include "core/error.h"
#include "model/llama_forward.h"
#include "model/llama_train.h"
#include "model/llama_weights.h"
#include "model/model_folder.h"
#include "model/tensor_parallel.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::model;

namespace {

LlamaConfig small_config(bool tied) {
  LlamaConfig c;
  c.hidden_size = 32, c.intermediate_size = 42, c.n_layers = 4, c.n_heads = 8, c.n_kv_heads = 4, c.head_dim = 4;
  c.vocab_size = 53, c.max_position_embeddings = 64, c.rms_norm_eps = 1e-5;
  c.tie_word_embeddings = tied;
  c.initializer_range = 0.25;
  return c;
}

bool same_bits(const Tensor& a, const Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.raw(), b.raw(), static_cast<std::size_t>(a.size_bytes())) == 0;
}

Tensor ids_of(std::int64_t B, std::int64_t T, std::int64_t V, std::int32_t salt) {
  Tensor t = Tensor::empty({B, T}, DType::I32);
  for (std::int64_t i = 0; i < B * T; ++i) t.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 7 + salt) % V);
  return t;
}

adapters::AdapterSet trained_set(const LlamaConfig& c) {
  adapters::AdapterConfig a;
  a.kind = adapters::AdapterKind::LoraBottleneck;
  a.lora.targets = adapters::lora_target_names();
  a.lora.r = 2;
  a.bottleneck.size = 4;
  adapters::AdapterSet set(c, a);
  std::uint64_t key = 1;
  for (adapters::AdapterParam& p : set.parameters())
    fill_normal(p.value.data<float>(), p.value.numel(), 0.2f, 3, key++);
  return set;
}

}  // namespace

TEST_CASE("llama_model_load_tp on one rank is llama_model_load, bit for bit") {
  for (const bool tied : {false, true}) {
    for (const WeightStorage storage : {WeightStorage::F32, WeightStorage::AsStored}) {
      test::TempDir dir("adapt-tp1");
      const LlamaConfig cfg = small_config(tied);
      random_model_write(dir.path(), cfg, {.seed = 5, .dtype = DType::BF16, .max_shard_bytes = 30000});
      comm::LocalCommunicator tp("tp");
      LlamaLoadStats s_whole, s_part;
      const LlamaModel whole = llama_model_load(dir.path(), {.storage = storage}, &s_whole);
      const LlamaModel part =
          llama_model_load_tp(dir.path(), comm::ProcessGrid(1, 1, 1), 0, tp, {.storage = storage}, &s_part);
      CHECK_FALSE(part.tp.active());
      CHECK_FALSE(part.stage.active());
      CHECK(s_part.bytes_read == s_whole.bytes_read);
      CHECK(s_part.bytes_share == s_whole.bytes_read);
      CHECK(s_part.bytes_resident == s_whole.bytes_resident);
      CHECK(same_bits(part.weights.embedding, whole.weights.embedding));
      CHECK(same_bits(part.weights.lm_head, whole.weights.lm_head));
      CHECK(same_bits(part.weights.final_norm, whole.weights.final_norm));
      for (std::size_t l = 0; l < whole.weights.layers.size(); ++l) {
        const LayerWeights &a = part.weights.layers[l], &b = whole.weights.layers[l];
        CHECK(same_bits(a.wq, b.wq));
        CHECK(same_bits(a.wo, b.wo));
        CHECK(same_bits(a.w_down, b.w_down));
        CHECK(same_bits(a.attn_norm, b.attn_norm));
      }
      const Tensor ids = ids_of(2, 5, cfg.vocab_size, 3);
      CHECK(same_bits(llama_forward(part, ids), llama_forward(whole, ids)));
    }
  }
}

TEST_CASE("WeightStorage::Bf16: the matrices of an f32 or bf16 checkpoint in bf16 (rounded), norms f32, both loaders") {
  for (const DType stored : {DType::F32, DType::BF16}) {
    CAPTURE(dtype_name(stored));
    test::TempDir dir("adapt-bf16-storage");
    const LlamaConfig cfg = small_config(false);
    random_model_write(dir.path(), cfg, {.seed = 9, .dtype = stored, .max_shard_bytes = 30000});
    comm::LocalCommunicator tp("tp");
    const LlamaModel f32 = llama_model_load(dir.path(), {.storage = WeightStorage::F32});
    const LlamaModel whole = llama_model_load(dir.path(), {.storage = WeightStorage::Bf16});
    const LlamaModel part =
        llama_model_load_tp(dir.path(), comm::ProcessGrid(1, 1, 1), 0, tp, {.storage = WeightStorage::Bf16});
    auto rounded = [](const Tensor& t) { return t.to_host(DType::BF16); };  // nearest even
    CHECK(same_bits(whole.weights.embedding, rounded(f32.weights.embedding)));
    CHECK(same_bits(whole.weights.lm_head, rounded(f32.weights.lm_head)));
    CHECK(same_bits(whole.weights.final_norm, f32.weights.final_norm));  // f32, not rounded
    CHECK(same_bits(part.weights.lm_head, whole.weights.lm_head));
    CHECK(same_bits(part.weights.final_norm, whole.weights.final_norm));
    for (std::size_t l = 0; l < whole.weights.layers.size(); ++l) {
      const LayerWeights &w = whole.weights.layers[l], &p = part.weights.layers[l], &r = f32.weights.layers[l];
      CHECK(same_bits(w.wq, rounded(r.wq)));
      CHECK(same_bits(w.w_down, rounded(r.w_down)));
      CHECK(same_bits(w.attn_norm, r.attn_norm));
      CHECK(same_bits(p.wq, w.wq));
      CHECK(same_bits(p.w_down, w.w_down));
      CHECK(same_bits(p.ffn_norm, w.ffn_norm));
    }
  }
}

TEST_CASE("tp_local_dims: whole heads per rank, balanced FFN and vocabulary parts") {
  const LlamaConfig c = small_config(false);
  const TpLocalDims one = tp_local_dims(c, {});
  CHECK(one.heads == 8);
  CHECK(one.kv_heads == 4);
  CHECK(one.ffn == 42);
  CHECK(one.vocab == parallel::Range{0, 53});
  comm::LocalCommunicator local;
  const TpLocalDims r3 = tp_local_dims(c, {.comm = &local, .rank = 3, .size = 4});
  CHECK(r3.heads == 2);
  CHECK(r3.kv_heads == 1);
  CHECK(r3.ffn == 10);                                                                     // 11, 11, 10, 10
  CHECK(r3.vocab == parallel::Range{40, 13});                                              // 14, 13, 13, 13
  CHECK_THROWS_AS(tp_local_dims(c, {.comm = &local, .rank = 0, .size = 8}), ConfigError);  // 4 KV heads
  CHECK_THROWS_AS(KvCache(c, 1, 8, 8), ConfigError);
  CHECK(KvCache::bytes_needed(c, 2, 8, 2) * 2 == KvCache::bytes_needed(c, 2, 8));
}

TEST_CASE("two pipeline stages run in turn give the whole model's loss and gradients bit for bit") {
  for (const bool tied : {false, true}) {
    CAPTURE(tied);
    test::TempDir dir("adapt-stages");
    const LlamaConfig cfg = small_config(tied);
    random_model_write(dir.path(), cfg, {.seed = 9, .dtype = DType::F32});
    const LlamaModel whole = llama_model_load(dir.path());
    LlamaModel first = whole, second = whole;  // the same weights; each stage runs its layers
    first.stage = {.rank = 0, .size = 2};
    second.stage = {.rank = 1, .size = 2};
    CHECK(stage_layer_range(cfg, second.stage) == parallel::Range{2, 2});
    const TrainInputs in{.ids = ids_of(2, 6, cfg.vocab_size, 1), .targets = ids_of(2, 6, cfg.vocab_size, 4)};

    adapters::AdapterSet set_whole = trained_set(cfg), set_stages = trained_set(cfg);
    const TrainResult r_whole = llama_train_step(whole, in, &set_whole);

    Tensor h = Tensor::empty({2, 6, cfg.hidden_size}, DType::F32),
           dh = Tensor::empty({2, 6, cfg.hidden_size}, DType::F32);
    const TrainResult r0 = llama_train_step(first, in, &set_stages, {.backward = false, .stage_output = &h});
    CHECK(r0.n_loss_tokens == 0);  // no head on the first stage
    const TrainResult r1 = llama_train_step(second, in, &set_stages, {.d_embedded = &dh, .stage_input = &h});
    llama_train_step(first, in, &set_stages, {.loss_scale = r1.loss_scale, .stage_output_grad = &dh});
    CHECK(r1.loss_sum == r_whole.loss_sum);
    const std::vector<adapters::AdapterParam> pw = set_whole.parameters(), ps = set_stages.parameters();
    for (std::size_t i = 0; i < pw.size(); ++i) {
      CAPTURE(pw[i].name);
      CHECK(same_bits(ps[i].grad, pw[i].grad));
    }

    // A stage without what it needs is refused before any work.
    CHECK_THROWS_AS(llama_train_step(second, in, &set_stages), ShapeError);
    CHECK_THROWS_AS(llama_train_step(first, in, &set_stages), ShapeError);
    CHECK_THROWS_AS(llama_forward(first, in.ids), UnsupportedError);
  }
}

// Counts the forward calls at linear sites, passing every call on to the adapters.
class CountingHook final : public AdapterHook {
 public:
  explicit CountingHook(AdapterHook& inner) : inner_(inner) {}
  int forwards = 0;
  bool has_linear(const LinearSite& s) const override { return inner_.has_linear(s); }
  void linear_forward(const LinearSite& s, const Tensor& x, Tensor& y) override {
    ++forwards;
    inner_.linear_forward(s, x, y);
  }
  void linear_backward(const LinearSite& s, const Tensor& x, const Tensor& dy, Tensor& dx) override {
    inner_.linear_backward(s, x, dy, dx);
  }
  bool has_block(int l, BlockSite s) const override { return inner_.has_block(l, s); }
  void block_forward(int l, BlockSite s, const Tensor& h, const Tensor& f, Tensor& out) override {
    inner_.block_forward(l, s, h, f, out);
  }
  void block_backward(int l, BlockSite s, const Tensor& h, const Tensor& f, const Tensor& dout, Tensor& dh,
                      Tensor& df) override {
    inner_.block_backward(l, s, h, f, dout, dh, df);
  }

 private:
  AdapterHook& inner_;
};

TEST_CASE("SplitTrainStep: a stage's forwards kept while other micro-batches run, then their backwards, bit for bit") {
  test::TempDir dir("adapt-split-step");
  const LlamaConfig cfg = small_config(false);
  random_model_write(dir.path(), cfg, {.seed = 9, .dtype = DType::F32});
  const LlamaModel whole = llama_model_load(dir.path());
  LlamaModel first = whole, second = whole;
  first.stage = {.rank = 0, .size = 2};
  second.stage = {.rank = 1, .size = 2};
  const std::int64_t stage_layers = stage_layer_range(cfg, first.stage).count;
  const TrainInputs in[2] = {{.ids = ids_of(2, 6, cfg.vocab_size, 1), .targets = ids_of(2, 6, cfg.vocab_size, 4)},
                             {.ids = ids_of(2, 6, cfg.vocab_size, 7), .targets = ids_of(2, 6, cfg.vocab_size, 8)}};
  for (const bool recompute : {false, true}) {
    CAPTURE(recompute);
    // The reference: llama_train_step over the stages, one micro-batch after the other.
    adapters::AdapterSet set_ref = trained_set(cfg), set_split = trained_set(cfg);
    const Shape btc{2, 6, cfg.hidden_size};
    std::vector<Tensor> h, dh;
    for (int i = 0; i < 2; ++i) {
      h.push_back(Tensor::empty(btc, DType::F32));
      dh.push_back(Tensor::empty(btc, DType::F32));
    }
    for (int i = 0; i < 2; ++i) {
      llama_train_step(first, in[i], &set_ref, {.backward = false, .stage_output = &h[i]});
      llama_train_step(second, in[i], &set_ref, {.loss_scale = 0.1f, .d_embedded = &dh[i], .stage_input = &h[i]});
      llama_train_step(first, in[i], &set_ref,
                       {.recompute = recompute, .loss_scale = 0.1f, .stage_output_grad = &dh[i]});
    }

    // Split: both forwards of the first stage, each kept in its own workspace, then the backwards; the
    // outputs it hands on go to the second stage in between.
    CountingHook counting(set_split);
    TrainWorkspace ws;
    std::vector<std::unique_ptr<SplitTrainStep>> pending;
    std::vector<Tensor> out, grad;
    for (int i = 0; i < 2; ++i) {
      out.push_back(Tensor::empty(btc, DType::F32));
      grad.push_back(Tensor::empty(btc, DType::F32));
      pending.push_back(std::make_unique<SplitTrainStep>(
          first, in[i], &counting, TrainOptions{.recompute = recompute, .loss_scale = 0.1f, .stage_output = &out[i]},
          ws.in_flight(static_cast<std::size_t>(i)), ws.scratch));
      CHECK(same_bits(out[i], h[i]));
      llama_train_step(second, in[i], &set_split, {.loss_scale = 0.1f, .d_embedded = &grad[i], .stage_input = &out[i]});
      CHECK(same_bits(grad[i], dh[i]));
    }
    const int forwards = counting.forwards;
    CHECK(forwards == 2 * stage_layers * 7);  // LoRA on all seven projections: each forward ran once
    for (int i = 0; i < 2; ++i) {
      out[i] = Tensor();  // the caller may drop what it handed on
      const TrainResult r = pending[static_cast<std::size_t>(i)]->backward(grad[i], nullptr);
      CHECK(r.n_loss_tokens == 0);
      CHECK_THROWS(pending[static_cast<std::size_t>(i)]->backward(grad[i], nullptr));  // once only
    }
    // With recomputation each layer's forward runs again before its backward, as in llama_train_step.
    CHECK(counting.forwards - forwards == (recompute ? 2 * stage_layers * 7 : 0));
    const std::vector<adapters::AdapterParam> pr = set_ref.parameters(), ps = set_split.parameters();
    for (std::size_t i = 0; i < pr.size(); ++i) {
      CAPTURE(pr[i].name);
      CHECK(same_bits(ps[i].grad, pr[i].grad));
    }
  }

  // Refused: the last stage (its loss ends the forward), a gradient of the wrong shape.
  adapters::AdapterSet set = trained_set(cfg);
  TrainWorkspace ws;
  Tensor h = Tensor::empty({2, 6, cfg.hidden_size}, DType::F32);
  CHECK_THROWS_AS(SplitTrainStep(second, in[0], &set, {.stage_input = &h}, ws.saved, ws.scratch), UnsupportedError);
  SplitTrainStep split(first, in[0], &set, {.stage_output = &h}, ws.saved, ws.scratch);
  CHECK_THROWS_AS(split.backward(Tensor::empty({2, 5, cfg.hidden_size}, DType::F32), nullptr), ShapeError);
}
