// LoRA through the adapter hook, checked against the f64 reference of adapters_ref.h: forward values,
// finite-difference gradients of A, B and x (plain, rsLoRA, dropout), the exact no-op at init,
// deterministic dropout masks, gradient accumulation, and merge/unmerge into f32 base weights.
#include <doctest/doctest.h>

#include <cmath>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_rng.h"
#include "adapters/adapter_set.h"
#include "model/llama_weights.h"
#include "ops/matmul.h"
#include "tests/unit/adapters/adapters_ref.h"
#include "tests/unit/adapters/adapters_test_util.h"

using namespace adapt;
using namespace adapt::adapters;
using model::LinearSite;
using model::WeightKind;
using test::LoraRef;

namespace {

AdapterConfig lora_config(std::vector<std::string> targets, double dropout = 0.0, bool rslora = false) {
  AdapterConfig cfg;
  cfg.kind = AdapterKind::Lora;
  cfg.seed = 11;
  cfg.lora.r = 3;
  cfg.lora.alpha = 6.0;
  cfg.lora.dropout = dropout;
  cfg.lora.use_rslora = rslora;
  cfg.lora.targets = std::move(targets);
  return cfg;
}

/// Runs forward + backward of one site through the hook and checks them against LoraRef.
void check_site(AdapterSet& set, const LinearSite& site, std::uint64_t stream) {
  LoraAdapter* ad = set.lora(site.layer, site.kind);
  REQUIRE(ad != nullptr);
  test::fill_uniform(ad->a, stream + 1, -0.5, 0.5);
  test::fill_uniform(ad->b, stream + 2, -0.5, 0.5);  // B ≠ 0, or dA would be zero
  const std::int64_t N = 5, in = ad->in(), out = ad->out();
  const Tensor x = test::random_tensor({N, in}, stream + 3);
  const Tensor W = test::random_tensor({out, in}, stream + 4);
  const Tensor dy = test::random_tensor({N, out}, stream + 5);

  LoraRef ref{N,
              in,
              out,
              ad->rank(),
              ad->scaling(),
              test::to_f64(x),
              test::to_f64(W),
              test::to_f64(ad->a),
              test::to_f64(ad->b),
              std::vector<double>(static_cast<std::size_t>(N * in), 1.0),
              test::to_f64(dy)};
  const double p = set.training() ? set.config().lora.dropout : 0.0;
  if (p > 0) {
    const std::uint64_t s = dropout_stream({.seed = set.config().seed,
                                            .step = set.step(),
                                            .micro_batch = set.micro_batch(),
                                            .layer = site.layer,
                                            .site = static_cast<int>(site.kind)});
    for (std::int64_t i = 0; i < N * in; ++i)
      ref.keep[static_cast<std::size_t>(i)] = dropout_keep(s, i, p) ? 1.0 / (1.0 - p) : 0.0;
  }

  // Forward: y holds x·Wᵀ, the hook adds the LoRA term.
  Tensor y = Tensor::empty({N, out}, DType::F32);
  ops::matmul(y, x, W);
  REQUIRE(set.has_linear(site));
  set.linear_forward(site, x, y);
  CHECK(test::max_rel_diff(test::to_f64(y), ref.forward()) < 1e-5);

  // Backward: dx holds dy·W (the frozen path), the hook adds its share and accumulates dA, dB.
  set.zero_grad();
  Tensor dx = Tensor::empty({N, in}, DType::F32);
  ops::matmul(dx, dy, W, {.transpose_b = false});
  set.linear_backward(site, x, dy, dx);
  auto loss = [&] { return ref.loss(); };
  test::check_grad("dA", ad->grad_a, test::numeric_grad(ref.A, loss));
  test::check_grad("dB", ad->grad_b, test::numeric_grad(ref.B, loss));
  test::check_grad("dx", dx, test::numeric_grad(ref.x, loss));

  // A second backward accumulates.
  const std::vector<double> ga = test::to_f64(ad->grad_a);
  Tensor dx2 = Tensor::zeros({N, in}, DType::F32);
  set.linear_backward(site, x, dy, dx2);
  const std::vector<double> ga2 = test::to_f64(ad->grad_a);
  for (std::size_t i = 0; i < ga.size(); ++i) CHECK(ga2[i] == doctest::Approx(2 * ga[i]).epsilon(1e-6));
}

const LinearSite kSites[] = {
    {0, WeightKind::Wq}, {1, WeightKind::Wk}, {2, WeightKind::Wo}, {1, WeightKind::WDown}, {2, WeightKind::WGate}};

}  // namespace

