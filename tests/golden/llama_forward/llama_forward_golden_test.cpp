// Llama forward pass against Hugging Face transformers' LlamaForCausalLM (f32), on models that
// adapt_model make regenerates from the recipes the fixtures name (tests/golden/data/llama/, made by
// scripts/make_llama_fixtures.py). Also: KV-cache prefill + decode against the full forward, and greedy
// decoding against HF generate(), and a ragged KV cache (sequences at different lengths decoding
// together) against HF and against each sequence run alone.
//
// Relative error of a case: max over all logits |ours − HF| / max over all logits |HF| (one number per
// case, so small logits are judged on the scale of the whole output, not amplified on their own).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/llama_forward.h"
#include "tests/support/test_support.h"

using namespace adapt;
namespace fs = std::filesystem;

namespace {

// fp32 against fp32: what we measure is ~1e-6 (docs/NUMERICS.md); 1e-4 leaves room for a different
// BLAS or summation order, yet a wrong rope band, GQA mapping or norm shows up as 1e-2 and more.
constexpr double kLogitsRelTol = 1e-4;
// The same model run as one forward or as a prefill plus decode steps: only the key tiling and the
// GEMM shapes differ.
constexpr double kCacheRelTol = 1e-5;

const char* const kCases[] = {"tiny_mha_default_rope", "tiny", "tiny_gqa4_tied", "tiny_linear_rope"};

struct Fixture {
  std::string name;
  std::string recipe;
  float qk_scale = 1.0f;  // applied to q_proj and k_proj of every layer after loading (as the script does)
  Tensor ids;             // (B, T) i32
  Tensor logits;          // (B, T, V) f32
  Tensor probe_embed, probe_wq0;
};

Fixture load_fixture(const std::string& name) {
  const fs::path path = test::data_dir() / "llama" / (name + ".safetensors");
  REQUIRE_MESSAGE(fs::exists(path), path.string(), " is missing; run scripts/make_llama_fixtures.py");
  io::SafetensorsFile f(path);
  Fixture fx;
  fx.name = name;
  fx.recipe = f.metadata().at("recipe");
  if (auto it = f.metadata().find("qk_scale"); it != f.metadata().end()) fx.qk_scale = std::stof(it->second);
  fx.ids = f.read("input_ids", DType::I32);
  fx.logits = f.read("logits", DType::F32);
  fx.probe_embed = f.read("probe.embed", DType::F32);
  fx.probe_wq0 = f.read("probe.wq0", DType::F32);
  return fx;
}

// Multiplies every element by s (a power of two: exact in f32 and in bf16).
void scale(Tensor& t, float s) {
  Tensor f = t.to_host(DType::F32);
  float* p = f.data<float>();
  for (std::int64_t i = 0; i < f.numel(); ++i) p[i] *= s;
  t.copy_from(f);
}

// Regenerates the fixture's model with adapt_model make and loads it; checks the weights are the
// ones HF saw before any logits are compared. `apply_qk_scale` = false gives the model as made.
model::LlamaModel make_model(const Fixture& fx, const test::TempDir& dir, bool apply_qk_scale = true,
                             model::WeightStorage storage = model::WeightStorage::F32) {
  const fs::path out = dir / fx.name;
  const std::string cmd = (test::binary_dir() / "bin" / "adapt_model").string() + " make --recipe " +
                          (test::source_dir() / fx.recipe).string() + " --out " + out.string();
  std::string log;
  if (!fs::exists(out / "config.json")) REQUIRE_MESSAGE(test::run_command(cmd, &log) == 0, cmd, "\n", log);
  model::LlamaModel m = model::llama_model_load(out, {.storage = storage});
  REQUIRE_MESSAGE(m.config.vocab_size == fx.logits.dim(2), "adapt_model make now gives a vocabulary of ",
                  m.config.vocab_size, " for ", fx.recipe, " but fixture '", fx.name, "' has ", fx.logits.dim(2),
                  "; regenerate the fixtures with scripts/make_llama_fixtures.py");
  const Tensor embed = m.weights.embedding.narrow(0, 0, 1).to_host(DType::F32);
  const Tensor wq = m.weights.layers[0].wq.narrow(0, 0, 1).to_host(DType::F32);
  for (std::int64_t i = 0; i < 16; ++i) {
    const bool same = embed.data<float>()[i] == fx.probe_embed.data<float>()[i] &&
                      wq.data<float>()[i] == fx.probe_wq0.data<float>()[i];
    REQUIRE_MESSAGE(same, "adapt_model make no longer reproduces the weights of fixture '", fx.name, "' (recipe ",
                    fx.recipe, "); regenerate the fixtures with scripts/make_llama_fixtures.py");
  }
  if (apply_qk_scale && fx.qk_scale != 1.0f) {
    // Sharpens attention so that RoPE and the mask matter (see CASES in the script). Powers of two:
    // exact, so both sides hold bit-identical weights.
    for (model::LayerWeights& l : m.weights.layers) {
      scale(l.wq, fx.qk_scale);
      scale(l.wk, fx.qk_scale);
    }
  }
  return m;
}

struct Diff {
  double max_abs = 0, max_ref = 0, rel = 0;
  std::int64_t worst = 0;
};

Diff compare(const Tensor& ours, const Tensor& ref) {
  REQUIRE(ours.shape() == ref.shape());
  const float* a = ours.data<float>();
  const float* b = ref.data<float>();
  Diff d;
  std::int64_t n_bad = 0;
  for (std::int64_t i = 0; i < ref.numel(); ++i) {
    const double e = std::fabs(static_cast<double>(a[i]) - b[i]);
    if (!std::isfinite(a[i])) ++n_bad;
    if (e > d.max_abs) {
      d.max_abs = e;
      d.worst = i;
    }
    d.max_ref = std::max(d.max_ref, std::fabs(static_cast<double>(b[i])));
  }
  REQUIRE_MESSAGE(n_bad == 0, n_bad, " logits are not finite");
  d.rel = d.max_abs / d.max_ref;
  return d;
}

// Positions [t0, t0 + n) of every sequence of ids (B, T) as a contiguous (B, n) tensor.
Tensor slice_tokens(const Tensor& ids, std::int64_t t0, std::int64_t n) {
  Tensor out = Tensor::empty({ids.dim(0), n}, DType::I32);
  out.copy_from(ids.narrow(1, t0, n));
  return out;
}

}  // namespace

