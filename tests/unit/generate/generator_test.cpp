// The batch scheduler (Generator::run_batch) against one sequence at a time, on the tiny model made by
// adapt_model: every request gets the same tokens, text and finish reason at batch sizes 1, 3, 4 and
// 12; a seeded sampled request gives the same text whatever it is batched with; results come back in
// finishing order; streamed text adds up to the final text; a greedy request equals a plain
// llama_forward + argmax loop. Equality is token for token: a sequence's logits do not depend on the
// batch (tests/golden/llama_forward/llama_model_test.cpp checks them bit for bit up to 10 rows).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>

#include "core/error.h"
#include "core/file.h"
#include "generate/generator.h"
#include "generate/kv_snapshot.h"
#include "model/kv_cache.h"
#include "model/llama_forward.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::generate;

namespace {

struct TinyModel {
  test::TempDir dir{"adapt-gen-batch"};
  model::LlamaModel model;
  std::unique_ptr<tokenizer::Tokenizer> tok;
};

// The demo's tiny model (inputs/models/tiny.toml: 2 layers), or the same with `layers` layers, made
// once per process; weights kept bf16 as adapt_gen keeps them.
const TinyModel& tiny(int layers = 2) {
  static std::map<int, std::unique_ptr<TinyModel>> made;
  std::unique_ptr<TinyModel>& t = made[layers];
  if (!t) {
    t = std::make_unique<TinyModel>();
    const std::string cmd = (test::binary_dir() / "bin" / "adapt_model").string() + " make --recipe " +
                            (test::source_dir() / "inputs/models/tiny.toml").string() + " --layers " +
                            std::to_string(layers) + " --out " + (t->dir / "model").string();
    std::string log;
    REQUIRE_MESSAGE(test::run_command(cmd, &log) == 0, cmd, "\n", log);
    t->model = model::llama_model_load(t->dir / "model", {.storage = model::WeightStorage::AsStored});
    t->tok = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(t->dir / "model"));
  }
  return *t;
}

GenerationRequest request(const std::string& text, std::int64_t max_new_tokens, double temperature = 0.0,
                          std::uint64_t seed = 0) {
  GenerationRequest r;
  tokenizer::EncodeOptions eo;
  eo.bos = true;
  for (auto id : tiny().tok->encode(text, eo)) r.prompt.push_back(static_cast<std::int32_t>(id));
  r.max_new_tokens = max_new_tokens;
  r.sampling.temperature = temperature;
  r.sampling.seed = seed;
  if (temperature > 0) r.sampling.top_k = 40;
  return r;
}

// Prompts of 2 to ~60 tokens, greedy and sampled, different lengths to generate.
std::vector<GenerationRequest> mixed_requests() {
  std::vector<GenerationRequest> v;
  v.push_back(request("int main() {", 12));
  v.push_back(request("def f(x):", 5));
  v.push_back(
      request("Write a loop that prints the numbers from one to ten, then explain it line by line.", 30, 0.9, 4));
  v.push_back(request("#include <vector>\n", 7));
  v.push_back(request("x", 20, 1.1, 9));
  v.push_back(
      request("// Returns the running sum of v.\nstd::vector<long> prefix_sum(const std::vector<int>& v) {\n", 16));
  v.push_back(request("class A {", 3));
  v.push_back(request("for i in range(10):", 25, 0.7, 1));
  v.back().sampling.top_p = 0.9;
  v.push_back(request("SELECT * FROM t WHERE", 9));
  v.push_back(request("fn main() {", 14));
  v.back().sampling.repetition_penalty = 1.3;
  v.push_back(request("#!/bin/sh\n", 11, 0.8, 2));
  return v;
}

struct BatchRun {
  std::map<std::size_t, GenerationOutput> out;  // by request index
  std::vector<std::size_t> finish_order;
  std::map<std::size_t, std::string> streamed;
};

BatchRun run_batch(std::span<const GenerationRequest> reqs, std::int64_t batch_size,
                   const GenerateOptions& options = {}, int layers = 2) {
  Generator gen(tiny(layers).model, *tiny(layers).tok);
  gen.set_options(options);
  BatchRun r;
  gen.run_batch(
      reqs, batch_size,
      [&](std::size_t i, GenerationOutput&& o) {
        CHECK(r.out.count(i) == 0);
        r.finish_order.push_back(i);
        r.out[i] = std::move(o);
      },
      [&](std::size_t i, std::string_view text) { r.streamed[i] += text; });
  REQUIRE(r.out.size() == reqs.size());
  return r;
}

std::string streamed_of(const BatchRun& r, std::size_t i) {
  const auto it = r.streamed.find(i);
  return it == r.streamed.end() ? std::string() : it->second;  // nothing streamed when the text is empty
}

void check_same(const GenerationOutput& a, const GenerationOutput& b) {
  CHECK(a.tokens == b.tokens);
  CHECK(a.text == b.text);
  CHECK(a.reason == b.reason);
}

