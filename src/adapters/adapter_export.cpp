// Writing PEFT and AdapterHub adapter folders (SPEC-llama.md §5.1–5.3, §6.4).
#include <cmath>
#include <nlohmann/json.hpp>
#include <set>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_math.h"
#include "core/error.h"
#include "core/file.h"
#include "io/safetensors_writer.h"

namespace adapt::adapters {

using json = nlohmann::json;
using model::BlockSite;
using model::WeightKind;

namespace {

json null_or(const std::string& s) { return s.empty() ? json(nullptr) : json(s); }

/// An integral double as a JSON integer (PEFT writes lora_alpha = 16, not 16.0), others as floats.
json number(double v) {
  if (std::isfinite(v) && v == std::floor(v) && std::fabs(v) < 9.0e15) return static_cast<std::int64_t>(v);
  return v;
}

/// Python's json.dumps(obj, indent=2, sort_keys=True): nlohmann's std::map objects are sorted, and
/// ensure_ascii matches Python's default.
std::string dumps(const json& j) { return j.dump(2, ' ', /*ensure_ascii=*/true); }

void check_exportable(const AdapterSet& set, const AdapterExportOptions& options) {
  ADAPT_REQUIRE(!set.merged(), UnsupportedError,
                "adapter_export: the LoRA adapters are merged into the base weights; call unmerge() before exporting");
  ADAPT_REQUIRE(!set.tp().active(), UnsupportedError,
                "adapter_export: the LoRA factors hold this rank's slices of tp = {}; export the whole set that "
                "AdapterSet::tp_gathered() returns",
                set.tp().size);
  ADAPT_REQUIRE(options.dtype == DType::F32 || options.dtype == DType::BF16 || options.dtype == DType::F16,
                UnsupportedError, "adapter_export: dtype {} is not a floating-point dtype; use f32, bf16 or f16",
                dtype_name(options.dtype));
}

/// Layers without adapters (AdapterHub's leave_out).
std::vector<int> left_out(const AdapterSet& set) {
  std::set<int> in(set.layers().begin(), set.layers().end());
  std::vector<int> out;
  for (int l = 0; l < static_cast<int>(set.model_config().n_layers); ++l)
    if (!in.count(l)) out.push_back(l);
  return out;
}

/// A set on a device is read through host copies.
io::TensorSource source(const Tensor& t, DType dtype, std::string name) {
  const Tensor h = t.device().host_accessible() ? t : detail::copy_to(t, host_allocator());
  return io::tensor_source(h.dtype() == dtype ? h : h.to_host(dtype), std::move(name));
}

void export_peft(const AdapterSet& set, const fs::path& dir, const AdapterExportOptions& options) {
  std::vector<io::TensorSource> tensors;
  for (const int layer : set.layers())
    for (const WeightKind kind : kLoraTargetKinds)
      if (const LoraAdapter* ad = set.lora(layer, kind)) {
        tensors.push_back(source(ad->a, options.dtype, peft_tensor_name(layer, kind, 'A')));
        tensors.push_back(source(ad->b, options.dtype, peft_tensor_name(layer, kind, 'B')));
      }
  io::safetensors_write(dir / "adapter_model.safetensors", tensors, {{"format", "pt"}});
  file_write_atomic(dir / "adapter_config.json", peft_config_json(set, options));
}

void export_adapterhub(const AdapterSet& set, const fs::path& dir, const AdapterExportOptions& options) {
  const std::string& name = set.config().name;
  std::vector<io::TensorSource> tensors;
  for (const int layer : set.layers())
    for (const BlockSite site : {BlockSite::Attention, BlockSite::Mlp}) {
      const BottleneckAdapter* ad = set.bottleneck(layer, site);
      if (!ad) continue;
      const std::string p = adapterhub_tensor_prefix(layer, site, name);
      // adapter_down = Sequential([LayerNorm if ln_before], Linear, activation). The LayerNorm is also
      // registered as adapter_norm_before, so torch's state_dict holds it under both names; we write
      // both, as AdapterHub's own pytorch_adapter.bin would.
      std::string linear = "adapter_down.0.";
      if (ad->ln_before()) {
        tensors.push_back(source(ad->ln_weight, options.dtype, p + "adapter_down.0.weight"));
        tensors.push_back(source(ad->ln_bias, options.dtype, p + "adapter_down.0.bias"));
        tensors.push_back(source(ad->ln_weight, options.dtype, p + "adapter_norm_before.weight"));
        tensors.push_back(source(ad->ln_bias, options.dtype, p + "adapter_norm_before.bias"));
        linear = "adapter_down.1.";
      }
      tensors.push_back(source(ad->down_weight, options.dtype, p + linear + "weight"));
      tensors.push_back(source(ad->down_bias, options.dtype, p + linear + "bias"));
      tensors.push_back(source(ad->up_weight, options.dtype, p + "adapter_up.weight"));
      tensors.push_back(source(ad->up_bias, options.dtype, p + "adapter_up.bias"));
    }
  io::safetensors_write(dir / "adapter.safetensors", tensors, {{"format", "pt"}});
  file_write_atomic(dir / "adapter_config.json", adapterhub_config_json(set, options));
}

/// Removes the files an export writes (config first), if present.
void remove_adapter_files(const fs::path& dir) {
  std::error_code dir_ec;
  if (!fs::is_directory(dir, dir_ec)) return;
  for (const char* name : {"adapter_config.json", "adapter_model.safetensors", "adapter.safetensors"}) {
    std::error_code ec;
    fs::remove(dir / name, ec);
    ADAPT_REQUIRE(!ec, IoError, "adapter_export: cannot remove the earlier export's '{}': {}", (dir / name).string(),
                  ec.message());
  }
}

}  // namespace

std::string peft_tensor_name(int layer, WeightKind kind, char factor) {
  ADAPT_CHECK(factor == 'A' || factor == 'B', "LoRA factor must be 'A' or 'B', got '{}'", factor);
  const bool attn =
      kind == WeightKind::Wq || kind == WeightKind::Wk || kind == WeightKind::Wv || kind == WeightKind::Wo;
  return fmt::format("base_model.model.model.layers.{}.{}.{}.lora_{}.weight", layer, attn ? "self_attn" : "mlp",
                     lora_module_name(kind), factor);
}

std::string adapterhub_tensor_prefix(int layer, BlockSite site, const std::string& name) {
  return fmt::format("model.layers.{}.{}_adapters.adapters.{}.", layer,
                     site == BlockSite::Attention ? "attention" : "output", name);
}

std::string peft_config_json(const AdapterSet& set, const AdapterExportOptions& options) {
  const AdapterConfig& cfg = set.config();
  ADAPT_CHECK(kind_has_lora(cfg.kind), "peft_config_json needs a set with LoRA adapters");
  const LoraConfig& lora = cfg.lora;
  json targets = json::array();
  for (const WeightKind kind : kLoraTargetKinds)
    for (const std::string& t : lora.targets)
      if (lora_target_kind(t) == kind) targets.push_back(lora_module_name(kind));
  // SPEC-llama.md §5.2's minimal complete field set: old PEFT versions reject keys they do not know.
  json layers = nullptr;
  if (static_cast<std::int64_t>(set.layers().size()) != set.model_config().n_layers) layers = set.layers();
  json j = {
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"base_model_name_or_path", null_or(options.base_model)},
      {"revision", nullptr},
      {"inference_mode", true},
      {"r", lora.r},
      {"lora_alpha", number(lora.alpha)},
      {"lora_dropout", lora.dropout},
      {"target_modules", targets},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"use_rslora", lora.use_rslora},
      {"use_dora", false},
      {"init_lora_weights", lora.init == LoraInit::Gaussian ? json("gaussian") : json(true)},
      {"modules_to_save", nullptr},
      {"layers_to_transform", layers},
      {"layers_pattern", nullptr},
      {"rank_pattern", json::object()},
      {"alpha_pattern", json::object()},
  };
  return dumps(j);
}