TEST_CASE("logits of the forward pass match HF transformers on every fixture") {
  test::TempDir dir("adapt-llama-golden");
  for (const std::string name : kCases) {
    CAPTURE(name);
    const Fixture fx = load_fixture(name);
    const model::LlamaModel m = make_model(fx, dir);
    const Tensor logits = model::llama_forward(m, fx.ids);
    const Diff d = compare(logits, fx.logits);
    MESSAGE(name, " ", fx.ids.shape().str(), " qk_scale ", fx.qk_scale, ": max |ours - HF| = ", d.max_abs,
            ", max |HF| = ", d.max_ref, ", relative error = ", d.rel);
    CHECK_MESSAGE(d.rel <= kLogitsRelTol, "worst logit at flat index ", d.worst, ": ours ",
                  logits.data<float>()[d.worst], ", HF ", fx.logits.data<float>()[d.worst]);
  }
}

TEST_CASE("bf16 weights kept as stored (widened inside the GEMMs) give the same logits") {
  test::TempDir dir("adapt-llama-bf16");
  const Fixture fx = load_fixture("tiny");  // a bf16 checkpoint
  const model::LlamaModel m32 = make_model(fx, dir);
  const model::LlamaModel m16 = make_model(fx, dir, true, model::WeightStorage::AsStored);
  CHECK(m16.weights.layers[0].wq.dtype() == DType::BF16);
  CHECK(m16.weights.embedding.dtype() == DType::BF16);
  CHECK(m16.weights.final_norm.dtype() == DType::F32);
  const Tensor a = model::llama_forward(m32, fx.ids);
  const Tensor b = model::llama_forward(m16, fx.ids);
  const Diff self = compare(b, a), hf = compare(b, fx.logits);
  MESSAGE("bf16-stored vs f32-widened relative error ", self.rel, "; bf16-stored vs HF ", hf.rel);
  CHECK(self.rel <= kCacheRelTol);
  CHECK(hf.rel <= kLogitsRelTol);
  // Decoding goes through the skinny bf16 kernels: compare one cached step with the full forward.
  model::KvCache cache(m16.config, fx.ids.dim(0), fx.ids.dim(1));
  const std::int64_t T = fx.ids.dim(1);
  model::llama_forward(m16, slice_tokens(fx.ids, 0, T - 1), &cache);
  const Tensor last = model::llama_forward(m16, slice_tokens(fx.ids, T - 1, 1), &cache, {.last_position_only = true});
  Tensor want = Tensor::empty({fx.ids.dim(0), 1, m16.config.vocab_size}, DType::F32);
  want.copy_from(a.narrow(1, T - 1, 1));
  CHECK(compare(last, want.reshape({fx.ids.dim(0), m16.config.vocab_size})).rel <= kCacheRelTol);
}

