// The adapt_train job schema: inputs/train.toml parses as documented; the adapter kinds by their TOML
// names, including "lora+bottleneck" as a bare --set value; run.merge and its refusal for bottleneck
// adapters; the help text lists the kinds and the merge key; [runtime] device ("cpu", "cuda", "cuda:N")
// and weights_dtype ("bf16", "f32") take exactly those values, a GPU with tp or pp > 1 is refused naming
// the keys; train.micro_batch is documented as the sequences of all replicas together; data.inputs are paths
// (the TOML file's folder, or the current directory for --set values).
#include <doctest/doctest.h>

#include "config/config_binder.h"
#include "config/config_printer.h"
#include "config/train_config_schema.h"
#include "core/error.h"
#include "tests/support/test_support.h"

using namespace adapt;
namespace fs = std::filesystem;
using adapt::adapters::AdapterKind;

namespace {

const fs::path kExample = test::source_dir() / "inputs/train.toml";

train::TrainConfig load_example(const std::vector<std::string>& sets = {}) {
  return config::load(kExample, config::train_config_schema(), sets);
}

}  // namespace

TEST_CASE("inputs/train.toml parses; adapter.kind takes lora, bottleneck and lora+bottleneck") {
  const train::TrainConfig c = load_example();
  CHECK(c.adapter.kind == AdapterKind::Lora);
  CHECK(c.adapter.lora.r == 16);
  CHECK_FALSE(c.run.merge);
  CHECK(c.run.dir.filename() == "train-lora");
  CHECK(load_example({"adapter.kind=bottleneck"}).adapter.kind == AdapterKind::Bottleneck);
  // A bare --set value (not valid TOML) is taken as a string: the benchmark scripts' spelling.
  const train::TrainConfig both = load_example({"adapter.kind=lora+bottleneck"});
  CHECK(both.adapter.kind == AdapterKind::LoraBottleneck);
  CHECK(both.adapter.bottleneck.size == 64);
  CHECK(load_example({"adapter.kind=\"lora+bottleneck\""}).adapter.kind == AdapterKind::LoraBottleneck);
  CHECK(config::to_toml(both, config::train_config_schema()).find("kind = \"lora+bottleneck\"") != std::string::npos);
  CHECK_THROWS_WITH_AS(load_example({"adapter.kind=lora+bottlenek"}), doctest::Contains("adapter.kind"), ConfigError);
}

TEST_CASE("data.inputs and data.eval_inputs resolve against the TOML folder, or the current directory with --set") {
  const fs::path folder = kExample.parent_path();
  const train::TrainConfig c = load_example();
  REQUIRE(!c.data.inputs.empty());
  for (const std::string& p : c.data.inputs) {
    CAPTURE(p);
    CHECK(fs::path(p).is_absolute());
    CHECK(p.rfind(folder.lexically_normal().string(), 0) == 0);
  }
  const train::TrainConfig set =
      load_example({"data.inputs=[\"data/a.jsonl\", \"/abs/b\"]", "data.eval_inputs=[\"../e.jsonl\"]"});
  REQUIRE(set.data.inputs.size() == 2);
  CHECK(set.data.inputs[0] == (fs::current_path() / "data/a.jsonl").lexically_normal().string());
  CHECK(set.data.inputs[1] == "/abs/b");
  REQUIRE(set.data.eval_inputs.size() == 1);
  CHECK(set.data.eval_inputs[0] == (fs::current_path() / "../e.jsonl").lexically_normal().string());
}

TEST_CASE("runtime.cpu_matmul_dtype: f32 by default, bf16 on request, other values refused") {
  CHECK(load_example().runtime.cpu_matmul_dtype == DType::F32);
  CHECK(load_example({"runtime.cpu_matmul_dtype=bf16"}).runtime.cpu_matmul_dtype == DType::BF16);
  CHECK_THROWS_WITH_AS(load_example({"runtime.cpu_matmul_dtype=f16"}), doctest::Contains("runtime.cpu_matmul_dtype"),
                       ConfigError);
  CHECK(config::help(config::train_config_schema()).find("runtime.cpu_matmul_dtype") != std::string::npos);
}

TEST_CASE("run.merge: LoRA only, refused with the way out for bottleneck adapters") {
  CHECK(load_example({"run.merge=true"}).run.merge);
  CHECK_THROWS_WITH_AS(load_example({"run.merge=true", "adapter.kind=bottleneck"}),
                       doctest::Contains("run.merge = true (adapt_train --merge) needs adapter.kind = \"lora\""),
                       ConfigError);
  CHECK_THROWS_WITH_AS(load_example({"run.merge=true", "adapter.kind=lora+bottleneck"}),
                       doctest::Contains("<run.dir>/adapter/lora"), ConfigError);
  const std::string help = config::help(config::train_config_schema());
  CHECK(help.find("lora+bottleneck") != std::string::npos);
  CHECK(help.find("run.merge") != std::string::npos);
}

