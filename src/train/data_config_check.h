// Validation of DataConfig against the model it trains (seq_len within the context), with
// ConfigError messages naming the data.* key, plus path resolution for the TOML loader.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "train/data_config.h"

namespace adapt::train {

/// "text", "prompt_completion", "chat", "raw".
std::string data_format_name(DataFormat format);
/// As above; "auto" when unset (detected per file).
std::string data_format_name(const std::optional<DataFormat>& format);
/// The inverse of data_format_name; ConfigError naming data.format (with a suggestion) otherwise.
DataFormat data_format_parse(std::string_view name);

/// Checks every field; `model_context` is the model's maximum sequence length
/// (max_position_embeddings). ConfigError naming the key, e.g. "data.seq_len = 9000 exceeds the
/// model's context of 8192; set data.seq_len <= 8192". Reads no files.
void data_config_validate(const DataConfig& config, std::int64_t model_context);

}  // namespace adapt::train
