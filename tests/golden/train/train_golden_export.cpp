// train_golden_export <model_dir> <out_dir>: exports the interop adapters of interop_cases.h for the
// model in <model_dir> (PEFT folders for LoRA, AdapterHub folders for bottleneck adapters) into
// <out_dir>/<case>/, and writes <out_dir>/adapt_logits.safetensors: input_ids (2, 10) and, per case,
// logits.<case> (2, 10, V) of adapt's forward pass with that adapter; metadata "cases" maps each case to
// the Python library that should load it. Used by scripts/make_train_fixtures.py (the committed folders
// under tests/golden/data/train/interop/) and scripts/check_peft_interop.py (a fresh export).
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors_writer.h"
#include "model/llama_forward.h"
#include "model/llama_weights.h"
#include "tests/golden/train/interop_cases.h"

using namespace adapt;
using namespace adapt::test::train_golden;

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s <model_dir> <out_dir>\n", argv[0]);
    return 2;
  }
  try {
    const std::filesystem::path model_dir = argv[1], out = argv[2];
    const model::LlamaModel model = model::llama_model_load(model_dir);
    const Tensor ids = interop_ids(model.config.vocab_size);
    std::vector<io::TensorSource> tensors{io::tensor_source(ids, "input_ids")};
    nlohmann::json cases = nlohmann::json::object();
    std::uint64_t index = 0;
    for (const InteropCase& c : interop_cases()) {
      adapters::AdapterSet set(model.config, c.config);
      interop_fill(set, index++);
      adapters::adapter_export(set, out / c.name, {.base_model = kInteropBaseModel});
      const Tensor logits = model::llama_forward(model, ids, nullptr, {.hook = &set});
      tensors.push_back(io::tensor_source(logits, "logits." + c.name));
      cases[c.name] = c.library;
    }
    io::safetensors_write(out / "adapt_logits.safetensors", tensors,
                          {{"generator", "tests/golden/train/train_golden_export.cpp"}, {"cases", cases.dump()}});
  } catch (const std::exception& e) {
    std::fprintf(stderr, "train_golden_export: %s\n", e.what());
    return 1;
  }
  return 0;
}