// Last-position logits of a fixed ragged schedule through a KV cache of 3 rows x 64 positions with
// `device_layers` kept whole (the rest spilled) and elements of `dtype`: rows 0 and 2 prefilled in two
// pieces, row 1 in one, all decode together, then row 1 is cleared and takes a new prompt while the
// others go on. Checks the cache's byte counts on the way.
std::vector<float> ragged_logits(const TinyModel& t, std::int64_t device_layers, DType dtype) {
  const model::LlamaConfig& c = t.model.config;
  const std::int64_t V = c.vocab_size;
  model::KvCache cache(c, 3, 64, 1, host_allocator(), {.device_layers = device_layers, .dtype = dtype});
  CHECK(cache.dtype() == dtype);
  CHECK(cache.size_bytes() == model::KvCache::bytes_needed(c, 3, 64, 1, -1, dtype) +
                                  (device_layers >= 0 && device_layers < c.n_layers
                                       ? model::KvCache::bytes_needed(
                                             c, 3, 64, 1, std::min<std::int64_t>(2, c.n_layers - device_layers), dtype)
                                       : 0));
  std::vector<float> all;
  auto forward = [&](std::vector<std::int32_t> ids_v, std::vector<std::int64_t> rows) {
    const auto B = static_cast<std::int64_t>(rows.size());
    const auto T = static_cast<std::int64_t>(ids_v.size()) / B;
    Tensor ids = Tensor::empty({B, T}, DType::I32);
    std::copy(ids_v.begin(), ids_v.end(), ids.data<std::int32_t>());
    const Tensor logits = model::llama_forward(t.model, ids, &cache, {.last_position_only = true, .cache_rows = rows});
    all.insert(all.end(), logits.data<float>(), logits.data<float>() + B * V);
  };
  forward({1, 17, 300, 41, 5, 9, 77}, {0});
  forward({12, 13, 14, 15, 16}, {1});
  forward({400, 401, 402}, {2});
  forward({8, 9, 10, 11}, {0});
  forward({600, 601, 602, 603, 604, 605}, {2});
  for (int step = 0; step < 4; ++step) forward({20 + step, 30 + step, 40 + step}, {0, 1, 2});
  cache.clear_row(1);
  forward({2, 3, 4}, {1});
  for (int step = 0; step < 3; ++step) forward({50 + step, 60 + step}, {2, 1});
  forward({70, 71, 72}, {1, 0, 2});
  if (device_layers >= 0 && device_layers < c.n_layers) {
    CHECK(cache.host_bytes() == model::KvCache::bytes_needed(c, 3, 64, 1, c.n_layers - device_layers, dtype));
    CHECK(cache.device_bytes() ==
          model::KvCache::bytes_needed(c, 3, 64, 1,
                                       device_layers + std::min<std::int64_t>(2, c.n_layers - device_layers), dtype));
  }
  return all;
}

}  // namespace

// Up to 32 rows in flight (8 on CPUs without AVX-512) a decode step gives each row the logits it gets
// alone, bit for bit, so the tokens must match. Above that the decode GEMM takes its packed path, which
// rounds differently (~5e-7 relative on the logits): tokens still match unless a top-2 margin is that
// small, which these fixed prompts do not hit (the run is deterministic); a failure at 12 only, on a
// CPU without AVX-512, is that case, not a scheduling bug.
TEST_CASE("batch sizes 3, 4 and 12 give every request the tokens of batch size 1") {
  const std::vector<GenerationRequest> reqs = mixed_requests();
  const BatchRun one = run_batch(reqs, 1);
  std::vector<std::size_t> in_order(reqs.size());
  for (std::size_t i = 0; i < reqs.size(); ++i) in_order[i] = i;
  CHECK(one.finish_order == in_order);  // one at a time: request order
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    CAPTURE(i);
    CHECK(!one.out.at(i).tokens.empty());
    CHECK(static_cast<std::int64_t>(one.out.at(i).tokens.size()) <= reqs[i].max_new_tokens);
    CHECK(streamed_of(one, i) == one.out.at(i).text);
  }
  for (const std::int64_t batch_size : {4, 3, 12}) {
    CAPTURE(batch_size);
    const BatchRun many = run_batch(reqs, batch_size);
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      CAPTURE(i);
      check_same(many.out.at(i), one.out.at(i));
      CHECK(streamed_of(many, i) == many.out.at(i).text);
    }
    // Results come back as sequences finish: request 1 (5 tokens) before request 0 (12).
    CHECK(many.finish_order != in_order);
    CHECK(std::find(many.finish_order.begin(), many.finish_order.end(), 1) <
          std::find(many.finish_order.begin(), many.finish_order.end(), 0));
  }
}

TEST_CASE("a seeded sampled request gives the same text whatever it is batched with") {
  const std::vector<GenerationRequest> others = mixed_requests();
  GenerationRequest x = request("template <typename T> T max(T a, T b) {", 24, 0.8, 77);
  x.sampling.top_p = 0.95;
  const GenerationOutput alone = run_batch({&x, 1}, 1).out.at(0);
  CHECK(alone.tokens.size() > 1);
  struct Mix {
    std::vector<std::size_t> before;  // indices into `others` placed before x
    std::size_t after;                // how many of the rest follow x
    std::int64_t batch_size;
  };
  for (const Mix& mix : {Mix{{0, 2}, 3, 4}, Mix{{}, 1, 2}, Mix{{6, 1, 4, 3, 8}, 2, 3}, Mix{{5}, 9, 12}}) {
    std::vector<GenerationRequest> reqs;
    for (std::size_t i : mix.before) reqs.push_back(others[i]);
    const std::size_t at = reqs.size();
    reqs.push_back(x);
    for (std::size_t i = 0; i < mix.after; ++i) reqs.push_back(others[(i + 7) % others.size()]);
    CAPTURE(at);
    CAPTURE(mix.batch_size);
    check_same(run_batch(reqs, mix.batch_size).out.at(at), alone);
  }
}

namespace {

// The tokens of a plain llama_forward + argmax loop over the first `n_draw` logits of each step, up to
// r.max_new_tokens or an end token; `beyond` (when given) counts the steps whose argmax over all the
// model's logits lies at or past n_draw.
std::vector<std::int32_t> argmax_loop(const model::LlamaModel& m, const tokenizer::Tokenizer& tok,
                                      const GenerationRequest& r, std::int64_t n_draw, int* beyond = nullptr) {
  const auto P = static_cast<std::int64_t>(r.prompt.size());
  const std::int64_t V = m.config.vocab_size;
  model::KvCache cache(m.config, 1, P + r.max_new_tokens);
  Tensor ids = Tensor::empty({1, P}, DType::I32);
  std::copy(r.prompt.begin(), r.prompt.end(), ids.data<std::int32_t>());
  std::vector<std::int32_t> out;
  const auto& eos = tok.eos_ids();
  while (static_cast<std::int64_t>(out.size()) < r.max_new_tokens) {
    const Tensor logits = model::llama_forward(m, ids, &cache, {.last_position_only = true});
    const float* row = logits.data<float>();
    out.push_back(static_cast<std::int32_t>(std::max_element(row, row + n_draw) - row));
    if (beyond && std::max_element(row, row + V) - row >= n_draw) ++*beyond;
    if (std::find(eos.begin(), eos.end(), out.back()) != eos.end()) break;
    ids = Tensor::empty({1, 1}, DType::I32);
    ids.data<std::int32_t>()[0] = out.back();
  }
  return out;
}

}  // namespace

