// Describing a plain struct for the TOML binder: one Schema<T> lists each field once (key, member
// pointer, doc, constraints), and load / to_toml / help all read that one list. Fields are
// type-erased into FieldDesc so that the binder (the only toml++ user) is compiled once, in a .cpp.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/error.h"
#include "dtype/dtype.h"

namespace adapt::config {

namespace fs = std::filesystem;

/// What a field holds, after unwrapping std::optional. The binder switches on this.
enum class FieldKind : std::uint8_t {
  Bool,        // bool
  Int,         // int (range-checked against 32 bits)
  Int64,       // std::int64_t
  Float,       // float (TOML integers accepted)
  Double,      // double (TOML integers accepted)
  String,      // std::string
  Path,        // fs::path, resolved against the TOML file's folder
  DType,       // adapt::DType, via parse_dtype
  Bytes,       // std::uint64_t from an integer or a string such as "5GB" (parse_byte_size)
  Enum,        // any enum, from one of a fixed list of strings
  StringList,  // std::vector<std::string>
  Int64List,   // std::vector<std::int64_t>
  Table,       // a nested described struct: [section]
  TableArray,  // std::vector<described struct>: [[section]]
};

namespace detail {

struct SchemaData;

/// A constraint on a field's value: `pred` gets a pointer to the (unwrapped) value; `expectation`
/// completes "train.lr = 2: ..." and appears in help ("must be in [0, 1]").
struct FieldCheck {
  std::function<bool(const void* value)> pred;
  std::string expectation;
};

/// One field of a described struct, type-erased. `void* obj` is a pointer to the struct; value
/// pointers point at the unwrapped value (the T inside std::optional<T>).
struct FieldDesc {
  std::string key;
  std::string doc;
  FieldKind kind = FieldKind::Bool;
  bool optional = false;                            // the member is std::optional<...>: absent key = nullopt
  bool required = false;                            // absent key is an error
  std::function<const void*(const void* obj)> get;  // nullptr for an empty optional
  std::function<void*(void* obj)> set;              // emplaces an empty optional first
  std::vector<FieldCheck> checks;
  std::vector<std::string> one_of;  // String / StringList: allowed values
  bool paths = false;               // StringList: each element is a path, resolved as Path fields are
  // Enum: names in declaration order; enum_get maps a value to its index, enum_set the reverse.
  std::vector<std::string> enum_names;
  std::function<std::size_t(const void* value)> enum_get;
  std::function<void(void* value, std::size_t index)> enum_set;
  // Table / TableArray: the element's schema.
  std::shared_ptr<const SchemaData> nested;
  // TableArray: operations on the std::vector<S> that `get` / `set` point at.
  std::function<std::size_t(const void* vec)> array_size;
  std::function<void(void* vec, std::size_t n)> array_resize;
  std::function<void*(void* vec, std::size_t i)> array_at;
  std::function<const void*(const void* vec, std::size_t i)> array_at_const;
};

/// A described struct, type-erased: its fields, whole-struct checks and a default-constructed
/// instance (the defaults shown by help()).
struct SchemaData {
  std::vector<FieldDesc> fields;
  std::vector<std::function<std::string(const void* obj)>> struct_checks;  // "" = fine
  std::shared_ptr<const void> defaults;
};

/// "a float", "an array of strings", ... (used in "must be <expected>, got ...").
std::string kind_expected(const FieldDesc& f);
/// Short type name for help: "float", "path", "byte size", ...
std::string kind_name(const FieldDesc& f);
/// A TOML basic string: "a\"b\n" with quotes, backslashes and control characters escaped.
std::string toml_quote(std::string_view s);
/// Throws InternalError unless `key` is a bare TOML key ([A-Za-z0-9_-]+) not yet in `schema`.
void check_new_key(const SchemaData& schema, const std::string& key);

template <typename M>
struct Unwrap {
  using type = M;
  static constexpr bool optional = false;
};
template <typename M>
struct Unwrap<std::optional<M>> {
  using type = M;
  static constexpr bool optional = true;
};

template <typename>
inline constexpr bool kAlwaysFalse = false;

/// The FieldKind of a scalar or list value type; unsupported types fail to compile with a hint.
template <typename V>
constexpr FieldKind scalar_kind() {
  if constexpr (std::is_same_v<V, bool>) return FieldKind::Bool;
  else if constexpr (std::is_same_v<V, int>) return FieldKind::Int;
  else if constexpr (std::is_same_v<V, std::int64_t>) return FieldKind::Int64;
  else if constexpr (std::is_same_v<V, float>) return FieldKind::Float;
  else if constexpr (std::is_same_v<V, double>) return FieldKind::Double;
  else if constexpr (std::is_same_v<V, std::string>) return FieldKind::String;
  else if constexpr (std::is_same_v<V, fs::path>) return FieldKind::Path;
  else if constexpr (std::is_same_v<V, DType>) return FieldKind::DType;
  else if constexpr (std::is_same_v<V, std::vector<std::string>>) return FieldKind::StringList;
  else if constexpr (std::is_same_v<V, std::vector<std::int64_t>>) return FieldKind::Int64List;
  else if constexpr (std::is_same_v<V, std::uint64_t>)
    static_assert(kAlwaysFalse<V>, "std::uint64_t fields are byte sizes: register them with byte_size()");
  else if constexpr (std::is_enum_v<V>)
    static_assert(kAlwaysFalse<V>, "enum fields need their names: register them with enumeration()");
  else static_assert(kAlwaysFalse<V>, "unsupported field type; see FieldKind for the supported ones");
  return FieldKind::Bool;
}

/// Fills key/doc/kind/optional/get/set for member `m` of T.
template <typename T, typename M>
FieldDesc make_field(std::string key, M T::*m, std::string doc, FieldKind kind) {
  FieldDesc f;
  f.key = std::move(key);
  f.doc = std::move(doc);
  f.kind = kind;
  f.optional = Unwrap<M>::optional;
  f.get = [m](const void* obj) -> const void* {
    const M& x = static_cast<const T*>(obj)->*m;
    if constexpr (Unwrap<M>::optional) return x ? &*x : nullptr;
    else return &x;
  };
  f.set = [m](void* obj) -> void* {
    M& x = static_cast<T*>(obj)->*m;
    if constexpr (Unwrap<M>::optional) {
      if (!x) x.emplace();
      return &*x;
    } else {
      return &x;
    }
  };
  return f;
}

}  // namespace detail

/// Refines the field just added to a Schema (chain the calls right away; do not store it).
/// V is the field's value type with std::optional removed.
template <typename V>
class FieldRef {
 public:
  FieldRef(std::shared_ptr<detail::SchemaData> schema, std::size_t index) : schema_(std::move(schema)), index_(index) {}

