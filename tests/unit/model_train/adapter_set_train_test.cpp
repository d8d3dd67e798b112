// The training step driving the real adapters (adapters::AdapterSet) through the hook: LoRA gradients
// on every target against central finite differences of the f64 reference (LoRA's term s·(x·Aᵀ)·Bᵀ is
// the reference's); with LoRA dropout and with bottleneck adapters (every placement), recomputation
// on and off give the same bits, i.e. the adapters' masks and inputs are reproduced exactly.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "adapters/adapter_set.h"
#include "model/llama_train.h"
#include "ops/rope.h"
#include "tests/unit/model_train/llama_ref.h"
#include "tests/unit/model_train/train_test_util.h"

using namespace adapt;
using namespace adapt::test::train;

namespace {

const model::WeightKind kTargets[] = {model::WeightKind::Wq,   model::WeightKind::Wk,    model::WeightKind::Wv,
                                      model::WeightKind::Wo,   model::WeightKind::WGate, model::WeightKind::WUp,
                                      model::WeightKind::WDown};

// LoRA B starts at 0 (an exact no-op), which would leave A without gradient: give B random values.
void randomize_lora_b(adapters::AdapterSet& set) {
  std::uint64_t salt = 900;
  for (const adapters::AdapterParam& p : set.parameters()) {
    if (p.name.size() < 6 || p.name.substr(p.name.size() - 6) != "lora_b") continue;
    Tensor v = p.value;
    v.copy_from(test::random_tensor(v.shape(), ++salt, 0.2f));
  }
}

adapters::AdapterConfig lora_config(double dropout) {
  adapters::AdapterConfig cfg;
  cfg.kind = adapters::AdapterKind::Lora;
  cfg.seed = 3;
  cfg.lora.r = 3;
  cfg.lora.alpha = 4.5;
  cfg.lora.dropout = dropout;
  cfg.lora.targets = adapters::lora_target_names();
  return cfg;
}

bool same_grads(const adapters::AdapterSet& a, const adapters::AdapterSet& b) {
  const std::vector<adapters::AdapterParam> pa = a.parameters(), pb = b.parameters();
  REQUIRE(pa.size() == pb.size());
  bool same = true;
  for (std::size_t i = 0; i < pa.size(); ++i) {
    CAPTURE(pa[i].name);
    const bool eq = test::same_bits(pa[i].grad, pb[i].grad);
    CHECK(eq);
    same = same && eq;
  }
  return same;
}

}  // namespace

TEST_CASE("AdapterSet LoRA on every projection: gradients match finite differences of the f64 reference") {
  const model::LlamaModel m = tiny_model(2);
  const Batch batch = packed_batch(m.config.vocab_size);
  adapters::AdapterSet set(m.config, lora_config(0.0));
  randomize_lora_b(set);
  set.set_training(true);
  const model::TrainResult r = model::llama_train_step(m, inputs_of(batch, false), &set);

  Tensor cos = Tensor::empty({2, 11, 3}, DType::F32), sin = Tensor::empty({2, 11, 3}, DType::F32);
  ops::rope_table_fill_positions(cos, sin, m.inv_freq, batch.positions);
  test::RefLlama<double> ref(m, test::TestHook{}, batch.ids, batch.targets, cos, sin, Tensor());
  for (int l = 0; l < 2; ++l)
    for (const model::WeightKind k : kTargets) {
      const adapters::LoraAdapter* a = set.lora(l, k);
      REQUIRE(a != nullptr);
      ref.lora[{l, static_cast<int>(k)}] = {a->scaling(), test::to_vec<double>(a->a), test::to_vec<double>(a->b)};
    }
  const double scale = 1.0 / static_cast<double>(r.n_loss_tokens);
  CHECK(std::fabs(r.loss_sum - ref.loss_sum()) / r.loss_sum < kLossTol);
  auto loss = [&] { return ref.loss_sum() * scale; };
  std::uint64_t salt = 40;
  for (int l = 0; l < 2; ++l)
    for (const model::WeightKind k : kTargets) {
      CAPTURE(l);
      CAPTURE(static_cast<int>(k));
      const adapters::LoraAdapter* a = set.lora(l, k);
      CHECK(fd_error(ref.lora[{l, static_cast<int>(k)}].A, a->grad_a, loss, ++salt) < kGradTol);
      CHECK(fd_error(ref.lora[{l, static_cast<int>(k)}].B, a->grad_b, loss, ++salt) < kGradTol);
    }
}

TEST_CASE("AdapterSet with LoRA dropout: recomputation reproduces the masks, gradients bit for bit") {
  const model::LlamaModel m = tiny_model(2);
  const Batch batch = packed_batch(m.config.vocab_size);
  adapters::AdapterSet keep(m.config, lora_config(0.25)), recompute(m.config, lora_config(0.25));
  randomize_lora_b(keep);
  randomize_lora_b(recompute);
  for (adapters::AdapterSet* s : {&keep, &recompute}) {
    s->set_training(true);
    s->set_step(7, 1);
  }
  const model::TrainResult a = model::llama_train_step(m, inputs_of(batch, false), &keep);
  const model::TrainResult b = model::llama_train_step(m, inputs_of(batch, false), &recompute, {.recompute = true});
  CHECK(a.loss_sum == b.loss_sum);
  CHECK(same_grads(keep, recompute));
}

TEST_CASE("AdapterSet bottleneck adapters (Houlsby, Pfeiffer, parallel): recomputation gives the same bits") {
  const model::LlamaModel m = tiny_model(2);
  const Batch batch = packed_batch(m.config.vocab_size);
  for (const adapters::BnPlacement placement :
       {adapters::BnPlacement::Houlsby, adapters::BnPlacement::Pfeiffer, adapters::BnPlacement::Parallel}) {
    CAPTURE(static_cast<int>(placement));
    adapters::AdapterConfig cfg;
    cfg.kind = adapters::AdapterKind::Bottleneck;
    cfg.seed = 4;
    cfg.bottleneck.size = 5;
    cfg.bottleneck.placement = placement;
    cfg.bottleneck.activation = adapters::BnActivation::Swish;
    adapters::AdapterSet keep(m.config, cfg), recompute(m.config, cfg);
    // The up projection starts at 0: give every parameter a value so that each one has a gradient.
    for (adapters::AdapterSet* s : {&keep, &recompute}) {
      std::uint64_t salt = 700;
      for (const adapters::AdapterParam& p : s->parameters()) {
        Tensor v = p.value;
        v.copy_from(test::random_tensor(v.shape(), ++salt, 0.2f));
      }
      s->set_training(true);
    }
    const model::TrainResult a = model::llama_train_step(m, inputs_of(batch, false), &keep);
    const model::TrainResult b = model::llama_train_step(m, inputs_of(batch, false), &recompute, {.recompute = true});
    CHECK(a.loss_sum == b.loss_sum);
    CHECK(same_grads(keep, recompute));
    bool any_nonzero = false;
    for (const adapters::AdapterParam& p : keep.parameters())
      for (std::int64_t i = 0; i < p.grad.numel(); ++i) any_nonzero = any_nonzero || p.grad.data<float>()[i] != 0.0f;
    CHECK(any_nonzero);
  }
}