TEST_CASE("a greedy request gives the tokens of a plain llama_forward + argmax loop") {
  const TinyModel& t = tiny();
  const GenerationRequest r = request("int add(int a, int b) {", 20);
  const GenerationOutput got = Generator(t.model, *t.tok).run(r.prompt, r.sampling, r.stop, r.max_new_tokens);
  CHECK(got.tokens == argmax_loop(t.model, *t.tok, r, t.model.config.vocab_size));
}

// Published checkpoints often pad vocab_size past the tokenizer (to a multiple of 64 or 128); those
// rows decode to no text, so the sampler draws from the tokenizer's ids only.
TEST_CASE("a model whose vocab_size is padded past its tokenizer draws only the tokenizer's ids") {
  test::TempDir dir("adapt-gen-padded");
  const std::string cmd = (test::binary_dir() / "bin" / "adapt_model").string() + " make --recipe " +
                          (test::source_dir() / "inputs/models/tiny.toml").string() +
                          " --set shape.vocab_size=1536 --out " + (dir / "model").string();
  std::string log;
  REQUIRE_MESSAGE(test::run_command(cmd, &log) == 0, cmd, "\n", log);
  const model::LlamaModel m = model::llama_model_load(dir / "model", {.storage = model::WeightStorage::AsStored});
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_file(dir / "model");
  const std::int64_t n_vocab = tok.n_vocab(), V = m.config.vocab_size;
  REQUIRE(n_vocab < V);
  tokenizer::EncodeOptions eo;
  eo.bos = true;
  GenerationRequest r;
  for (auto id : tok.encode("int add(int a, int b) {", eo)) r.prompt.push_back(static_cast<std::int32_t>(id));
  r.max_new_tokens = 24;
  const GenerationOutput got = Generator(m, tok).run(r.prompt, r.sampling, r.stop, r.max_new_tokens);
  // Greedy: the argmax over the tokenizer's ids, step by step; the argmax over every row lands in the
  // padding at some step (else this would not test the restriction).
  int padding_argmax = 0;
  CHECK(got.tokens == argmax_loop(m, tok, r, n_vocab, &padding_argmax));
  CHECK(padding_argmax > 0);
  // Sampled, hot: every token is the tokenizer's, and the text decodes.
  r.sampling.temperature = 1.5;
  r.sampling.seed = 3;
  r.max_new_tokens = 64;
  const GenerationOutput hot = Generator(m, tok).run(r.prompt, r.sampling, r.stop, r.max_new_tokens);
  CHECK(!hot.tokens.empty());
  for (const std::int32_t id : hot.tokens) CHECK(id < n_vocab);
}

// The activations' workspace holds the largest llama_forward call run_batch makes: a prefill piece
// of one prompt or a decode step of every row (what adapt_plan counts for generation).
TEST_CASE("the generator's workspace is its largest prefill piece or decode step") {
  const TinyModel& t = tiny();
  const std::vector<GenerationRequest> reqs = mixed_requests();
  std::int64_t longest = 0;
  for (const GenerationRequest& r : reqs) longest = std::max<std::int64_t>(longest, r.prompt.size());
  for (const std::int64_t chunk : {0, 5}) {
    for (const std::int64_t rows : {1, 3, 8}) {
      CAPTURE(chunk);
      CAPTURE(rows);
      Generator gen(t.model, *t.tok);
      gen.set_options({.prefill_chunk = chunk, .share_prefixes = false});  // every prompt prefilled whole
      gen.run_batch(reqs, rows, [](std::size_t, GenerationOutput&&) {});
      const model::ForwardCall prefill{.batch = 1, .tokens = chunk > 0 ? std::min(chunk, longest) : longest};
      const model::ForwardCall decode{.batch = rows, .tokens = 1, .ragged = true};
      CHECK(gen.workspace_high_water_bytes() ==
            std::max(model::llama_forward_workspace_bytes(t.model.config, t.model.tp, t.model.stage, prefill),
                     model::llama_forward_workspace_bytes(t.model.config, t.model.tp, t.model.stage, decode)));
    }
  }
}

TEST_CASE("run_batch rejects bad requests before generating") {
  const TinyModel& t = tiny();
  Generator gen(t.model, *t.tok);
  std::vector<GenerationRequest> reqs = {request("a", 3), request("b", 3)};
  int finished = 0;
  auto count = [&](std::size_t, GenerationOutput&&) { ++finished; };
  CHECK_THROWS_WITH_AS(gen.run_batch(reqs, 0, count), doctest::Contains("batch_size = 0"), ConfigError);
  reqs[1].prompt.clear();
  CHECK_THROWS_WITH_AS(gen.run_batch(reqs, 2, count), doctest::Contains("request 1: the prompt is empty"), ConfigError);
  reqs[1].prompt.assign(static_cast<std::size_t>(t.model.config.max_position_embeddings), 5);
  CHECK_THROWS_WITH_AS(gen.run_batch(reqs, 2, count), doctest::Contains("max_position_embeddings"), ConfigError);
  CHECK(finished == 0);
  // The plan: rows = min(batch_size, requests), capacity = the longest prompt + max_new_tokens.
  reqs[1] = request("a longer prompt", 40);
  const BatchPlan plan = gen.plan_batch(reqs, 8);
  CHECK(plan.rows == 2);
  CHECK(plan.capacity == static_cast<std::int64_t>(reqs[1].prompt.size()) + 40);
  CHECK(plan.kv_cache_bytes == model::KvCache::bytes_needed(t.model.config, 2, plan.capacity));
}

