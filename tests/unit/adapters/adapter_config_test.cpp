// AdapterConfig validation (messages name the adapter.* key), layer selection, LoRA scaling, and the
// bottleneck width arithmetic shared with AdapterHub (Python float floor division).
#include <doctest/doctest.h>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_set.h"
#include "core/error.h"
#include "tests/unit/adapters/adapters_test_util.h"

using namespace adapt;
using namespace adapt::adapters;

TEST_CASE("adapter config validation names the key") {
  const model::LlamaConfig tiny = test::tiny_llama();
  AdapterConfig ok;
  CHECK_NOTHROW(adapter_config_validate(ok, tiny));
  auto fails = [&](AdapterConfig c, const char* key) {
    CAPTURE(key);
    CHECK_THROWS_WITH_AS(adapter_config_validate(c, tiny), doctest::Contains(key), ConfigError);
  };
  AdapterConfig c = ok;
  c.lora.r = 0;
  fails(c, "adapter.lora.r must be positive");
  c = ok;
  c.lora.alpha = -1;
  fails(c, "adapter.lora.alpha");
  c = ok;
  c.lora.dropout = 1.0;
  fails(c, "adapter.lora.dropout");
  c = ok;
  c.lora.targets = {};
  fails(c, "adapter.lora.targets");
  c.lora.targets = {"q_proj"};
  fails(c, "write 'q' without the '_proj' suffix");
  c.lora.targets = {"gat"};
  fails(c, "did you mean 'gate'");
  c.lora.targets = {"q", "q"};
  fails(c, "twice");
  c = ok;
  c.layers = {0, 3};
  fails(c, "adapter.layers contains 3 but the model has 3 layers");
  c.layers = {-1};
  fails(c, "adapter.layers");
  c.layers = {1};
  c.last_n = 1;
  fails(c, "adapter.last_n");
  c.layers = {};
  c.last_n = 4;
  fails(c, "adapter.last_n = 4 exceeds");
  c = ok;
  c.name = "my.adapter";
  fails(c, "adapter.name");

  AdapterConfig b;
  b.kind = AdapterKind::Bottleneck;
  fails(b, "neither is set");
  b.bottleneck.size = 8;
  b.bottleneck.reduction_factor = 2.0;
  fails(b, "both are set");
  b.bottleneck.reduction_factor.reset();
  CHECK_NOTHROW(adapter_config_validate(b, tiny));
  b.bottleneck.size = 17;
  fails(b, "adapter.bottleneck.size = 17 exceeds the model's hidden_size = 16");
  b.bottleneck.size = 0;
  fails(b, "adapter.bottleneck.size must be positive");
  b.bottleneck.size = 4;
  b.bottleneck.scaling = std::nan("");
  fails(b, "adapter.bottleneck.scaling");
  b.bottleneck.scaling = 1.0;
  b.bottleneck.residual_before_ln = false;
  fails(b, "adapter.bottleneck.residual_before_ln");  // default placement: pfeiffer
  b.bottleneck.placement = BnPlacement::Houlsby;
  CHECK_NOTHROW(adapter_config_validate(b, tiny));
  // The AdapterSet constructor validates too.
  c = ok;
  c.lora.r = -2;
  CHECK_THROWS_AS(AdapterSet(tiny, c), ConfigError);
}

TEST_CASE("layer selection and LoRA scaling") {
  const model::LlamaConfig tiny = test::tiny_llama();
  AdapterConfig c;
  CHECK(adapter_layers(c, tiny) == std::vector<int>{0, 1, 2});
  c.last_n = 1;
  CHECK(adapter_layers(c, tiny) == std::vector<int>{2});
  c.last_n.reset();
  c.layers = {2, 0};
  CHECK(adapter_layers(c, tiny) == std::vector<int>{0, 2});
  LoraConfig l;
  l.r = 16;
  l.alpha = 32;
  CHECK(lora_scaling(l) == 2.0);
  l.use_rslora = true;
  CHECK(lora_scaling(l) == 8.0);
  CHECK(lora_target_name(lora_target_kind("down")) == "down");
  CHECK(lora_module_name(model::WeightKind::WGate) == "gate_proj");
  const auto [in, out] = lora_site_dims(model::WeightKind::Wk, tiny);
  CHECK(in == 16);
  CHECK(out == 8);
  CHECK(adapter_kind_name(AdapterKind::Bottleneck) == "bottleneck");
  CHECK(bn_placement_name(BnPlacement::Parallel) == "parallel");
  CHECK(bn_activation_name(BnActivation::Swish) == "swish");
  CHECK(lora_init_name(LoraInit::Gaussian) == "gaussian");
}

TEST_CASE("bottleneck width: Python float floor division and reduction factors that reproduce m") {
  // a // b as CPython computes it (values printed by python3).
  const double cases[][3] = {{10.0, 0.1, 99.0},
                             {1.0, 0.1, 9.0},
                             {7.0, 7.0 / 3, 2.0},
                             {64.0, 64.0 / 24, 24.0},
                             {5306.0, 37.917221156332076, 139.0},
                             {1187.0, 0.1, 11869.0},
                             {951.0, 36.39267732256693, 26.0},
                             {1409.0, 9.784722222222221, 144.0},
                             {6500.0, 2.03109306992137, 3200.0},
                             {2182.0, 11.619890988950468, 187.0}};
  for (const auto& c : cases) {
    CAPTURE(c[0]);
    CAPTURE(c[1]);
    CHECK(python_floordiv(c[0], c[1]) == c[2]);
  }
  // For every (C, m) up to 600, the exported reduction factor gives m back (C / m alone fails for
  // about half of them, e.g. 7 // (7/3) = 2).
  for (std::int64_t C = 1; C <= 600; ++C)
    for (std::int64_t m = 1; m <= C; ++m) {
      const double rf = bottleneck_reduction_factor(C, m);
      BottleneckConfig bn;
      bn.reduction_factor = rf;
      if (bottleneck_size(bn, C) != m) FAIL("C = " << C << ", m = " << m << ", rf = " << rf);
    }
  CHECK(bottleneck_reduction_factor(4096, 256) == 16.0);
  BottleneckConfig up;
  up.reduction_factor = 64.0;  // wider than C: at least 1
  CHECK(bottleneck_size(up, 16) == 1);
}
