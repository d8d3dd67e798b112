// TOML job files (config/): toml++'s parser, then the schema binding of the three kinds of file
// adapt reads (training job, generation job, model recipe): types, ranges, unknown keys, paths.
// The input's first byte picks the schema; the rest is the file.
#include "config/config_binder.h"
#include "config/gen_config_schema.h"
#include "config/model_recipe_schema.h"
#include "config/train_config_schema.h"
#include "core/file.h"
#include "tests/fuzz/fuzz_target.h"

using namespace adapt;
namespace fs = std::filesystem;

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  // The examples in inputs/ (run by CTest, which sets ADAPT_SOURCE_DIR).
  const char* src = std::getenv("ADAPT_SOURCE_DIR");
  const fs::path inputs = fs::path(src != nullptr ? src : ".") / "inputs";
  return {std::string(1, '\0') + file_read_text(inputs / "train.toml"),
          std::string(1, '\1') + file_read_text(inputs / "prompts.toml"),
          std::string(1, '\2') + file_read_text(inputs / "models/tiny.toml")};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  fuzz::refuse_ok([&] {
    switch (data[0] % 3) {
      case 0: (void)config::parse_string(text, "/jobs/train.toml", config::train_config_schema()); break;
      case 1: (void)config::parse_string(text, "/jobs/prompts.toml", config::gen_job_schema()); break;
      default: (void)config::parse_string(text, "/jobs/tiny.toml", config::model_recipe_schema()); break;
    }
  });
  return 0;
}
