// The sharding rules of a Llama model: for every tp rank, the slice of each tensor, checked against
// the Megatron rules written out per tensor (q/k/v/gate/up rows, o/down columns, vocab rows, norms
// whole), and across ranks (the slices tile the tensor). Stage layer ranges; LoRA and bottleneck.
#include "parallel/llama_sharding.h"

#include <doctest/doctest.h>

#include <algorithm>

#include "core/error.h"

using namespace adapt;
using namespace adapt::parallel;

namespace {

// Llama 3.1 8B's shape with 4 layers, and a tiny shape with an odd vocabulary and FFN width.
LlamaDims llama8b() {
  return {.hidden = 4096,
          .intermediate = 14336,
          .n_layers = 4,
          .n_heads = 32,
          .n_kv_heads = 8,
          .head_dim = 128,
          .vocab = 128256};
}
LlamaDims odd() {
  return {.hidden = 64,
          .intermediate = 170,
          .n_layers = 5,
          .n_heads = 4,
          .n_kv_heads = 2,
          .head_dim = 16,
          .vocab = 1001,
          .attention_bias = true,
          .mlp_bias = true};
}

}  // namespace

TEST_CASE("split_range is balanced, in whole blocks, and tiles the extent") {
  CHECK(split_range(10, 1, 3, 0) == Range{0, 4});
  CHECK(split_range(10, 1, 3, 1) == Range{4, 3});
  CHECK(split_range(10, 1, 3, 2) == Range{7, 3});
  CHECK(split_range(64, 16, 2, 1) == Range{32, 32});
  CHECK(split_range(48, 16, 2, 0) == Range{0, 32});  // 3 heads over 2 ranks: never half a head
  CHECK(split_range(2, 1, 4, 3) == Range{2, 0});
  CHECK_THROWS_AS(split_range(10, 3, 2, 0), InternalError);
  CHECK_THROWS_AS(split_range(10, 1, 2, 2), InternalError);
  for (int parts = 1; parts <= 5; ++parts) {
    std::int64_t next = 0;
    for (int i = 0; i < parts; ++i) {
      const Range r = split_range(1001, 1, parts, i);
      CHECK(r.begin == next);
      CHECK(r.count >= 1001 / parts);
      CHECK(r.count <= 1001 / parts + 1);
      next = r.end();
    }
    CHECK(next == 1001);
  }
}

TEST_CASE("tensor-parallel slices follow the Megatron rules for every tp rank") {
  const LlamaDims d = llama8b();
  for (int tp : {1, 2, 4, 8}) {
    for (int r = 0; r < tp; ++r) {
      CAPTURE(tp);
      CAPTURE(r);
      auto slice = [&](LlamaTensor t) { return shard_slice(llama_tensor_shape(t, d), llama_tp_spec(t, d), tp, r); };
      const std::int64_t q_rows = 32 * 128 / tp, kv_rows = 8 * 128 / tp, f = 14336 / tp, v = 128256 / tp;
      // Column-parallel: output rows, whole heads (query head h = rows [h*D, (h+1)*D)).
      CHECK(slice(LlamaTensor::Wq).dim == ShardDim::Rows);
      CHECK(slice(LlamaTensor::Wq).range == Range{r * q_rows, q_rows});
      CHECK(slice(LlamaTensor::Wq).local_shape() == Shape{q_rows, 4096});
      CHECK(slice(LlamaTensor::Wk).range == Range{r * kv_rows, kv_rows});
      CHECK(slice(LlamaTensor::Wv).range == Range{r * kv_rows, kv_rows});
      CHECK(slice(LlamaTensor::WGate).range == Range{r * f, f});
      CHECK(slice(LlamaTensor::WUp).local_shape() == Shape{f, 4096});
      // Row-parallel: input columns; o's columns are the same heads as q's rows.
      CHECK(slice(LlamaTensor::Wo).dim == ShardDim::Cols);
      CHECK(slice(LlamaTensor::Wo).range == slice(LlamaTensor::Wq).range);
      CHECK(slice(LlamaTensor::Wo).local_shape() == Shape{4096, q_rows});
      CHECK(slice(LlamaTensor::WDown).dim == ShardDim::Cols);
      CHECK(slice(LlamaTensor::WDown).range == slice(LlamaTensor::WUp).range);
      // Vocab-parallel.
      CHECK(slice(LlamaTensor::Embedding).range == Range{r * v, v});
      CHECK(slice(LlamaTensor::LmHead).range == Range{r * v, v});
      // Replicated.
      CHECK(slice(LlamaTensor::AttnNorm).dim == ShardDim::None);
      CHECK(slice(LlamaTensor::FinalNorm).local_shape() == Shape{4096});
    }
  }
  // Uneven extents shard in balanced parts; biases follow their weights.
  const LlamaDims o = odd();
  CHECK(shard_slice(llama_tensor_shape(LlamaTensor::Embedding, o), llama_tp_spec(LlamaTensor::Embedding, o), 2, 0)
            .range == Range{0, 501});
  CHECK(shard_slice(llama_tensor_shape(LlamaTensor::WDown, o), llama_tp_spec(LlamaTensor::WDown, o), 2, 1).range ==
        Range{85, 85});
  CHECK(llama_tp_spec(LlamaTensor::BiasQ, o) == llama_tp_spec(LlamaTensor::Wq, o));
  CHECK(llama_tp_spec(LlamaTensor::BiasUp, o) == llama_tp_spec(LlamaTensor::WUp, o));
  CHECK(llama_tp_spec(LlamaTensor::BiasO, o).dim == ShardDim::None);
  CHECK(llama_tp_spec(LlamaTensor::BiasDown, o).dim == ShardDim::None);
}

