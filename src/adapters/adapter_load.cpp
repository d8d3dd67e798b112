// Reading PEFT LoRA, AdapterHub bottleneck and lora+bottleneck folders back into an AdapterSet, with
// every value and tensor checked against the base model; unsupported features are named, never
// silently dropped.
#include <fmt/ranges.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_files.h"
#include "core/error.h"
#include "core/file.h"
#include "core/strings.h"
#include "io/safetensors.h"

namespace adapt::adapters {

using json = nlohmann::json;
using model::BlockSite;
using model::WeightKind;

namespace {

constexpr const char* kWrongModel = "(hint: maybe wrong base model?)";

struct JsonDoc {
  fs::path path;
  json j;
};

JsonDoc read_config(const fs::path& dir) {
  const fs::path path = dir / "adapter_config.json";
  ADAPT_REQUIRE(fs::is_directory(dir), IoError, "adapter folder '{}' does not exist or is not a folder", dir.string());
  // A run folder of adapt_train given for its adapter: the adapter is in its adapter/ subfolder.
  auto run_dir = [&] {
    return fs::exists(dir / "adapter" / "adapter_config.json") ||
           fs::exists(dir / "adapter" / kLoraSubdir / "adapter_config.json");
  };
  ADAPT_REQUIRE(fs::exists(path), IoError,
                "'{}' has no adapter_config.json; expected a PEFT LoRA folder (adapter_config.json + "
                "adapter_model.safetensors), an AdapterHub folder (adapter_config.json + adapter.safetensors) or a "
                "lora+bottleneck folder (one of each in {}/ and {}/){}",
                dir.string(), kLoraSubdir, kBottleneckSubdir,
                run_dir() ? fmt::format(". It looks like a training run's folder: its adapter is '{}'",
                                        (dir / "adapter").string())
                          : std::string());
  JsonDoc doc{path, {}};
  try {
    doc.j = json::parse(file_read_text(path));
  } catch (const json::exception& e) {
    ADAPT_THROW(IoError, "'{}' is not valid JSON: {}", path.string(), e.what());
  }
  ADAPT_REQUIRE(doc.j.is_object(), IoError, "'{}' must hold a JSON object, got {}", path.string(), doc.j.type_name());
  return doc;
}

/// obj[key], or nullptr when absent or null.
const json* field(const json& obj, const std::string& key) {
  const auto it = obj.find(key);
  return it == obj.end() || it->is_null() ? nullptr : &*it;
}

[[noreturn]] void bad_type(const JsonDoc& doc, const std::string& key, const char* expected, const json& v) {
  ADAPT_THROW(IoError, "'{}': \"{}\" must be {}, got {}", doc.path.string(), key, expected, v.dump());
}

bool get_bool(const JsonDoc& doc, const json& obj, const std::string& key, bool fallback) {
  const json* v = field(obj, key);
  if (!v) return fallback;
  if (!v->is_boolean()) bad_type(doc, key, "true or false", *v);
  return v->get<bool>();
}

double get_number(const JsonDoc& doc, const json& obj, const std::string& key, double fallback) {
  const json* v = field(obj, key);
  if (!v) return fallback;
  if (!v->is_number()) bad_type(doc, key, "a number", *v);
  return v->get<double>();
}

std::int64_t get_int(const JsonDoc& doc, const json& obj, const std::string& key) {
  const json* v = field(obj, key);
  ADAPT_REQUIRE(v, IoError, "'{}': \"{}\" is missing", doc.path.string(), key);
  if (!v->is_number_integer()) bad_type(doc, key, "an integer", *v);
  return v->get<std::int64_t>();
}

std::string get_string(const JsonDoc& doc, const json& obj, const std::string& key, const std::string& fallback) {
  const json* v = field(obj, key);
  if (!v) return fallback;
  if (!v->is_string()) bad_type(doc, key, "a string", *v);
  return v->get<std::string>();
}

/// UnsupportedError unless obj[key] is absent, null, false, an empty list/object or `ok`.
void require_off(const JsonDoc& doc, const json& obj, const std::string& key, const std::string& why,
                 const json& ok = nullptr) {
  const json* v = field(obj, key);
  if (!v || (v->is_boolean() && !v->get<bool>()) || ((v->is_array() || v->is_object()) && v->empty()) ||
      (!ok.is_null() && *v == ok))
    return;
  ADAPT_THROW(UnsupportedError, "'{}': \"{}\" = {} is not supported by adapt: {}", doc.path.string(), key, v->dump(),
              why);
}

std::string shape_mismatch(const fs::path& file, const std::string& tensor, const Shape& got, const Shape& want) {
  return fmt::format("'{}': tensor '{}' has shape {} but the base model expects {} {}", file.string(), tensor,
                     got.str(), want.str(), kWrongModel);
}

/// Reads tensor `key` of `file` into `dst` after checking its shape.
void read_checked(const io::SafetensorsFile& file, const std::string& key, Tensor& dst) {
  const io::TensorInfo& info = file.at(key);
  ADAPT_REQUIRE(info.shape == dst.shape(), ShapeError, "{}", shape_mismatch(file.path(), key, info.shape, dst.shape()));
  file.read_into(key, dst);
}

fs::path weights_file(const fs::path& dir, const char* name, const char* pickle_name) {
  const fs::path path = dir / name;
  if (fs::exists(path)) return path;
  ADAPT_REQUIRE(!fs::exists(dir / pickle_name), IoError,
                "'{}' holds only {} (a PyTorch pickle), which adapt does not read; convert it to {} (e.g. "
                "safetensors.torch.save_file(torch.load(\"{}\"), \"{}\"))",
                dir.string(), pickle_name, name, pickle_name, name);
  ADAPT_THROW(IoError, "'{}' has adapter_config.json but no {}", dir.string(), name);
}

// ---- PEFT -----------------------------------------------------------------------------------------

WeightKind module_kind(const JsonDoc& doc, const std::string& module) {
  const std::string last = module.substr(module.rfind('.') + 1);
  for (const WeightKind kind : kLoraTargetKinds)
    if (last == lora_module_name(kind)) return kind;
  ADAPT_THROW(UnsupportedError,
              "'{}': target module '{}' is not supported by adapt, which puts LoRA on q_proj, k_proj, v_proj, o_proj, "
              "gate_proj, up_proj and down_proj only",
              doc.path.string(), module);
}

AdapterSet load_peft(const fs::path& dir, const JsonDoc& doc, const model::LlamaConfig& model) {
  const json& j = doc.j;
  const std::string peft_type = get_string(doc, j, "peft_type", "");
  ADAPT_REQUIRE(peft_type == "LORA", UnsupportedError,
                "'{}': peft_type \"{}\" is not supported; adapt reads LoRA adapters (peft_type \"LORA\")",
                doc.path.string(), peft_type);
  const std::string task = get_string(doc, j, "task_type", "CAUSAL_LM");
  ADAPT_REQUIRE(task == "CAUSAL_LM", UnsupportedError,
                "'{}': task_type \"{}\" is not supported; adapt adapts causal language models (CAUSAL_LM)",
                doc.path.string(), task);
  require_off(doc, j, "use_dora", "DoRA adapters are not implemented");
  require_off(doc, j, "bias", "LoRA bias terms are not implemented (export with bias=\"none\")", "none");
  require_off(doc, j, "lora_bias", "a bias on lora_B is not implemented");
  require_off(doc, j, "fan_in_fan_out", "Llama projections are nn.Linear (fan_in_fan_out = false)");
  require_off(doc, j, "modules_to_save", "fully trained extra modules are not implemented");
  require_off(doc, j, "rank_pattern", "per-module ranks are not implemented");
  require_off(doc, j, "alpha_pattern", "per-module alphas are not implemented");
  require_off(doc, j, "layer_replication", "layer replication is not implemented");
  require_off(doc, j, "target_parameters", "LoRA on raw parameters is not implemented");
  require_off(doc, j, "trainable_token_indices", "trainable token embeddings are not implemented");

  AdapterConfig cfg;
  cfg.kind = AdapterKind::Lora;
  cfg.lora.r = get_int(doc, j, "r");
  cfg.lora.alpha = get_number(doc, j, "lora_alpha", 8.0);
  cfg.lora.dropout = get_number(doc, j, "lora_dropout", 0.0);
  cfg.lora.use_rslora = get_bool(doc, j, "use_rslora", false);
  if (const json* init = field(j, "init_lora_weights"); init && init->is_string() && *init == "gaussian")
    cfg.lora.init = LoraInit::Gaussian;

  const fs::path path = weights_file(dir, "adapter_model.safetensors", "adapter_model.bin");
  const io::SafetensorsFile file(path);
  static const std::regex kKey(
      R"(^(?:base_model\.model\.)?model\.layers\.(\d{1,9})\.(self_attn\.(?:q|k|v|o)_proj|mlp\.(?:gate|up|down)_proj)\.lora_([AB])\.weight$)");
  std::map<std::pair<int, int>, std::array<std::string, 2>> sites;  // (layer, target) -> A, B key
  std::set<int> layers, targets;
  for (const io::TensorInfo& info : file.tensors()) {
    std::smatch m;
    if (!std::regex_match(info.name, m, kKey)) {
      const bool embed =
          info.name.find("embed_tokens") != std::string::npos || info.name.find("lm_head") != std::string::npos;
      ADAPT_REQUIRE(!embed, UnsupportedError, "'{}': tensor '{}': LoRA on embed_tokens / lm_head is not supported",
                    path.string(), info.name);
      ADAPT_THROW(IoError,
                  "'{}': unexpected tensor '{}'; a PEFT LoRA file for Llama holds "
                  "base_model.model.model.layers.<i>.self_attn.<q|k|v|o>_proj.lora_<A|B>.weight and "
                  "...mlp.<gate|up|down>_proj.lora_<A|B>.weight only",
                  path.string(), info.name);
    }
    const long layer = std::stol(m[1].str());  // at most 9 digits (kKey)
    ADAPT_REQUIRE(layer < model.n_layers, ShapeError,
                  "'{}': tensor '{}' is for layer {} but the base model has {} layers {}", path.string(), info.name,
                  layer, model.n_layers, kWrongModel);
    const int t = lora_target_index(module_kind(doc, m[2].str()));
    sites[{static_cast<int>(layer), t}][m[3].str() == "A" ? 0 : 1] = info.name;
    layers.insert(static_cast<int>(layer));
    targets.insert(t);
  }
  ADAPT_REQUIRE(!sites.empty(), IoError, "'{}' holds no LoRA tensors", path.string());
  // adapt's sites are layers × targets: every pair must be there, with both factors.
  for (const int layer : layers)
    for (const int t : targets)
      for (const char factor : {'A', 'B'}) {
        const auto it = sites.find({layer, t});
        const bool present = it != sites.end() && !it->second[factor == 'A' ? 0 : 1].empty();
        ADAPT_REQUIRE(present, IoError,
                      "'{}': tensor '{}' is missing (adapt loads adapters whose targeted projections are the same in "
                      "every adapted layer, with lora_A and lora_B for each)",
                      path.string(), peft_tensor_name(layer, kLoraTargetKinds[t], factor));
      }
  if (const json* tm = field(j, "target_modules"); tm && tm->is_array()) {
    std::set<int> listed;
    for (const json& e : *tm) {
      if (!e.is_string()) bad_type(doc, "target_modules", "a list of module names", *tm);
      listed.insert(lora_target_index(module_kind(doc, e.get<std::string>())));
    }
    ADAPT_REQUIRE(listed == targets, IoError,
                  "'{}': target_modules {} does not match the projections that have tensors in '{}'", doc.path.string(),
                  tm->dump(), path.string());
  }
  cfg.lora.targets.clear();
  for (const int t : targets) cfg.lora.targets.push_back(lora_target_name(kLoraTargetKinds[t]));
  if (static_cast<std::int64_t>(layers.size()) != model.n_layers) cfg.layers.assign(layers.begin(), layers.end());

  AdapterSet set(model, cfg);
  for (const auto& [site, keys] : sites) {
    LoraAdapter* ad = set.lora(site.first, kLoraTargetKinds[site.second]);
    ADAPT_CHECK(ad, "LoRA site ({}, {}) was not built", site.first, site.second);
    const Shape& a_shape = file.at(keys[0]).shape;
    ADAPT_REQUIRE(a_shape.rank() != 2 || a_shape[0] == cfg.lora.r, IoError,
                  "'{}': tensor '{}' has shape {} (rank {}) but adapter_config.json says r = {}", path.string(),
                  keys[0], a_shape.str(), a_shape[0], cfg.lora.r);
    read_checked(file, keys[0], ad->a);
    read_checked(file, keys[1], ad->b);
  }
  return set;
}

// ---- AdapterHub -----------------------------------------------------------------------------------

BnActivation parse_activation(const JsonDoc& doc, std::string name) {
  std::transform(name.begin(), name.end(), name.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (name == "relu") return BnActivation::Relu;
  if (name == "swish" || name == "silu") return BnActivation::Swish;
  if (name == "gelu") return BnActivation::Gelu;
  ADAPT_THROW(UnsupportedError,
              "'{}': non_linearity \"{}\" is not supported; adapt implements relu, swish (silu) and "
              "gelu (exact erf)",
              doc.path.string(), name);
}

/// ⌊C / rf⌋ for `layer`, from a number or a {"<layer>": rf, "default": rf} mapping.
std::int64_t bn_width(const JsonDoc& doc, const json& rf, std::int64_t C, int layer) {
  const json* v = &rf;
  if (rf.is_object()) {
    const auto it = rf.find(std::to_string(layer));
    v = it != rf.end() ? &*it : field(rf, "default");
    ADAPT_REQUIRE(v, IoError, "'{}': reduction_factor {} has no entry for layer {} and no \"default\"",
                  doc.path.string(), rf.dump(), layer);
  }
  if (!v->is_number() || v->get<double>() <= 0) bad_type(doc, "reduction_factor", "a positive number", *v);
  BottleneckConfig bn;
  bn.reduction_factor = v->get<double>();
  return bottleneck_size(bn, C);
}

AdapterSet load_adapterhub(const fs::path& dir, const JsonDoc& doc, const model::LlamaConfig& model) {
  const json& j = doc.j;
  const json& c = j.at("config");
  ADAPT_REQUIRE(c.is_object(), IoError, "'{}': \"config\" must be an object", doc.path.string());
  const std::string model_type = get_string(doc, j, "model_type", "llama");
  ADAPT_REQUIRE(model_type == model.model_type, ShapeError,
                "'{}': the adapter was trained for model_type \"{}\" but the base model is \"{}\" {}",
                doc.path.string(), model_type, model.model_type, kWrongModel);
  if (const json* hs = field(j, "hidden_size"))
    ADAPT_REQUIRE(hs->is_number_integer() && hs->get<std::int64_t>() == model.hidden_size, ShapeError,
                  "'{}': the adapter was trained for hidden_size {} but the base model has hidden_size {} {}",
                  doc.path.string(), hs->dump(), model.hidden_size, kWrongModel);
  const std::string arch = get_string(doc, c, "architecture", "bottleneck");
  ADAPT_REQUIRE(arch == "bottleneck", UnsupportedError,
                "'{}': AdapterHub architecture \"{}\" is not supported; adapt reads bottleneck adapters (for LoRA use "
                "PEFT's format)",
                doc.path.string(), arch);
  require_off(doc, c, "ln_after", "a LayerNorm after the adapter is not implemented");
  require_off(doc, c, "use_gating", "gated adapters are not implemented");
  require_off(doc, c, "phm_layer", "PHM (Compacter) layers are not implemented");
  require_off(doc, c, "inv_adapter", "invertible adapters are not implemented");
  require_off(doc, c, "cross_adapter", "Llama has no cross-attention");
  ADAPT_REQUIRE(get_bool(doc, c, "original_ln_after", true), UnsupportedError,
                "'{}': original_ln_after = false drops the residual stream on a pre-norm model; not supported",
                doc.path.string());
  const json* scaling = field(c, "scaling");
  ADAPT_REQUIRE(!scaling || scaling->is_number(), UnsupportedError,
                "'{}': scaling {} is not supported; adapt implements a constant scaling (\"learned\" and \"channel\" "
                "are not)",
                doc.path.string(), scaling ? scaling->dump() : "");
  const json* residual = field(c, "residual_before_ln");
  ADAPT_REQUIRE(!residual || residual->is_boolean(), UnsupportedError,
                "'{}': residual_before_ln = {} is not supported (with a pre-norm model and no sub-block LayerNorm "
                "AdapterHub itself cannot run it)",
                doc.path.string(), residual ? residual->dump() : "");

  AdapterConfig cfg;
  cfg.kind = AdapterKind::Bottleneck;
  cfg.name = get_string(doc, j, "name", "");
  ADAPT_REQUIRE(!cfg.name.empty(), IoError, "'{}': \"name\" (the adapter name in the weight keys) is missing",
                doc.path.string());
  BottleneckConfig& bn = cfg.bottleneck;
  const bool mh = get_bool(doc, c, "mh_adapter", false), out = get_bool(doc, c, "output_adapter", false);
  const bool parallel = get_bool(doc, c, "is_parallel", false);
  const bool ln_before_orig = get_bool(doc, c, "original_ln_before", false);
  if (parallel && !mh && out) bn.placement = BnPlacement::Parallel;
  else if (!parallel && mh && out && !ln_before_orig) bn.placement = BnPlacement::Houlsby;
  else if (!parallel && !mh && out && ln_before_orig) bn.placement = BnPlacement::Pfeiffer;
  else
    ADAPT_THROW(UnsupportedError,
                "'{}': mh_adapter = {}, output_adapter = {}, is_parallel = {}, original_ln_before = {} is not one of "
                "the placements adapt implements: houlsby (double_seq_bn: true, true, false, false), pfeiffer "
                "(seq_bn: false, true, false, true), parallel (par_bn: false, true, true, any)",
                doc.path.string(), mh, out, parallel, ln_before_orig);
  bn.activation = parse_activation(doc, get_string(doc, c, "non_linearity", "relu"));
  bn.scaling = scaling ? scaling->get<double>() : 1.0;
  bn.ln_before = get_bool(doc, c, "ln_before", false);
  bn.residual_before_ln = residual ? residual->get<bool>() : true;
  // dropout and stochastic_depth act only in training: the adapter computes the same function without them.

  std::set<std::int64_t> skip;
  if (const json* lo = field(c, "leave_out")) {
    if (!lo->is_array()) bad_type(doc, "leave_out", "a list of layer indices", *lo);
    for (const json& e : *lo) {
      if (!e.is_number_integer()) bad_type(doc, "leave_out", "a list of layer indices", *lo);
      skip.insert(e.get<std::int64_t>());
    }
  }
  std::vector<std::int64_t> layers;
  for (int l = 0; l < static_cast<int>(model.n_layers); ++l)
    if (!skip.count(l)) layers.push_back(l);
  ADAPT_REQUIRE(!layers.empty(), IoError, "'{}': leave_out leaves no layer with an adapter", doc.path.string());
  if (static_cast<std::int64_t>(layers.size()) != model.n_layers) cfg.layers = layers;
  const json* rf = field(c, "reduction_factor");
  ADAPT_REQUIRE(rf, IoError, "'{}': \"config\" has no reduction_factor", doc.path.string());
  const std::int64_t m = bn_width(doc, *rf, model.hidden_size, static_cast<int>(layers.front()));
  for (const std::int64_t l : layers)
    ADAPT_REQUIRE(bn_width(doc, *rf, model.hidden_size, static_cast<int>(l)) == m, UnsupportedError,
                  "'{}': reduction_factor {} gives different widths per layer; adapt uses one width for every layer",
                  doc.path.string(), rf->dump());
  bn.size = m;

  const fs::path path = weights_file(dir, "adapter.safetensors", "pytorch_adapter.bin");
  const io::SafetensorsFile file(path);
  // Keys with or without the LlamaForCausalLM prefix "model." (AdapterHub's loader accepts both).
  std::map<std::string, std::string> keys;  // without prefix -> as stored
  for (const io::TensorInfo& info : file.tensors()) {
    const std::string bare = info.name.rfind("model.", 0) == 0 ? info.name.substr(6) : info.name;
    keys[bare] = info.name;
  }
  std::set<std::string> used;
  auto key = [&](const std::string& prefixed) -> const std::string& {
    const std::string bare = prefixed.substr(6);  // adapterhub_tensor_prefix starts with "model."
    const auto it = keys.find(bare);
    ADAPT_REQUIRE(it != keys.end(), IoError, "'{}': tensor '{}' is missing{}", path.string(), prefixed,
                  did_you_mean(prefixed, [&] {
                    std::vector<std::string> all;
                    for (const auto& kv : keys) all.push_back(kv.second);
                    return all;
                  }()));
    used.insert(it->first);
    return it->second;
  };

  AdapterSet set(model, cfg);
  for (const int layer : set.layers())
    for (const BlockSite site : {BlockSite::Attention, BlockSite::Mlp}) {
      BottleneckAdapter* ad = set.bottleneck(layer, site);
      if (!ad) continue;
      const std::string p = adapterhub_tensor_prefix(layer, site, cfg.name);
      std::string linear = p + "adapter_down.0.";
      if (ad->ln_before()) {
        read_checked(file, key(p + "adapter_down.0.weight"), ad->ln_weight);
        read_checked(file, key(p + "adapter_down.0.bias"), ad->ln_bias);
        for (const char* alias : {"adapter_norm_before.weight", "adapter_norm_before.bias"})
          if (keys.count((p + alias).substr(6))) used.insert((p + alias).substr(6));
        linear = p + "adapter_down.1.";
      }
      read_checked(file, key(linear + "weight"), ad->down_weight);
      read_checked(file, key(linear + "bias"), ad->down_bias);
      read_checked(file, key(p + "adapter_up.weight"), ad->up_weight);
      read_checked(file, key(p + "adapter_up.bias"), ad->up_bias);
    }
  for (const auto& [bare, stored] : keys)
    ADAPT_REQUIRE(used.count(bare), IoError,
                  "'{}': unexpected tensor '{}' (adapter_config.json describes the {} adapter '{}' on {} layers)",
                  path.string(), stored, bn_placement_name(bn.placement), cfg.name, set.layers().size());
  return set;
}

// ---- lora+bottleneck ------------------------------------------------------------------------------

/// The two parts of a lora+bottleneck folder as one set: the config of each part, the layers they
/// share, and every tensor copied by its (part-independent) parameter name.
AdapterSet combine(const AdapterSet& lora, const AdapterSet& bn, const fs::path& dir, const model::LlamaConfig& model) {
  ADAPT_REQUIRE(lora.layers() == bn.layers(), UnsupportedError,
                "'{}': the LoRA part ({}/) adapts layers [{}] but the bottleneck part ({}/) adapts layers [{}]; adapt "
                "applies both parts of a lora+bottleneck adapter to the same layers (load either part alone instead)",
                dir.string(), kLoraSubdir, fmt::join(lora.layers(), ", "), kBottleneckSubdir,
                fmt::join(bn.layers(), ", "));
  AdapterConfig cfg = bn.config();
  cfg.kind = AdapterKind::LoraBottleneck;
  cfg.lora = lora.config().lora;
  AdapterSet set(model, cfg);
  for (const AdapterParam& p : set.parameters()) {
    const Tensor* src = lora.find_parameter(p.name);
    if (!src) src = bn.find_parameter(p.name);
    ADAPT_CHECK(src != nullptr, "lora+bottleneck load: parameter '{}' is in neither part", p.name);
    Tensor dst = p.value;
    dst.copy_from(*src);
  }
  return set;
}

}  // namespace

AdapterFormat adapter_format_detect(const fs::path& dir) {
  ADAPT_REQUIRE(fs::is_directory(dir), IoError, "adapter folder '{}' does not exist or is not a folder", dir.string());
  const bool top = fs::exists(dir / "adapter_config.json");
  const bool sub_lora = fs::exists(dir / kLoraSubdir / "adapter_config.json");
  const bool sub_bn = fs::exists(dir / kBottleneckSubdir / "adapter_config.json");
  if (!top && (sub_lora || sub_bn)) {
    ADAPT_REQUIRE(sub_lora && sub_bn, IoError,
                  "'{}' has {}/adapter_config.json but no {}/adapter_config.json: a lora+bottleneck adapter folder "
                  "holds both parts (an export that did not finish?); to use the {} part alone pass '{}'",
                  dir.string(), sub_lora ? kLoraSubdir : kBottleneckSubdir, sub_lora ? kBottleneckSubdir : kLoraSubdir,
                  sub_lora ? "LoRA" : "bottleneck", (dir / (sub_lora ? kLoraSubdir : kBottleneckSubdir)).string());
    return AdapterFormat::LoraBottleneck;
  }
  ADAPT_REQUIRE(!(top && (sub_lora || sub_bn)), IoError,
                "'{}' holds adapter_config.json and also the {}/ subfolder of a lora+bottleneck adapter: which one is "
                "meant is ambiguous; pass the subfolder, or remove the files of the adapter you do not want",
                dir.string(), sub_lora ? kLoraSubdir : kBottleneckSubdir);
  const JsonDoc doc = read_config(dir);
  if (doc.j.contains("peft_type")) return AdapterFormat::Peft;
  if (doc.j.contains("config") && doc.j.contains("model_type")) return AdapterFormat::AdapterHub;
  ADAPT_THROW(IoError,
              "'{}' is neither a PEFT adapter config (no \"peft_type\") nor an AdapterHub one (no \"config\" and "
              "\"model_type\")",
              doc.path.string());
}

namespace {

/// " The adapter names its base model 'X'." from a folder's adapter_config.json (PEFT's
/// base_model_name_or_path, AdapterHub's model_name; the lora/ part of a lora+bottleneck folder), or ""
/// when it names none or cannot be read.
std::string base_model_note(const fs::path& dir) {
  for (const fs::path& file : {dir / "adapter_config.json", dir / kLoraSubdir / "adapter_config.json"}) {
    std::error_code ec;
    if (!fs::is_regular_file(file, ec)) continue;
    const json j = json::parse(file_read_text(file), nullptr, /*allow_exceptions=*/false);
    if (!j.is_object()) return "";
    for (const char* key : {"base_model_name_or_path", "model_name"}) {
      const auto it = j.find(key);
      if (it != j.end() && it->is_string() && !it->get<std::string>().empty())
        return fmt::format(" The adapter names its base model '{}'.", it->get<std::string>());
    }
    return "";
  }
  return "";
}

AdapterSet adapter_load_any(const fs::path& dir, const model::LlamaConfig& model) {
  switch (adapter_format_detect(dir)) {
    case AdapterFormat::Peft: return load_peft(dir, read_config(dir), model);
    case AdapterFormat::AdapterHub: return load_adapterhub(dir, read_config(dir), model);
    case AdapterFormat::LoraBottleneck: {
      const fs::path lora_dir = dir / kLoraSubdir, bn_dir = dir / kBottleneckSubdir;
      ADAPT_REQUIRE(adapter_format_detect(lora_dir) == AdapterFormat::Peft, IoError,
                    "'{}' must hold the LoRA part of a lora+bottleneck adapter in PEFT's format (\"peft_type\": "
                    "\"LORA\")",
                    (lora_dir / "adapter_config.json").string());
      ADAPT_REQUIRE(adapter_format_detect(bn_dir) == AdapterFormat::AdapterHub, IoError,
                    "'{}' must hold the bottleneck part of a lora+bottleneck adapter in AdapterHub's format",
                    (bn_dir / "adapter_config.json").string());
      return combine(load_peft(lora_dir, read_config(lora_dir), model),
                     load_adapterhub(bn_dir, read_config(bn_dir), model), dir, model);
    }
  }
  ADAPT_CHECK(false, "unreachable");
  return load_peft(dir, read_config(dir), model);
}

}  // namespace

AdapterSet adapter_load(const fs::path& dir, const model::LlamaConfig& model) {
  try {
    return adapter_load_any(dir, model);
  } catch (const ShapeError& e) {  // an adapter for another model: say which one it names
    throw ShapeError(e.what() + base_model_note(dir), e.where());
  }
}

}  // namespace adapt::adapters