// A long prompt is prefilled in pieces (GenerateOptions::prefill_chunk): each piece continues the row's
// cache at its positions, so the last piece's logits are those of the whole prompt at once, up to the
// GEMM's summation order for pieces of few rows (~1e-6 relative).
TEST_CASE("a prompt prefilled in chunks gets the logits and tokens of a whole prefill") {
  const TinyModel& t = tiny();
  const GenerationRequest r = request(
      "// Returns the running sum of v, then the largest prefix sum and where it ends.\n"
      "std::vector<long> prefix_sum(const std::vector<int>& v) {\n",
      4);
  const auto P = static_cast<std::int64_t>(r.prompt.size());
  REQUIRE(P > 20);
  const std::int64_t V = t.model.config.vocab_size;
  auto last_logits = [&](std::int64_t chunk) {
    model::KvCache cache(t.model.config, 1, P);
    Tensor logits;
    for (std::int64_t at = 0; at < P; at += chunk) {
      const std::int64_t n = std::min(chunk, P - at);
      Tensor ids = Tensor::empty({1, n}, DType::I32);
      std::copy(r.prompt.begin() + at, r.prompt.begin() + at + n, ids.data<std::int32_t>());
      logits = model::llama_forward(t.model, ids, &cache, {.last_position_only = true});
    }
    CHECK(cache.n_past(0) == P);
    return std::vector<float>(logits.data<float>(), logits.data<float>() + V);
  };
  const std::vector<float> whole = last_logits(P);
  for (const std::int64_t chunk : {1, 5, 16}) {
    CAPTURE(chunk);
    const std::vector<float> part = last_logits(chunk);
    double worst = 0, scale = 0;
    for (std::int64_t i = 0; i < V; ++i) {
      worst = std::max(worst, static_cast<double>(std::abs(part[i] - whole[i])));
      scale = std::max(scale, static_cast<double>(std::abs(whole[i])));
    }
    CHECK(worst <= 1e-5 * scale);
  }
  // The scheduler: chunks of 1, 5 and 16 tokens give every request the tokens of whole prefills.
  const std::vector<GenerationRequest> reqs = mixed_requests();
  const BatchRun whole_run = run_batch(reqs, 3, {.prefill_chunk = 0});
  for (const std::int64_t chunk : {1, 5, 16}) {
    CAPTURE(chunk);
    const BatchRun chunked = run_batch(reqs, 3, {.prefill_chunk = chunk});
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      CAPTURE(i);
      check_same(chunked.out.at(i), whole_run.out.at(i));
    }
  }
}

// A cache whose last layers live in host RAM (KvPlacement::device_layers) and are staged into two
// buffers layer by layer computes from the same numbers: logits equal bit for bit over a ragged
// prefill + decode, with rows cleared and refilled; on the host the staging copies are memcpy, which
// checks the bookkeeping (which positions of which rows each buffer holds), the part a GPU shares.
TEST_CASE("a KV cache spilled to host RAM gives the logits and tokens of a cache kept whole") {
  const TinyModel& t = tiny(5);
  const model::LlamaConfig& c = t.model.config;
  REQUIRE(c.n_layers == 5);
  auto run = [&](std::int64_t device_layers) { return ragged_logits(t, device_layers, DType::F32); };
  const std::vector<float> kept = run(-1);
  for (const std::int64_t device_layers : {0, 1, 3, 4}) {
    CAPTURE(device_layers);
    CHECK(run(device_layers) == kept);
  }
  // The scheduler, 11 requests through 3 rows (rows reused) in prefill pieces of 7: the same tokens.
  const std::vector<GenerationRequest> reqs = mixed_requests();  // the same tokenizer as the 2-layer model's
  const BatchRun whole = run_batch(reqs, 3, {.prefill_chunk = 7}, 5);
  for (const std::int64_t device_layers : {0, 2}) {
    CAPTURE(device_layers);
    const BatchRun spilled = run_batch(reqs, 3, {.prefill_chunk = 7, .kv_device_layers = device_layers}, 5);
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      CAPTURE(i);
      check_same(spilled.out.at(i), whole.out.at(i));
    }
  }
  Generator gen(t.model, *t.tok);
  gen.set_options({.kv_device_layers = 2});
  const BatchPlan plan = gen.plan_batch(reqs, 3);
  CHECK(plan.layers == 5);
  CHECK(plan.device_layers == 2);
  CHECK(plan.kv_host_bytes == model::KvCache::bytes_needed(c, 3, plan.capacity, 1, 3));
  CHECK(plan.kv_device_bytes == model::KvCache::bytes_needed(c, 3, plan.capacity, 1, 4));
  CHECK_THROWS_WITH_AS(gen.set_options({.prefill_chunk = -1}), doctest::Contains("runtime.prefill_chunk = -1"),
                       ConfigError);
  CHECK_THROWS_WITH_AS(gen.set_options({.kv_device_layers = -2}), doctest::Contains("runtime.kv_device_layers = -2"),
                       ConfigError);
}

// A pipeline stage's cache holds its layers only; a forward over layers it lacks is refused.
TEST_CASE("a KV cache holds the layers it is made for") {
  const model::LlamaConfig& c = tiny(5).model.config;
  model::KvCache stage(c, 2, 16, 1, host_allocator(), {.layers = {2, 3}});
  CHECK(stage.layers() == parallel::Range{2, 3});
  CHECK(stage.size_bytes() == model::KvCache::bytes_needed(c, 2, 16, 1, 3));
  CHECK(stage.size_bytes() * 5 == model::KvCache::bytes_needed(c, 2, 16) * 3);
  Tensor ids = Tensor::empty({2, 1}, DType::I32);
  ids.data<std::int32_t>()[0] = ids.data<std::int32_t>()[1] = 3;
  CHECK_THROWS_WITH_AS(model::llama_forward(tiny(5).model, ids, &stage), doctest::Contains("holds layers [2, 5)"),
                       ShapeError);
  CHECK_THROWS_WITH_AS(model::KvCache(c, 2, 16, 1, host_allocator(), {.layers = {3, 3}}),
                       doctest::Contains("layers [3, 6) are not among the model's 5 layers"), ConfigError);
}