TEST_CASE("[parallel]: tp and pp default to 1, ZeRO-1 is on; bad values name the key") {
  const train::TrainConfig c = load_example();
  CHECK(c.parallel.tp == 1);
  CHECK(c.parallel.pp == 1);
  CHECK(c.parallel.zero1);
  const train::TrainConfig p = load_example({"parallel.tp=2", "parallel.pp=4", "parallel.zero1=false"});
  CHECK(p.parallel.tp == 2);
  CHECK(p.parallel.pp == 4);
  CHECK_FALSE(p.parallel.zero1);
  CHECK(config::to_toml(p, config::train_config_schema()).find("[parallel]") != std::string::npos);
  CHECK_THROWS_WITH_AS(load_example({"parallel.tp=0"}), doctest::Contains("parallel.tp"), ConfigError);
  CHECK_THROWS_WITH_AS(load_example({"parallel.dp=2"}), doctest::Contains("parallel.dp"), ConfigError);
  const std::string help = config::help(config::train_config_schema());
  CHECK(help.find("parallel.tp") != std::string::npos);
  CHECK(help.find("parallel.zero1") != std::string::npos);
}

TEST_CASE("[runtime]: inputs/train.toml trains on the CPU, device weights would be bf16") {
  const train::TrainConfig c = load_example();
  CHECK(c.runtime.device == "cpu");
  CHECK(c.runtime.weights_dtype == DType::BF16);
  // The defaults when the table is left out are the same.
  const train::TrainConfig d;
  CHECK(d.runtime.device == "cpu");
  CHECK(d.runtime.weights_dtype == DType::BF16);
  CHECK(c.runtime.attention_dtype == model::AttentionDtype::Auto);
  CHECK(d.runtime.attention_dtype == model::AttentionDtype::Auto);
}

TEST_CASE("runtime.attention_dtype: auto, bf16 and f32 parse and print; others name the key") {
  CHECK(load_example({"runtime.attention_dtype=bf16"}).runtime.attention_dtype == model::AttentionDtype::BF16);
  const train::TrainConfig f = load_example({"runtime.attention_dtype=f32"});
  CHECK(f.runtime.attention_dtype == model::AttentionDtype::F32);
  CHECK(config::to_toml(f, config::train_config_schema()).find("attention_dtype = \"f32\"") != std::string::npos);
  const char* want = "runtime.attention_dtype = \"tf32\" must be one of \"auto\", \"bf16\", \"f32\"";
  CHECK_THROWS_WITH_AS(load_example({"runtime.attention_dtype=tf32"}), doctest::Contains(want), ConfigError);
}

TEST_CASE("runtime.device and runtime.weights_dtype: the accepted values parse, others name the key") {
  const train::TrainConfig a = load_example({"runtime.device=cuda", "runtime.weights_dtype=f32"});
  CHECK(a.runtime.device == "cuda");
  CHECK(a.runtime.weights_dtype == DType::F32);
  CHECK(load_example({"runtime.device=\"cuda:1\""}).runtime.device == "cuda:1");
  CHECK(load_example({"runtime.device=cuda:0"}).runtime.device == "cuda:0");  // bare --set string
  CHECK(load_example({"runtime.device=cpu"}).runtime.device == "cpu");
  CHECK(load_example({"runtime.weights_dtype=bf16"}).runtime.weights_dtype == DType::BF16);
  const std::string printed = config::to_toml(load_example({"runtime.device=cuda", "runtime.weights_dtype=f32"}),
                                              config::train_config_schema());
  CHECK(printed.find("[runtime]") != std::string::npos);
  CHECK(printed.find("device = \"cuda\"") != std::string::npos);
  CHECK(printed.find("weights_dtype = \"f32\"") != std::string::npos);

  for (const char* bad : {"gpu", "cuda:", "cuda:-1", "CUDA", "cuda:x", "cpu:0"}) {
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
  CHECK_THROWS_WITH_AS(load_example({"runtime.devices=cuda"}), doctest::Contains("did you mean 'device'"), ConfigError);
}

TEST_CASE("a GPU takes any parallel layout: tensor, pipeline and data parallel") {
  for (const char* device : {"cuda", "cuda:0"}) {
    for (const char* layout : {"parallel.tp=2", "parallel.pp=2"}) {
      CAPTURE(device);
      CAPTURE(layout);
      const train::TrainConfig c = load_example({std::string("runtime.device=") + device, layout});
      CHECK(c.runtime.device == device);
      CHECK(c.parallel.tp * c.parallel.pp == 2);
    }
    const train::TrainConfig both =
        load_example({std::string("runtime.device=") + device, "parallel.tp=2", "parallel.pp=2"});
    CHECK(both.parallel.tp == 2);
    CHECK(both.parallel.pp == 2);
  }
  // The CPU too, and a GPU with dp replicas only.
  CHECK(load_example({"parallel.tp=2", "parallel.pp=2"}).parallel.tp == 2);
  CHECK(load_example({"runtime.device=cuda", "parallel.zero1=false"}).runtime.device == "cuda");
}

TEST_CASE("--help documents [runtime] and train.micro_batch as the sequences of all replicas together") {
  const std::string help = config::help(config::train_config_schema());
  CHECK(help.find("runtime.device") != std::string::npos);
  CHECK(help.find("runtime.weights_dtype") != std::string::npos);
  const std::size_t mb = help.find("train.micro_batch");
  REQUIRE(mb != std::string::npos);
  CHECK(help.find("all data-parallel replicas together", mb) < help.find("train.grad_accum", mb));
  CHECK(help.find("Sequences per forward/backward") == std::string::npos);
}