TEST_CASE("LoRA forward and gradients match f64 finite differences") {
  for (const bool rslora : {false, true}) {
    CAPTURE(rslora);
    AdapterSet set(test::tiny_llama(), lora_config({"q", "k", "o", "gate", "down"}, 0.0, rslora));
    CHECK(set.config().lora.use_rslora == rslora);
    const double s = rslora ? 6.0 / std::sqrt(3.0) : 2.0;
    CHECK(set.lora(0, WeightKind::Wq)->scaling() == doctest::Approx(s));
    std::uint64_t stream = 100;
    for (const LinearSite& site : kSites) {
      CAPTURE(site.layer);
      CAPTURE(static_cast<int>(site.kind));
      check_site(set, site, stream += 10);
    }
  }
}

TEST_CASE("LoRA with dropout: gradients through the mask, masks deterministic per (step, micro-batch, site)") {
  AdapterSet set(test::tiny_llama(), lora_config({"q", "down"}, 0.3));
  set.set_training(true);
  set.set_step(7, 2);
  check_site(set, {1, WeightKind::Wq}, 500);
  check_site(set, {2, WeightKind::WDown}, 600);

  // Same (step, micro-batch): identical output (recomputation); another step: another mask.
  const LinearSite site{1, WeightKind::Wq};
  const Tensor x = test::random_tensor({64, 16}, 700);
  auto run = [&] {
    Tensor y = Tensor::zeros({64, 16}, DType::F32);
    set.linear_forward(site, x, y);
    return y;
  };
  const Tensor y1 = run(), y2 = run();
  CHECK(test::bit_equal(y1, y2));
  set.set_step(8, 2);
  CHECK_FALSE(test::bit_equal(run(), y1));
  set.set_step(7, 3);
  CHECK_FALSE(test::bit_equal(run(), y1));
  set.set_step(7, 2);
  CHECK(test::bit_equal(run(), y1));
  // A data-parallel replica's rows of the micro-step (set_step's row_offset): rows [40, 64) on their
  // own, offset by 40 rows, get the masks they get inside the whole 64 rows (the GEMMs over 24 rows may
  // round differently; another mask would change the output by O(1)).
  {
    Tensor x_tail = Tensor::empty({24, 16}, DType::F32), y_tail = Tensor::zeros({24, 16}, DType::F32);
    x_tail.copy_from(x.narrow(0, 40, 24));
    Tensor want = Tensor::empty({24, 16}, DType::F32);
    want.copy_from(y1.narrow(0, 40, 24));
    auto worst = [&](const Tensor& got) {
      double w = 0;
      for (std::int64_t i = 0; i < got.numel(); ++i)
        w = std::max(w, static_cast<double>(std::fabs(got.data<float>()[i] - want.data<float>()[i])));
      return w;
    };
    set.set_step(7, 2, 40);
    set.linear_forward(site, x_tail, y_tail);
    CHECK(worst(y_tail) <= 1e-5);
    y_tail.zero();
    set.set_step(7, 2);  // the same rows at offset 0: other masks
    set.linear_forward(site, x_tail, y_tail);
    CHECK(worst(y_tail) > 1e-2);
  }
  // Inference: no dropout at all (the p = 0 result).
  set.set_training(false);
  const Tensor y_eval = run();
  AdapterSet plain(test::tiny_llama(), lora_config({"q", "down"}, 0.0));
  plain.lora(1, WeightKind::Wq)->a.copy_from(set.lora(1, WeightKind::Wq)->a);
  plain.lora(1, WeightKind::Wq)->b.copy_from(set.lora(1, WeightKind::Wq)->b);
  Tensor y_plain = Tensor::zeros({64, 16}, DType::F32);
  plain.linear_forward(site, x, y_plain);
  CHECK(test::bit_equal(y_eval, y_plain));

  // The kept fraction is 1 − p.
  const std::uint64_t stream = dropout_stream({.seed = 1, .step = 2, .micro_batch = 3, .layer = 4, .site = 5});
  int kept = 0;
  for (int i = 0; i < 20000; ++i) kept += dropout_keep(stream, i, 0.3);
  CHECK(kept / 20000.0 == doctest::Approx(0.7).epsilon(0.02));
}

