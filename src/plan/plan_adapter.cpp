// --adapter parsing and the adapter's parameter counts per tensor-parallel rank.
#include <fmt/format.h>

#include <algorithm>

#include "adapters/adapter_config_check.h"
#include "core/error.h"
#include "core/strings.h"
#include "model/tensor_parallel.h"
#include "parallel/llama_sharding.h"
#include "plan/plan.h"

namespace adapt::plan {

namespace {

constexpr const char* kAdapterForms =
    "accepted forms: lora:r=16[,alpha=32][,targets=q+k+v+o+gate+up+down|all][,dropout=0.1], "
    "bottleneck:64[,placement=pfeiffer|houlsby|parallel][,ln], or both joined by '/' "
    "(lora:r=16/bottleneck:64)";

[[noreturn]] void bad_spec(const std::string& text, const std::string& why) {
  ADAPT_THROW(ConfigError, "--adapter '{}': {}; {}", text, why, kAdapterForms);
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::size_t start = 0;
  while (true) {
    const std::size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string::npos ? std::string::npos : at - start));
    if (at == std::string::npos) return out;
    start = at + 1;
  }
}

std::int64_t to_int(const std::string& text, const std::string& whole, const std::string& what) {
  const std::optional<std::int64_t> v = parse_int(text);
  if (!v || *v <= 0) bad_spec(whole, fmt::format("{} '{}' is not a positive integer", what, text));
  return *v;
}

double to_double(const std::string& text, const std::string& whole, const std::string& what) {
  try {
    std::size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  bad_spec(whole, fmt::format("{} '{}' is not a number", what, text));
}

void parse_lora(const std::string& body, const std::string& whole, adapters::LoraConfig& lora) {
  bool have_r = false;
  for (const std::string& kv : split(body, ',')) {
    const std::size_t eq = kv.find('=');
    if (eq == std::string::npos) bad_spec(whole, fmt::format("'{}' in the lora part is not key=value", kv));
    const std::string key = kv.substr(0, eq), value = kv.substr(eq + 1);
    if (key == "r") {
      lora.r = to_int(value, whole, "r");
      have_r = true;
    } else if (key == "alpha") {
      lora.alpha = to_double(value, whole, "alpha");
    } else if (key == "dropout") {
      lora.dropout = to_double(value, whole, "dropout");
    } else if (key == "targets") {
      lora.targets = value == "all" ? adapters::lora_target_names() : split(value, '+');
      for (const std::string& t : lora.targets) {
        const auto names = adapters::lora_target_names();
        if (std::find(names.begin(), names.end(), t) == names.end())
          bad_spec(whole, fmt::format("unknown LoRA target '{}'{} (targets: {} or all)", t, did_you_mean(t, names),
                                      join(names, "+")));
      }
    } else {
      bad_spec(whole, fmt::format("unknown lora key '{}'{} (r, alpha, targets, dropout)", key,
                                  did_you_mean(key, {"r", "alpha", "targets", "dropout"})));
    }
  }
  if (!have_r) bad_spec(whole, "the lora part needs r=N");
}

void parse_bottleneck(const std::string& body, const std::string& whole, adapters::BottleneckConfig& bn) {
  const std::vector<std::string> parts = split(body, ',');
  bn.size = to_int(parts[0], whole, "the bottleneck width");
  for (std::size_t i = 1; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p == "ln") {
      bn.ln_before = true;
    } else if (p.rfind("placement=", 0) == 0) {
      const std::string v = p.substr(10);
      bool found = false;
      for (const auto& [name, placement] : adapters::bn_placement_names())
        if (name == v) bn.placement = placement, found = true;
      if (!found) bad_spec(whole, fmt::format("unknown placement '{}' (pfeiffer, houlsby, parallel)", v));
    } else {
      bad_spec(whole, fmt::format("unknown bottleneck option '{}' (placement=..., ln)", p));
    }
  }
}

parallel::LlamaTensor base_of(model::WeightKind k) {
  switch (k) {
    case model::WeightKind::Wq: return parallel::LlamaTensor::Wq;
    case model::WeightKind::Wk: return parallel::LlamaTensor::Wk;
    case model::WeightKind::Wv: return parallel::LlamaTensor::Wv;
    case model::WeightKind::Wo: return parallel::LlamaTensor::Wo;
    case model::WeightKind::WGate: return parallel::LlamaTensor::WGate;
    case model::WeightKind::WUp: return parallel::LlamaTensor::WUp;
    case model::WeightKind::WDown: return parallel::LlamaTensor::WDown;
    default: ADAPT_THROW(InternalError, "LoRA does not attach to weight kind {}", static_cast<int>(k));
  }
}

}  // namespace

