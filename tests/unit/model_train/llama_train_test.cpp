// The training step (model/llama_train.h) on a tiny random Llama with a test adapter (test_hook.h):
// its analytic gradients of the adapter parameters and of the embedding output against central
// finite differences of a plain-loop f64 forward (llama_ref.h); recomputation on and off give the
// same bits; gradient accumulation with an external normaliser equals the global batch's mean; the
// hook contract (order, same x in backward); evaluation mode; input errors.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

#include "core/error.h"
#include "model/llama_forward.h"
#include "model/llama_train.h"
#include "ops/matmul.h"
#include "ops/rope.h"
#include "tests/unit/model_train/llama_ref.h"
#include "tests/unit/model_train/test_hook.h"
#include "tests/unit/model_train/train_test_util.h"

using namespace adapt;
using namespace adapt::test::train;

namespace {

void check_gradients(std::int64_t n_kv_heads, HookKind kind, bool with_segments) {
  CAPTURE(n_kv_heads);
  CAPTURE(static_cast<int>(kind));
  CAPTURE(with_segments);
  const model::LlamaModel m = tiny_model(n_kv_heads);
  const model::LlamaConfig& c = m.config;
  const Batch batch = packed_batch(c.vocab_size);
  test::TestHook hook = make_hook(c, kind);
  Tensor d_emb = Tensor::zeros({2, 11, c.hidden_size}, DType::F32, "d_embedded");
  const model::TrainResult r =
      model::llama_train_step(m, inputs_of(batch, with_segments), &hook, {.d_embedded = &d_emb});
  CHECK(hook.x_mismatches == 0);
  REQUIRE(r.n_loss_tokens == 10 + 7);  // row 0: 10 targets; row 1: 3 + 4
  CHECK(r.loss_scale == doctest::Approx(1.0 / 17));

  // The f64 reference with the same per-token RoPE tables.
  Tensor cos = Tensor::empty({2, 11, c.head_dim / 2}, DType::F32),
         sin = Tensor::empty({2, 11, c.head_dim / 2}, DType::F32);
  ops::rope_table_fill_positions(cos, sin, m.inv_freq, batch.positions);
  test::RefLlama<double> ref(m, hook, batch.ids, batch.targets, cos, sin, with_segments ? batch.segments : Tensor());
  const double scale = 1.0 / static_cast<double>(r.n_loss_tokens);
  const double ref_loss = ref.loss_sum();
  CHECK(std::fabs(r.loss_sum - ref_loss) / ref_loss < kLossTol);
  auto loss = [&] { return ref.loss_sum() * scale; };

  std::uint64_t salt = 1;
  for (auto& [key, p] : hook.lora) {
    CAPTURE(key.first);
    CAPTURE(key.second);
    CHECK(fd_error(ref.lora[key].A, p.dA, loss, ++salt) < kGradTol);
    CHECK(fd_error(ref.lora[key].B, p.dB, loss, ++salt) < kGradTol);
  }
  for (auto& [key, p] : hook.blocks) {
    CAPTURE(key.first);
    CAPTURE(key.second);
    CHECK(fd_error(ref.blocks[key].Ph, p.dPh, loss, ++salt) < kGradTol);
    CHECK(fd_error(ref.blocks[key].Pf, p.dPf, loss, ++salt) < kGradTol);
    CHECK(fd_error(ref.blocks[key].b, p.db, loss, ++salt) < kGradTol);
  }
  // The gradient that leaves the model at the embedding output: every path of the base model.
  std::vector<double> h0;
  ops::ref::embedding_forward(h0, ref.embedding, ref.ids, ref.C);
  auto loss_h0 = [&] { return ref.loss_sum(&h0) * scale; };
  CHECK(fd_error(h0, d_emb, loss_h0, ++salt) < kGradTol);
}

}  // namespace