TEST_CASE("pipeline stages balance the head's work: the last stage holds fewer layers") {
  // The head in decoder layers' work: V·C over a layer's projections.
  const LlamaDims bench{.hidden = 768,
                        .intermediate = 2048,
                        .n_layers = 8,
                        .n_heads = 12,
                        .n_kv_heads = 4,
                        .head_dim = 64,
                        .vocab = 32000};
  CHECK(head_layer_share(bench) == doctest::Approx(32000.0 * 768 / (768.0 * (2 * 768 + 2 * 256 + 3 * 2048))));
  const LlamaDims l70{.hidden = 8192,
                      .intermediate = 28672,
                      .n_layers = 80,
                      .n_heads = 64,
                      .n_kv_heads = 8,
                      .head_dim = 128,
                      .vocab = 128256};
  CHECK(head_layer_share(l70) == doctest::Approx(1.2287).epsilon(1e-3));
  // bench, 2 stages: 6 layers | 2 layers + the head (3.9): 6 against 5.9 instead of 4 against 7.9.
  CHECK(stage_layers(bench, 2, 0, StageSplit::ByWork) == Range{0, 6});
  CHECK(stage_layers(bench, 2, 1, StageSplit::ByWork) == Range{6, 2});
  CHECK(stage_layers(bench, 2, 1, StageSplit::Even) == Range{4, 4});  // generation
  // 70B, 4 stages: 21, 20, 20 | 19 + 1.2.
  CHECK(stage_layers(l70, 4, 0, StageSplit::ByWork) == Range{0, 21});
  CHECK(stage_layers(l70, 4, 1, StageSplit::ByWork) == Range{21, 20});
  CHECK(stage_layers(l70, 4, 2, StageSplit::ByWork) == Range{41, 20});
  CHECK(stage_layers(l70, 4, 3, StageSplit::ByWork) == Range{61, 19});
  // The shards a rank loads follow the split.
  const comm::ProcessGrid g2(1, 2, 1);
  for (const StageSplit split : {StageSplit::Even, StageSplit::ByWork}) {
    std::int64_t wq = 0;
    for (const TensorShard& s : llama_rank_shards(bench, g2, 1, split)) wq += s.tensor == LlamaTensor::Wq;
    CHECK(wq == (split == StageSplit::ByWork ? 2 : 4));
  }
  // A head heavier than the model leaves the last stage one layer.
  CHECK(stage_layers(4, 2, 1, 100.0) == Range{3, 1});
  // Every split covers the layers in order, one at least per stage; the last stage never gets more
  // than the even split gives it, and the busiest stage's work is never above the even split's.
  for (std::int64_t n = 1; n <= 40; ++n)
    for (int pp = 1; pp <= std::min<std::int64_t>(n, 9); ++pp)
      for (const double h : {0.0, 0.3, 1.2, 2.4, 3.9, 50.0}) {
        CAPTURE(n);
        CAPTURE(pp);
        CAPTURE(h);
        std::int64_t next = 0;
        double worst = 0, worst_even = 0;
        for (int r = 0; r < pp; ++r) {
          const Range s = stage_layers(n, pp, r, h), e = stage_layers(n, pp, r);
          CHECK(s.begin == next);
          CHECK(s.count >= 1);
          next = s.end();
          const double head = r == pp - 1 ? h : 0.0;
          worst = std::max(worst, static_cast<double>(s.count) + head);
          worst_even = std::max(worst_even, static_cast<double>(e.count) + head);
          if (r == pp - 1) CHECK(s.count <= e.count);
        }
        CHECK(next == n);
        CHECK(worst <= worst_even);
      }
}

