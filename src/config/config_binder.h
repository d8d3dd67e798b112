// Loading a TOML job file into a described struct: parse, apply --set overrides, bind, validate.
// Every failure is a ConfigError naming file:line:column, the full key path, what was found, what
// was expected and what to do. toml++ stays inside config_binder.cpp.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "config/config_schema.h"

namespace adapt::config {

namespace detail {
/// Parses `text` (named `source_name` in messages; relative paths resolve against its folder),
/// applies `overrides`, and binds into `obj`, a default-constructed struct described by `schema`.
void bind_text(std::string_view text, const std::string& source_name, const SchemaData& schema, void* obj,
               const std::vector<std::string>& overrides);
}  // namespace detail

/// Reads `file` and returns the struct it describes.
///
/// - Absent keys keep the struct's default member values; absent std::optional fields stay nullopt.
/// - Relative paths are resolved against the folder of `file` and returned absolute and normalised.
/// - `overrides` are "--set" arguments without the flag, "section.key=value" (arrays of tables are
///   indexed as "prompts[1].text=..."), applied in order on top of the file. The value is parsed as a
///   TOML value (1e-4, true, [1, 2], "x") and, when that fails, taken as a bare string
///   (model.path=/data/llama). Relative paths given this way resolve against the current directory.
/// - Unknown keys, wrong types, out-of-range values, missing required keys and failed checks throw
///   ConfigError with file:line:column (or "--set key=value") and the key path (e.g. train.optim.lr).
///   A missing or unreadable file throws ConfigError / IoError naming it.
template <typename T>
T load(const fs::path& file, const Schema<T>& schema, const std::vector<std::string>& overrides = {});

/// As load(), from text in memory; `source_name` stands for the file name in messages and in path
/// resolution (a relative name resolves against the current directory).
template <typename T>
T parse_string(std::string_view text, const std::string& source_name, const Schema<T>& schema,
               const std::vector<std::string>& overrides = {}) {
  T out{};
  detail::bind_text(text, source_name, schema.data(), &out, overrides);
  return out;
}

namespace detail {
/// Reads a config file's text; ConfigError when it does not exist (with the current directory).
std::string read_config_file(const fs::path& file);
}  // namespace detail

template <typename T>
T load(const fs::path& file, const Schema<T>& schema, const std::vector<std::string>& overrides) {
  return parse_string(detail::read_config_file(file), file.string(), schema, overrides);
}

}  // namespace adapt::config
