// Validation of AdapterConfig (ConfigError naming the adapter.* key, e.g. "adapter.lora.r = 0: must be
// positive"), alone and against the base model, and its resolution into what AdapterSet builds: the
// layer list, the LoRA scaling and sites, the bottleneck width.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "adapters/adapter_config.h"
#include "model/llama_config.h"
#include "model/weight_names.h"

namespace adapt::adapters {

/// Checks every field that does not depend on the model. ConfigError naming the key otherwise.
void adapter_config_validate(const AdapterConfig& config);
/// As above, plus the checks against the model: layer indices < L, last_n <= L, bottleneck width <= C.
void adapter_config_validate(const AdapterConfig& config, const model::LlamaConfig& model);

/// The decoder layers that get adapters, ascending (config validated against `model`).
std::vector<int> adapter_layers(const AdapterConfig& config, const model::LlamaConfig& model);

/// s = alpha / r, or alpha / √r with use_rslora (PEFT, vLLM).
double lora_scaling(const LoraConfig& lora);

/// The projection a LoRA target name ("q", …, "down") stands for; ConfigError with a suggestion.
model::WeightKind lora_target_kind(std::string_view target);
/// "q", "k", "v", "o", "gate", "up", "down" (InternalError for other kinds).
std::string lora_target_name(model::WeightKind kind);
/// PEFT / HF module name: "q_proj", …, "down_proj".
std::string lora_module_name(model::WeightKind kind);
/// (in, out) features of the projection `kind` of `model` (HF nn.Linear: weight is (out, in)).
std::pair<std::int64_t, std::int64_t> lora_site_dims(model::WeightKind kind, const model::LlamaConfig& model);

/// The bottleneck width m for hidden size C: `size`, or ⌊C / reduction_factor⌋ computed as Python's
/// float floor division (AdapterHub's int(C // rf)), at least 1.
std::int64_t bottleneck_size(const BottleneckConfig& bn, std::int64_t hidden_size);
/// A reduction factor rf with int(C // rf) == m in Python's float arithmetic (C / m, nudged by an ulp
/// when rounding would give another width), for AdapterHub's adapter_config.json.
double bottleneck_reduction_factor(std::int64_t hidden_size, std::int64_t m);
/// Python's float floor division a // b (CPython float_floor_div), for b > 0.
double python_floordiv(double a, double b);

std::string adapter_kind_name(AdapterKind kind);
std::string bn_placement_name(BnPlacement placement);
std::string bn_activation_name(BnActivation activation);
std::string lora_init_name(LoraInit init);

}  // namespace adapt::adapters
