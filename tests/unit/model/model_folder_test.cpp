// Random models written in HF layout and read back through the safetensors reader; model_check on
// good and broken folders.
#include <doctest/doctest.h>

#include <cmath>
#include <fstream>

#include "core/error.h"
#include "core/file.h"
#include "io/sharded.h"
#include "model/model_folder.h"
#include "model/weight_names.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::model;

namespace {
LlamaConfig small_config() {
  LlamaConfig c = llama_config_preset("tiny");
  c.vocab_size = 300;
  c.bos_token_id = 256;
  c.eos_token_ids = {257};
  return c;
}
}  // namespace

TEST_CASE("random weights: deterministic per seed, N(0, 0.02^2), norms 1") {
  std::vector<float> a(100000), b(100000), c(100000);
  fill_normal(a.data(), 100000, 0.02f, 7, 11);
  fill_normal(b.data(), 100000, 0.02f, 7, 11);
  fill_normal(c.data(), 100000, 0.02f, 8, 11);
  CHECK(a == b);
  CHECK(a != c);
  double mean = 0, var = 0;
  for (float x : a) mean += x;
  mean /= a.size();
  for (float x : a) var += (x - mean) * (x - mean);
  var /= a.size();
  CHECK(std::abs(mean) < 3 * 0.02 / std::sqrt(100000.0) * 2);
  CHECK(std::sqrt(var) == doctest::Approx(0.02).epsilon(0.02));
}

TEST_CASE("a random model round-trips through the files, sharded when asked") {
  test::TempDir dir;
  LlamaConfig cfg = small_config();
  RandomModelOptions opts;
  opts.seed = 3;
  opts.dtype = DType::F32;
  opts.max_shard_bytes = 100'000;  // forces several shards
  random_model_write(dir.path(), cfg, opts);
  CHECK(fs::exists(dir / "model.safetensors.index.json"));
  ModelCheckReport r = model_check(dir.path());
  CHECK(r.shards.size() > 1);
  CHECK(r.params_in_files == llama_param_counts(cfg).total);
  CHECK(r.dtypes == std::vector<std::string>{"F32"});

  io::ShardedSafetensors st(dir.path());
  Tensor norm = st.read("model.layers.1.input_layernorm.weight", DType::F32);
  for (std::int64_t i = 0; i < norm.numel(); ++i) CHECK(norm.data<float>()[i] == 1.0f);
  Tensor wq = st.read("model.layers.0.self_attn.q_proj.weight", DType::F32);
  double ss = 0;
  for (std::int64_t i = 0; i < wq.numel(); ++i) ss += wq.data<float>()[i] * wq.data<float>()[i];
  CHECK(std::sqrt(ss / wq.numel()) == doctest::Approx(0.02).epsilon(0.1));

  // Same seed, bf16, one shard: the same values rounded, independent of sharding.
  test::TempDir dir2;
  opts.dtype = DType::BF16;
  opts.max_shard_bytes = 1ull << 40;
  random_model_write(dir2.path(), cfg, opts);
  CHECK(fs::exists(dir2 / "model.safetensors"));
  CHECK_FALSE(fs::exists(dir2 / "model.safetensors.index.json"));
  io::ShardedSafetensors st2(dir2.path());
  Tensor wq2 = st2.read("model.layers.0.self_attn.q_proj.weight", DType::F32);
  for (std::int64_t i = 0; i < wq.numel(); i += 97)
    CHECK(wq2.data<float>()[i] == bf16_to_f32(f32_to_bf16(wq.data<float>()[i])));
}

TEST_CASE("model_check names what is wrong") {
  test::TempDir dir;
  LlamaConfig cfg = small_config();
  random_model_write(dir.path(), cfg, RandomModelOptions{});
  CHECK_NOTHROW(model_check(dir.path()));

  SUBCASE("config from another model: shapes differ") {
    LlamaConfig other = cfg;
    other.intermediate_size = 200;
    file_write_atomic(dir / "config.json", llama_config_to_json(other));
    CHECK_THROWS_WITH_AS(model_check(dir.path()), doctest::Contains("model.layers.0.mlp.gate_proj.weight"), ShapeError);
  }
  SUBCASE("more layers in the config than in the weights") {
    LlamaConfig other = cfg;
    other.n_layers = 3;
    file_write_atomic(dir / "config.json", llama_config_to_json(other));
    CHECK_THROWS_WITH_AS(model_check(dir.path()), doctest::Contains("'model.layers.2.input_layernorm.weight'"),
                         IoError);
  }
  SUBCASE("tied in the config, untied in the files") {
    LlamaConfig other = cfg;
    other.tie_word_embeddings = true;
    file_write_atomic(dir / "config.json", llama_config_to_json(other));
    ModelCheckReport r = model_check(dir.path());
    REQUIRE(r.notes.size() >= 1);
    CHECK(r.notes[0].find("lm_head.weight") != std::string::npos);
  }
  SUBCASE("untied in the config, lm_head missing") {
    test::TempDir tied_dir;
    LlamaConfig tied = cfg;
    tied.tie_word_embeddings = true;
    random_model_write(tied_dir.path(), tied, RandomModelOptions{});
    file_write_atomic(tied_dir / "config.json", llama_config_to_json(cfg));
    CHECK_THROWS_WITH_AS(model_check(tied_dir.path()), doctest::Contains("tie_word_embeddings"), IoError);
  }
  SUBCASE("no config.json") {
    fs::remove(dir / "config.json");
    CHECK_THROWS_WITH_AS(model_check(dir.path()), doctest::Contains("config.json' not found"), IoError);
  }
}
