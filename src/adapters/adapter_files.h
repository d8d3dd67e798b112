// Adapter folders other tools read: LoRA in HF PEFT's format (adapter_config.json +
// adapter_model.safetensors, SPEC-llama.md §5; loadable by PEFT and vLLM) and bottleneck adapters in
// AdapterHub's layout (adapter_config.json + adapter.safetensors, §6.4; load with
// use_safetensors=True). A lora+bottleneck set is a folder holding both: lora/ (PEFT) and bottleneck/
// (AdapterHub), each usable on its own. adapter_load reads any of the three back into an AdapterSet,
// checking every tensor against the base model.
#pragma once

#include <filesystem>
#include <string>

#include "adapters/adapter_set.h"
#include "dtype/dtype.h"
#include "model/adapter_hook.h"
#include "model/llama_config.h"

namespace adapt::adapters {

namespace fs = std::filesystem;

struct AdapterExportOptions {
  /// PEFT's base_model_name_or_path and AdapterHub's model_name (HF id or path); empty writes null.
  std::string base_model;
  DType dtype = DType::F32;  // tensor dtype in the file: F32, BF16 or F16
};

/// Peft: adapter_config.json + adapter_model.safetensors. AdapterHub: adapter_config.json +
/// adapter.safetensors. LoraBottleneck: no adapter_config.json of its own, but a PEFT folder in
/// `lora/` and an AdapterHub folder in `bottleneck/` (kLoraSubdir, kBottleneckSubdir).
enum class AdapterFormat { Peft, AdapterHub, LoraBottleneck };

/// The subfolders of a lora+bottleneck adapter folder.
inline constexpr const char* kLoraSubdir = "lora";
inline constexpr const char* kBottleneckSubdir = "bottleneck";

/// Writes `set` into `dir` (created if needed): PEFT files for LoRA, AdapterHub files for bottleneck
/// adapters, both (in dir/lora and dir/bottleneck) for lora+bottleneck. Each file is written
/// atomically, the weights first and adapter_config.json last. Adapter files of the other layout left
/// in `dir` by an earlier export are removed first, so the folder never holds two adapters.
/// UnsupportedError when the set is merged into base weights (unmerge first) or the dtype is not
/// F32/BF16/F16.
void adapter_export(const AdapterSet& set, const fs::path& dir, const AdapterExportOptions& options = {});

/// Which format `dir` holds: from its adapter_config.json ("peft_type" → PEFT; "config" with
/// "model_type" → AdapterHub), or LoraBottleneck when it has none but lora/ and bottleneck/ each have
/// one. IoError naming the folder and what it expected otherwise (also for a folder with both a
/// top-level adapter_config.json and those subfolders, or with only one of the subfolders).
AdapterFormat adapter_format_detect(const fs::path& dir);

/// Reads a PEFT LoRA, AdapterHub bottleneck or lora+bottleneck folder into an AdapterSet for `model`
/// (inference mode, step 0). Every tensor is checked against the model: a shape mismatch is a
/// ShapeError naming the tensor and both shapes, with "(hint: maybe wrong base model?)". Features adapt
/// does not implement (DoRA, rank_pattern, lora biases, learned scaling, gating, ...) are
/// UnsupportedErrors naming the field; unexpected tensors are IoErrors naming them. The two parts of a
/// lora+bottleneck folder must adapt the same layers (UnsupportedError otherwise).
AdapterSet adapter_load(const fs::path& dir, const model::LlamaConfig& model);

/// The adapter_config.json texts the exporters write (json.dumps(indent=2, sort_keys=True) layout).
std::string peft_config_json(const AdapterSet& set, const AdapterExportOptions& options);
std::string adapterhub_config_json(const AdapterSet& set, const AdapterExportOptions& options);

/// "base_model.model.model.layers.{layer}.self_attn.q_proj.lora_A.weight" ('A') / "...lora_B.weight" ('B').
std::string peft_tensor_name(int layer, model::WeightKind kind, char factor);
/// "model.layers.{layer}.{attention|output}_adapters.adapters.{name}." — the prefix of a bottleneck
/// module's keys (adapter_down.{0|1}.weight, adapter_up.bias, ...).
std::string adapterhub_tensor_prefix(int layer, model::BlockSite site, const std::string& name);

/// AdapterHub library version written into adapter_config.json ("version": "adapters.1.2.0").
inline constexpr const char* kAdapterHubVersion = "adapters.1.2.0";

}  // namespace adapt::adapters
