// The adapt_train job schema: inputs/train.toml parses as documented; the adapter kinds by their TOML
// names, including "lora+bottleneck" as a bare --set value; run.merge and its refusal for bottleneck
// adapters; the help text lists the kinds and the merge key.
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
