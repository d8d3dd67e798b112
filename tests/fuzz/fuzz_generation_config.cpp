// The eos ids of a model folder (model::model_eos_token_ids): generation_config.json's eos_token_id (an
// integer, a list, null or missing), else config.json's. The first byte picks the file the input is:
// 0, generation_config.json beside a valid config.json; 1, config.json alone, also loaded as the
// model's configuration.
#include "model/llama_config.h"
#include "tests/fuzz/fuzz_target.h"

using namespace adapt;
namespace fs = std::filesystem;

namespace {
// Llama 3.1 8B's config.json: a seed of the lone-config case, and the valid config beside each
// generation_config.json input.
const std::string& valid_config() {
  static const std::string text = model::llama_config_to_json(model::llama_config_preset("llama-3.1-8b"));
  return text;
}
}  // namespace

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  // As Meta's Llama 3.1 Instruct folders and adapt_model make write generation_config.json.
  const std::string meta = R"({"bos_token_id": 128000, "do_sample": true, "eos_token_id": [128001, 128008, 128009],
 "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.42.3"})";
  const std::string made = R"({"_from_model_config": true, "bos_token_id": 1, "eos_token_id": 2, "do_sample": true,
 "temperature": 0.6, "top_p": 0.9})";
  const std::string no_eos = R"({"bos_token_id": 128000, "eos_token_id": null, "max_length": 4096})";
  return {std::string(1, '\0') + meta, std::string(1, '\0') + made, std::string(1, '\0') + no_eos,
          std::string(1, '\1') + valid_config()};
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const bool alone = data[0] & 1;
  fs::path dir;
  if (alone) {
    dir = fuzz::scratch_file(text, "config.json").parent_path();
    fs::remove(dir / "generation_config.json");
  } else {
    dir = fuzz::scratch_file(text, "generation_config.json").parent_path();
    (void)fuzz::scratch_file(valid_config(), "config.json");
  }
  fuzz::refuse_ok([&] {
    const std::vector<std::int64_t> ids = model::model_eos_token_ids(dir);
    if (alone) (void)model::llama_config_load(dir);
    for (const std::int64_t id : ids) ADAPT_CHECK(id >= 0, "eos id {} accepted", id);
  });
  return 0;
}