// Llama 3.1 70B at tp8, 8 sequences of 128K tokens: 1 GiB of KV cache per layer per GPU; a prefill piece
// of 512 tokens needs ~0.2 GiB of activations (counted twice) plus the 1 GiB kept for the libraries.
TEST_CASE("kv_device_layers_fit keeps on the GPU the layers that fit beside the activations") {
  const model::LlamaConfig c = model::llama_config_preset("llama-3.1-70b");
  const std::int64_t S = 131072;
  REQUIRE(model::KvCache::bytes_needed(c, 8, S, 8, 1) == (1ull << 30));
  constexpr std::uint64_t GiB = 1ull << 30;
  CHECK(kv_device_layers_fit(c, 8, 8, S, 80, 512, 100 * GiB) == 80);  // all 80 fit in 98.8 GiB
  CHECK(kv_device_layers_fit(c, 8, 8, S, 80, 512, 40 * GiB) == 36);   // 38 fit: 36 + 2 staging
  CHECK(kv_device_layers_fit(c, 8, 8, S, 80, 512, 3 * GiB) == 0);     // not even the staging buffers
  CHECK(kv_device_layers_fit(c, 8, 8, S, 80, 512, GiB / 2) == 0);
  // A longer prefill piece leaves fewer layers.
  CHECK(kv_device_layers_fit(c, 8, 8, S, 80, 65536, 40 * GiB) < 36);
}

// A bf16 KV cache holds half the bytes; spilled or whole it gives the same bits (the staging copies
// move bf16 elements); its logits differ from the f32 cache's only by the rounding of keys and values
// (2^-9 relative), and the scheduler's tokens are those of the bf16 cache kept whole.
TEST_CASE("a bf16 KV cache: half the bytes, the same logits spilled or whole, close to the f32 cache") {
  const TinyModel& t = tiny(5);
  const model::LlamaConfig& c = t.model.config;
  CHECK(model::KvCache::bytes_needed(c, 3, 64, 1, -1, DType::BF16) * 2 == model::KvCache::bytes_needed(c, 3, 64));
  const std::vector<float> f32 = ragged_logits(t, -1, DType::F32);
  const std::vector<float> bf16 = ragged_logits(t, -1, DType::BF16);
  REQUIRE(bf16.size() == f32.size());
  double max_diff = 0, max_abs = 0;
  for (std::size_t i = 0; i < f32.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(static_cast<double>(bf16[i]) - f32[i]));
    max_abs = std::max(max_abs, std::abs(static_cast<double>(f32[i])));
  }
  MESSAGE("bf16 vs f32 KV cache: max |logit difference| " << max_diff << " of max |logit| " << max_abs);
  CHECK(max_diff > 0);               // the cache really rounds
  CHECK(max_diff < 2e-2 * max_abs);  // and only by bf16's rounding of keys and values
  for (const std::int64_t device_layers : {0, 1, 3}) {
    CAPTURE(device_layers);
    CHECK(ragged_logits(t, device_layers, DType::BF16) == bf16);
  }
  const std::vector<GenerationRequest> reqs = mixed_requests();
  const BatchRun whole = run_batch(reqs, 3, {.prefill_chunk = 7, .kv_dtype = DType::BF16}, 5);
  const BatchRun spilled = run_batch(reqs, 3, {.prefill_chunk = 7, .kv_device_layers = 2, .kv_dtype = DType::BF16}, 5);
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    CAPTURE(i);
    check_same(spilled.out.at(i), whole.out.at(i));
  }
  Generator gen(t.model, *t.tok);
  gen.set_options({.kv_dtype = DType::BF16});
  const BatchPlan b16 = gen.plan_batch(reqs, 3);
  gen.set_options({});
  CHECK(b16.kv_cache_bytes * 2 == gen.plan_batch(reqs, 3).kv_cache_bytes);
  CHECK_THROWS_WITH_AS(gen.set_options({.kv_dtype = DType::F16}), doctest::Contains("runtime.kv_cache_dtype = f16"),
                       ConfigError);
}

// Stopping a run (BatchHooks::stop) and continuing it from the saved progress (GenerationRequest::
// resume) gives every request the output of an uninterrupted run. With prefill_chunk = 1 the resumed
// prefill is the same one-token forwards as the decode steps it replaces, so the KV cache, and hence
// every token, is bit for bit the uninterrupted run's; with whole prefills the logits differ in the
// last bits (a prefill's GEMM sums in another order), and these prompts have no near-tie, so the
// tokens still match. Seeded sampling continues from the saved generator state.
TEST_CASE("a stopped run resumed from its saved progress gives the uninterrupted run's tokens and texts") {
  std::vector<GenerationRequest> reqs = mixed_requests();
  reqs[0].stop = {"()"};  // a stop string that may straddle the point where the run stopped
  for (const std::int64_t chunk : {1, 0}) {
    CAPTURE(chunk);
    const GenerateOptions opts{.prefill_chunk = chunk, .progress_every = 4};
    const BatchRun whole = run_batch(reqs, 4, opts);
    for (const int stop_after : {3, 9}) {  // steps (prefills and decode steps) before the stop
      CAPTURE(stop_after);
      Generator gen(tiny().model, *tiny().tok);
      gen.set_options(opts);
      std::map<std::size_t, GenerationOutput> out;
      std::map<std::size_t, SequenceProgress> saved;
      std::map<std::size_t, std::int64_t> reports;  // periodic progress reports per request
      int steps = 0;
      bool stopping = false;
      const bool completed =
          gen.run_batch(reqs, 4,
                        {.on_finished = [&](std::size_t i, GenerationOutput&& o) { out[i] = std::move(o); },
                         .on_progress =
                             [&](std::size_t i, SequenceProgress&& p) {
                               if (!stopping) {
                                 CHECK(p.tokens.size() % 4 == 0);  // progress_every
                                 ++reports[i];
                               }
                               saved[i] = std::move(p);
                             },
                         .stop = [&] { return stopping = ++steps == stop_after; }});
      CHECK_FALSE(completed);
      // Those in flight were reported; the others finished or did not start.
      REQUIRE(!saved.empty());
      std::vector<GenerationRequest> rest;
      std::vector<std::size_t> index_of;
      for (std::size_t i = 0; i < reqs.size(); ++i) {
        if (out.count(i) != 0) continue;
        rest.push_back(reqs[i]);
        if (saved.count(i) != 0) {
          CHECK(!saved[i].tokens.empty());
          CHECK(!saved[i].rng_state.empty());
          rest.back().resume = saved[i];
        }
        index_of.push_back(i);
      }
      const BatchRun second = run_batch(rest, 4, opts);
      for (std::size_t j = 0; j < rest.size(); ++j) out[index_of[j]] = second.out.at(j);
      for (std::size_t i = 0; i < reqs.size(); ++i) {
        CAPTURE(i);
        check_same(out.at(i), whole.out.at(i));
      }
    }
  }
}

