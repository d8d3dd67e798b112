// ModelRecipe: what `adapt_model make` builds, as written in a recipe TOML (inputs/models/*.toml):
// a preset plus optional shape overrides, storage options and the tokenizer source. Header-only, so
// that config/ can fill it without depending on model/'s code.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "dtype/dtype.h"

namespace adapt::model {

/// Overrides of a preset's shape; unset fields keep the preset's value.
struct ShapeOverrides {
  std::optional<std::int64_t> hidden_size;
  std::optional<std::int64_t> intermediate_size;
  std::optional<std::int64_t> n_heads;
  std::optional<std::int64_t> n_kv_heads;
  std::optional<std::int64_t> head_dim;
  std::optional<std::int64_t> vocab_size;
  std::optional<std::int64_t> max_position_embeddings;
  std::optional<double> rope_theta;
  std::optional<std::string> rope_type;  // "default" | "linear" | "llama3"
  std::optional<double> rope_factor;
  std::optional<std::int64_t> rope_original_max_position_embeddings;
};

struct ModelRecipe {
  std::string preset = "tiny";
  std::optional<std::int64_t> layers;
  DType dtype = DType::BF16;
  std::int64_t seed = 0;
  std::uint64_t max_shard_size = 5'000'000'000ull;
  bool tied = false;
  std::optional<std::filesystem::path> tokenizer;  // copy this tokenizer instead of training one
  std::optional<std::filesystem::path> corpus;     // text for the built-in tokenizer's merges
  std::int64_t merges = 512;
  ShapeOverrides shape;
};

}  // namespace adapt::model
