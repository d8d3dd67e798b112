// Adapter folders as downloaded from a hub (adapters/adapter_load): the adapter_config.json of a PEFT
// LoRA folder and of an AdapterHub bottleneck folder, each beside the valid weights file its seed
// was exported with, so that the config's JSON, its keys and values, and their agreement with the
// weights and the model are what is mutated. The first byte picks the folder.
#include <array>
#include <fstream>

#include "adapters/adapter_files.h"
#include "adapters/adapter_set.h"
#include "core/file.h"
#include "model/llama_config.h"
#include "tests/fuzz/fuzz_target.h"

using namespace adapt;
namespace fs = std::filesystem;

namespace {

const model::LlamaConfig& tiny_model() {
  static const model::LlamaConfig c = model::llama_config_preset("tiny");
  return c;
}

/// The two seed folders, exported once per process: [0] PEFT LoRA, [1] AdapterHub bottleneck.
const std::array<fs::path, 2>& seed_dirs() {
  static const std::array<fs::path, 2> dirs = [] {
    const fs::path root = fuzz::scratch_file("", "unused").parent_path();
    std::array<fs::path, 2> d{root / "adapter-peft", root / "adapter-hub"};
    adapters::AdapterConfig lora;
    lora.kind = adapters::AdapterKind::Lora;
    lora.lora.r = 4;
    adapters::AdapterConfig bottleneck;
    bottleneck.kind = adapters::AdapterKind::Bottleneck;
    bottleneck.bottleneck.size = 8;
    adapters::adapter_export(adapters::AdapterSet(tiny_model(), lora), d[0]);
    adapters::adapter_export(adapters::AdapterSet(tiny_model(), bottleneck), d[1]);
    return d;
  }();
  return dirs;
}

}  // namespace

std::vector<std::string> adapt::fuzz::fuzz_seeds() {
  std::vector<std::string> seeds;
  for (std::size_t i = 0; i < seed_dirs().size(); ++i) {
    std::string seed(1, static_cast<char>(i));  // appended, not `+`: GCC 12 misreads that as an overlapping copy
    seed += file_read_text(seed_dirs()[i] / "adapter_config.json");
    seeds.push_back(std::move(seed));
  }
  return seeds;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const fs::path& dir = seed_dirs()[data[0] % 2];
  std::ofstream(dir / "adapter_config.json", std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data) + 1, static_cast<std::streamsize>(size - 1));
  fuzz::refuse_ok([&] { (void)adapters::adapter_load(dir, tiny_model()); });
  return 0;
}
