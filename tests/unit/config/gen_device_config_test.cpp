// The device keys of the adapt_gen job schema (its other keys: tests/unit/generate/gen_config_test.cpp):
// inputs/prompts.toml gives the documented defaults; [runtime] device ("cpu", "cuda", "cuda:N") and
// weights_dtype ("bf16", "f32") take exactly those values, anything else is an error naming the key
// and the accepted values; a GPU with tp or pp > 1 is refused naming the keys; the printed job and
// --help carry both keys.
#include <doctest/doctest.h>

#include "config/config_binder.h"
#include "config/config_printer.h"
#include "config/gen_config_schema.h"
#include "core/error.h"
#include "tests/support/test_support.h"

using namespace adapt;
namespace fs = std::filesystem;

namespace {

const fs::path kExample = test::source_dir() / "inputs/prompts.toml";

generate::GenJob load_example(const std::vector<std::string>& sets = {}) {
  return config::load(kExample, config::gen_job_schema(), sets);
}

}  // namespace

TEST_CASE("inputs/prompts.toml: the device is the CPU, device weights would be bf16") {
  const generate::GenJob j = load_example();
  CHECK(j.prompts.size() == 5);
  CHECK(j.runtime.batch_size == 8);
  CHECK(j.runtime.device == "cpu");
  CHECK(j.runtime.weights_dtype == DType::BF16);
  CHECK(j.parallel.tp == 1);
  CHECK(j.parallel.pp == 1);
}

TEST_CASE("gen_device_parse takes cpu, cuda and cuda:N only") {
  using generate::gen_device_parse;
  REQUIRE(gen_device_parse("cpu").has_value());
  CHECK_FALSE(gen_device_parse("cpu")->cuda);
  REQUIRE(gen_device_parse("cuda").has_value());
  CHECK(gen_device_parse("cuda")->cuda);
  CHECK_FALSE(gen_device_parse("cuda")->index.has_value());
  REQUIRE(gen_device_parse("cuda:0").has_value());
  CHECK(gen_device_parse("cuda:0")->index == 0);
  CHECK(gen_device_parse("cuda:7")->index == 7);
  CHECK(gen_device_parse("cuda:12")->index == 12);
  for (const char* bad : {"", "gpu", "CUDA", "Cpu", "cuda:", "cuda:x", "cuda:-1", "cuda:+1", "cuda:1x", "cuda: 1",
                          "cuda:1.0", "cuda0", "cuda:99999999999", "cpu:0"}) {
    CAPTURE(bad);
    CHECK_FALSE(gen_device_parse(bad).has_value());
  }
}

TEST_CASE("runtime.device and runtime.weights_dtype: the accepted values parse, others name the key") {
  const generate::GenJob a = load_example({"runtime.device=cuda", "runtime.weights_dtype=f32"});
  CHECK(a.runtime.device == "cuda");
  CHECK(a.runtime.weights_dtype == DType::F32);
  CHECK(load_example({"runtime.device=\"cuda:1\""}).runtime.device == "cuda:1");
  CHECK(load_example({"runtime.weights_dtype=bf16"}).runtime.weights_dtype == DType::BF16);

  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "CUDA"}) {
    CAPTURE(bad);
    const std::string want = "runtime.device = \"" + std::string(bad) + "\" must be \"cpu\", \"cuda\" or \"cuda:N\"";
    CHECK_THROWS_WITH_AS(load_example({std::string("runtime.device=\"") + bad + "\""}), doctest::Contains(want.c_str()),
                         ConfigError);
  }
  CHECK_THROWS_WITH_AS(load_example({"runtime.device=0"}), doctest::Contains("runtime.device"), ConfigError);
  for (const char* bad : {"f16", "fp32", "i32"}) {
    CAPTURE(bad);
    const std::string want = "runtime.weights_dtype = \"" + std::string(bad) + "\" must be one of \"bf16\", \"f32\"";
    CHECK_THROWS_WITH_AS(load_example({std::string("runtime.weights_dtype=") + bad}), doctest::Contains(want.c_str()),
                         ConfigError);
  }
}

TEST_CASE("a GPU takes tensor and pipeline parallelism") {
  for (const char* device : {"cuda", "cuda:0"}) {
    for (const char* layout : {"parallel.tp=2", "parallel.pp=2"}) {
      CAPTURE(device);
      CAPTURE(layout);
      const generate::GenJob j = load_example({std::string("runtime.device=\"") + device + "\"", layout});
      CHECK(j.runtime.device == device);
      CHECK(j.parallel.tp * j.parallel.pp == 2);
    }
  }
  // On the CPU both stay available.
  const generate::GenJob cpu = load_example({"parallel.tp=2", "parallel.pp=2"});
  CHECK(cpu.parallel.tp == 2);
  CHECK(cpu.parallel.pp == 2);
}

