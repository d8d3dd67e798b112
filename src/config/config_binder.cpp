// TOML → struct binding with toml++ (the only file in adapt that includes it). Overrides are
// parsed as TOML documents named "--set key=value", so their nodes carry that name as their source
// and every later message points at the override instead of at a line of the file.
#include "config/config_binder.h"

#include <toml++/toml.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <limits>
#include <sstream>

#include "core/file.h"
#include "core/strings.h"

namespace adapt::config::detail {
namespace {

constexpr std::string_view kSetPrefix = "--set ";

bool from_override(const toml::source_region& src) { return src.path && src.path->rfind(kSetPrefix, 0) == 0; }

/// "file:line:column", the override text for --set values, or `fallback` when toml++ has no
/// position (tables created implicitly by an override).
std::string location(const toml::source_region& src, const std::string& fallback) {
  if (from_override(src)) return *src.path;
  if (!src.path || src.begin.line == 0) return fallback;
  return fmt::format("{}:{}:{}", *src.path, src.begin.line, src.begin.column);
}

std::string join_key(const std::string& prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : fmt::format("{}.{}", prefix, key);
}

/// "[train.optim]", or "the top level" for the root table.
std::string table_label(const std::string& prefix) { return prefix.empty() ? "the top level" : "[" + prefix + "]"; }

/// The value as the user wrote it (roughly): 2.5, "abc", true, [1, 2].
std::string value_text(const toml::node& n) {
  if (auto s = n.as_string()) return toml_quote(s->get().size() > 80 ? s->get().substr(0, 77) + "..." : s->get());
  if (auto i = n.as_integer()) return fmt::format("{}", i->get());
  if (auto d = n.as_floating_point()) return fmt::format("{}", d->get());
  if (auto b = n.as_boolean()) return b->get() ? "true" : "false";
  std::ostringstream os;
  if (auto a = n.as_array()) os << toml::toml_formatter(*a, toml::format_flags::none);
  else if (auto t = n.as_table()) os << toml::toml_formatter(*t, toml::format_flags::none);
  else if (auto dt = n.as_date_time()) os << *dt;
  else if (auto d = n.as_date()) os << *d;
  else if (auto tm = n.as_time()) os << *tm;
  return os.str();
}

/// What the user gave, for "must be X, got <this>".
std::string describe(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::string: return "a string " + value_text(n);
    case toml::node_type::integer: return "an integer " + value_text(n);
    case toml::node_type::floating_point: return "a float " + value_text(n);
    case toml::node_type::boolean: return "a boolean " + value_text(n);
    case toml::node_type::array: return fmt::format("an array of {} elements", n.as_array()->size());
    case toml::node_type::table: return "a table";
    case toml::node_type::date: return "a date " + value_text(n);
    case toml::node_type::time: return "a time " + value_text(n);
    case toml::node_type::date_time: return "a date-time " + value_text(n);
    case toml::node_type::none: break;
  }
  return "nothing";
}

std::vector<std::string> keys_of(const SchemaData& schema) {
  std::vector<std::string> keys;
  for (const auto& f : schema.fields) keys.push_back(f.key);
  return keys;
}

const FieldDesc* find_field(const SchemaData& schema, std::string_view key) {
  for (const auto& f : schema.fields)
    if (f.key == key) return &f;
  return nullptr;
}

/// " (did you mean 'x'?)", or the list of keys allowed in that table when nothing is close.
std::string suggestion(std::string_view key, const SchemaData& schema, const std::string& prefix) {
  auto keys = keys_of(schema);
  std::string hint = did_you_mean(key, keys);
  if (!hint.empty()) return hint;
  if (keys.empty()) return fmt::format("; {} takes no keys", table_label(prefix));
  return fmt::format("; the keys allowed in {} are: {}", table_label(prefix), join(keys, ", "));
}

[[noreturn]] void type_error(const toml::node& n, const std::string& path, const std::string& expected,
                             const std::string& loc) {
  ADAPT_THROW(ConfigError, "{}: {} must be {}, got {}", loc, path, expected, describe(n));
}

class Binder {
 public:
  explicit Binder(fs::path base_dir) : base_dir_(std::move(base_dir)) {}

