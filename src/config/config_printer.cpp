// to_toml and help, written by hand (no toml++): values are formatted so that toml++ reads them back
// exactly (shortest round-trip floats, escaped basic strings, byte sizes as exact integers).
#include "config/config_printer.h"

#include <cmath>
#include <cstdint>

#include "core/strings.h"

namespace adapt::config::detail {
namespace {

/// fmt's shortest round-trip form, made a TOML float: "3" -> "3.0"; "inf", "nan", "1e-05" as is.
template <typename F>
std::string float_text(F v) {
  std::string s = fmt::format("{}", v);
  if (std::isfinite(v) && s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

std::string join_key(const std::string& prefix, const std::string& key) {
  return prefix.empty() ? key : prefix + "." + key;
}

/// A scalar or list value as TOML (`value` points at the unwrapped value).
std::string value_toml(const FieldDesc& f, const void* value) {
  switch (f.kind) {
    case FieldKind::Bool: return *static_cast<const bool*>(value) ? "true" : "false";
    case FieldKind::Int: return fmt::format("{}", *static_cast<const int*>(value));
    case FieldKind::Int64: return fmt::format("{}", *static_cast<const std::int64_t*>(value));
    case FieldKind::Float: return float_text(*static_cast<const float*>(value));
    case FieldKind::Double: return float_text(*static_cast<const double*>(value));
    case FieldKind::String: return toml_quote(*static_cast<const std::string*>(value));
    case FieldKind::Path: return toml_quote(static_cast<const fs::path*>(value)->string());
    case FieldKind::DType: return toml_quote(dtype_name(*static_cast<const DType*>(value)));
    case FieldKind::Bytes: {
      // TOML integers are signed 64-bit; larger counts go out as strings, which parse_byte_size reads.
      auto n = *static_cast<const std::uint64_t*>(value);
      return n > static_cast<std::uint64_t>(INT64_MAX) ? fmt::format("\"{}\"", n) : fmt::format("{}", n);
    }
    case FieldKind::Enum: return toml_quote(f.enum_names.at(f.enum_get(value)));
    case FieldKind::StringList: {
      std::vector<std::string> parts;
      for (const auto& s : *static_cast<const std::vector<std::string>*>(value)) parts.push_back(toml_quote(s));
      return fmt::format("[{}]", join(parts, ", "));
    }
    case FieldKind::Int64List: {
      std::vector<std::string> parts;
      for (auto v : *static_cast<const std::vector<std::int64_t>*>(value)) parts.push_back(fmt::format("{}", v));
      return fmt::format("[{}]", join(parts, ", "));
    }
    case FieldKind::Table:
    case FieldKind::TableArray: break;
  }
  ADAPT_CHECK(false, "value_toml called on table field '{}'", f.key);
  return {};
}

void emit_table(std::string& out, const SchemaData& schema, const void* obj, const std::string& header,
                bool array_element) {
  if (!header.empty()) out += array_element ? "\n[[" + header + "]]\n" : "\n[" + header + "]\n";
  // Plain keys first: TOML puts every key after a [header] into that table.
  for (const auto& f : schema.fields) {
    if (f.kind == FieldKind::Table) continue;
    const void* v = f.get(obj);
    if (f.kind == FieldKind::TableArray) {
      if (f.array_size(v) == 0) out += f.key + " = []\n";
    } else if (!v) {
      out += fmt::format("# {} = (unset)\n", f.key);
    } else if (f.kind == FieldKind::Bytes && *static_cast<const std::uint64_t*>(v) >= 1024) {
      out +=
          fmt::format("{} = {}  # {}\n", f.key, value_toml(f, v), format_bytes(*static_cast<const std::uint64_t*>(v)));
    } else {
      out += fmt::format("{} = {}\n", f.key, value_toml(f, v));
    }
  }
  for (const auto& f : schema.fields) {
    if (f.kind != FieldKind::Table) continue;
    const void* v = f.get(obj);
    if (v) emit_table(out, *f.nested, v, join_key(header, f.key), false);
    else out += fmt::format("\n# [{}] (unset)\n", join_key(header, f.key));
  }
  for (const auto& f : schema.fields) {
    if (f.kind != FieldKind::TableArray) continue;
    const void* v = f.get(obj);
    for (std::size_t i = 0; i < f.array_size(v); ++i)
      emit_table(out, *f.nested, f.array_at_const(v, i), join_key(header, f.key), true);
  }
}

/// `defaults` is the default-constructed struct at this level (from the parent's defaults when the
/// parent initialises the nested struct itself), so help shows what load() would really produce.
void emit_help(std::string& out, const SchemaData& schema, const void* defaults, const std::string& prefix) {
  for (const auto& f : schema.fields) {
    std::string path = join_key(prefix, f.key);
    std::string head;
    if (f.kind == FieldKind::Table) head = fmt::format("[{}] : table", path);
    else if (f.kind == FieldKind::TableArray) head = fmt::format("[[{}]] : array of tables", path);
    else head = fmt::format("{} : {}", path, kind_name(f));

    const void* def = f.get(defaults);
    if (f.required) head += " (required)";
    else if (f.optional && !def) head += " (optional; unset by default)";
    else if (f.kind != FieldKind::Table && f.kind != FieldKind::TableArray) head += " = " + value_toml(f, def);
    if (!f.one_of.empty()) {
      std::vector<std::string> q;
      for (const auto& o : f.one_of) q.push_back(toml_quote(o));
      head += "; one of " + join(q, ", ");
    }
    for (const auto& c : f.checks) head += "; " + c.expectation;
    out += head + "\n";
    if (!f.doc.empty()) out += "    " + f.doc + "\n";

    if (f.kind == FieldKind::Table) emit_help(out, *f.nested, def ? def : f.nested->defaults.get(), path);
    if (f.kind == FieldKind::TableArray) emit_help(out, *f.nested, f.nested->defaults.get(), path + "[]");
  }
}

}  // namespace

std::string to_toml(const SchemaData& schema, const void* obj) {
  std::string out;
  emit_table(out, schema, obj, "", false);
  if (!out.empty() && out.front() == '\n') out.erase(0, 1);
  return out;
}

std::string help(const SchemaData& schema) {
  std::string out;
  emit_help(out, schema, schema.defaults.get(), "");
  return out;
}

}  // namespace adapt::config::detail
