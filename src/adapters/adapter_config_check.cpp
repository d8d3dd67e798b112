#include "adapters/adapter_config_check.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "core/error.h"
#include "core/strings.h"

namespace adapt::adapters {

using model::WeightKind;

namespace {

template <typename E>
std::string enum_name(const std::vector<std::pair<std::string, E>>& names, E value) {
  for (const auto& [name, v] : names)
    if (v == value) return name;
  ADAPT_CHECK(false, "enum value {} has no name", static_cast<int>(value));
  return {};
}

bool valid_adapter_name(const std::string& name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

void validate_lora(const LoraConfig& lora) {
  ADAPT_REQUIRE(lora.r > 0, ConfigError, "adapter.lora.r must be positive (got {})", lora.r);
  ADAPT_REQUIRE(std::isfinite(lora.alpha) && lora.alpha > 0, ConfigError,
                "adapter.lora.alpha must be positive and finite (got {}); the LoRA scaling is alpha / r", lora.alpha);
  ADAPT_REQUIRE(lora.dropout >= 0.0 && lora.dropout < 1.0, ConfigError,
                "adapter.lora.dropout must be in [0, 1) (got {})", lora.dropout);
  ADAPT_REQUIRE(!lora.targets.empty(), ConfigError,
                "adapter.lora.targets is empty; list the projections to adapt, e.g. [\"q\", \"v\"] (choices: {})",
                join(lora_target_names(), ", "));
  std::set<std::string> seen;
  for (const std::string& t : lora.targets) {
    lora_target_kind(t);  // throws with a suggestion
    ADAPT_REQUIRE(seen.insert(t).second, ConfigError, "adapter.lora.targets lists '{}' twice", t);
  }
}

void validate_bottleneck(const BottleneckConfig& bn) {
  ADAPT_REQUIRE(bn.size.has_value() != bn.reduction_factor.has_value(), ConfigError,
                "adapter.bottleneck: set exactly one of adapter.bottleneck.size (the width m, e.g. 64) and "
                "adapter.bottleneck.reduction_factor (m = hidden_size / reduction_factor); {}",
                bn.size ? "both are set" : "neither is set");
  if (bn.size) ADAPT_REQUIRE(*bn.size > 0, ConfigError, "adapter.bottleneck.size must be positive (got {})", *bn.size);
  if (bn.reduction_factor)
    ADAPT_REQUIRE(std::isfinite(*bn.reduction_factor) && *bn.reduction_factor > 0, ConfigError,
                  "adapter.bottleneck.reduction_factor must be positive and finite (got {})", *bn.reduction_factor);
  ADAPT_REQUIRE(std::isfinite(bn.scaling), ConfigError, "adapter.bottleneck.scaling must be finite (got {})",
                bn.scaling);
  ADAPT_REQUIRE(bn.residual_before_ln || bn.placement != BnPlacement::Pfeiffer, ConfigError,
                "adapter.bottleneck.residual_before_ln = false with placement = \"pfeiffer\" would take the adapter's "
                "skip connection after the residual add, so AdapterHub adds the residual stream twice on a pre-norm "
                "model like Llama (new h = 2h + f + s·A(h + f)); keep residual_before_ln = true");
}

}  // namespace

void adapter_config_validate(const AdapterConfig& config) {
  ADAPT_REQUIRE(valid_adapter_name(config.name), ConfigError,
                "adapter.name = \"{}\": use letters, digits, '_' and '-' only (it becomes part of AdapterHub weight "
                "names such as ...adapters.<name>.adapter_up.weight)",
                config.name);
  ADAPT_REQUIRE(config.layers.empty() || !config.last_n, ConfigError,
                "adapter.layers and adapter.last_n are both set; choose one (or neither, for every layer)");
  if (config.last_n)
    ADAPT_REQUIRE(*config.last_n > 0, ConfigError, "adapter.last_n must be positive (got {})", *config.last_n);
  std::set<std::int64_t> seen;
  for (const std::int64_t layer : config.layers) {
    ADAPT_REQUIRE(layer >= 0, ConfigError, "adapter.layers contains {}; layer indices start at 0", layer);
    ADAPT_REQUIRE(seen.insert(layer).second, ConfigError, "adapter.layers lists layer {} twice", layer);
  }
  if (kind_has_lora(config.kind)) validate_lora(config.lora);
  if (kind_has_bottleneck(config.kind)) validate_bottleneck(config.bottleneck);
}

void adapter_config_validate(const AdapterConfig& config, const model::LlamaConfig& model) {
  adapter_config_validate(config);
  const std::int64_t L = model.n_layers;
  for (const std::int64_t layer : config.layers)
    ADAPT_REQUIRE(layer < L, ConfigError, "adapter.layers contains {} but the model has {} layers (0..{})", layer, L,
                  L - 1);
  if (config.last_n)
    ADAPT_REQUIRE(*config.last_n <= L, ConfigError, "adapter.last_n = {} exceeds the model's {} layers", *config.last_n,
                  L);
  if (kind_has_bottleneck(config.kind) && config.bottleneck.size)
    ADAPT_REQUIRE(
        *config.bottleneck.size <= model.hidden_size, ConfigError,
        "adapter.bottleneck.size = {} exceeds the model's hidden_size = {}; a bottleneck is narrower than the "
        "residual stream",
        *config.bottleneck.size, model.hidden_size);
}

std::vector<int> adapter_layers(const AdapterConfig& config, const model::LlamaConfig& model) {
  const int L = static_cast<int>(model.n_layers);
  std::vector<int> layers;
  if (!config.layers.empty()) {
    for (const std::int64_t l : config.layers) layers.push_back(static_cast<int>(l));
    std::sort(layers.begin(), layers.end());
  } else {
    const int first = config.last_n ? L - static_cast<int>(*config.last_n) : 0;
    for (int l = first; l < L; ++l) layers.push_back(l);
  }
  return layers;
}

double lora_scaling(const LoraConfig& lora) {
  const double r = static_cast<double>(lora.r);
  return lora.use_rslora ? lora.alpha / std::sqrt(r) : lora.alpha / r;
}

model::WeightKind lora_target_kind(std::string_view target) {
  static const std::pair<const char*, WeightKind> kTable[] = {
      {"q", WeightKind::Wq},       {"k", WeightKind::Wk},   {"v", WeightKind::Wv},      {"o", WeightKind::Wo},
      {"gate", WeightKind::WGate}, {"up", WeightKind::WUp}, {"down", WeightKind::WDown}};
  for (const auto& [name, kind] : kTable)
    if (target == name) return kind;
  std::string hint = did_you_mean(target, lora_target_names());
  if (target.size() > 5 && target.substr(target.size() - 5) == "_proj")
    hint = fmt::format(" (write '{}' without the '_proj' suffix)", target.substr(0, target.size() - 5));
  ADAPT_THROW(ConfigError, "adapter.lora.targets: unknown projection '{}'{}; choose from {}", target, hint,
              join(lora_target_names(), ", "));
}

std::string lora_target_name(model::WeightKind kind) {
  switch (kind) {
    case WeightKind::Wq: return "q";
    case WeightKind::Wk: return "k";
    case WeightKind::Wv: return "v";
    case WeightKind::Wo: return "o";
    case WeightKind::WGate: return "gate";
    case WeightKind::WUp: return "up";
    case WeightKind::WDown: return "down";
    default: break;
  }
  ADAPT_CHECK(false, "weight kind {} is not a LoRA target", static_cast<int>(kind));
  return {};
}

std::string lora_module_name(model::WeightKind kind) { return lora_target_name(kind) + "_proj"; }

std::pair<std::int64_t, std::int64_t> lora_site_dims(model::WeightKind kind, const model::LlamaConfig& model) {
  const std::int64_t C = model.hidden_size, F = model.intermediate_size;
  const std::int64_t q = model.n_heads * model.head_dim, kv = model.n_kv_heads * model.head_dim;
  switch (kind) {
    case WeightKind::Wq: return {C, q};
    case WeightKind::Wk:
    case WeightKind::Wv: return {C, kv};
    case WeightKind::Wo: return {q, C};
    case WeightKind::WGate:
    case WeightKind::WUp: return {C, F};
    case WeightKind::WDown: return {F, C};
    default: break;
  }
  ADAPT_CHECK(false, "weight kind {} is not a LoRA target", static_cast<int>(kind));
  return {};
}

double python_floordiv(double a, double b) {
  // CPython's float_divmod: fmod is exact; snap the quotient to the nearest integral value.
  double mod = std::fmod(a, b);
  double div = (a - mod) / b;
  if (mod != 0.0 && ((b < 0) != (mod < 0))) div -= 1.0;
  if (div == 0.0) return std::copysign(0.0, a / b);
  double floordiv = std::floor(div);
  if (div - floordiv > 0.5) floordiv += 1.0;
  return floordiv;
}

std::int64_t bottleneck_size(const BottleneckConfig& bn, std::int64_t hidden_size) {
  if (bn.size) return *bn.size;
  ADAPT_CHECK(bn.reduction_factor.has_value(), "bottleneck config without size or reduction_factor");
  const double m = python_floordiv(static_cast<double>(hidden_size), *bn.reduction_factor);
  return std::max<std::int64_t>(1, static_cast<std::int64_t>(m));
}

double bottleneck_reduction_factor(std::int64_t hidden_size, std::int64_t m) {
  const double C = static_cast<double>(hidden_size);
  const double target = static_cast<double>(m);
  double rf = C / target;
  // C / m rounded may land just above the exact quotient, making C // rf = m - 1: step down by ulps.
  for (int i = 0; i < 8 && python_floordiv(C, rf) != target; ++i)
    rf = std::nextafter(rf, python_floordiv(C, rf) < target ? 0.0 : C * 2);
  ADAPT_CHECK(python_floordiv(C, rf) == target, "no reduction factor gives width {} for hidden size {}", m,
              hidden_size);
  return rf;
}

std::string adapter_kind_name(AdapterKind kind) { return enum_name(adapter_kind_names(), kind); }
std::string bn_placement_name(BnPlacement placement) { return enum_name(bn_placement_names(), placement); }
std::string bn_activation_name(BnActivation activation) { return enum_name(bn_activation_names(), activation); }
std::string lora_init_name(LoraInit init) { return enum_name(lora_init_names(), init); }

}  // namespace adapt::adapters