  /// Binds `tbl` into `obj`: rejects unknown keys, binds present keys, requires required ones,
  /// then runs the struct's checks. `where` locates the table when it has no position of its own.
  void bind_table(const toml::table& tbl, const SchemaData& schema, void* obj, const std::string& prefix,
                  const std::string& where) const {
    // The root table's messages name the file alone: a position there (1:1) would point at no key.
    std::string here = prefix.empty() ? where : location(tbl.source(), where);
    for (const auto& [key, node] : tbl) {
      if (find_field(schema, key.str())) continue;
      ADAPT_THROW(ConfigError, "{}: unknown key '{}'{}", location(key.source(), location(node.source(), here)),
                  join_key(prefix, key.str()), suggestion(key.str(), schema, prefix));
    }
    for (const auto& f : schema.fields) {
      std::string path = join_key(prefix, f.key);
      const toml::node* node = tbl.get(f.key);
      if (node) {
        bind_field(*node, f, obj, path, here);
      } else if (f.required) {
        std::string doc = f.doc;
        while (!doc.empty() && (doc.back() == '.' || doc.back() == ' ')) doc.pop_back();
        if (prefix.empty())
          ADAPT_THROW(ConfigError, "{}: {} is required ({}). Add it at the top level or pass --set {}=...", here, f.key,
                      doc, path);
        ADAPT_THROW(ConfigError, "{}: [{}] {} is required ({}: {}). Add it under [{}] or pass --set {}=...", here,
                    prefix, f.key, path, doc, prefix, path);
      } else if (f.kind == FieldKind::Table && !f.optional) {
        // An absent section still gets its defaults checked and its required keys enforced.
        bind_table(toml::table{}, *f.nested, f.set(obj), path, here);
      }
    }
    for (const auto& check : schema.struct_checks) {
      std::string problem = check(obj);
      if (!problem.empty())
        ADAPT_THROW(ConfigError, "{}: {}{}", here, prefix.empty() ? "" : "[" + prefix + "] ", problem);
    }
  }

 private:
  void bind_field(const toml::node& node, const FieldDesc& f, void* obj, const std::string& path,
                  const std::string& where) const {
    std::string loc = location(node.source(), where);
    if (f.kind == FieldKind::Table) {
      auto* t = node.as_table();
      if (!t) type_error(node, path, fmt::format("a table ([{}])", path), loc);
      bind_table(*t, *f.nested, f.set(obj), path, loc);
    } else if (f.kind == FieldKind::TableArray) {
      auto* a = node.as_array();
      if (!a) type_error(node, path, fmt::format("an array of tables ([[{}]] sections)", path), loc);
      void* vec = f.set(obj);
      f.array_resize(vec, a->size());
      for (std::size_t i = 0; i < a->size(); ++i) {
        std::string elem_path = fmt::format("{}[{}]", path, i);
        auto* t = (*a)[i].as_table();
        if (!t) type_error((*a)[i], elem_path, "a table", location((*a)[i].source(), loc));
        bind_table(*t, *f.nested, f.array_at(vec, i), elem_path, location((*a)[i].source(), loc));
      }
    } else {
      set_scalar(node, f, f.set(obj), path, loc);
    }
    const void* value = f.get(obj);
    for (const auto& check : f.checks)
      if (!check.pred(value))
        ADAPT_THROW(ConfigError, "{}: {} = {} {}", loc, path, value_text(node), check.expectation);
  }