TEST_CASE("prefill then decode through the KV cache gives the logits of one full forward") {
  test::TempDir dir("adapt-llama-cache");
  for (const std::string name : {"tiny", "tiny_gqa4_tied"}) {
    CAPTURE(name);
    const Fixture fx = load_fixture(name);
    const model::LlamaModel m = make_model(fx, dir);
    const std::int64_t B = fx.ids.dim(0), T = fx.ids.dim(1), V = m.config.vocab_size;
    const Tensor full = model::llama_forward(m, fx.ids);

    // Uneven chunks: a prefill crossing tile boundaries, single tokens, a second multi-token chunk
    // (queries at an offset), then single tokens to the end.
    std::vector<std::int64_t> chunks = {70, 1, 1, 1, 17};
    for (std::int64_t used = 90; used < T; ++used) chunks.push_back(1);
    model::KvCache cache(m.config, B, T);
    ops::Workspace ws;
    Tensor stitched = Tensor::empty({B, T, V}, DType::F32);
    std::int64_t t0 = 0;
    int allocations_after_first_decode = -1;
    for (std::int64_t n : chunks) {
      const Tensor part = model::llama_forward(m, slice_tokens(fx.ids, t0, n), &cache, {}, &ws);
      REQUIRE(part.shape() == Shape{B, n, V});
      for (std::int64_t b = 0; b < B; ++b)
        std::copy_n(part.data<float>() + b * n * V, n * V, stitched.data<float>() + (b * T + t0) * V);
      t0 += n;
      CHECK(cache.n_past() == t0);
      if (n == 1 && allocations_after_first_decode < 0) allocations_after_first_decode = ws.n_allocations();
    }
    REQUIRE(t0 == T);
    // Decode steps reuse the workspace: no allocation after the first (the 17-token chunk fits in the
    // block grown for the 70-token prefill).
    CHECK(ws.n_allocations() == allocations_after_first_decode);

    const Diff self = compare(stitched, full);
    const Diff hf = compare(stitched, fx.logits);
    MESSAGE(name, ": cached vs full forward relative error ", self.rel, "; cached vs HF ", hf.rel);
    CHECK(self.rel <= kCacheRelTol);
    CHECK(hf.rel <= kLogitsRelTol);

    // A full cache refuses more tokens before computing anything.
    CHECK_THROWS_WITH_AS(model::llama_forward(m, slice_tokens(fx.ids, 0, 1), &cache),
                         doctest::Contains("KV cache is full"), ShapeError);
  }
}

TEST_CASE("last_position_only returns the last row of the full logits") {
  test::TempDir dir("adapt-llama-last");
  const Fixture fx = load_fixture("tiny_gqa4_tied");
  const model::LlamaModel m = make_model(fx, dir);
  const std::int64_t B = fx.ids.dim(0), T = fx.ids.dim(1), V = m.config.vocab_size;
  const Tensor full = model::llama_forward(m, fx.ids);
  const Tensor last = model::llama_forward(m, fx.ids, nullptr, {.last_position_only = true});
  REQUIRE(last.shape() == Shape{B, V});
  Tensor want = Tensor::empty({B, 1, V}, DType::F32);
  want.copy_from(full.narrow(1, T - 1, 1));
  CHECK(compare(last, want.reshape({B, V})).rel <= kCacheRelTol);
}

TEST_CASE("greedy decoding with the KV cache reproduces HF generate()") {
  test::TempDir dir("adapt-llama-greedy");
  const fs::path path = test::data_dir() / "llama" / "generate.safetensors";
  io::SafetensorsFile f(path);
  const Fixture fx = load_fixture(f.metadata().at("case"));
  const Tensor prompt = f.read("prompt", DType::I32);
  const Tensor want = f.read("tokens", DType::I32);
  const Tensor margins = f.read("margins", DType::F32);
  const model::LlamaModel m = make_model(fx, dir, /*apply_qk_scale=*/false);
  const std::int64_t P = prompt.numel(), n_new = want.numel(), V = m.config.vocab_size;

  model::KvCache cache(m.config, 1, P + n_new);
  ops::Workspace ws;
  Tensor ids = prompt.reshape({1, P});
  std::vector<std::int32_t> got;
  for (std::int64_t step = 0; step < n_new; ++step) {
    const Tensor logits = model::llama_forward(m, ids, &cache, {.last_position_only = true}, &ws);
    const float* row = logits.data<float>();
    const std::int32_t next = static_cast<std::int32_t>(std::max_element(row, row + V) - row);
    got.push_back(next);
    ids = Tensor::empty({1, 1}, DType::I32);
    ids.data<std::int32_t>()[0] = next;
  }
  const std::vector<std::int32_t> expected(want.data<std::int32_t>(), want.data<std::int32_t>() + n_new);
  float min_margin = margins.data<float>()[0];
  for (std::int64_t i = 0; i < n_new; ++i) min_margin = std::min(min_margin, margins.data<float>()[i]);
  MESSAGE("smallest top-1/top-2 logit margin along HF's greedy path: ", min_margin);
  CHECK(got == expected);
}

