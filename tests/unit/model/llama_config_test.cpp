// LlamaConfig parsing and arithmetic against the published numbers (SPEC-llama.md §2.2, §7.3) and the
// transformers rope-scaling regression vector (§3.3).
#include <doctest/doctest.h>

#include <cmath>

#include "core/error.h"
#include "model/llama_config.h"
#include "model/weight_names.h"

using namespace adapt;
using namespace adapt::model;

TEST_CASE("parameter and tensor counts of the real presets match the published ones") {
  struct Case {
    const char* preset;
    std::int64_t params;
    std::int64_t tensors;
  };
  const Case cases[] = {{"llama-3.1-8b", 8'030'261'248, 291},
                        {"llama-3.1-70b", 70'553'706'496, 723},
                        {"llama-3.1-405b", 405'853'388'800, 1137},
                        {"llama-2-7b", 6'738'415'616, 291}};
  for (const auto& c : cases) {
    CAPTURE(c.preset);
    LlamaConfig cfg = llama_config_preset(c.preset);
    ParamCounts p = llama_param_counts(cfg);
    CHECK(p.total == c.params);
    CHECK(p.n_tensors == c.tensors);
    CHECK(static_cast<std::int64_t>(llama_weight_specs(cfg).size()) == c.tensors);
    std::int64_t sum = 0;
    for (const auto& w : llama_weight_specs(cfg)) sum += w.shape.numel();
    CHECK(sum == c.params);
  }
  ParamCounts p8 = llama_param_counts(llama_config_preset("llama-3.1-8b"));
  CHECK(p8.per_layer == 218'112'000);
  CHECK(p8.embedding == 525'336'576);
  CHECK(p8.total * 2 == 16'060'522'496);  // BF16 bytes = index total_size
}

TEST_CASE("the bench preset is the fixed ~101M shape") {
  LlamaConfig c = llama_config_preset("bench");
  CHECK(c.n_layers == 8);
  CHECK(c.hidden_size == 768);
  CHECK(c.n_heads == 12);
  CHECK(c.n_kv_heads == 4);
  CHECK(c.head_dim == 64);
  CHECK(c.intermediate_size == 2048);
  CHECK(c.vocab_size == 32000);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK(c.rope_theta == 500000.0);
  const std::int64_t total = llama_param_counts(c).total;
  CHECK(total > 99'000'000);
  CHECK(total < 103'000'000);
}

TEST_CASE("the tiny preset exercises GQA and all three llama3 rope bands") {
  LlamaConfig c = llama_config_preset("tiny");
  CHECK(c.n_heads / c.n_kv_heads == 2);
  CHECK(c.rope_scaling.type == RopeType::Llama3);
  CHECK(c.rope_scaling.original_max_position_embeddings < c.max_position_embeddings);
  LlamaConfig plain = c;
  plain.rope_scaling = {};
  auto scaled = rope_inv_freq(c), base = rope_inv_freq(plain);
  int kept = 0, divided = 0, smoothed = 0;
  for (std::size_t i = 0; i < scaled.size(); ++i) {
    if (scaled[i] == base[i]) {
      ++kept;
    } else if (std::abs(scaled[i] - base[i] / 8.0f) <= 1e-7f * base[i]) {
      ++divided;
    } else {
      ++smoothed;
    }
  }
  CHECK(kept >= 1);
  CHECK(divided >= 1);
  CHECK(smoothed >= 1);
}

TEST_CASE("llama3 rope scaling reproduces transformers' regression vector") {
  // transformers tests/utils/test_modeling_rope_utils.py (test_llama3_rope_numerically): head_dim 128,
  // theta 10000, factor 10, original 2048, low 1, high 4.
  LlamaConfig c = llama_config_preset("llama-3.1-8b");
  c.rope_theta = 10000.0;
  c.rope_scaling = {RopeType::Llama3, 10.0, 1.0, 4.0, 2048};
  auto f = rope_inv_freq(c);
  REQUIRE(f.size() == 64);
  const double want[] = {1.0730e-02, 7.7785e-03, 5.6009e-03, 3.9991e-03, 2.8248e-03, 1.9675e-03,
                         1.3449e-03, 8.9549e-04, 5.7363e-04, 3.4539e-04, 2.7384e-04};
  for (int i = 0; i < 11; ++i) {
    CAPTURE(31 + i);
    CHECK(f[static_cast<std::size_t>(31 + i)] == doctest::Approx(want[i]).epsilon(1e-4));
  }
  CHECK(f[0] == 1.0f);
  CHECK(f[1] == doctest::Approx(8.6596e-01).epsilon(1e-4));
  CHECK(f[63] == doctest::Approx(1.1548e-05).epsilon(1e-3));
}

TEST_CASE("config.json with every field round-trips") {
  LlamaConfig c = llama_config_preset("llama-3.1-70b");
  c.tie_word_embeddings = true;
  c.pad_token_id = 128004;
  LlamaConfig back = llama_config_parse(llama_config_to_json(c), "x/config.json");
  CHECK(back.hidden_size == 8192);
  CHECK(back.n_kv_heads == 8);
  CHECK(back.head_dim == 128);
  CHECK(back.eos_token_ids == std::vector<std::int64_t>{128001, 128008, 128009});
  CHECK(back.rope_scaling.type == RopeType::Llama3);
  CHECK(back.rope_scaling.original_max_position_embeddings == 8192);
  CHECK(back.tie_word_embeddings);
  CHECK(back.pad_token_id == 128004);
  CHECK(back.torch_dtype == DType::BF16);
  CHECK(back.rms_norm_eps == 1e-5);
}

TEST_CASE("HF defaults, old and new spellings") {
  // A Llama 2 style file: no num_key_value_heads, no head_dim, int eos, rope_scaling "type" alias.
  const char* j = R"({"model_type":"llama","hidden_size":4096,"intermediate_size":11008,"num_hidden_layers":32,
    "num_attention_heads":32,"vocab_size":32000,"eos_token_id":2,"torch_dtype":"float16",
    "rope_scaling":{"type":"linear","factor":2.0}})";
  LlamaConfig c = llama_config_parse(j, "l2/config.json");
  CHECK(c.n_kv_heads == 32);
  CHECK(c.head_dim == 128);
  CHECK(c.eos_token_ids == std::vector<std::int64_t>{2});
  CHECK(c.rope_theta == 10000.0);
  CHECK(c.rms_norm_eps == 1e-6);
  CHECK(c.rope_scaling.type == RopeType::Linear);
  CHECK(c.torch_dtype == DType::F16);
  // transformers v5: rope_parameters and dtype.
  const char* v5 = R"({"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":1,
    "num_attention_heads":4,"num_key_value_heads":1,"vocab_size":100,"bos_token_id":1,"eos_token_id":[2,3],
    "dtype":"bfloat16","rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,
    "low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":32}})";
  LlamaConfig c5 = llama_config_parse(v5, "v5/config.json");
  CHECK(c5.rope_theta == 500000.0);
  CHECK(c5.rope_scaling.type == RopeType::Llama3);
  CHECK(c5.head_dim == 16);
  CHECK(c5.eos_token_ids.size() == 2);
}

TEST_CASE("bad config.json: missing fields, wrong types, impossible values") {
  const std::string ok = R"("model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":1,)"
                         R"("num_attention_heads":4,"vocab_size":100)";
  auto parse = [](const std::string& body) { return llama_config_parse("{" + body + "}", "m/config.json"); };
  CHECK_NOTHROW(parse(ok));
  CHECK_THROWS_WITH_AS(parse(R"("model_type":"llama","intermediate_size":128,"num_hidden_layers":1,)"
                             R"("num_attention_heads":4,"vocab_size":100)"),
                       doctest::Contains("m/config.json: required field 'hidden_size' is missing"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(ok + R"(,"num_key_value_heads":"2")"),
                       doctest::Contains("field 'num_key_value_heads' must be an integer, got a string"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(ok + R"(,"rms_norm_eps":"small")"), doctest::Contains("rms_norm_eps"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(ok + R"(,"tie_word_embeddings":1)"), doctest::Contains("true or false"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(ok + R"(,"num_key_value_heads":3)"), doctest::Contains("not a multiple"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(ok + R"(,"eos_token_id":[1,"x"])"), doctest::Contains("eos_token_id"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(ok + R"(,"eos_token_id":500)"), doctest::Contains("outside the vocabulary"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(ok + R"(,"rope_scaling":{"rope_type":"llama3","factor":8.0})"),
                       doctest::Contains("original_max_position_embeddings"), ConfigError);
  CHECK_THROWS_WITH_AS(parse(ok + R"(,"rope_scaling":{"rope_type":"yarn","factor":8.0})"),
                       doctest::Contains("'yarn' is not supported"), UnsupportedError);
  CHECK_THROWS_WITH_AS(llama_config_parse(R"({"model_type":"mistral"})", "m/config.json"),
                       doctest::Contains("model_type is 'mistral'"), UnsupportedError);
  CHECK_THROWS_WITH_AS(llama_config_parse("{\"model_type\": \"llama\",", "m/config.json"),
                       doctest::Contains("m/config.json: not valid JSON"), ConfigError);
  CHECK_THROWS_WITH_AS(llama_config_parse("[1,2]", "m/config.json"), doctest::Contains("JSON object"), ConfigError);
  // A number JSON cannot hold is a damaged file too (cpu.fuzz_llama_config found it escaping).
  CHECK_THROWS_WITH_AS(llama_config_parse(R"({"model_type": "llama", "hidden_size": 1e309})", "m/config.json"),
                       doctest::Contains("m/config.json: not valid JSON"), ConfigError);
}

TEST_CASE("unknown presets suggest the closest name") {
  CHECK_THROWS_WITH_AS(llama_config_preset("llama-3.1-7b"), doctest::Contains("did you mean 'llama-3.1-8b'"),
                       ConfigError);
}
