// Type names shared by the binder's messages and help(), and the key checks run when a schema is
// built (a bad key there is a bug in adapt, not a user error).
#include "config/config_schema.h"

#include <algorithm>

#include "core/strings.h"

namespace adapt::config::detail {

std::string toml_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) out += fmt::format("\\u{:04X}", static_cast<int>(c));
        else out += c;
    }
  }
  return out + "\"";
}

static std::string quoted_list(const std::vector<std::string>& names, std::string_view sep) {
  std::vector<std::string> q;
  for (const auto& n : names) q.push_back(toml_quote(n));
  return join(q, sep);
}

std::string kind_expected(const FieldDesc& f) {
  switch (f.kind) {
    case FieldKind::Bool: return "a boolean (true or false)";
    case FieldKind::Int:
    case FieldKind::Int64: return "an integer";
    case FieldKind::Float:
    case FieldKind::Double: return "a float";
    case FieldKind::String: return "a string";
    case FieldKind::Path: return "a string (a path)";
    case FieldKind::DType: return "a dtype string (f32, bf16, f16, i32, i64 or u8)";
    case FieldKind::Bytes: return "a byte size (an integer, or a string such as \"5GB\" or \"512MiB\")";
    case FieldKind::Enum: return "one of " + quoted_list(f.enum_names, ", ");
    case FieldKind::StringList: return "an array of strings";
    case FieldKind::Int64List: return "an array of integers";
    case FieldKind::Table: return "a table";
    case FieldKind::TableArray: return "an array of tables";
  }
  return "?";
}

std::string kind_name(const FieldDesc& f) {
  switch (f.kind) {
    case FieldKind::Bool: return "boolean";
    case FieldKind::Int:
    case FieldKind::Int64: return "integer";
    case FieldKind::Float:
    case FieldKind::Double: return "float";
    case FieldKind::String: return "string";
    case FieldKind::Path: return "path, relative to the TOML file";
    case FieldKind::DType: return "dtype: f32|bf16|f16|i32|i64|u8";
    case FieldKind::Bytes: return "byte size: integer or \"5GB\"";
    case FieldKind::Enum: return quoted_list(f.enum_names, "|");
    case FieldKind::StringList: return f.paths ? "array of paths, relative to the TOML file" : "array of strings";
    case FieldKind::Int64List: return "array of integers";
    case FieldKind::Table: return "table";
    case FieldKind::TableArray: return "array of tables";
  }
  return "?";
}

void check_new_key(const SchemaData& schema, const std::string& key) {
  bool bare = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
  ADAPT_CHECK(bare, "schema key '{}' is not a bare TOML key ([A-Za-z0-9_-]+)", key);
  bool fresh =
      std::none_of(schema.fields.begin(), schema.fields.end(), [&](const FieldDesc& f) { return f.key == key; });
  ADAPT_CHECK(fresh, "schema key '{}' is registered twice", key);
}

}  // namespace adapt::config::detail
