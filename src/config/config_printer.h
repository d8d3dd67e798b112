// Printing a described struct: to_toml() writes the resolved config (stored in checkpoints and the
// run folder, printed at startup) and help() writes the key reference for --help. Both read the
// same Schema as the binder, so neither can drift from what load() accepts.
#pragma once

#include <string>

#include "config/config_schema.h"

namespace adapt::config {

namespace detail {
std::string to_toml(const SchemaData& schema, const void* obj);
std::string help(const SchemaData& schema);
}  // namespace detail

/// Every field of `value` as TOML, in schema order: scalars first, then [tables] and [[arrays of
/// tables]]. Unset std::optional fields appear as comments ("# key = (unset)"). Paths are written as
/// stored (absolute after load), so parse_string(to_toml(x, s), any_name, s) == x.
template <typename T>
std::string to_toml(const T& value, const Schema<T>& schema) {
  return detail::to_toml(schema.data(), &value);
}

/// The key reference: one entry per key path (e.g. "train.optim.lr", "prompts[].text") with its
/// type, default (from a default-constructed T) or "required", constraints and doc string.
template <typename T>
std::string help(const Schema<T>& schema) {
  return detail::help(schema.data());
}

}  // namespace adapt::config