TEST_CASE("LoRA init is an exact no-op and follows PEFT's distributions") {
  AdapterSet set(test::tiny_llama(), lora_config({"q", "k", "v", "o", "gate", "up", "down"}));
  std::uint64_t stream = 900;
  for (const int layer : {0, 1, 2})
    for (const WeightKind kind : {WeightKind::Wq, WeightKind::Wk, WeightKind::Wv, WeightKind::Wo, WeightKind::WGate,
                                  WeightKind::WUp, WeightKind::WDown}) {
      const LoraAdapter* ad = set.lora(layer, kind);
      REQUIRE(ad);
      const Tensor x = test::random_tensor({7, ad->in()}, ++stream);
      const Tensor W = test::random_tensor({ad->out(), ad->in()}, ++stream);
      Tensor y = Tensor::empty({7, ad->out()}, DType::F32);
      ops::matmul(y, x, W);
      const Tensor base = test::clone(y);
      set.linear_forward({layer, kind}, x, y);
      CHECK(test::bit_equal(y, base));
      // B = 0; A ~ U(−1/√in, 1/√in), not all equal.
      for (const double v : test::to_f64(ad->b)) CHECK(v == 0.0);
      const double bound = 1.0 / std::sqrt(static_cast<double>(ad->in()));
      double lo = 1, hi = -1;
      for (const double v : test::to_f64(ad->a)) {
        CHECK(std::fabs(v) <= bound);
        lo = std::min(lo, v);
        hi = std::max(hi, v);
      }
      CHECK(hi - lo > bound);
    }
  // Gaussian: std 1/r over many elements; distinct seeds give distinct A; the same seed the same A.
  AdapterConfig g = lora_config({"gate"});
  g.lora.r = 4;
  g.lora.init = LoraInit::Gaussian;
  const AdapterSet gs(test::tiny_llama(256), g);
  const std::vector<double> a = test::to_f64(gs.lora(0, WeightKind::WGate)->a);
  double sum2 = 0;
  for (const double v : a) sum2 += v * v;
  CHECK(std::sqrt(sum2 / static_cast<double>(a.size())) == doctest::Approx(0.25).epsilon(0.05));
  const AdapterSet same(test::tiny_llama(256), g);
  CHECK(test::bit_equal(same.lora(0, WeightKind::WGate)->a, gs.lora(0, WeightKind::WGate)->a));
  g.seed = 12;
  const AdapterSet other(test::tiny_llama(256), g);
  CHECK_FALSE(test::bit_equal(other.lora(0, WeightKind::WGate)->a, gs.lora(0, WeightKind::WGate)->a));
}