TEST_CASE("train step gradients match finite differences of the f64 reference: adapters everywhere, GQA 2") {
  SUBCASE("packed documents: segment masking, restarting positions, padding") {
    check_gradients(2, HookKind::Everywhere, /*with_segments=*/true);
  }
  SUBCASE("plain causal attention over each row") { check_gradients(2, HookKind::Everywhere, /*with_segments=*/false); }
}

TEST_CASE("train step gradients match finite differences: partial hooks next to fused residuals, GQA 4 and MHA") {
  check_gradients(1, HookKind::Partial, /*with_segments=*/true);
  check_gradients(4, HookKind::Partial, /*with_segments=*/false);
}

TEST_CASE("train step without adapters: the embedding-output gradient matches finite differences") {
  check_gradients(2, HookKind::None, /*with_segments=*/true);
}

TEST_CASE("recomputation on and off: the same loss and gradients bit for bit, hooks called again in order") {
  const model::LlamaModel m = tiny_model(2);
  const Batch batch = packed_batch(m.config.vocab_size);
  // Two hooks with the same parameters (make_hook is deterministic), each with its own gradients.
  test::TestHook keep = make_hook(m.config, HookKind::Everywhere),
                 recompute = make_hook(m.config, HookKind::Everywhere);
  Tensor d_keep = Tensor::zeros({2, 11, 24}, DType::F32), d_re = Tensor::zeros({2, 11, 24}, DType::F32);
  model::TrainWorkspace ws_keep, ws_re;
  const model::TrainResult a =
      model::llama_train_step(m, inputs_of(batch, true), &keep, {.d_embedded = &d_keep}, &ws_keep);
  const model::TrainResult b =
      model::llama_train_step(m, inputs_of(batch, true), &recompute, {.recompute = true, .d_embedded = &d_re}, &ws_re);
  CHECK(a.loss_sum == b.loss_sum);
  CHECK(test::same_bits(d_keep, d_re));
  const std::vector<Tensor> ga = keep.grads(), gb = recompute.grads();
  REQUIRE(ga.size() == gb.size());
  for (std::size_t i = 0; i < ga.size(); ++i) CHECK(test::same_bits(ga[i], gb[i]));
  CHECK(recompute.x_mismatches == 0);
  // Less kept from forward to backward; the per-layer scratch holds the recomputed layer instead.
  CHECK(b.memory.saved_bytes < a.memory.saved_bytes);
  // Hook order: forwards in layer order (then lm_head), backwards in reverse; with recomputation each
  // layer's forwards run again right before its backwards.
  auto layer_sequence = [](const std::vector<std::string>& ev) {
    std::string s;
    for (std::size_t i = 0; i < ev.size(); ++i)
      if (i == 0 || ev[i] != ev[i - 1]) s += ev[i];  // runs of the same event collapse to one
    return s;
  };
  CHECK(layer_sequence(keep.events) == "F0f0F0f0F1f1F1f1F-1B-1b1B1b1B1b0B0b0B0");
  CHECK(layer_sequence(recompute.events) == "F0f0F0f0F1f1F1f1F-1B-1F1f1F1f1b1B1b1B1F0f0F0f0b0B0b0B0");
}

