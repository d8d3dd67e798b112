// LlamaConfig: the hyper-parameters of a HF LlamaForCausalLM (config.json, SPEC-llama.md §2), parsed
// strictly (wrong types and missing structural fields are errors naming the file and key), plus the
// presets adapt_model makes and the parameter arithmetic every memory estimate builds on.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "dtype/dtype.h"
#include "model/model_recipe.h"

namespace adapt::model {

namespace fs = std::filesystem;

enum class RopeType { Default, Linear, Llama3 };

struct RopeScaling {
  RopeType type = RopeType::Default;
  double factor = 1.0;                                // linear and llama3
  double low_freq_factor = 1.0;                       // llama3
  double high_freq_factor = 4.0;                      // llama3
  std::int64_t original_max_position_embeddings = 0;  // llama3
};

struct LlamaConfig {
  std::string model_type = "llama";
  std::int64_t hidden_size = 0;        // C
  std::int64_t intermediate_size = 0;  // F
  std::int64_t n_layers = 0;           // L  (num_hidden_layers)
  std::int64_t n_heads = 0;            // H  (num_attention_heads)
  std::int64_t n_kv_heads = 0;         // Hkv (num_key_value_heads; defaults to H)
  std::int64_t head_dim = 0;           // D  (defaults to C / H)
  std::int64_t vocab_size = 0;         // V
  std::int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  bool attention_bias = false;
  bool mlp_bias = false;
  double attention_dropout = 0.0;
  bool tie_word_embeddings = false;
  std::string hidden_act = "silu";
  std::int64_t bos_token_id = 1;
  std::vector<std::int64_t> eos_token_ids = {2};
  std::optional<std::int64_t> pad_token_id;
  DType torch_dtype = DType::BF16;
  double initializer_range = 0.02;

  /// Checks the relations between fields (heads divide, GQA grouping, rope scaling keys, ids in
  /// range); ConfigError naming `source` and the field otherwise.
  void validate(const std::string& source) const;
};

/// IoError unless `dir` is a folder: "<given_as> = '<dir>' does not exist" (or "is not a folder") with
/// what a model folder holds. `given_as` names where it came from: "model.path", "--model".
void model_folder_require(const fs::path& dir, const std::string& given_as);

/// Parses a HF config.json text. `source` (the file path) prefixes every error message.
LlamaConfig llama_config_parse(const std::string& json_text, const std::string& source);
/// Reads and parses DIR/config.json.
LlamaConfig llama_config_load(const fs::path& model_dir);
/// The ids that end a reply of the model in DIR, as HF generate() takes them: generation_config.json's
/// eos_token_id (an integer or a list), else config.json's; empty when neither file names any. IoError
/// naming the file for malformed JSON or an eos_token_id that is not integers.
std::vector<std::int64_t> model_eos_token_ids(const fs::path& model_dir);
/// HF config.json text for `cfg` (architectures, model_type, every field of SPEC §2.1).
std::string llama_config_to_json(const LlamaConfig& cfg);

/// Preset names accepted by llama_config_preset, in display order.
std::vector<std::string> llama_preset_names();
/// tiny | bench | llama-3.1-8b | llama-3.1-70b | llama-3.1-405b | llama-2-7b | codellama-7b.
/// ConfigError with the list (and a suggestion) for unknown names.
LlamaConfig llama_config_preset(const std::string& name);

/// The preset named by `recipe`, with its layer count, tying and shape overrides applied and checked.
LlamaConfig llama_config_from_recipe(const ModelRecipe& recipe);

struct ParamCounts {
  std::int64_t embedding = 0;   // V*C
  std::int64_t lm_head = 0;     // V*C, 0 when tied
  std::int64_t per_layer = 0;   // attention + MLP + 2 norms (+ biases)
  std::int64_t final_norm = 0;  // C
  std::int64_t total = 0;
  std::int64_t n_tensors = 0;  // tensors in a HF checkpoint (lm_head counted when untied)
};
ParamCounts llama_param_counts(const LlamaConfig& cfg);

/// The effective llama3 / linear / default inverse frequencies (D/2 values), as HF computes them
/// in float32 (SPEC §3.2–3.3).
std::vector<float> rope_inv_freq(const LlamaConfig& cfg);

std::string rope_type_name(RopeType t);

}  // namespace adapt::model