TEST_CASE("LoRA sites follow targets and layer selection; parameters have stable names") {
  AdapterConfig cfg = lora_config({"v", "q"});
  cfg.last_n = 2;
  AdapterSet set(test::tiny_llama(), cfg);
  CHECK(set.layers() == std::vector<int>{1, 2});
  CHECK_FALSE(set.has_linear({0, WeightKind::Wq}));
  CHECK(set.has_linear({1, WeightKind::Wq}));
  CHECK(set.has_linear({2, WeightKind::Wv}));
  CHECK_FALSE(set.has_linear({2, WeightKind::Wk}));
  CHECK_FALSE(set.has_linear({-1, WeightKind::LmHead}));
  CHECK_FALSE(set.has_block(1, model::BlockSite::Mlp));
  const std::vector<AdapterParam> params = set.parameters();
  std::vector<std::string> names;
  for (const AdapterParam& p : params) names.push_back(p.name);
  CHECK(names == std::vector<std::string>{"layers.1.q.lora_a", "layers.1.q.lora_b", "layers.1.v.lora_a",
                                          "layers.1.v.lora_b", "layers.2.q.lora_a", "layers.2.q.lora_b",
                                          "layers.2.v.lora_a", "layers.2.v.lora_b"});
  CHECK(params[0].value.shape() == Shape{3, 16});
  CHECK(params[3].value.shape() == Shape{8, 3});
  CHECK(params[0].tp_shard_dim == -1);  // q is column-parallel: A replicated, B split by rows
  CHECK(params[1].tp_shard_dim == 0);
  CHECK(set.n_parameters() == 2 * (3 * 16 + 16 * 3 + 3 * 16 + 8 * 3));
  REQUIRE(set.find_parameter("layers.2.v.lora_b") != nullptr);
  CHECK(set.find_parameter("layers.2.v.lora_b")->raw() == set.lora(2, WeightKind::Wv)->b.raw());
  CHECK(set.find_parameter("layers.0.v.lora_b") == nullptr);
  // parameters() shares storage: writing through it changes the adapter.
  params[1].value.data<float>()[0] = 3.0f;
  CHECK(set.lora(1, WeightKind::Wq)->b.data<float>()[0] == 3.0f);
  params[1].grad.data<float>()[0] = 1.0f;
  set.zero_grad();
  CHECK(set.lora(1, WeightKind::Wq)->grad_b.data<float>()[0] == 0.0f);

  AdapterConfig o = lora_config({"o", "down"});
  const AdapterSet row(test::tiny_llama(), o);
  CHECK(row.parameters()[0].tp_shard_dim == 1);  // o is row-parallel: A split by columns, B replicated
  CHECK(row.parameters()[1].tp_shard_dim == -1);
}

namespace {

/// A random f32 model of the tiny shape, built in memory.
model::LlamaModel tiny_model(std::uint64_t stream) {
  model::LlamaModel m;
  m.config = test::tiny_llama();
  const auto& c = m.config;
  for (int l = 0; l < c.n_layers; ++l) {
    model::LayerWeights w;
    w.wq = test::random_tensor({c.n_heads * c.head_dim, c.hidden_size}, ++stream).set_name(fmt::format("wq{}", l));
    w.wk = test::random_tensor({c.n_kv_heads * c.head_dim, c.hidden_size}, ++stream);
    w.wv = test::random_tensor({c.n_kv_heads * c.head_dim, c.hidden_size}, ++stream);
    w.wo = test::random_tensor({c.hidden_size, c.n_heads * c.head_dim}, ++stream);
    w.w_gate = test::random_tensor({c.intermediate_size, c.hidden_size}, ++stream);
    w.w_up = test::random_tensor({c.intermediate_size, c.hidden_size}, ++stream);
    w.w_down = test::random_tensor({c.hidden_size, c.intermediate_size}, ++stream);
    m.weights.layers.push_back(w);
  }
  return m;
}

}  // namespace