TEST_CASE("shortcuts: no first-layer input gradient unless asked, one segment per row as no segments, bit for bit") {
  const model::LlamaModel m = tiny_model(2);
  const Batch batch = packed_batch(m.config.vocab_size);
  auto step = [&](const model::TrainInputs& in, Tensor* d_embedded) {
    test::TestHook hook = make_hook(m.config, HookKind::Everywhere);
    const model::TrainResult r = model::llama_train_step(m, in, &hook, {.d_embedded = d_embedded});
    return std::make_pair(r.loss_sum, hook.grads());
  };
  auto check_same = [](const auto& a, const auto& b) {
    CHECK(a.first == b.first);
    REQUIRE(a.second.size() == b.second.size());
    for (std::size_t i = 0; i < a.second.size(); ++i) CHECK(test::same_bits(a.second[i], b.second[i]));
  };
  // Without d_embedded the first layer's q/k/v input gradient (dy · W) and attention-norm backward are
  // skipped; the adapters' gradients do not depend on them.
  Tensor d_emb = Tensor::zeros({2, 11, 24}, DType::F32);
  check_same(step(inputs_of(batch, true), nullptr), step(inputs_of(batch, true), &d_emb));
  // Rows that each hold one non-negative segment id take the plain causal kernels: the same as no ids.
  Tensor one_segment = Tensor::zeros({2, 11}, DType::I32, "segment_ids");
  for (std::int64_t i = 11; i < 22; ++i) one_segment.data<std::int32_t>()[i] = 3;
  const model::TrainInputs same_ids{batch.ids, batch.targets, batch.positions, one_segment};
  check_same(step(same_ids, &d_emb), step(inputs_of(batch, false), &d_emb));
}

TEST_CASE("gradient accumulation: micro-batches with loss_scale = 1/n_global sum to the global mean's gradients") {
  const model::LlamaModel m = tiny_model(2);
  const Batch batch = packed_batch(m.config.vocab_size);
  test::TestHook whole = make_hook(m.config, HookKind::Everywhere), parts = make_hook(m.config, HookKind::Everywhere);
  const model::TrainResult all = model::llama_train_step(m, inputs_of(batch, false), &whole);
  double loss_sum = 0;
  for (std::int64_t row = 0; row < 2; ++row) {
    auto slice = [&](const Tensor& t) {
      Tensor s = Tensor::empty({1, 11}, DType::I32, host_allocator(), t.name());
      s.copy_from(t.narrow(0, row, 1));
      return s;
    };
    const model::TrainInputs in{slice(batch.ids), slice(batch.targets), slice(batch.positions), Tensor()};
    const model::TrainResult r =
        model::llama_train_step(m, in, &parts, {.loss_scale = 1.0f / static_cast<float>(all.n_loss_tokens)});
    loss_sum += r.loss_sum;
  }
  CHECK(loss_sum == doctest::Approx(all.loss_sum).epsilon(1e-6));
  const std::vector<Tensor> ga = whole.grads(), gb = parts.grads();
  for (std::size_t i = 0; i < ga.size(); ++i) {
    std::vector<double> ref(static_cast<std::size_t>(ga[i].numel()));
    for (std::size_t j = 0; j < ref.size(); ++j) ref[j] = ga[i].data<float>()[j];
    CHECK(test::max_rel_error(gb[i], ref) < 1e-5);  // the same terms, summed in another order in f32
  }
}

TEST_CASE("evaluation mode: the same loss, no backward, logits copied out; a warm workspace allocates nothing") {
  const model::LlamaModel m = tiny_model(2);
  const Batch batch = packed_batch(m.config.vocab_size);
  test::TestHook hook = make_hook(m.config, HookKind::Everywhere);
  model::TrainWorkspace ws;
  const model::TrainResult train = model::llama_train_step(m, inputs_of(batch, false), &hook, {}, &ws);
  hook.events.clear();
  Tensor logits = Tensor::zeros({2, 11, m.config.vocab_size}, DType::F32, "logits");
  const model::TrainResult eval =
      model::llama_train_step(m, inputs_of(batch, false), &hook, {.backward = false, .logits = &logits}, &ws);
  CHECK(eval.loss_sum == train.loss_sum);
  CHECK(std::none_of(hook.events.begin(), hook.events.end(),
                     [](const std::string& e) { return e[0] == 'B' || e[0] == 'b'; }));
  CHECK(logits.data<float>()[5] != 0.0f);
  // Warm once both passes have run (evaluation holds each layer's activations in scratch: more of it).
  const int allocations = ws.saved.n_allocations() + ws.scratch.n_allocations();
  model::llama_train_step(m, inputs_of(batch, false), &hook, {}, &ws);
  model::llama_train_step(m, inputs_of(batch, false), &hook, {.backward = false}, &ws);
  CHECK(ws.saved.n_allocations() + ws.scratch.n_allocations() == allocations);
}