adapters::AdapterConfig parse_adapter_spec(const std::string& text) {
  adapters::AdapterConfig a;
  bool lora = false, bn = false;
  if (text.empty()) bad_spec(text, "empty");
  for (const std::string& part : split(text, '/')) {
    const std::size_t colon = part.find(':');
    const std::string kind = part.substr(0, colon);
    const std::string body = colon == std::string::npos ? "" : part.substr(colon + 1);
    if (kind == "lora" && !lora) {
      if (body.empty()) bad_spec(text, "the lora part needs r=N (lora:r=16)");
      parse_lora(body, text, a.lora);
      lora = true;
    } else if (kind == "bottleneck" && !bn) {
      if (body.empty()) bad_spec(text, "the bottleneck part needs its width (bottleneck:64)");
      parse_bottleneck(body, text, a.bottleneck);
      bn = true;
    } else {
      bad_spec(text, fmt::format("'{}' is not an adapter kind, or is given twice", kind));
    }
  }
  a.kind = lora && bn ? adapters::AdapterKind::LoraBottleneck
                      : (lora ? adapters::AdapterKind::Lora : adapters::AdapterKind::Bottleneck);
  try {
    adapters::adapter_config_validate(a);
  } catch (const ConfigError& e) {
    bad_spec(text, e.what());
  }
  return a;
}

std::string adapter_spec_str(const adapters::AdapterConfig& a, const model::LlamaConfig& m) {
  std::vector<std::string> parts;
  if (adapters::kind_has_lora(a.kind))
    parts.push_back(fmt::format("LoRA r={} on {}", a.lora.r, join(a.lora.targets, ", ")));
  if (adapters::kind_has_bottleneck(a.kind))
    parts.push_back(fmt::format("bottleneck m={} ({})", adapters::bottleneck_size(a.bottleneck, m.hidden_size),
                                adapters::bn_placement_name(a.bottleneck.placement)));
  return fmt::format("{}, {} layers", join(parts, " + "), adapters::adapter_layers(a, m).size());
}

std::int64_t lora_sites(const model::LlamaConfig& m, const adapters::AdapterConfig& a) {
  if (!adapters::kind_has_lora(a.kind)) return 0;
  return static_cast<std::int64_t>(adapters::adapter_layers(a, m).size() * a.lora.targets.size());
}

std::int64_t adapter_params_on_rank(const model::LlamaConfig& m, const adapters::AdapterConfig& a, int tp,
                                    int tp_rank) {
  const std::int64_t n_layers = static_cast<std::int64_t>(adapters::adapter_layers(a, m).size());
  std::int64_t per_layer = 0;
  if (adapters::kind_has_lora(a.kind)) {
    const parallel::LlamaDims dims = model::llama_dims(m);
    for (const std::string& t : a.lora.targets) {
      const parallel::LoraShard s =
          parallel::lora_shard(base_of(adapters::lora_target_kind(t)), a.lora.r, dims, tp, tp_rank);
      per_layer += s.a.numel() + s.b.numel();
    }
  }
  if (adapters::kind_has_bottleneck(a.kind)) {
    const std::int64_t C = m.hidden_size, w = adapters::bottleneck_size(a.bottleneck, C);
    const std::int64_t module = 2 * w * C + w + C + (a.bottleneck.ln_before ? 2 * C : 0);
    per_layer += module * (a.bottleneck.placement == adapters::BnPlacement::Houlsby ? 2 : 1);
  }
  return per_layer * n_layers;
}

parallel::Zero1Layout adapter_zero1_layout(const model::LlamaConfig& m, const adapters::AdapterConfig& a, int tp,
                                           int tp_rank, int dp) {
  const auto n_layers = static_cast<std::int64_t>(adapters::adapter_layers(a, m).size());
  // Every adapted layer holds the same parameters (adapter_params_on_rank's per-layer count).
  const std::int64_t per_layer = n_layers > 0 ? adapter_params_on_rank(m, a, tp, tp_rank) / n_layers : 0;
  return parallel::zero1_layout(std::vector<std::int64_t>(static_cast<std::size_t>(n_layers), per_layer),
                                parallel::kDpBucketElems, dp);
}

std::int64_t adapter_params(const model::LlamaConfig& m, const adapters::AdapterConfig& a) {
  return adapter_params_on_rank(m, a, 1, 0);
}

}  // namespace adapt::plan
