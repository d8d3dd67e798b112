// AdapterConfig: the [adapter] section of a job — which adapter (LoRA, bottleneck or both), its shape,
// placement, initialisation and layer selection. Header-only plain structs: config/ fills them from
// TOML, adapters/ validates them (adapter_config_check.h) against the base model and builds them.
// Defaults make the adapted model start exactly equal to the base (LoRA B = 0, bottleneck up = 0).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace adapt::adapters {

/// LoraBottleneck: both at once on the same layers, through the one hook (LoRA on the projections,
/// the bottleneck adapter at the sub-block ends), trained together by one optimizer.
enum class AdapterKind { Lora, Bottleneck, LoraBottleneck };

/// TOML names of AdapterKind (config schema enumeration(), messages).
inline std::vector<std::pair<std::string, AdapterKind>> adapter_kind_names() {
  return {{"lora", AdapterKind::Lora},
          {"bottleneck", AdapterKind::Bottleneck},
          {"lora+bottleneck", AdapterKind::LoraBottleneck}};
}

/// Whether a kind has LoRA sites ([adapter.lora] applies) / bottleneck modules ([adapter.bottleneck]).
inline bool kind_has_lora(AdapterKind kind) { return kind != AdapterKind::Bottleneck; }
inline bool kind_has_bottleneck(AdapterKind kind) { return kind != AdapterKind::Lora; }

/// LoRA A/B initialisation (SPEC-llama.md §5.4). Both start with B = 0, so the adapter is a no-op.
enum class LoraInit {
  Peft,      // PEFT's default (init_lora_weights = true): A ~ kaiming_uniform(a=√5) = U(−1/√in, 1/√in)
  Gaussian,  // PEFT's "gaussian": A ~ N(0, std = 1/r)
};

inline std::vector<std::pair<std::string, LoraInit>> lora_init_names() {
  return {{"peft", LoraInit::Peft}, {"gaussian", LoraInit::Gaussian}};
}

/// The projections LoRA may target, by their short names (PEFT's module names add "_proj").
inline std::vector<std::string> lora_target_names() { return {"q", "k", "v", "o", "gate", "up", "down"}; }

struct LoraConfig {
  std::int64_t r = 8;    // rank
  double alpha = 16.0;   // scaling s = alpha / r (alpha / √r with use_rslora)
  double dropout = 0.0;  // on the LoRA input only, in [0, 1); masks are a function of (seed, step, site, element)
  std::vector<std::string> targets = {"q", "v"};  // subset of lora_target_names() (PEFT's Llama default: q, v)
  bool use_rslora = false;
  LoraInit init = LoraInit::Peft;
};

/// Where bottleneck adapters sit in a decoder layer and what they read (SPEC-llama.md §6.3). With h
/// the sub-block input (residual stream) and f its output, s the scaling and A = up∘act∘down:
enum class BnPlacement {
  Houlsby,   // after attention and after the MLP: new h = h + f + s·A(f)      (AdapterHub double_seq_bn)
  Pfeiffer,  // after the MLP only:                new h = h + f + s·A(h + f)  (AdapterHub seq_bn)
  Parallel,  // beside the MLP:                    new h = h + f + s·A(h)      (AdapterHub par_bn)
};

inline std::vector<std::pair<std::string, BnPlacement>> bn_placement_names() {
  return {{"houlsby", BnPlacement::Houlsby}, {"pfeiffer", BnPlacement::Pfeiffer}, {"parallel", BnPlacement::Parallel}};
}

enum class BnActivation {
  Relu,
  Swish,  // SiLU: z·σ(z)
  Gelu,   // exact: 0.5·z·(1 + erf(z/√2))
};

inline std::vector<std::pair<std::string, BnActivation>> bn_activation_names() {
  return {{"relu", BnActivation::Relu}, {"swish", BnActivation::Swish}, {"gelu", BnActivation::Gelu}};
}

struct BottleneckConfig {
  /// Bottleneck width m: set exactly one of `size` and `reduction_factor` (m = ⌊C / reduction_factor⌋,
  /// at least 1, as AdapterHub computes it).
  std::optional<std::int64_t> size;
  std::optional<double> reduction_factor;
  BnPlacement placement = BnPlacement::Pfeiffer;
  BnActivation activation = BnActivation::Relu;
  double scaling = 1.0;    // s, a constant (AdapterHub's "learned"/"channel" scalings are not supported)
  bool ln_before = false;  // a LayerNorm (weight 1, bias 0, eps 1e-5) on the adapter input
  /// AdapterHub's residual_before_ln: the adapter's skip connection is taken from the sub-block output
  /// f. It is a structural choice, not a knob, on a pre-norm model: false is accepted only where it
  /// changes nothing (houlsby, parallel); with pfeiffer it would add the residual stream twice.
  bool residual_before_ln = true;
};

/// Which decoder layers get adapters: all (default), an explicit list, or the last N.
struct AdapterConfig {
  AdapterKind kind = AdapterKind::Lora;
  /// The adapter's name: AdapterHub's <name> in weight keys and adapter_config.json. [A-Za-z0-9_-]+.
  std::string name = "adapt";
  std::int64_t seed = 0;               // initialisation and dropout masks
  std::vector<std::int64_t> layers;    // explicit layer indices (0-based); empty: see last_n
  std::optional<std::int64_t> last_n;  // the last N layers; unset and `layers` empty: every layer
  LoraConfig lora;
  BottleneckConfig bottleneck;
};

}  // namespace adapt::adapters