TEST_CASE("input errors name the tensor before any work") {
  const model::LlamaModel m = tiny_model(2);
  Batch batch = packed_batch(m.config.vocab_size);
  test::TestHook hook = make_hook(m.config, HookKind::Everywhere);
  batch.targets.data<std::int32_t>()[3] = 37;
  CHECK_THROWS_WITH_AS(model::llama_train_step(m, inputs_of(batch, false), &hook),
                       doctest::Contains("outside the vocabulary"), ShapeError);
  CHECK(hook.events.empty());
  model::TrainInputs bad = inputs_of(batch, false);
  bad.positions = Tensor::zeros({2, 10}, DType::I32, "short_positions");
  CHECK_THROWS_WITH_AS(model::llama_train_step(m, bad, &hook), doctest::Contains("short_positions"), ShapeError);
}

TEST_CASE("lm_head and the loss in chunks of rows: the same loss, logits and gradients") {
  const model::LlamaModel m = tiny_model(2);
  const Batch batch = packed_batch(m.config.vocab_size);
  test::TestHook whole = make_hook(m.config, HookKind::Everywhere), chunked = make_hook(m.config, HookKind::Everywhere);
  const std::int64_t V = m.config.vocab_size;
  Tensor la = Tensor::zeros({2, 11, V}, DType::F32), lb = Tensor::zeros({2, 11, V}, DType::F32);
  Tensor da = Tensor::zeros({2, 11, 24}, DType::F32), db = Tensor::zeros({2, 11, 24}, DType::F32);
  const model::TrainResult a =
      model::llama_train_step(m, inputs_of(batch, false), &whole, {.logits = &la, .d_embedded = &da});
  const model::TrainResult b =
      model::llama_train_step(m, inputs_of(batch, false), &chunked,
                              {.logits_chunk_rows = 5, .logits = &lb, .d_embedded = &db});  // 22 rows: 5+5+5+5+2
  CHECK(b.n_loss_tokens == a.n_loss_tokens);
  CHECK(b.loss_sum == doctest::Approx(a.loss_sum).epsilon(1e-6));
  // Fewer rows per GEMM may sum in another order: f32 rounding, not bits.
  auto close = [](const Tensor& x, const Tensor& ref) {
    std::vector<double> r(static_cast<std::size_t>(ref.numel()));
    for (std::size_t j = 0; j < r.size(); ++j) r[j] = ref.data<float>()[j];
    return test::max_rel_error(x, r) < 1e-5;
  };
  CHECK(close(lb, la));
  CHECK(close(db, da));
  const std::vector<Tensor> ga = whole.grads(), gb = chunked.grads();
  for (std::size_t i = 0; i < ga.size(); ++i) CHECK(close(gb[i], ga[i]));
  CHECK(chunked.x_mismatches == 0);
}