  /// The key must be present. Not allowed on std::optional fields (absent means nullopt there).
  FieldRef& required() {
    ADAPT_CHECK(!desc().optional, "field '{}' is std::optional, so it cannot also be required", desc().key);
    desc().required = true;
    return *this;
  }
  /// lo <= value <= hi (numeric fields and byte sizes).
  FieldRef& range(V lo, V hi) {
    static_assert(std::is_arithmetic_v<V> && !std::is_same_v<V, bool>, "range() needs a numeric field");
    return check([lo, hi](const V& v) { return lo <= v && v <= hi; }, fmt::format("must be in [{}, {}]", lo, hi));
  }
  /// value >= lo.
  FieldRef& at_least(V lo) {
    static_assert(std::is_arithmetic_v<V> && !std::is_same_v<V, bool>, "at_least() needs a numeric field");
    return check([lo](const V& v) { return v >= lo; }, fmt::format("must be >= {}", lo));
  }
  /// value > lo.
  FieldRef& greater_than(V lo) {
    static_assert(std::is_arithmetic_v<V> && !std::is_same_v<V, bool>, "greater_than() needs a numeric field");
    return check([lo](const V& v) { return v > lo; }, fmt::format("must be > {}", lo));
  }
  /// The string (or every string of a list) must be one of `allowed`; errors suggest the closest.
  FieldRef& one_of(std::vector<std::string> allowed) {
    static_assert(std::is_same_v<V, std::string> || std::is_same_v<V, std::vector<std::string>>,
                  "one_of() needs a string or string-list field (use enumeration() for enums)");
    desc().one_of = std::move(allowed);
    return *this;
  }
  /// Every string of the list is a path: a relative one resolves against the TOML file's folder (given
  /// with --set: the current directory) and comes back absolute and normalised, as fs::path fields do.
  FieldRef& paths() {
    static_assert(std::is_same_v<V, std::vector<std::string>>, "paths() needs a string-list field");
    desc().paths = true;
    return *this;
  }
  /// Custom constraint. `expectation` completes "key = value: ..." e.g. "must be a multiple of 8".
  FieldRef& check(std::function<bool(const V&)> pred, std::string expectation) {
    desc().checks.push_back(
        {[pred = std::move(pred)](const void* v) { return pred(*static_cast<const V*>(v)); }, std::move(expectation)});
    return *this;
  }

 private:
  detail::FieldDesc& desc() { return schema_->fields[index_]; }
  std::shared_ptr<detail::SchemaData> schema_;
  std::size_t index_;
};

/// The description of a plain, default-constructible struct T. Default member initialisers are
/// the defaults: a key absent from the TOML keeps them (or stays nullopt for std::optional
/// members). Keys are bare TOML keys, unique per struct. Build once, then share freely: copies
/// share one description, and a nested schema is copied into its parent when registered. Mistakes
/// in a schema (duplicate key, required std::optional) throw InternalError when it is built.
///
///   Schema<Optim> s;
///   s.field("lr", &Optim::lr, "Peak learning rate.").greater_than(0.0);
///   s.byte_size("max_memory", &Optim::max_memory, "Host memory for offloaded state (\"5GB\").");
template <typename T>
class Schema {
  static_assert(std::is_default_constructible_v<T>, "described structs must be default-constructible");

