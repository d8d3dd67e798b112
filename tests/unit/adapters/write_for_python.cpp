// adapters_write_for_python <out_dir>: exports a LoRA adapter (PEFT) and one bottleneck adapter per
// placement (AdapterHub) for the tiny test model, with random weights, plus expected.json (model
// dimensions, adapter settings, and the sum of every tensor) for scripts/check_adapter_files.py, which
// checks the folders with Python's safetensors and json independently of adapt's reader.
#include <cstdio>
#include <nlohmann/json.hpp>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_rng.h"
#include "core/error.h"
#include "core/file.h"

using namespace adapt;
using namespace adapt::adapters;
using json = nlohmann::json;

namespace {

model::LlamaConfig tiny() {
  model::LlamaConfig c;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.n_layers = 3;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 4;
  c.vocab_size = 32;
  return c;
}

json export_one(const AdapterSet& set, const fs::path& dir) {
  adapter_export(set, dir, {.base_model = "adapt-tiny"});
  json sums = json::object();
  for (const AdapterParam& p : set.parameters()) {
    double s = 0;
    for (std::int64_t i = 0; i < p.value.numel(); ++i) s += p.value.data<float>()[i];
    sums[p.name] = s;
  }
  json layers = json::array();
  for (const int l : set.layers()) layers.push_back(l);
  return {{"dir", dir.filename().string()}, {"layers", layers}, {"param_sums", sums}};
}

void randomize(AdapterSet& set, std::uint64_t seed) {
  std::uint64_t i = 0;
  for (AdapterParam& p : set.parameters()) rng_fill_uniform(p.value, rng_key({seed, ++i}), -1.0, 1.0);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <out_dir>\n", argv[0]);
    return 2;
  }
  try {
    const fs::path out = argv[1];
    const model::LlamaConfig m = tiny();
    json expected = {{"model",
                      {{"hidden_size", m.hidden_size},
                       {"intermediate_size", m.intermediate_size},
                       {"num_hidden_layers", m.n_layers},
                       {"num_attention_heads", m.n_heads},
                       {"num_key_value_heads", m.n_kv_heads},
                       {"head_dim", m.head_dim}}}};

    AdapterConfig lora;
    lora.lora.r = 4;
    lora.lora.alpha = 8;
    lora.lora.targets = {"q", "k", "v", "o", "gate", "up", "down"};
    lora.layers = {0, 2};
    AdapterSet lset(m, lora);
    randomize(lset, 1);
    json l = export_one(lset, out / "lora");
    l["r"] = 4;
    l["lora_alpha"] = 8;
    l["targets"] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
    expected["lora"] = l;

    expected["bottleneck"] = json::array();
    std::uint64_t seed = 10;
    for (const auto& [pname, placement] : bn_placement_names()) {
      AdapterConfig bn;
      bn.kind = AdapterKind::Bottleneck;
      bn.name = "bn_" + pname;
      bn.bottleneck.size = 5;  // 16 // (16 / 5) is 4.0 in Python: the exporter must nudge the factor
      bn.bottleneck.placement = placement;
      bn.bottleneck.activation = BnActivation::Swish;
      bn.bottleneck.scaling = 2.0;
      bn.bottleneck.ln_before = placement == BnPlacement::Houlsby;
      bn.last_n = 2;
      AdapterSet bset(m, bn);
      randomize(bset, ++seed);
      json b = export_one(bset, out / ("bottleneck_" + pname));
      b["name"] = bn.name;
      b["placement"] = pname;
      b["m"] = 5;
      b["ln_before"] = bn.bottleneck.ln_before;
      b["scaling"] = 2.0;
      b["non_linearity"] = "swish";
      expected["bottleneck"].push_back(b);
    }
    file_write_atomic(out / "expected.json", expected.dump(2));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "adapters_write_for_python: %s\n", e.what());
    return 1;
  }
  return 0;
}