TEST_CASE("row_loss: each position's −log softmax at its target, 0 where ignored, summing to the loss") {
  const model::LlamaModel m = tiny_model(2);
  const Batch batch = packed_batch(m.config.vocab_size);
  const std::int64_t V = m.config.vocab_size;
  Tensor logits = Tensor::zeros({2, 11, V}, DType::F32);
  Tensor rl = Tensor::empty({2, 11}, DType::F32, host_allocator(), "row_loss");
  std::fill_n(rl.data<float>(), 22, 7.0f);
  const model::TrainResult r =
      model::llama_train_step(m, inputs_of(batch, false), nullptr,
                              {.backward = false, .logits_chunk_rows = 5, .logits = &logits, .row_loss = &rl});
  double sum = 0;
  int n_ignored = 0;
  for (std::int64_t n = 0; n < 22; ++n) {
    CAPTURE(n);
    const std::int32_t y = batch.targets.data<std::int32_t>()[n];
    const float got = rl.data<float>()[n];
    sum += got;
    if (y == model::kIgnoreIndex) {
      ++n_ignored;
      CHECK(got == 0.0f);
      continue;
    }
    const float* z = logits.data<float>() + n * V;
    const double mx = *std::max_element(z, z + V);
    double se = 0;
    for (std::int64_t v = 0; v < V; ++v) se += std::exp(static_cast<double>(z[v]) - mx);
    CHECK(got == doctest::Approx(mx + std::log(se) - z[y]).epsilon(1e-5));
  }
  CHECK(n_ignored > 0);
  CHECK(sum == doctest::Approx(r.loss_sum).epsilon(1e-6));
  Tensor wrong = Tensor::zeros({22}, DType::F32, "flat_losses");
  CHECK_THROWS_WITH_AS(
      model::llama_train_step(m, inputs_of(batch, false), nullptr, {.backward = false, .row_loss = &wrong}),
      doctest::Contains("flat_losses"), ShapeError);
}

namespace {

// The tiny model twice with its matrices rounded to bf16: first widened to f32, then kept in bf16.
std::pair<model::LlamaModel, model::LlamaModel> bf16_rounded_pair() {
  model::LlamaModel f32 = tiny_model(2), bf16 = tiny_model(2);
  auto round_trip = [](Tensor& w, Tensor& as_bf16) {
    as_bf16 = w.to_host(DType::BF16);
    w = as_bf16.to_host(DType::F32);
  };
  round_trip(f32.weights.lm_head, bf16.weights.lm_head);
  for (std::size_t l = 0; l < f32.weights.layers.size(); ++l) {
    model::LayerWeights& a = f32.weights.layers[l];
    model::LayerWeights& b = bf16.weights.layers[l];
    for (auto [x, y] : {std::pair{&a.wq, &b.wq},
                        {&a.wk, &b.wk},
                        {&a.wv, &b.wv},
                        {&a.wo, &b.wo},
                        {&a.w_gate, &b.w_gate},
                        {&a.w_up, &b.w_up},
                        {&a.w_down, &b.w_down}})
      round_trip(*x, *y);
  }
  return {std::move(f32), std::move(bf16)};
}

}  // namespace

TEST_CASE("bf16-stored weights (WeightStorage::AsStored) give the gradients of their f32 widening") {
  // The same values both ways: weights rounded to bf16, then kept as bf16 or widened to f32. dx = dy · W
  // reads W untransposed, a GEMM layout the forward never uses.
  auto [f32, bf16] = bf16_rounded_pair();
  const Batch batch = packed_batch(f32.config.vocab_size);
  test::TestHook ha = make_hook(f32.config, HookKind::Everywhere), hb = make_hook(f32.config, HookKind::Everywhere);
  Tensor da = Tensor::zeros({2, 11, 24}, DType::F32), db = Tensor::zeros({2, 11, 24}, DType::F32);
  const model::TrainResult a = model::llama_train_step(f32, inputs_of(batch, false), &ha, {.d_embedded = &da});
  const model::TrainResult b = model::llama_train_step(bf16, inputs_of(batch, false), &hb, {.d_embedded = &db});
  CHECK(b.loss_sum == doctest::Approx(a.loss_sum).epsilon(1e-6));
  auto close = [](const Tensor& x, const Tensor& ref) {  // the same products, possibly summed in another order
    std::vector<double> r(static_cast<std::size_t>(ref.numel()));
    for (std::size_t j = 0; j < r.size(); ++j) r[j] = ref.data<float>()[j];
    return test::max_rel_error(x, r) < 1e-5;
  };
  CHECK(close(db, da));
  const std::vector<Tensor> ga = ha.grads(), gb = hb.grads();
  for (std::size_t i = 0; i < ga.size(); ++i) CHECK(close(gb[i], ga[i]));
}

