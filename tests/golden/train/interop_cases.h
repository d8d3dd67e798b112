// The adapters whose exports other libraries load (tests/golden/data/train/interop/): one LoRA with
// every target, one rsLoRA on a subset, and one bottleneck adapter per placement, each filled with
// deterministic non-zero weights (a freshly initialised adapter is a no-op and would prove nothing).
// Shared by the export tool (train_golden_export, used by scripts/make_train_fixtures.py and
// scripts/check_peft_interop.py) and the golden test, which checks that adapt still writes the
// committed folders byte for byte.
#pragma once

#include <string>
#include <vector>

#include "adapters/adapter_files.h"
#include "adapters/adapter_rng.h"
#include "adapters/adapter_set.h"

namespace adapt::test::train_golden {

struct InteropCase {
  std::string name;  // folder name under interop/, and the logits key "logits.<name>"
  adapters::AdapterConfig config;
  std::string library;  // which Python library loads it: "peft" or "adapters"
};

/// base_model_name_or_path / model_name written into the exported configs.
inline constexpr const char* kInteropBaseModel = "adapt-golden-train-tiny";

inline std::vector<InteropCase> interop_cases() {
  std::vector<InteropCase> cases;
  {
    adapters::AdapterConfig c;
    c.kind = adapters::AdapterKind::Lora;
    c.lora.r = 4;
    c.lora.alpha = 6.0;
    c.lora.targets = adapters::lora_target_names();
    cases.push_back({"lora", c, "peft"});
  }
  {
    adapters::AdapterConfig c;
    c.kind = adapters::AdapterKind::Lora;
    c.lora.r = 8;
    c.lora.alpha = 4.0;
    c.lora.use_rslora = true;
    c.lora.targets = {"q", "v", "down"};
    c.layers = {1};
    cases.push_back({"lora_rslora", c, "peft"});
  }
  struct Bn {
    const char* name;
    adapters::BnPlacement placement;
    adapters::BnActivation activation;
    double scaling;
    bool ln_before;
  };
  for (const Bn& b : {Bn{"bn_houlsby", adapters::BnPlacement::Houlsby, adapters::BnActivation::Swish, 0.5, true},
                      Bn{"bn_pfeiffer", adapters::BnPlacement::Pfeiffer, adapters::BnActivation::Relu, 1.0, false},
                      Bn{"bn_parallel", adapters::BnPlacement::Parallel, adapters::BnActivation::Gelu, 4.0, false}}) {
    adapters::AdapterConfig c;
    c.kind = adapters::AdapterKind::Bottleneck;
    c.name = b.name;
    c.bottleneck.size = 8;
    c.bottleneck.placement = b.placement;
    c.bottleneck.activation = b.activation;
    c.bottleneck.scaling = b.scaling;
    c.bottleneck.ln_before = b.ln_before;
    cases.push_back({b.name, c, "adapters"});
  }
  return cases;
}

/// Overwrites every parameter with U(−0.5, 0.5) values keyed by (case index, parameter index); LayerNorm
/// weights get 1 + U(−0.5, 0.5) so the norm stays well away from zero.
inline void interop_fill(adapters::AdapterSet& set, std::uint64_t case_index) {
  std::uint64_t i = 0;
  for (adapters::AdapterParam& p : set.parameters()) {
    adapters::rng_fill_uniform(p.value, adapters::rng_key({0x601dea7ull, case_index, ++i}), -0.5, 0.5);
    if (p.name.ends_with(".ln.weight")) {
      float* v = p.value.data<float>();
      for (std::int64_t k = 0; k < p.value.numel(); ++k) v[k] += 1.0f;
    }
  }
}

/// The token ids the interop logits are computed on: (2, 10) i32, keyed by `seed`, in [0, vocab).
inline Tensor interop_ids(std::int64_t vocab) {
  Tensor ids = Tensor::empty({2, 10}, DType::I32, host_allocator(), "input_ids");
  for (std::int64_t i = 0; i < ids.numel(); ++i)
    ids.data<std::int32_t>()[i] =
        static_cast<std::int32_t>(adapters::rng_uniform(adapters::rng_key({0x1d5ull}), static_cast<std::uint64_t>(i)) *
                                  static_cast<double>(vocab));
  return ids;
}

}  // namespace adapt::test::train_golden