  void check_one_of(const std::string& s, const FieldDesc& f, const std::string& path, const std::string& loc) const {
    if (f.one_of.empty() || std::find(f.one_of.begin(), f.one_of.end(), s) != f.one_of.end()) return;
    std::vector<std::string> quoted;
    for (const auto& o : f.one_of) quoted.push_back(toml_quote(o));
    ADAPT_THROW(ConfigError, "{}: {} = {} must be one of {}{}", loc, path, toml_quote(s), join(quoted, ", "),
                did_you_mean(s, f.one_of));
  }

  void set_scalar(const toml::node& n, const FieldDesc& f, void* out, const std::string& path,
                  const std::string& loc) const {
    auto expected = [&] { return kind_expected(f); };
    switch (f.kind) {
      case FieldKind::Bool: {
        auto* b = n.as_boolean();
        if (!b) type_error(n, path, expected(), loc);
        *static_cast<bool*>(out) = b->get();
        return;
      }
      case FieldKind::Int:
      case FieldKind::Int64: {
        auto* i = n.as_integer();
        if (!i) type_error(n, path, expected(), loc);
        std::int64_t v = i->get();
        if (f.kind == FieldKind::Int64) {
          *static_cast<std::int64_t*>(out) = v;
        } else {
          ADAPT_REQUIRE(v >= std::numeric_limits<int>::min() && v <= std::numeric_limits<int>::max(), ConfigError,
                        "{}: {} = {} does not fit in a 32-bit integer", loc, path, v);
          *static_cast<int*>(out) = static_cast<int>(v);
        }
        return;
      }
      case FieldKind::Float:
      case FieldKind::Double: {
        double v;
        if (auto* d = n.as_floating_point()) v = d->get();
        else if (auto* i = n.as_integer()) v = static_cast<double>(i->get());  // "lr = 1" is fine
        else type_error(n, path, expected(), loc);
        if (f.kind == FieldKind::Double) {
          *static_cast<double*>(out) = v;
        } else {
          ADAPT_REQUIRE(!std::isfinite(v) || std::fabs(v) <= std::numeric_limits<float>::max(), ConfigError,
                        "{}: {} = {} does not fit in a 32-bit float", loc, path, v);
          *static_cast<float*>(out) = static_cast<float>(v);
        }
        return;
      }
      case FieldKind::String: {
        auto* s = n.as_string();
        if (!s) type_error(n, path, expected(), loc);
        check_one_of(s->get(), f, path, loc);
        *static_cast<std::string*>(out) = s->get();
        return;
      }
      case FieldKind::Path: {
        auto* s = n.as_string();
        if (!s) type_error(n, path, expected(), loc);
        *static_cast<fs::path*>(out) = resolved(s->get(), n);
        return;
      }
      case FieldKind::DType: {
        auto* s = n.as_string();
        if (!s) type_error(n, path, expected(), loc);
        try {
          *static_cast<DType*>(out) = parse_dtype(s->get());
        } catch (const ConfigError& e) {
          ADAPT_THROW(ConfigError, "{}: {}: {}", loc, path, e.what());
        }
        return;
      }
      case FieldKind::Bytes: {
        if (auto* i = n.as_integer()) {
          ADAPT_REQUIRE(i->get() >= 0, ConfigError, "{}: {} = {} must be a non-negative byte size", loc, path,
                        i->get());
          *static_cast<std::uint64_t*>(out) = static_cast<std::uint64_t>(i->get());
          return;
        }
        auto* s = n.as_string();
        std::optional<std::uint64_t> v = s ? parse_byte_size(s->get()) : std::nullopt;
        if (!v) type_error(n, path, expected(), loc);
        *static_cast<std::uint64_t*>(out) = *v;
        return;
      }
      case FieldKind::Enum: {
        auto* s = n.as_string();
        if (!s) type_error(n, path, expected(), loc);
        for (std::size_t i = 0; i < f.enum_names.size(); ++i) {
          if (f.enum_names[i] == s->get()) {
            f.enum_set(out, i);
            return;
          }
        }
        ADAPT_THROW(ConfigError, "{}: {} = {} must be {}{}", loc, path, toml_quote(s->get()), expected(),
                    did_you_mean(s->get(), f.enum_names));
      }
      case FieldKind::StringList:
      case FieldKind::Int64List: {
        auto* a = n.as_array();
        if (!a) type_error(n, path, expected(), loc);
        std::vector<std::string> strings;
        std::vector<std::int64_t> ints;
        for (std::size_t i = 0; i < a->size(); ++i) {
          const toml::node& e = (*a)[i];
          std::string elem_path = fmt::format("{}[{}]", path, i);
          std::string elem_loc = location(e.source(), loc);
          if (f.kind == FieldKind::StringList) {
            if (!e.as_string()) type_error(e, elem_path, "a string", elem_loc);
            check_one_of(e.as_string()->get(), f, elem_path, elem_loc);
            strings.push_back(f.paths ? resolved(e.as_string()->get(), e).string() : e.as_string()->get());
          } else {
            if (!e.as_integer()) type_error(e, elem_path, "an integer", elem_loc);
            ints.push_back(e.as_integer()->get());
          }
        }
        if (f.kind == FieldKind::StringList) *static_cast<std::vector<std::string>*>(out) = std::move(strings);
        else *static_cast<std::vector<std::int64_t>*>(out) = std::move(ints);
        return;
      }
      case FieldKind::Table:
      case FieldKind::TableArray: break;  // handled by bind_field
    }
    ADAPT_CHECK(false, "unhandled field kind for '{}'", path);
  }

