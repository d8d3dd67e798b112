// Model-level checks that need no reference data: loading errors name the file, tensor and fix; the
// KV cache refuses what does not fit before computing; the forward pass is deterministic, allocation-
// free once its workspace is warm, and a batch row does not depend on the other rows.
#include <doctest/doctest.h>

#include <cstring>

#include "core/error.h"
#include "core/file.h"
#include "model/llama_forward.h"
#include "model/model_folder.h"
#include "tests/support/test_support.h"

using namespace adapt;
namespace fs = std::filesystem;

namespace {

model::LlamaConfig small_config() {
  model::LlamaConfig c = model::llama_config_preset("tiny");
  c.vocab_size = 300;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

void write_model(const fs::path& dir, const model::LlamaConfig& cfg) {
  model::RandomModelOptions o;
  o.seed = 11;
  o.dtype = DType::BF16;
  model::random_model_write(dir, cfg, o);
}

Tensor ids_of(std::int64_t B, std::int64_t T, std::int64_t V) {
  Tensor ids = Tensor::empty({B, T}, DType::I32, host_allocator(), "ids");
  for (std::int64_t i = 0; i < B * T; ++i) ids.data<std::int32_t>()[i] = static_cast<std::int32_t>((i * 37 + 5) % V);
  return ids;
}

}  // namespace

TEST_CASE("loading names the missing or misshapen tensor and says what to do") {
  test::TempDir dir;
  const model::LlamaConfig cfg = small_config();
  write_model(dir.path(), cfg);

  SUBCASE("config.json claims a layer the files do not have") {
    model::LlamaConfig more = cfg;
    more.n_layers = 3;
    file_write_atomic(dir / "config.json", model::llama_config_to_json(more));
    CHECK_THROWS_WITH_AS(model::llama_model_load(dir.path()),
                         doctest::Contains("tensor 'model.layers.2.input_layernorm.weight' (64,) is missing"), IoError);
  }
  SUBCASE("config.json says untied but the files have no lm_head") {
    test::TempDir tied_dir;
    model::LlamaConfig tied = cfg;
    tied.tie_word_embeddings = true;
    write_model(tied_dir.path(), tied);
    file_write_atomic(tied_dir / "config.json", model::llama_config_to_json(cfg));
    CHECK_THROWS_WITH_AS(model::llama_model_load(tied_dir.path()), doctest::Contains("\"tie_word_embeddings\": true"),
                         IoError);
  }
  SUBCASE("a shape that does not match config.json") {
    model::LlamaConfig wider = cfg;
    wider.intermediate_size = 192;
    file_write_atomic(dir / "config.json", model::llama_config_to_json(wider));
    CHECK_THROWS_WITH_AS(model::llama_model_load(dir.path()),
                         doctest::Contains("'model.layers.0.mlp.gate_proj.weight' has shape (176, 64)"), ShapeError);
  }
}

TEST_CASE("weights: shapes, tying, storage") {
  test::TempDir dir;
  model::LlamaConfig cfg = small_config();
  cfg.tie_word_embeddings = true;
  write_model(dir.path(), cfg);
  model::LlamaLoadStats stats;
  const model::LlamaModel m = model::llama_model_load(dir.path(), {}, &stats);
  CHECK(m.weights.layers.size() == 2);
  CHECK(m.weights.layers[1].wk.shape() == Shape{cfg.n_kv_heads * cfg.head_dim, cfg.hidden_size});
  CHECK(m.weights.lm_head.raw() == m.weights.embedding.raw());  // tied: one storage
  CHECK(m.weights.embedding.dtype() == DType::F32);
  CHECK(stats.bytes_resident == 2 * stats.bytes_read);  // bf16 widened
  CHECK(m.inv_freq.size() == static_cast<std::size_t>(cfg.head_dim / 2));
  const model::LlamaModel h = model::llama_model_load(dir.path(), {.storage = model::WeightStorage::AsStored});
  CHECK(h.weights.layers[0].w_down.dtype() == DType::BF16);
  CHECK(h.weights.layers[0].attn_norm.dtype() == DType::F32);
}

TEST_CASE("forward: deterministic, batch rows independent, allocation-free once warm, errors before work") {
  test::TempDir dir;
  const model::LlamaConfig cfg = small_config();
  write_model(dir.path(), cfg);
  const model::LlamaModel m = model::llama_model_load(dir.path());
  const std::int64_t V = cfg.vocab_size;
  const Tensor ids = ids_of(3, 21, V);
  ops::Workspace ws;
  const Tensor a = model::llama_forward(m, ids, nullptr, {}, &ws);
  const int allocations = ws.n_allocations();
  const Tensor b = model::llama_forward(m, ids, nullptr, {}, &ws);
  CHECK(ws.n_allocations() == allocations);
  CHECK(std::memcmp(a.raw(), b.raw(), a.size_bytes()) == 0);
  // Row 1 alone gives the same logits as row 1 of the batch.
  Tensor row = Tensor::empty({1, 21}, DType::I32);
  row.copy_from(ids.narrow(0, 1, 1));
  const Tensor one = model::llama_forward(m, row);
  for (std::int64_t i = 0; i < 21 * V; ++i)
    REQUIRE(one.data<float>()[i] == doctest::Approx(a.data<float>()[21 * V + i]).epsilon(1e-5));

  Tensor bad = ids_of(1, 4, V);
  bad.data<std::int32_t>()[2] = static_cast<std::int32_t>(V);
  CHECK_THROWS_WITH_AS(model::llama_forward(m, bad), doctest::Contains("outside the vocabulary"), ShapeError);
  CHECK_THROWS_AS(model::llama_forward(m, Tensor::zeros({4}, DType::I32)), ShapeError);

  model::KvCache cache(cfg, 2, 10);
  CHECK(cache.size_bytes() == model::KvCache::bytes_needed(cfg, 2, 10));
  CHECK_THROWS_WITH_AS(model::llama_forward(m, ids_of(3, 2, V), &cache), doctest::Contains("made for 2 sequences"),
                       ShapeError);
  model::llama_forward(m, ids_of(2, 8, V), &cache);
  CHECK(cache.n_past() == 8);
  CHECK_THROWS_WITH_AS(model::llama_forward(m, ids_of(2, 3, V), &cache), doctest::Contains("KV cache is full"),
                       ShapeError);
  CHECK(cache.n_past() == 8);  // nothing was written
  cache.clear();
  CHECK(cache.n_past() == 0);
}