TEST_CASE("the printed job and --help carry runtime.device and runtime.weights_dtype") {
  const generate::GenJob j = load_example({"runtime.device=\"cuda:1\"", "runtime.weights_dtype=f32"});
  const std::string toml = config::to_toml(j, config::gen_job_schema());
  CHECK(toml.find("device = \"cuda:1\"") != std::string::npos);
  CHECK(toml.find("weights_dtype = \"f32\"") != std::string::npos);
  const std::string help = config::help(config::gen_job_schema());
  CHECK(help.find("runtime.device") != std::string::npos);
  CHECK(help.find("runtime.weights_dtype") != std::string::npos);
  CHECK(help.find("cuda:N") != std::string::npos);
}

// runtime.attention_dtype and runtime.kv_cache_dtype: "auto" (the example's and the default) resolves
// by the device and the weights; the explicit values are kept; others name the key.
TEST_CASE("runtime.attention_dtype and runtime.kv_cache_dtype: auto and the explicit values") {
  const generate::GenJob j = load_example();
  CHECK(j.runtime.attention_dtype == model::AttentionDtype::Auto);
  CHECK(j.runtime.kv_cache_dtype == generate::KvCacheDtype::Auto);
  CHECK(generate::GenRuntime{}.kv_cache_dtype == generate::KvCacheDtype::Auto);
  using generate::kv_cache_dtype_for;
  CHECK(kv_cache_dtype_for(j.runtime, /*on_gpu=*/true) == DType::BF16);  // bf16 weights on a GPU
  CHECK(kv_cache_dtype_for(j.runtime, /*on_gpu=*/false) == DType::F32);  // the CPU
  CHECK(kv_cache_dtype_for(load_example({"runtime.weights_dtype=f32"}).runtime, true) == DType::F32);
  // On the CPU, bf16 where attention computes in bf16 products: "auto" with cpu_matmul_dtype bf16, or "bf16".
  const generate::GenJob cpu_bf16 = load_example({"runtime.cpu_matmul_dtype=bf16"});
  CHECK(kv_cache_dtype_for(cpu_bf16.runtime, false) == DType::BF16);
  CHECK(kv_cache_dtype_for(load_example({"runtime.cpu_matmul_dtype=bf16", "runtime.attention_dtype=f32"}).runtime,
                           false) == DType::F32);
  CHECK(kv_cache_dtype_for(load_example({"runtime.attention_dtype=bf16"}).runtime, false) == DType::BF16);
  CHECK(kv_cache_dtype_for(load_example({"runtime.cpu_matmul_dtype=bf16", "runtime.kv_cache_dtype=f32"}).runtime,
                           false) == DType::F32);
  const generate::GenJob f32 = load_example({"runtime.kv_cache_dtype=f32", "runtime.attention_dtype=f32"});
  CHECK(kv_cache_dtype_for(f32.runtime, true) == DType::F32);
  CHECK(f32.runtime.attention_dtype == model::AttentionDtype::F32);
  const generate::GenJob bf16 = load_example({"runtime.kv_cache_dtype=bf16", "runtime.attention_dtype=bf16"});
  CHECK(kv_cache_dtype_for(bf16.runtime, false) == DType::BF16);
  CHECK(bf16.runtime.attention_dtype == model::AttentionDtype::BF16);
  const std::string toml = config::to_toml(bf16, config::gen_job_schema());
  CHECK(toml.find("kv_cache_dtype = \"bf16\"") != std::string::npos);
  CHECK(toml.find("attention_dtype = \"bf16\"") != std::string::npos);
  const char* attention_f16 = "runtime.attention_dtype = \"f16\" must be one of \"auto\", \"bf16\", \"f32\"";
  CHECK_THROWS_WITH_AS(load_example({"runtime.attention_dtype=f16"}), doctest::Contains(attention_f16), ConfigError);
  const char* kv_f16 = "runtime.kv_cache_dtype = \"f16\" must be one of \"auto\", \"f32\", \"bf16\"";
  CHECK_THROWS_WITH_AS(load_example({"runtime.kv_cache_dtype=f16"}), doctest::Contains(kv_f16), ConfigError);
}

// runtime.cpu_matmul_dtype: f32 (the default, the reference) or bf16, in both jobs' schemas; others name
// the key and the values.
TEST_CASE("runtime.cpu_matmul_dtype: f32 by default, bf16 on request, other values refused") {
  CHECK(load_example().runtime.cpu_matmul_dtype == DType::F32);
  CHECK(generate::GenRuntime{}.cpu_matmul_dtype == DType::F32);
  const generate::GenJob bf16 = load_example({"runtime.cpu_matmul_dtype=bf16"});
  CHECK(bf16.runtime.cpu_matmul_dtype == DType::BF16);
  CHECK(config::to_toml(bf16, config::gen_job_schema()).find("cpu_matmul_dtype = \"bf16\"") != std::string::npos);
  const char* f16 = "runtime.cpu_matmul_dtype = \"f16\" must be one of \"f32\", \"bf16\"";
  CHECK_THROWS_WITH_AS(load_example({"runtime.cpu_matmul_dtype=f16"}), doctest::Contains(f16), ConfigError);
  CHECK(config::help(config::gen_job_schema()).find("runtime.cpu_matmul_dtype") != std::string::npos);
}