TEST_CASE("pipeline stages hold balanced contiguous layers; embedding first, norm and lm_head last") {
  CHECK(stage_layers(32, 4, 0) == Range{0, 8});
  CHECK(stage_layers(32, 4, 3) == Range{24, 8});
  CHECK(stage_layers(5, 2, 0) == Range{0, 3});
  CHECK(stage_layers(5, 2, 1) == Range{3, 2});
  CHECK_THROWS_AS(stage_layers(2, 3, 0), InternalError);

  const LlamaDims d = odd();
  for (bool tied : {false, true}) {
    LlamaDims dd = d;
    dd.tie_word_embeddings = tied;
    const comm::ProcessGrid g(2, 2, 2);
    for (int w = 0; w < g.world_size(); ++w) {
      CAPTURE(tied);
      CAPTURE(w);
      const auto shards = llama_rank_shards(dd, g, w);
      const comm::GridCoord c = g.coord(w);
      auto holds = [&](LlamaTensor t, int layer) {
        return std::any_of(shards.begin(), shards.end(),
                           [&](const TensorShard& s) { return s.tensor == t && s.layer == layer; });
      };
      CHECK(holds(LlamaTensor::Embedding, -1) == (c.pp == 0 || (tied && c.pp == 1)));
      CHECK(holds(LlamaTensor::FinalNorm, -1) == (c.pp == 1));
      CHECK(holds(LlamaTensor::LmHead, -1) == (c.pp == 1 && !tied));
      const Range mine = stage_layers(dd, 2, c.pp, StageSplit::Even);
      CHECK(mine == (c.pp == 0 ? Range{0, 3} : Range{3, 2}));
      for (int l = 0; l < 5; ++l) {
        CHECK(holds(LlamaTensor::Wq, l) == (c.pp == 0 ? l < 3 : l >= 3));
        CHECK(holds(LlamaTensor::BiasDown, l) == (c.pp == 0 ? l < 3 : l >= 3));
      }
      // 9 tensors + 4 attention biases + 3 MLP biases per layer, plus the model-level ones.
      const std::size_t per_layer = 16, layers = static_cast<std::size_t>(mine.count);
      const std::size_t model_level = c.pp == 0 ? 1 : 2;  // embedding | norm + lm_head (or tied embedding)
      CHECK(shards.size() == per_layer * layers + model_level);
      // dp replicas hold the same shards.
      const auto twin = llama_rank_shards(dd, g, g.rank_of({.tp = c.tp, .pp = c.pp, .dp = 1 - c.dp}));
      REQUIRE(twin.size() == shards.size());
      for (std::size_t i = 0; i < shards.size(); ++i) CHECK(twin[i].slice.range == shards[i].slice.range);
    }
  }
}

TEST_CASE("LoRA pairs follow their base weight; bottleneck adapters are replicated") {
  const LlamaDims d = llama8b();
  for (int r = 0; r < 4; ++r) {
    CAPTURE(r);
    // Column-parallel q: A (16, 4096) whole, B (4096, 16) rows like wq's.
    const LoraShard q = lora_shard(LlamaTensor::Wq, 16, d, 4, r);
    CHECK(q.a.dim == ShardDim::None);
    CHECK(q.a.local_shape() == Shape{16, 4096});
    CHECK(q.b.dim == ShardDim::Rows);
    CHECK(q.b.range == Range{r * 1024, 1024});
    CHECK(q.b.local_shape() == Shape{1024, 16});
    // GQA k: B rows are whole KV heads.
    CHECK(lora_shard(LlamaTensor::Wk, 8, d, 4, r).b.range == Range{r * 256, 256});
    // Row-parallel down: A (16, F) columns like w_down's, B (C, 16) whole.
    const LoraShard down = lora_shard(LlamaTensor::WDown, 16, d, 4, r);
    CHECK(down.a.dim == ShardDim::Cols);
    CHECK(down.a.range == Range{r * 3584, 3584});
    CHECK(down.a.local_shape() == Shape{16, 3584});
    CHECK(down.b.dim == ShardDim::None);
    CHECK(down.b.local_shape() == Shape{4096, 16});
    const LoraShard o = lora_shard(LlamaTensor::Wo, 16, d, 4, r);
    CHECK(o.a.range == lora_shard(LlamaTensor::Wq, 16, d, 4, r).b.range);
  }
  CHECK_THROWS_AS(lora_shard(LlamaTensor::AttnNorm, 16, d, 2, 0), InternalError);
  CHECK_THROWS_AS(lora_shard(LlamaTensor::Embedding, 16, d, 2, 0), InternalError);
  const BottleneckShard b = bottleneck_shard(64, d);
  CHECK(b.down.dim == ShardDim::None);
  CHECK(b.down.local_shape() == Shape{64, 4096});
  CHECK(b.up.local_shape() == Shape{4096, 64});
}