  // A path as the job means it: relative ones against the TOML file's folder, or the current directory
  // for a --set value; normalised.
  fs::path resolved(const std::string& text, const toml::node& n) const {
    fs::path p = text;
    if (!p.empty() && p.is_relative()) p = (from_override(n.source()) ? fs::current_path() : base_dir_) / p;
    return p.lexically_normal();
  }

  fs::path base_dir_;
};

struct Segment {
  std::string key;
  std::optional<std::size_t> index;  // "prompts[1]"
};

std::vector<Segment> split_key_path(const std::string& key_path, const std::string& label) {
  std::vector<Segment> out;
  std::size_t start = 0;
  while (true) {
    std::size_t dot = key_path.find('.', start);
    std::string part = key_path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    Segment seg{part, std::nullopt};
    if (auto open = part.find('['); open != std::string::npos) {
      std::size_t idx = 0;
      auto digits = part.substr(open + 1, part.size() - open - 2);
      auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), idx);
      ADAPT_REQUIRE(part.back() == ']' && !digits.empty() && ec == std::errc() && ptr == digits.data() + digits.size(),
                    ConfigError, "{}: cannot read '{}' as key[index], e.g. prompts[0]", label, part);
      seg = {part.substr(0, open), idx};
    }
    ADAPT_REQUIRE(!seg.key.empty(), ConfigError, "{}: empty key in '{}'; write section.key=value", label, key_path);
    out.push_back(std::move(seg));
    if (dot == std::string::npos) return out;
    start = dot + 1;
  }
}

std::string trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return std::string(s);
}