std::string adapterhub_config_json(const AdapterSet& set, const AdapterExportOptions& options) {
  const AdapterConfig& cfg = set.config();
  ADAPT_CHECK(kind_has_bottleneck(cfg.kind), "adapterhub_config_json needs a set with bottleneck adapters");
  const BottleneckConfig& bn = cfg.bottleneck;
  const std::int64_t C = set.model_config().hidden_size;
  const std::int64_t m = bottleneck_size(bn, C);
  const bool houlsby = bn.placement == BnPlacement::Houlsby;
  const bool parallel = bn.placement == BnPlacement::Parallel;
  // Every BnConfig field (adapters 1.2.0), with the values the placement implies on a pre-norm model.
  json config = {
      {"architecture", nullptr},
      {"mh_adapter", houlsby},
      {"output_adapter", true},
      {"reduction_factor", bottleneck_reduction_factor(C, m)},
      {"non_linearity", bn_activation_name(bn.activation)},
      {"original_ln_before", bn.placement == BnPlacement::Pfeiffer},
      {"original_ln_after", true},
      {"ln_before", bn.ln_before},
      {"ln_after", false},
      {"init_weights", "mam_adapter"},
      {"init_weights_seed", nullptr},
      {"is_parallel", parallel},
      {"scaling", static_cast<double>(bn.scaling)},  // a float: AdapterHub rejects an integer scaling
      {"use_gating", false},
      {"residual_before_ln", bn.residual_before_ln},
      {"adapter_residual_before_ln", false},
      {"inv_adapter", nullptr},
      {"inv_adapter_reduction_factor", nullptr},
      {"cross_adapter", false},
      {"leave_out", left_out(set)},
      {"dropout", 0.0},
      {"phm_layer", false},
      {"phm_dim", 4},
      {"factorized_phm_W", true},
      {"shared_W_phm", false},
      {"shared_phm_rule", true},
      {"factorized_phm_rule", false},
      {"phm_c_init", "normal"},
      {"phm_init_range", 0.0001},
      {"learn_phm", true},
      {"hypercomplex_nonlinearity", "glorot-uniform"},
      {"phm_rank", 1},
      {"phm_bias", true},
      {"stochastic_depth", 0.0},
  };
  json j = {
      {"config", config},
      {"hidden_size", C},
      {"model_class", "LlamaForCausalLM"},
      {"model_name", null_or(options.base_model)},
      {"model_type", "llama"},
      {"name", cfg.name},
      {"version", kAdapterHubVersion},
  };
  return dumps(j);
}

