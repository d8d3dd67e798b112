#include "checkpoint/checkpoint_schema.h"

#include <fmt/format.h>

#include <set>

#include "checkpoint/checkpoint.h"
#include "core/error.h"

namespace adapt::checkpoint::detail {

namespace {

bool valid_component(std::string_view c) {
  if (c.empty() || c == "." || c == "..") return false;
  for (char ch : c) {
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' ||
                    ch == '.' || ch == '-';
    if (!ok) return false;
  }
  return true;
}

void validate_name(std::string_view name, std::string_view what) {
  std::size_t start = 0;
  bool first = true;
  for (;;) {
    const std::size_t slash = name.find('/', start);
    const std::string_view c = name.substr(start, slash == std::string_view::npos ? name.npos : slash - start);
    ADAPT_REQUIRE(valid_component(c), CheckpointError,
                  "checkpoint {} name '{}' is not a valid path: components must be non-empty, made of "
                  "[A-Za-z0-9_.-] and separated by single '/' (e.g. 'adapters/layers.3.attn.q.lora_a')",
                  what, name);
    ADAPT_REQUIRE(!(first && c == "meta"), CheckpointError,
                  "checkpoint {} name '{}' starts with 'meta', which is reserved for the checkpoint's own "
                  "attributes; use another group (e.g. 'train/{}')",
                  what, name, name.size() > 5 ? name.substr(5) : std::string_view("x"));
    first = false;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
}

/// Every proper prefix of `name` ("a/b/c" -> "a", "a/b").
void add_groups(std::string_view name, std::set<std::string, std::less<>>& groups) {
  for (std::size_t p = name.find('/'); p != std::string_view::npos; p = name.find('/', p + 1))
    groups.emplace(name.substr(0, p));
}

}  // namespace

void validate_state_names(const CheckpointState& state) {
  std::set<std::string, std::less<>> groups;
  for (const auto& [name, t] : state.tensors) {
    validate_name(name, "tensor");
    add_groups(name, groups);
  }
  std::set<std::string, std::less<>> scalars;
  auto scalar = [&](const std::string& key, std::string_view kind) {
    validate_name(key, kind);
    ADAPT_REQUIRE(scalars.insert(key).second, CheckpointError,
                  "checkpoint scalar '{}' appears in more than one of strings/ints/floats; each name holds one "
                  "value",
                  key);
    const auto [group, attr] = scalar_location(key);
    if (group != "/") {
      const std::string g = group.substr(1);
      groups.insert(g);
      add_groups(g, groups);
    }
  };
  for (const auto& [key, value] : state.strings) {
    scalar(key, "string");
    ADAPT_REQUIRE(value.find('\0') == std::string::npos, CheckpointError,
                  "checkpoint string '{}' contains a NUL byte at offset {}; strings are UTF-8 text. Store "
                  "binary state as a u8 tensor instead",
                  key, value.find('\0'));
    ADAPT_REQUIRE(is_valid_utf8(value), CheckpointError,
                  "checkpoint string '{}' is not valid UTF-8; strings are text. Store binary state as a u8 "
                  "tensor instead",
                  key);
  }
  for (const auto& [key, value] : state.ints) scalar(key, "int");
  for (const auto& [key, value] : state.floats) scalar(key, "float");
  for (const auto& [name, t] : state.tensors)
    ADAPT_REQUIRE(!groups.count(name), CheckpointError,
                  "checkpoint tensor '{}' is also used as a group by another name ('{}/...'); a name is either "
                  "a tensor or a group",
                  name, name);
  for (const std::string* s :
       {&state.base_model_fingerprint, &state.world_layout, &state.config_toml, &state.created_by}) {
    ADAPT_REQUIRE(s->find('\0') == std::string::npos && is_valid_utf8(*s), CheckpointError,
                  "checkpoint metadata '{}' must be UTF-8 text without NUL bytes", s->substr(0, 40));
  }
}

std::pair<std::string, std::string> scalar_location(std::string_view key) {
  const std::size_t slash = key.rfind('/');
  if (slash == std::string_view::npos) return {"/", std::string(key)};
  return {h5_path(key.substr(0, slash)), std::string(key.substr(slash + 1))};
}

std::optional<std::int64_t> parse_checkpoint_file_name(std::string_view file_name) {
  constexpr std::string_view kPrefix = "step_", kSuffix = ".h5";
  if (file_name.size() <= kPrefix.size() + kSuffix.size() || !file_name.starts_with(kPrefix) ||
      !file_name.ends_with(kSuffix))
    return std::nullopt;
  const std::string_view digits = file_name.substr(kPrefix.size(), file_name.size() - kPrefix.size() - kSuffix.size());
  if (digits.size() > 18) return std::nullopt;
  std::int64_t step = 0;
  for (char c : digits) {
    if (c < '0' || c > '9') return std::nullopt;
    step = step * 10 + (c - '0');
  }
  return step;
}

namespace {

H5Id copy_type(hid_t predefined) {
  const hid_t t = H5Tcopy(predefined);
  ADAPT_CHECK(t >= 0, "H5Tcopy of a predefined type failed: {}", h5_error_stack());
  return H5Id(t);
}

/// IEEE 754 binary16, built the way h5py builds it, so h5py reads it as numpy float16.
H5Id half_type() {
  H5Id t = copy_type(H5T_IEEE_F32LE);
  const bool ok = H5Tset_fields(t, 15, 10, 5, 0, 10) >= 0 && H5Tset_size(t, 2) >= 0 && H5Tset_ebias(t, 15) >= 0;
  ADAPT_CHECK(ok, "cannot build the HDF5 half-float type: {}", h5_error_stack());
  return t;
}

}  // namespace

H5Id h5_file_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return copy_type(H5T_IEEE_F32LE);
    case DType::BF16: return copy_type(H5T_STD_U16LE);
    case DType::F16: return half_type();
    case DType::I32: return copy_type(H5T_STD_I32LE);
    case DType::I64: return copy_type(H5T_STD_I64LE);
    case DType::U8: return copy_type(H5T_STD_U8LE);
  }
  ADAPT_CHECK(false, "unknown dtype {}", static_cast<int>(dtype));
  return {};
}

H5Id h5_mem_type(DType dtype) {
  switch (dtype) {
    case DType::F32: return copy_type(H5T_NATIVE_FLOAT);
    case DType::BF16: return copy_type(H5T_NATIVE_UINT16);
    case DType::F16: return half_type();
    case DType::I32: return copy_type(H5T_NATIVE_INT32);
    case DType::I64: return copy_type(H5T_NATIVE_INT64);
    case DType::U8: return copy_type(H5T_NATIVE_UINT8);
  }
  ADAPT_CHECK(false, "unknown dtype {}", static_cast<int>(dtype));
  return {};
}

bool is_valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    int n = 0;
    std::uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xE0) == 0xC0) {
      n = 1;
      cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
      n = 2;
      cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (i + static_cast<std::size_t>(n) >= s.size()) return false;  // truncated sequence
    for (int k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + static_cast<std::size_t>(k)]);
      if ((cc & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3F);
    }
    const std::uint32_t min_cp = n == 1 ? 0x80 : n == 2 ? 0x800 : 0x10000;
    if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += static_cast<std::size_t>(n) + 1;
  }
  return true;
}

}  // namespace adapt::checkpoint::detail