TEST_CASE("resume: saved tokens that reach an end finish at once; too many are refused") {
  GenerationRequest r = request("int main() {", 6);
  const BatchRun whole = run_batch({&r, 1}, 1);
  const GenerationOutput& w = whole.out.at(0);
  REQUIRE(w.tokens.size() >= 2);
  // Progress holding every token of the finished output: replaying them ends the sequence without a forward.
  GenerationRequest again = r;
  again.resume.tokens = w.tokens;
  if (static_cast<std::int64_t>(w.tokens.size()) < r.max_new_tokens) {
    const BatchRun done = run_batch({&again, 1}, 1);
    check_same(done.out.at(0), w);
  }
  again.resume.tokens.assign(6, w.tokens[0]);
  Generator gen(tiny().model, *tiny().tok);
  CHECK_THROWS_WITH_AS(gen.run_batch({&again, 1}, 1, [](std::size_t, GenerationOutput&&) {}),
                       doctest::Contains("resumes after 6 generated tokens"), ConfigError);
}

// Stored KV prefixes (BatchHooks::save_prefix / load_prefix with generate/kv_snapshot.h, what
// output.conversation_kv runs): a finished request's row is stored; loading it into another cache
// (spilled or not, f32 or bf16) gives back the same bytes for the shared prefix, also when the new
// prompt leaves the stored tokens part way; a request whose prompt extends a stored prompt gets the
// tokens of a whole prefill; a file for another identity, element type or prompt is not used.
TEST_CASE("stored KV prefixes: the same bytes back, the tokens of a whole prefill, refusals") {
  const TinyModel& t = tiny(5);
  const model::LlamaConfig& c = t.model.config;
  test::TempDir dir{"adapt-kv-snapshot"};
  const fs::path file = dir / "conv" / "a.kv";  // the folder is made by the save
  const GenerationRequest first = request("// Returns the running sum of v.\nstd::vector<long> prefix_sum(", 9);
  for (const DType dtype : {DType::F32, DType::BF16}) {
    for (const std::int64_t device_layers : {std::int64_t{-1}, std::int64_t{0}, std::int64_t{3}}) {
      CAPTURE(dtype_name(dtype));
      CAPTURE(device_layers);
      const GenerateOptions opts{.prefill_chunk = 7, .kv_device_layers = device_layers, .kv_dtype = dtype};
      Generator gen(t.model, *t.tok);
      gen.set_options(opts);
      std::vector<std::int32_t> stored_tokens;
      std::vector<char> stored_k, stored_v;  // layer 4 of the stored row, as read_row gives it
      GenerationOutput out1;
      gen.run_batch(
          std::span(&first, 1), 1,
          {.on_finished = [&](std::size_t, GenerationOutput&& o) { out1 = std::move(o); },
           .save_prefix =
               [&](std::size_t, model::KvCache& cache, std::int64_t row, std::span<const std::int32_t> tok) {
                 stored_tokens.assign(tok.begin(), tok.end());
                 const std::size_t bytes =
                     static_cast<std::size_t>(cache.n_kv_heads() * cache.head_dim()) * tok.size() * dtype_size(dtype);
                 stored_k.resize(bytes);
                 stored_v.resize(bytes);
                 cache.read_row(4, row, static_cast<std::int64_t>(tok.size()), stored_k.data(), stored_v.data());
                 kv_snapshot_save(file, cache, row, tok, "identity");
               }});
      // The row holds the prompt and every generated token but the last.
      REQUIRE(stored_tokens.size() == first.prompt.size() + out1.tokens.size() - 1);

      // A prompt that leaves the stored tokens at position 20: positions 0..19 come back byte for byte.
      std::vector<std::int32_t> prompt(stored_tokens.begin(), stored_tokens.begin() + 20);
      prompt.push_back((stored_tokens[20] + 1) % static_cast<std::int32_t>(c.vocab_size));
      prompt.push_back(5);
      model::KvCache cache(c, 2, 64, 1, host_allocator(), {.device_layers = device_layers, .dtype = dtype});
      const KvSnapshotLoad got = kv_snapshot_load(file, cache, 1, prompt, "identity");
      CHECK(got.why_not.empty());
      REQUIRE(got.positions == 20);
      cache.advance(20, std::vector<std::int64_t>{1});
      const std::size_t bytes =
          static_cast<std::size_t>(cache.n_kv_heads() * cache.head_dim()) * 20 * dtype_size(dtype);
      std::vector<char> k(bytes), v(bytes);
      cache.read_row(4, 1, 20, k.data(), v.data());
      const std::size_t head_stored = stored_k.size() / static_cast<std::size_t>(cache.n_kv_heads());
      const std::size_t head_loaded = bytes / static_cast<std::size_t>(cache.n_kv_heads());
      for (std::int64_t h = 0; h < cache.n_kv_heads(); ++h) {
        CAPTURE(h);
        CHECK(std::equal(k.begin() + h * head_loaded, k.begin() + (h + 1) * head_loaded,
                         stored_k.begin() + h * head_stored));
        CHECK(std::equal(v.begin() + h * head_loaded, v.begin() + (h + 1) * head_loaded,
                         stored_v.begin() + h * head_stored));
      }
      // The whole stored prompt, then new tokens: the tokens of a whole prefill.
      GenerationRequest next = first;
      next.prompt.insert(next.prompt.end(), {17, 3, 99});
      std::int64_t loaded = -1;
      GenerationOutput whole, continued;
      gen.run_batch(std::span(&next, 1), 1,
                    {.on_finished = [&](std::size_t, GenerationOutput&& o) { whole = std::move(o); }});
      gen.run_batch(std::span(&first, 1), 1,
                    {.on_finished = [&](std::size_t, GenerationOutput&&) {},
                     .save_prefix =
                         [&](std::size_t, model::KvCache& kc, std::int64_t row, std::span<const std::int32_t> tok) {
                           kv_snapshot_save(file, kc, row, tok.first(first.prompt.size()), "identity");
                         }});
      gen.run_batch(std::span(&next, 1), 1,
                    {.on_finished = [&](std::size_t, GenerationOutput&& o) { continued = std::move(o); },
                     .load_prefix =
                         [&](std::size_t, model::KvCache& kc, std::int64_t row, std::span<const std::int32_t> tok) {
                           const KvSnapshotLoad g = kv_snapshot_load(file, kc, row, tok, "identity");
                           loaded = g.positions;
                           return g.positions;
                         }});
      CHECK(loaded == static_cast<std::int64_t>(first.prompt.size()));
      check_same(continued, whole);

      // Refused: another identity, another element type, a prompt that does not start with its tokens.
      model::KvCache other(c, 1, 64, 1, host_allocator(),
                           {.device_layers = device_layers, .dtype = dtype == DType::F32 ? DType::BF16 : DType::F32});
      CHECK(kv_snapshot_load(file, cache, 0, next.prompt, "another").why_not.find("another model") !=
            std::string::npos);
      CHECK(kv_snapshot_load(file, other, 0, next.prompt, "identity").why_not.find("cache, this job keeps") !=
            std::string::npos);
      std::vector<std::int32_t> stranger = next.prompt;
      stranger[0] = (stranger[0] + 1) % static_cast<std::int32_t>(c.vocab_size);
      CHECK(kv_snapshot_load(file, cache, 0, stranger, "identity").why_not.find("do not start this prompt") !=
            std::string::npos);
      CHECK(kv_snapshot_load(dir / "none.kv", cache, 0, next.prompt, "identity").positions == 0);

      // A damaged file is refused before anything is written: the row keeps what it held.
      const KvSnapshotLoad good = kv_snapshot_load(file, cache, 0, next.prompt, "identity");
      const std::int64_t n_good = good.positions;
      REQUIRE(n_good == static_cast<std::int64_t>(first.prompt.size()));
      cache.advance(n_good, std::vector<std::int64_t>{0});
      const std::size_t good_bytes =
          static_cast<std::size_t>(cache.n_kv_heads() * cache.head_dim() * n_good) * dtype_size(dtype);
      std::vector<char> k_before(good_bytes), v_before(good_bytes), k_after(good_bytes), v_after(good_bytes);
      cache.read_row(4, 0, n_good, k_before.data(), v_before.data());
      {
        std::string bytes_on_disk = file_read_text(file);
        bytes_on_disk[bytes_on_disk.size() - 9] ^= 0x10;  // the last layer's values at the last position
        file_write_atomic(file, bytes_on_disk);
      }
      cache.clear_row(0);  // as the generator hands a row to load_prefix: empty, its old bytes still there
      const KvSnapshotLoad damaged = kv_snapshot_load(file, cache, 0, next.prompt, "identity");
      CHECK(damaged.positions == 0);
      CHECK(damaged.why_not.find("checksum does not match") != std::string::npos);
      cache.advance(n_good, std::vector<std::int64_t>{0});
      cache.read_row(4, 0, n_good, k_after.data(), v_after.data());
      CHECK(k_after == k_before);
      CHECK(v_after == v_before);
    }
  }
}