void adapter_export(const AdapterSet& set, const fs::path& dir, const AdapterExportOptions& options) {
  check_exportable(set, options);
  const bool both = set.kind() == AdapterKind::LoraBottleneck;
  // An earlier export into the same folder (maybe of another kind): remove its files first, so that
  // adapter_load never finds two adapters or a stale weights file beside a new config.
  remove_adapter_files(dir);
  for (const char* sub : {kLoraSubdir, kBottleneckSubdir}) {
    remove_adapter_files(dir / sub);
    std::error_code ec;
    if (!both && fs::is_directory(dir / sub, ec) && fs::is_empty(dir / sub, ec)) fs::remove(dir / sub, ec);
  }
  const fs::path lora_dir = both ? dir / kLoraSubdir : dir, bn_dir = both ? dir / kBottleneckSubdir : dir;
  for (const fs::path& d : {lora_dir, bn_dir}) {
    std::error_code ec;
    fs::create_directories(d, ec);
    ADAPT_REQUIRE(!ec && fs::is_directory(d), IoError, "adapter_export: cannot create folder '{}': {}", d.string(),
                  ec ? ec.message() : "a file of that name exists");
  }
  if (kind_has_lora(set.kind())) export_peft(set, lora_dir, options);
  if (kind_has_bottleneck(set.kind())) export_adapterhub(set, bn_dir, options);
}

}  // namespace adapt::adapters