 public:
  Schema() : data_(std::make_shared<detail::SchemaData>()) { data_->defaults = std::make_shared<const T>(); }

  /// A scalar or list field: bool, int, std::int64_t, float, double, std::string, fs::path,
  /// DType, std::vector<std::string>, std::vector<std::int64_t>, or std::optional of those.
  /// Paths are resolved against the folder of the TOML file (for --set values: the current
  /// directory) and stored absolute.
  template <typename M>
  FieldRef<typename detail::Unwrap<M>::type> field(std::string key, M T::*member, std::string doc) {
    using V = typename detail::Unwrap<M>::type;
    return add<V>(detail::make_field(std::move(key), member, std::move(doc), detail::scalar_kind<V>()));
  }

  /// A byte count (std::uint64_t or std::optional of it), written as an integer or as a string
  /// such as "5GB", "500MB", "2GiB".
  template <typename M>
  FieldRef<std::uint64_t> byte_size(std::string key, M T::*member, std::string doc) {
    static_assert(std::is_same_v<typename detail::Unwrap<M>::type, std::uint64_t>, "byte_size() needs std::uint64_t");
    return add<std::uint64_t>(detail::make_field(std::move(key), member, std::move(doc), FieldKind::Bytes));
  }

  /// An enum (or std::optional enum) written as one of `names`, e.g. {{"lora", Kind::Lora}, ...}.
  /// Every value the member can hold must appear, so that to_toml can print it.
  template <typename M, typename E = typename detail::Unwrap<M>::type>
  FieldRef<E> enumeration(std::string key, M T::*member, std::vector<std::pair<std::string, E>> names,
                          std::string doc) {
    static_assert(std::is_enum_v<E>, "enumeration() needs an enum field");
    auto f = detail::make_field(std::move(key), member, std::move(doc), FieldKind::Enum);
    for (const auto& [name, value] : names) f.enum_names.push_back(name);
    f.enum_get = [names](const void* v) {
      for (std::size_t i = 0; i < names.size(); ++i)
        if (names[i].second == *static_cast<const E*>(v)) return i;
      ADAPT_CHECK(false, "enum value {} has no name in the schema", static_cast<long long>(*static_cast<const E*>(v)));
      return std::size_t{0};
    };
    f.enum_set = [names](void* v, std::size_t i) { *static_cast<E*>(v) = names.at(i).second; };
    return add<E>(std::move(f));
  }

  /// A nested table [key] described by `schema`; the member is S or std::optional<S> (an absent
  /// table is then nullopt; otherwise it is bound as empty, so its defaults and required keys apply).
  template <typename M, typename S = typename detail::Unwrap<M>::type>
  FieldRef<S> table(std::string key, M T::*member, const Schema<S>& schema, std::string doc) {
    auto f = detail::make_field(std::move(key), member, std::move(doc), FieldKind::Table);
    f.nested = std::make_shared<const detail::SchemaData>(schema.data());
    return add<S>(std::move(f));
  }

  /// An array of tables [[key]] (or key = [{...}, ...]) whose elements are described by `schema`.
  template <typename S>
  FieldRef<std::vector<S>> table_array(std::string key, std::vector<S> T::*member, const Schema<S>& schema,
                                       std::string doc) {
    auto f = detail::make_field(std::move(key), member, std::move(doc), FieldKind::TableArray);
    f.nested = std::make_shared<const detail::SchemaData>(schema.data());
    f.array_size = [](const void* v) { return static_cast<const std::vector<S>*>(v)->size(); };
    f.array_resize = [](void* v, std::size_t n) { static_cast<std::vector<S>*>(v)->resize(n); };
    f.array_at = [](void* v, std::size_t i) -> void* { return &(*static_cast<std::vector<S>*>(v))[i]; };
    f.array_at_const = [](const void* v, std::size_t i) -> const void* {
      return &(*static_cast<const std::vector<S>*>(v))[i];
    };
    return add<std::vector<S>>(std::move(f));
  }

  /// A whole-struct check, run after all fields are bound (cross-field rules). Return "" when the
  /// struct is fine, otherwise the problem and the fix, e.g. "warmup_steps = 10 exceeds steps = 5;
  /// lower warmup_steps". The error is located at the struct's table.
  Schema& check(std::function<std::string(const T&)> validator) {
    data_->struct_checks.push_back(
        [validator = std::move(validator)](const void* obj) { return validator(*static_cast<const T*>(obj)); });
    return *this;
  }

  /// The type-erased description (for the binder and printer).
  const detail::SchemaData& data() const { return *data_; }

 private:
  template <typename V>
  FieldRef<V> add(detail::FieldDesc f) {
    detail::check_new_key(*data_, f.key);
    data_->fields.push_back(std::move(f));
    return FieldRef<V>(data_, data_->fields.size() - 1);
  }
  std::shared_ptr<detail::SchemaData> data_;
};

}  // namespace adapt::config