TEST_CASE("a ragged KV cache (rows prefilled to different lengths, then decoded together) matches HF") {
  // Sequence b of the fixture is prefilled alone into cache row rows[b] with prompt[b] tokens; then
  // every unfinished sequence decodes one token per forward, each at its own position, and leaves the
  // batch when it reaches T (the batch shrinks). Compared with HF's logits at every position, and bit
  // for bit with the same sequence run alone through a cache of one row (same chunks): the ops compute
  // a sequence's rows alike whatever the batch (see llama_model_test.cpp for why that is exact).
  test::TempDir dir("adapt-llama-ragged");
  struct Case {
    std::string name;
    std::vector<std::int64_t> prompt, rows;
  };
  for (const Case& c : {Case{"tiny", {150, 131}, {1, 0}}, Case{"tiny_mha_default_rope", {20, 1, 31}, {2, 0, 3}}}) {
    CAPTURE(c.name);
    const Fixture fx = load_fixture(c.name);
    const model::LlamaModel m = make_model(fx, dir);
    const std::int64_t B = fx.ids.dim(0), T = fx.ids.dim(1), V = m.config.vocab_size;
    const auto token = [&](std::int64_t b, std::int64_t t) { return fx.ids.data<std::int32_t>()[b * T + t]; };
    const auto seq_ids = [&](std::int64_t b, std::int64_t t0, std::int64_t n) {
      Tensor out = Tensor::empty({1, n}, DType::I32);
      for (std::int64_t i = 0; i < n; ++i) out.data<std::int32_t>()[i] = token(b, t0 + i);
      return out;
    };
    Tensor stitched = Tensor::empty({B, T, V}, DType::F32);
    auto put = [&](std::int64_t b, std::int64_t t0, const float* src, std::int64_t n) {
      std::copy_n(src, n * V, stitched.data<float>() + (b * T + t0) * V);
    };
    // Ragged: one cache with a spare row, rows filled out of order.
    model::KvCache cache(m.config, B + 1, T);
    ops::Workspace ws;
    for (std::int64_t b = 0; b < B; ++b) {
      const Tensor l = model::llama_forward(m, seq_ids(b, 0, c.prompt[static_cast<std::size_t>(b)]), &cache,
                                            {.cache_rows = {&c.rows[static_cast<std::size_t>(b)], 1}}, &ws);
      put(b, 0, l.data<float>(), c.prompt[static_cast<std::size_t>(b)]);
    }
    for (;;) {
      std::vector<std::int64_t> seqs, rows;
      for (std::int64_t b = 0; b < B; ++b) {
        if (cache.n_past(c.rows[static_cast<std::size_t>(b)]) < T) {
          seqs.push_back(b);
          rows.push_back(c.rows[static_cast<std::size_t>(b)]);
        }
      }
      if (seqs.empty()) break;
      Tensor ids = Tensor::empty({static_cast<std::int64_t>(seqs.size()), 1}, DType::I32);
      std::vector<std::int64_t> pos(seqs.size());
      for (std::size_t i = 0; i < seqs.size(); ++i) {
        pos[i] = cache.n_past(rows[i]);
        ids.data<std::int32_t>()[i] = token(seqs[i], pos[i]);
      }
      const Tensor l = model::llama_forward(m, ids, &cache, {.last_position_only = true, .cache_rows = rows}, &ws);
      for (std::size_t i = 0; i < seqs.size(); ++i)
        put(seqs[i], pos[i], l.data<float>() + static_cast<std::int64_t>(i) * V, 1);
    }
    const Diff hf = compare(stitched, fx.logits);
    MESSAGE(c.name, ": ragged cache vs HF relative error ", hf.rel);
    CHECK(hf.rel <= kLogitsRelTol);

    // Each sequence alone, same chunks: identical bits.
    for (std::int64_t b = 0; b < B; ++b) {
      CAPTURE(b);
      model::KvCache one(m.config, 1, T);
      const std::int64_t P = c.prompt[static_cast<std::size_t>(b)];
      const Tensor first = model::llama_forward(m, seq_ids(b, 0, P), &one, {}, &ws);
      bool same = std::memcmp(first.raw(), stitched.data<float>() + b * T * V,
                              static_cast<std::size_t>(P * V) * sizeof(float)) == 0;
      for (std::int64_t t = P; t < T; ++t) {
        const Tensor l = model::llama_forward(m, seq_ids(b, t, 1), &one, {.last_position_only = true}, &ws);
        same = same && std::memcmp(l.raw(), stitched.data<float>() + (b * T + t) * V,
                                   static_cast<std::size_t>(V) * sizeof(float)) == 0;
      }
      CHECK_MESSAGE(same, "sequence ", b, " differs between the ragged batch and running alone");
    }
  }
}