/// Applies one "a.b[1].c=value" to `root`, after checking the key path against the schema.
void apply_override(toml::table& root, const SchemaData& root_schema, const std::string& text) {
  std::string label = std::string(kSetPrefix) + text;
  std::size_t eq = text.find('=');
  ADAPT_REQUIRE(eq != std::string::npos, ConfigError,
                "{}: expected key=value, the key as the job file's dotted path (e.g. --set {}=VALUE)", label,
                trim(text).empty() ? std::string("section.key") : trim(text));
  std::string key_path = trim(std::string_view(text).substr(0, eq));
  std::string value = trim(std::string_view(text).substr(eq + 1));
  std::vector<Segment> segs = split_key_path(key_path, label);

  const SchemaData* schema = &root_schema;
  toml::table* tbl = &root;
  std::string prefix;
  for (std::size_t i = 0; i < segs.size(); ++i) {
    const Segment& seg = segs[i];
    const FieldDesc* f = find_field(*schema, seg.key);
    std::string path = join_key(prefix, seg.key);
    ADAPT_REQUIRE(f, ConfigError, "{}: unknown key '{}'{}", label, path, suggestion(seg.key, *schema, prefix));
    bool last = i + 1 == segs.size();
    ADAPT_REQUIRE(!seg.index || f->kind == FieldKind::TableArray, ConfigError,
                  "{}: {} is {}, not an array of tables; drop the [{}]", label, path, kind_expected(*f), *seg.index);
    if (last) {
      ADAPT_REQUIRE(!seg.index, ConfigError, "{}: {}[{}] is a whole table; set one of its keys, e.g. {}[{}].<key>",
                    label, path, *seg.index, path, *seg.index);
      // Parse as a TOML value; when that fails, as a bare string. Both keep `label` as their source.
      toml::table parsed;
      try {
        parsed = toml::parse(std::string_view("v = " + value), std::string_view(label));
      } catch (const toml::parse_error&) {
      }
      if (parsed.size() != 1 || !parsed.get("v"))
        parsed = toml::parse(std::string_view("v = " + toml_quote(value)), std::string_view(label));
      tbl->insert_or_assign(seg.key, std::move(*parsed.get("v")));
      return;
    }
    toml::node* node = tbl->get(seg.key);
    if (f->kind == FieldKind::Table) {
      if (!node) node = tbl->insert(seg.key, toml::table{}).first->second.as_table();
      ADAPT_REQUIRE(node->as_table(), ConfigError, "{}: cannot set a key inside {}: the file sets it to {}", label,
                    path, describe(*node));
      tbl = node->as_table();
    } else if (f->kind == FieldKind::TableArray) {
      ADAPT_REQUIRE(seg.index, ConfigError, "{}: {} is an array of tables; name an element, e.g. {}[0].{}", label, path,
                    path, segs[i + 1].key);
      auto* arr = node ? node->as_array() : nullptr;
      std::size_t n = arr ? arr->size() : 0;
      ADAPT_REQUIRE(*seg.index < n && (*arr)[*seg.index].as_table(), ConfigError,
                    "{}: {}[{}] does not exist: the file has {} [[{}]] entries (indices start at 0)", label, path,
                    *seg.index, n, path);
      tbl = (*arr)[*seg.index].as_table();
      path = fmt::format("{}[{}]", path, *seg.index);
    } else {
      ADAPT_THROW(ConfigError, "{}: {} is {}, not a table, so it has no key '{}'", label, path, kind_expected(*f),
                  segs[i + 1].key);
    }
    schema = f->nested.get();
    prefix = path;
  }
}

}  // namespace

void bind_text(std::string_view text, const std::string& source_name, const SchemaData& schema, void* obj,
               const std::vector<std::string>& overrides) {
  toml::table root;
  try {
    root = toml::parse(text, std::string_view(source_name));
  } catch (const toml::parse_error& e) {
    const auto& b = e.source().begin;
    ADAPT_THROW(ConfigError, "{}:{}:{}: TOML syntax error: {}. Fix the file at that position.", source_name, b.line,
                b.column, e.description());
  }
  for (const auto& o : overrides) apply_override(root, schema, o);
  Binder binder(fs::absolute(fs::path(source_name)).parent_path());
  binder.bind_table(root, schema, obj, "", source_name);
}

std::string read_config_file(const fs::path& file) {
  std::error_code ec;
  ADAPT_REQUIRE(fs::is_regular_file(file, ec), ConfigError,
                "config file '{}' does not exist or is not a file (current directory: {}); check the --config path",
                file.string(), fs::current_path().string());
  return file_read_text(file);
}

}  // namespace adapt::config::detail