// KvCache::copy_prefix: positions of one row copied into an empty one are the source's bytes, whole or
// spilled, f32 or bf16; the target then continues as if it had prefilled them itself: the logits of its
// next piece are bit for bit those of a row that prefilled the same pieces. Bad rows and ranges are refused.
TEST_CASE("copy_prefix: the source row's bytes, and the logits of a row that prefilled them") {
  const TinyModel& t = tiny(5);
  const model::LlamaConfig& c = t.model.config;
  const std::int64_t V = c.vocab_size;
  const std::vector<std::int32_t> prompt =
      request("// Returns the running sum of v.\nstd::vector<long> prefix_sum(const std::vector<int>& v) {\n", 1)
          .prompt;
  const auto P = static_cast<std::int64_t>(prompt.size());
  const std::int64_t n = P - 5;  // shared; the rest differs
  REQUIRE(n > 8);
  std::vector<std::int32_t> other(prompt.begin(), prompt.begin() + n);
  for (const std::int32_t id : {17, 3, 99, 250, 4}) other.push_back(id);
  auto forward = [&](model::KvCache& cache, std::span<const std::int32_t> ids_v, std::int64_t row) {
    Tensor ids = Tensor::empty({1, std::ssize(ids_v)}, DType::I32);
    std::copy(ids_v.begin(), ids_v.end(), ids.data<std::int32_t>());
    const Tensor logits =
        model::llama_forward(t.model, ids, &cache, {.last_position_only = true, .cache_rows = {&row, 1}});
    return std::vector<float>(logits.data<float>(), logits.data<float>() + V);
  };
  for (const DType dtype : {DType::F32, DType::BF16}) {
    for (const std::int64_t device_layers : {std::int64_t{-1}, std::int64_t{0}, std::int64_t{3}}) {
      CAPTURE(dtype_name(dtype));
      CAPTURE(device_layers);
      const model::KvPlacement place{.device_layers = device_layers, .dtype = dtype};
      // Reference: `other` prefilled in the pieces [0, n) and [n, P) in a cache of its own.
      model::KvCache ref(c, 1, 64, 1, host_allocator(), place);
      forward(ref, std::span(other).first(static_cast<std::size_t>(n)), 0);
      const std::vector<float> want = forward(ref, std::span(other).subspan(static_cast<std::size_t>(n)), 0);

      model::KvCache cache(c, 3, 64, 1, host_allocator(), place);
      forward(cache, std::span(prompt).first(static_cast<std::size_t>(n)), 0);
      forward(cache, std::span(prompt).subspan(static_cast<std::size_t>(n)), 0);
      cache.copy_prefix(0, 2, 0, n);
      cache.advance(n, std::vector<std::int64_t>{2});
      for (const int layer : {0, 3, 4}) {
        CAPTURE(layer);
        std::vector<char> k0(cache.row_bytes(n)), v0(k0.size()), k2(k0.size()), v2(k0.size());
        cache.read_row(layer, 0, n, k0.data(), v0.data());
        cache.read_row(layer, 2, n, k2.data(), v2.data());
        CHECK(k2 == k0);
        CHECK(v2 == v0);
      }
      CHECK(forward(cache, std::span(other).subspan(static_cast<std::size_t>(n)), 2) == want);

      // A row cleared keeps its bytes: copied from there, the next sequence continues the same way.
      cache.clear_row(0);
      cache.clear_row(2);
      cache.copy_prefix(0, 1, 0, n);
      cache.advance(n, std::vector<std::int64_t>{1});
      CHECK(forward(cache, std::span(other).subspan(static_cast<std::size_t>(n)), 1) == want);

      CHECK_THROWS_WITH_AS(cache.copy_prefix(2, 1, 0, 4), doctest::Contains("row 1 must be empty"), ShapeError);
      CHECK_THROWS_WITH_AS(cache.copy_prefix(2, 2, 0, 4), doctest::Contains("two different rows"), ShapeError);
      CHECK_THROWS_WITH_AS(cache.copy_prefix(1, 3, 0, 4), doctest::Contains("two different rows of 0..2"), ShapeError);
      CHECK_THROWS_WITH_AS(cache.copy_prefix(1, 2, 0, 65), doctest::Contains("positions [0, 65) of a row holding 64"),
                           ShapeError);
    }
  }
}