TEST_CASE("LoRA merge: merged forward equals the adapter forward; unmerge restores W within 2^-23·(|W| + |ΔW|)") {
  model::LlamaModel m = tiny_model(1000);
  AdapterSet set(m.config, lora_config({"q", "v", "down"}));
  std::uint64_t stream = 1100;
  for (AdapterParam& p : set.parameters()) test::fill_uniform(p.value, ++stream, -0.5, 0.5);
  std::vector<Tensor> before;
  for (const model::LayerWeights& w : m.weights.layers) {
    before.push_back(test::clone(w.wq));
    before.push_back(test::clone(w.wk));
    before.push_back(test::clone(w.w_down));
  }
  const Tensor x = test::random_tensor({6, 24}, 1200);
  const Tensor xq = x.narrow(1, 0, 16).to_host(DType::F32);
  // Adapter path on layer 1: q and down.
  Tensor yq = Tensor::empty({6, 16}, DType::F32), yd = Tensor::empty({6, 16}, DType::F32);
  ops::matmul(yq, xq, m.weights.layers[1].wq);
  set.linear_forward({1, WeightKind::Wq}, xq, yq);
  ops::matmul(yd, x, m.weights.layers[1].w_down);
  set.linear_forward({1, WeightKind::WDown}, x, yd);

  set.merge(m);
  CHECK(set.merged());
  CHECK_FALSE(set.has_linear({1, WeightKind::Wq}));
  CHECK_THROWS_AS(set.merge(m), UnsupportedError);
  CHECK_THROWS_AS(set.set_training(true), UnsupportedError);
  // W' = W + s·B·A (f64 reference), k untouched.
  const LoraAdapter& q1 = *set.lora(1, WeightKind::Wq);
  const std::vector<double> A = test::to_f64(q1.a), B = test::to_f64(q1.b), W0 = test::to_f64(before[3]);
  const std::vector<double> W1 = test::to_f64(m.weights.layers[1].wq);
  for (int o = 0; o < 16; ++o)
    for (int i = 0; i < 16; ++i) {
      double d = 0;
      for (int k = 0; k < 3; ++k) d += B[o * 3 + k] * A[k * 16 + i];
      CHECK(W1[o * 16 + i] == doctest::Approx(W0[o * 16 + i] + 2.0 * d).epsilon(1e-5));
    }
  CHECK(test::bit_equal(m.weights.layers[1].wk, before[4]));
  Tensor mq = Tensor::empty({6, 16}, DType::F32), md = Tensor::empty({6, 16}, DType::F32);
  ops::matmul(mq, xq, m.weights.layers[1].wq);
  ops::matmul(md, x, m.weights.layers[1].w_down);
  CHECK(test::max_rel_diff(test::to_f64(mq), test::to_f64(yq)) < 1e-5);
  CHECK(test::max_rel_diff(test::to_f64(md), test::to_f64(yd)) < 1e-5);

  set.unmerge(m);
  CHECK_FALSE(set.merged());
  CHECK(set.has_linear({1, WeightKind::Wq}));
  for (int l = 0; l < 3; ++l) {
    const model::LayerWeights& w = m.weights.layers[static_cast<std::size_t>(l)];
    for (const auto& [now, was, kind] : {std::tuple{&w.wq, &before[3 * l], WeightKind::Wq},
                                         std::tuple{&w.w_down, &before[3 * l + 2], WeightKind::WDown}}) {
      const LoraAdapter& ad = *set.lora(l, kind);
      const std::vector<double> a = test::to_f64(ad.a), b = test::to_f64(ad.b), n = test::to_f64(*now),
                                o = test::to_f64(*was);
      const std::int64_t in = ad.in(), r = ad.rank();
      for (std::int64_t e = 0; e < static_cast<std::int64_t>(n.size()); ++e) {
        double d = 0;
        for (std::int64_t k = 0; k < r; ++k) d += b[(e / in) * r + k] * a[k * in + e % in];
        CHECK(std::fabs(n[e] - o[e]) <= 0x1.0p-23 * (std::fabs(o[e]) + std::fabs(ad.scaling() * d)));
      }
    }
    CHECK(test::bit_equal(w.wk, before[3 * l + 1]));
  }
  CHECK_THROWS_AS(set.unmerge(m), UnsupportedError);

  // bf16-stored weights cannot take a merge; nothing is modified.
  model::LlamaModel bf = tiny_model(1300);
  bf.weights.layers[2].w_down = bf.weights.layers[2].w_down.to_host(DType::BF16);
  const Tensor q_before = test::clone(bf.weights.layers[0].wq);
  CHECK_THROWS_WITH_AS(set.merge(bf), doctest::Contains("WeightStorage::F32"), UnsupportedError);
  CHECK(test::bit_equal(bf.weights.layers[0].wq, q_before));
  CHECK_FALSE(set.merged());
  // A model of another shape.
  model::LlamaModel wide = tiny_model(1400);
  wide.weights.layers[0].wq = test::random_tensor({20, 16}, 1500);
  CHECK_THROWS_WITH_AS(set.merge(wide), doctest::Contains("maybe wrong base model"), ShapeError);
}
