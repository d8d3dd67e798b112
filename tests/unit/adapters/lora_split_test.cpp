// The two halves of the LoRA backward (AdapterHook::linear_backward_input, then
// linear_backward_weights: what the model's tensor-parallel backward calls so that the all-reduce of dx
// overlaps the parameter-gradient work) against the whole linear_backward, bit for bit on the CPU: dx,
// grad A and grad B, for every target site, with and without dropout, unsharded and on each rank of a
// tp2 sharding (row-parallel sites then map their dropout masks to the whole x's columns), twice in a
// row (accumulation). Also that each half writes only its own results.
#include <doctest/doctest.h>

#include <memory>

#include "adapters/adapter_set.h"
#include "comm/communicator.h"
#include "core/error.h"
#include "ops/matmul.h"
#include "tests/support/rank_only_comm.h"
#include "tests/unit/adapters/adapters_test_util.h"

using namespace adapt;
using namespace adapt::adapters;
using model::LinearSite;
using model::WeightKind;

namespace {

AdapterConfig all_sites(double dropout, bool rslora) {
  AdapterConfig cfg;
  cfg.kind = AdapterKind::Lora;
  cfg.seed = 5;
  cfg.lora.r = 3;
  cfg.lora.alpha = 6.0;
  cfg.lora.dropout = dropout;
  cfg.lora.use_rslora = rslora;
  cfg.lora.targets = {"q", "k", "v", "o", "gate", "up", "down"};
  return cfg;
}

constexpr WeightKind kKinds[] = {WeightKind::Wq,    WeightKind::Wk,  WeightKind::Wv,   WeightKind::Wo,
                                 WeightKind::WGate, WeightKind::WUp, WeightKind::WDown};

}  // namespace

TEST_CASE("LoRA backward halves: input then weights equal linear_backward bit for bit") {
  for (const double dropout : {0.0, 0.3}) {
    for (const bool rslora : {false, true}) {
      for (const int tp_rank : {-1, 0, 1}) {  // -1: unsharded
        CAPTURE(dropout);
        CAPTURE(rslora);
        CAPTURE(tp_rank);
        // Two sets with the same values: one takes the whole backward, the other the two halves.
        AdapterSet whole(test::tiny_llama(), all_sites(dropout, rslora));
        AdapterSet split(test::tiny_llama(), all_sites(dropout, rslora));
        test::RankOnly group(tp_rank < 0 ? 0 : tp_rank, 2, "the LoRA hook must not communicate");
        if (tp_rank >= 0) {
          whole.shard_for_tp(model::TensorParallel::of(group));
          split.shard_for_tp(model::TensorParallel::of(group));
        }
        for (AdapterSet* set : {&whole, &split}) {
          set->set_training(true);
          set->set_step(3, 1);
        }
        std::uint64_t stream = 2000;
        for (const int layer : {0, 2}) {
          for (const WeightKind kind : kKinds) {
            const LinearSite site{layer, kind};
            CAPTURE(layer);
            CAPTURE(static_cast<int>(kind));
            LoraAdapter* w = whole.lora(layer, kind);
            LoraAdapter* s = split.lora(layer, kind);
            REQUIRE(w != nullptr);
            REQUIRE(s != nullptr);
            test::fill_uniform(w->a, stream += 10, -0.5, 0.5);
            test::fill_uniform(w->b, stream + 1, -0.5, 0.5);  // B ≠ 0, or dA and dx's share would be zero
            s->a.copy_from(w->a);
            s->b.copy_from(w->b);
            const std::int64_t N = 7, in = w->in(), out = w->out();
            const Tensor x = test::random_tensor({N, in}, stream + 2);
            const Tensor W = test::random_tensor({out, in}, stream + 3);
            whole.zero_grad();
            split.zero_grad();
            for (int round = 0; round < 2; ++round) {  // the second round accumulates onto the first
              CAPTURE(round);
              const Tensor dy = test::random_tensor({N, out}, stream + 4 + static_cast<std::uint64_t>(round));
              Tensor dx_whole = Tensor::empty({N, in}, DType::F32);
              ops::matmul(dx_whole, dy, W, {.transpose_b = false});  // the frozen path's dy·W
              Tensor dx_split = test::clone(dx_whole);
              whole.linear_backward(site, x, dy, dx_whole);

              const Tensor ga_before = test::clone(s->grad_a), gb_before = test::clone(s->grad_b);
              split.linear_backward_input(site, x, dy, dx_split);
              CHECK(test::bit_equal(dx_split, dx_whole));
              CHECK(test::bit_equal(s->grad_a, ga_before));  // the input half leaves the gradients alone
              CHECK(test::bit_equal(s->grad_b, gb_before));
              const Tensor dx_after_input = test::clone(dx_split);
              split.linear_backward_weights(site, x, dy);
              CHECK(test::bit_equal(dx_split, dx_after_input));  // and the weights half dx
              CHECK(test::bit_equal(s->grad_a, w->grad_a));
              CHECK(test::bit_equal(s->grad_b, w->grad_b));
            }
          }
        }
      }
    }
  }
}

TEST_CASE("LoRA backward halves: a site without an adapter is an internal error naming the call") {
  AdapterConfig q_only = all_sites(0.0, false);
  q_only.lora.targets = {"q"};
  AdapterSet q(test::tiny_llama(), q_only);
  const Tensor x = Tensor::zeros({2, 16}, DType::F32);
  const Tensor dy = Tensor::zeros({2, 8}, DType::F32);  // k's (N, Hkv·D)
  Tensor dx = Tensor::zeros({2, 16}, DType::F32);
  CHECK_THROWS_WITH(q.linear_backward_input({0, WeightKind::Wk}, x, dy, dx),
                    doctest::Contains("linear_backward_input called for layer 0 kind"));
  CHECK_THROWS_WITH(q.linear_backward_weights({0, WeightKind::Wk}, x, dy),
                    doctest::Contains("linear_backward_weights called for layer 0 kind"));
}