// Prefix sharing in the scheduler (GenerateOptions::share_prefixes): prompts that start alike take the
// shared positions from the row that holds them (one in flight, or the last sequence of their own row)
// and get the tokens and texts of a run without sharing, whole or spilled, f32 or bf16, in any batch;
// cached_prompt_tokens says how many positions each took, at most all but the prompt's last token. A row
// keeps only its last sequence's positions: what another prompt overwrote is prefilled again.
TEST_CASE("prompts that start alike share their prefix's KV cache and get the tokens of prompts prefilled whole") {
  const std::string head =
      "// Returns the running sum of v.\nstd::vector<long> prefix_sum(const std::vector<int>& v) {\n"
      "  std::vector<long> out(v.size());\n  long s = 0;\n";
  std::vector<GenerationRequest> reqs;
  reqs.push_back(request(head + "  for (std::size_t i = 0; i < v.size(); ++i) {", 12));
  reqs.push_back(reqs[0]);  // the same prompt: all but its last token shared
  reqs.push_back(request(head + "  for (int x : v) out.push_back(s += x);", 9, 0.8, 5));
  reqs.push_back(request("fn main() {", 6));
  reqs.push_back(request(head + "  return out;\n}", 7));
  auto common = [](const std::vector<std::int32_t>& a, const std::vector<std::int32_t>& b) {
    return static_cast<std::int64_t>(
        std::mismatch(a.begin(), a.begin() + std::min(a.size(), b.size()), b.begin()).first - a.begin());
  };
  const std::int64_t shared_head = common(reqs[0].prompt, reqs[2].prompt);
  REQUIRE(shared_head > 20);
  const std::int64_t shared_last =
      std::max(common(reqs[0].prompt, reqs[4].prompt), common(reqs[2].prompt, reqs[4].prompt));
  REQUIRE(shared_last > 20);
  for (const DType dtype : {DType::F32, DType::BF16}) {
    for (const std::int64_t device_layers : {std::int64_t{-1}, std::int64_t{2}}) {
      CAPTURE(dtype_name(dtype));
      CAPTURE(device_layers);
      GenerateOptions opts{
          .prefill_chunk = 16, .kv_device_layers = device_layers, .kv_dtype = dtype, .share_prefixes = false};
      const BatchRun alone = run_batch(reqs, 1, opts, 5);
      for (std::size_t i = 0; i < reqs.size(); ++i) CHECK(alone.out.at(i).cached_prompt_tokens == 0);
      opts.share_prefixes = true;
      for (const std::int64_t batch_size : {1, 2, 3}) {
        CAPTURE(batch_size);
        const BatchRun shared = run_batch(reqs, batch_size, opts, 5);
        for (std::size_t i = 0; i < reqs.size(); ++i) {
          CAPTURE(i);
          check_same(shared.out.at(i), alone.out.at(i));
          CHECK(shared.out.at(i).cached_prompt_tokens < std::ssize(reqs[i].prompt));
        }
        // The first prompt has no one to share with; the second is the first again; the third and fifth
        // share the head with a row that holds it (in flight, or the last sequence of their row).
        CHECK(shared.out.at(0).cached_prompt_tokens == 0);
        CHECK(shared.out.at(1).cached_prompt_tokens == std::ssize(reqs[1].prompt) - 1);
        CHECK(shared.out.at(2).cached_prompt_tokens == shared_head);
        CHECK(shared.out.at(3).cached_prompt_tokens == 1);  // the BOS token every prompt starts with
        // With one row, the fourth prompt has replaced the head there by the time the fifth comes.
        if (batch_size == 1) CHECK(shared.out.at(4).cached_prompt_tokens == 1);
        else CHECK(shared.out.at(4).cached_prompt_tokens >= shared_last);
      }
    }
  }
}