TEST_CASE("bf16 products (cpu_matmul_dtype = bf16): loss and gradients within bf16 rounding of the f32 step") {
  // The same bf16 weights both ways; with bf16 products every activation and gradient the base weights
  // multiply is rounded to bf16 (relative 2^-9), so the step moves by about that much, not by f32 rounding.
  auto [f32, bf16] = bf16_rounded_pair();
  const Batch batch = packed_batch(f32.config.vocab_size);
  test::TestHook ha = make_hook(f32.config, HookKind::Everywhere), hb = make_hook(f32.config, HookKind::Everywhere);
  Tensor da = Tensor::zeros({2, 11, 24}, DType::F32), db = Tensor::zeros({2, 11, 24}, DType::F32);
  const model::TrainResult a = model::llama_train_step(f32, inputs_of(batch, false), &ha, {.d_embedded = &da});
  ops::set_cpu_matmul_dtype(DType::BF16);
  model::TrainResult b;
  try {
    b = model::llama_train_step(bf16, inputs_of(batch, false), &hb, {.d_embedded = &db});
  } catch (...) {
    ops::set_cpu_matmul_dtype(DType::F32);
    throw;
  }
  ops::set_cpu_matmul_dtype(DType::F32);
  CHECK(b.loss_sum == doctest::Approx(a.loss_sum).epsilon(2e-3));
  CHECK(b.loss_sum != a.loss_sum);  // the bf16 products ran
  // ||x - ref|| / ||ref||. A first-layer adapter gradient ends a chain of rounded products through the
  // whole backward, so the roundings compound (2.2% seen here; the GPU tests allow 3% for the same
  // arithmetic, kBf16GradTol); a missing or doubled term is O(1).
  auto rel_norm = [](const Tensor& x, const Tensor& ref) {
    double num = 0, den = 1e-30;
    for (std::int64_t j = 0; j < ref.numel(); ++j) {
      const double d = static_cast<double>(x.data<float>()[j]) - ref.data<float>()[j];
      num += d * d;
      den += static_cast<double>(ref.data<float>()[j]) * ref.data<float>()[j];
    }
    return std::sqrt(num / den);
  };
  CHECK(rel_norm(db, da) < 3e-2);
  CHECK(rel_norm(db, da) > 0);
  const std::vector<Tensor> ga = ha.grads(), gb = hb.grads();
  REQUIRE(ga.size() == gb.size());
  for (std::size_t i = 0; i < ga.size(); ++i) {
    CAPTURE(i);
    CHECK(rel_norm(gb[i], ga[i]) < 3e-2);
  }
}

TEST_CASE("the training forward computes llama_forward's logits bit for bit, with and without adapters") {
  const model::LlamaModel m = tiny_model(2);
  const Batch batch = packed_batch(m.config.vocab_size);
  const std::int64_t V = m.config.vocab_size;
  // Positions 0 .. T−1 both implicitly (one table) and explicitly (per-token tables, the same values).
  Tensor pos = Tensor::empty({2, 11}, DType::I32, host_allocator(), "positions");
  for (std::int64_t i = 0; i < 22; ++i) pos.data<std::int32_t>()[i] = static_cast<std::int32_t>(i % 11);
  for (const HookKind kind : {HookKind::None, HookKind::Partial, HookKind::Everywhere}) {
    CAPTURE(static_cast<int>(kind));
    test::TestHook hook = make_hook(m.config, kind);
    model::AdapterHook* h = kind == HookKind::None ? nullptr : &hook;
    const Tensor ref = model::llama_forward(m, batch.ids, nullptr, {.hook = h});
    for (const bool explicit_positions : {false, true}) {
      Tensor logits = Tensor::zeros({2, 11, V}, DType::F32, "logits");
      const model::TrainInputs in{batch.ids, batch.targets, explicit_positions ? pos : Tensor(), Tensor()};
      model::llama_train_step(m, in, h, {.backward = false, .logits = &logits});
      CHECK(test::same_bits(logits, ref));
    }
  }
}
