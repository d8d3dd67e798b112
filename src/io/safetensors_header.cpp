// Header parsing and validation, rule for rule as the reference reader (huggingface/safetensors
// `SafeTensors::read_metadata` + `Metadata::validate`), with messages that say what to do.
#include "io/safetensors_header.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "core/strings.h"

namespace adapt::io {

using json = nlohmann::json;

namespace {

constexpr const char* kHintCorrupt =
    "The file is corrupted or was not written by a safetensors writer: re-download it, or re-export it with the "
    "safetensors library.";

std::string label(const fs::path& path) { return fmt::format("safetensors file '{}'", path.string()); }

/// A short rendering of a JSON value for messages (long values are cut).
std::string json_brief(const json& v) {
  std::string s = v.dump(-1, ' ', true, json::error_handler_t::replace);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

std::string dims_str(const std::vector<std::uint64_t>& dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ',';
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

/// One tensor entry as the JSON gives it, before the offsets walk.
struct RawEntry {
  std::string name;
  const SafetensorsDType* dtype = nullptr;
  std::vector<std::uint64_t> dims;
  std::uint64_t begin = 0, end = 0;
};

/// nlohmann keeps the last of duplicate keys silently; this parser callback records the first duplicate.
struct DuplicateKeyFinder {
  std::vector<std::set<std::string>> open_objects;
  std::optional<std::pair<int, std::string>> duplicate;  // (depth, key)

  bool operator()(int depth, json::parse_event_t event, json& parsed) {
    switch (event) {
      case json::parse_event_t::object_start: open_objects.emplace_back(); break;
      case json::parse_event_t::object_end:
        if (!open_objects.empty()) open_objects.pop_back();
        break;
      case json::parse_event_t::key:
        if (!open_objects.empty() && !open_objects.back().insert(parsed.get<std::string>()).second && !duplicate)
          duplicate = std::make_pair(depth, parsed.get<std::string>());
        break;
      default: break;
    }
    return true;
  }
};

std::uint64_t require_u64(const fs::path& path, const std::string& tensor, const char* field, const json& v) {
  ADAPT_REQUIRE(v.is_number_unsigned(), IoError,
                "{}: tensor '{}' has {} entry {}; entries must be non-negative integers. {}", label(path), tensor,
                field, json_brief(v), kHintCorrupt);
  return v.get<std::uint64_t>();
}

RawEntry parse_entry(const fs::path& path, const std::string& name, const json& v) {
  ADAPT_REQUIRE(v.is_object(), IoError,
                "{}: tensor '{}' maps to {} instead of an object with 'dtype', 'shape' and 'data_offsets'. {}",
                label(path), name, json_brief(v), kHintCorrupt);
  RawEntry e;
  e.name = name;
  for (const char* field : {"dtype", "shape", "data_offsets"})
    ADAPT_REQUIRE(v.contains(field), IoError, "{}: tensor '{}' has no '{}' field (it has {}). {}", label(path), name,
                  field, json_brief(v), kHintCorrupt);

  const json& dt = v["dtype"];
  ADAPT_REQUIRE(dt.is_string(), IoError, "{}: tensor '{}' has dtype {}; it must be a string such as \"BF16\". {}",
                label(path), name, json_brief(dt), kHintCorrupt);
  const std::string dt_name = dt.get<std::string>();
  e.dtype = safetensors_dtype_find(dt_name);
  if (!e.dtype) {
    std::vector<std::string> known;
    for (const auto& d : safetensors_dtypes()) known.emplace_back(d.name);
    ADAPT_THROW(IoError,
                "{}: tensor '{}' has dtype '{}', which is not a safetensors dtype{} (known: {}). The file is "
                "corrupted, or was written by a newer safetensors version than adapt knows: check the tensor's dtype "
                "with the safetensors Python package and convert the model to BF16/F16/F32.",
                label(path), name, dt_name, did_you_mean(dt_name, known), join(known, ", "));
  }

  const json& shape = v["shape"];
  ADAPT_REQUIRE(shape.is_array(), IoError, "{}: tensor '{}' has shape {}; it must be an array of integers. {}",
                label(path), name, json_brief(shape), kHintCorrupt);
  for (const json& d : shape) e.dims.push_back(require_u64(path, name, "shape", d));

  const json& off = v["data_offsets"];
  ADAPT_REQUIRE(off.is_array() && off.size() == 2, IoError,
                "{}: tensor '{}' has data_offsets {}; it must be an array of exactly 2 non-negative integers "
                "[begin, end]. {}",
                label(path), name, json_brief(off), kHintCorrupt);
  e.begin = require_u64(path, name, "data_offsets", off[0]);
  e.end = require_u64(path, name, "data_offsets", off[1]);
  return e;
}

}  // namespace

const std::vector<SafetensorsDType>& safetensors_dtypes() {
  // Enum `Dtype` of safetensors/src/tensor.rs, in declaration (= increasing alignment) order.
  static const std::vector<SafetensorsDType> table = [] {
    const std::vector<std::pair<std::string_view, int>> names = {
        {"BOOL", 8},    {"F4", 4},      {"F6_E2M3", 6}, {"F6_E3M2", 6},     {"U8", 8},          {"I8", 8},
        {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16},
        {"U16", 16},    {"F16", 16},    {"BF16", 16},   {"I32", 32},        {"U32", 32},        {"F32", 32},
        {"C64", 64},    {"F64", 64},    {"I64", 64},    {"U64", 64}};
    std::vector<SafetensorsDType> t;
    for (std::size_t i = 0; i < names.size(); ++i) {
      std::optional<DType> d;
      const std::string_view n = names[i].first;
      if (n == "F32") d = DType::F32;
      if (n == "BF16") d = DType::BF16;
      if (n == "F16") d = DType::F16;
      if (n == "I32") d = DType::I32;
      if (n == "I64") d = DType::I64;
      if (n == "U8") d = DType::U8;
      t.push_back({n, names[i].second, static_cast<int>(i), d});
    }
    return t;
  }();
  return table;
}

const SafetensorsDType* safetensors_dtype_find(std::string_view name) {
  for (const auto& d : safetensors_dtypes())
    if (d.name == name) return &d;
  return nullptr;
}

std::string_view safetensors_dtype_name(DType t) {
  for (const auto& d : safetensors_dtypes())
    if (d.dtype == t) return d.name;
  ADAPT_CHECK(false, "dtype {} has no safetensors name", dtype_name(t));
  return {};
}

int safetensors_dtype_order(DType t) {
  for (const auto& d : safetensors_dtypes())
    if (d.dtype == t) return d.order;
  ADAPT_CHECK(false, "dtype {} has no safetensors name", dtype_name(t));
  return -1;
}

std::optional<std::size_t> utf8_first_invalid(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  std::size_t i = 0;
  while (i < n) {
    const unsigned c = p[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t len;
    unsigned lo = 0x80, hi = 0xbf;  // allowed range of the second byte
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3;
      if (c == 0xe0) lo = 0xa0;  // overlong
      if (c == 0xed) hi = 0x9f;  // surrogates
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4;
      if (c == 0xf0) lo = 0x90;  // overlong
      if (c == 0xf4) hi = 0x8f;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + len > n) return i;
    if (p[i + 1] < lo || p[i + 1] > hi) return i;
    for (std::size_t k = 2; k < len; ++k)
      if (p[i + k] < 0x80 || p[i + k] > 0xbf) return i;
    i += len;
  }
  return std::nullopt;
}

SafetensorsHeader safetensors_header_parse(const fs::path& path, std::string_view header, std::uint64_t file_size) {
  const std::uint64_t n = header.size();

  // Step 4a: UTF-8 (InvalidHeader).
  if (auto bad = utf8_first_invalid(header)) {
    ADAPT_THROW(IoError,
                "{}: the {}-byte JSON header is not valid UTF-8 (byte 0x{:02x} at header offset {}). This is not a "
                "safetensors file or it is corrupted: re-download it.",
                label(path), n, static_cast<unsigned char>(header[*bad]), *bad);
  }

  // Step 4b: JSON of the expected shape (InvalidHeaderDeserialization). JSON whitespace around the
  // object is accepted on both sides, as the current reference reader does; a byte-order mark is
  // not JSON (serde_json refuses it, nlohmann would skip it).
  ADAPT_REQUIRE(!header.starts_with("\xef\xbb\xbf"), IoError,
                "{}: the header starts with a UTF-8 byte-order mark, which is not JSON. {}", label(path), kHintCorrupt);
  // nlohmann stops at a NUL byte as if the input ended there; JSON never contains a raw NUL.
  if (auto nul = header.find('\0'); nul != std::string_view::npos) {
    ADAPT_THROW(IoError, "{}: the {}-byte header is not valid JSON (a NUL byte at header offset {}). {}", label(path),
                n, nul, kHintCorrupt);
  }
  json doc;
  DuplicateKeyFinder dups;
  try {
    doc = json::parse(header.begin(), header.end(), std::ref(dups));
  } catch (const json::exception& e) {
    std::string what = e.what();
    if (auto pos = what.find("] "); pos != std::string::npos) what = what.substr(pos + 2);
    ADAPT_THROW(IoError, "{}: the {}-byte header is not valid JSON ({}). {}", label(path), n, what, kHintCorrupt);
  }
  ADAPT_REQUIRE(doc.is_object(), IoError, "{}: the header must be a JSON object, found {}. {}", label(path),
                doc.type_name(), kHintCorrupt);
  if (dups.duplicate) {
    const bool top = dups.duplicate->first <= 1;
    ADAPT_THROW(IoError, "{}: {} '{}' appears more than once in the header; the format forbids duplicate keys. {}",
                label(path), top ? "tensor name" : "key", dups.duplicate->second, kHintCorrupt);
  }

  SafetensorsHeader out;
  std::vector<RawEntry> entries;
  entries.reserve(doc.size());
  for (auto it = doc.begin(); it != doc.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it.value().is_null()) continue;
      ADAPT_REQUIRE(it.value().is_object(), IoError,
                    "{}: '__metadata__' must be an object of string values, found {}. {}", label(path),
                    json_brief(it.value()), kHintCorrupt);
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        ADAPT_REQUIRE(m.value().is_string(), IoError,
                      "{}: '__metadata__' key '{}' has the value {}; metadata values must be strings. {}", label(path),
                      m.key(), json_brief(m.value()), kHintCorrupt);
        out.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(path, it.key(), it.value()));
  }

  // Steps 5-6, interleaved per tensor as Metadata::validate does: sort by (begin, end), walk.
  std::sort(entries.begin(), entries.end(), [](const RawEntry& a, const RawEntry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.name < b.name;
  });
  constexpr const char* kHintOffsets =
      "The header is inconsistent (tensors must cover the data buffer back to back, in offset order): the file is "
      "corrupted or was written by a broken tool; re-download it, or re-export it with the safetensors library.";
  std::uint64_t start = 0;
  const RawEntry* prev = nullptr;
  for (const RawEntry& e : entries) {
    if (e.end < e.begin) {
      ADAPT_THROW(IoError, "{}: tensor '{}' has data_offsets [{}, {}]: the end is before the begin. {}", label(path),
                  e.name, e.begin, e.end, kHintOffsets);
    }
    if (e.begin > start && !prev) {
      ADAPT_THROW(IoError,
                  "{}: tensor '{}' has data_offsets [{}, {}], but the first tensor must begin at 0: the first {} bytes "
                  "of the data buffer belong to no tensor. {}",
                  label(path), e.name, e.begin, e.end, e.begin, kHintOffsets);
    }
    if (e.begin > start) {
      ADAPT_THROW(IoError,
                  "{}: tensor '{}' has data_offsets [{}, {}], but the previous tensor '{}' ends at byte {}: {} bytes "
                  "of the data buffer belong to no tensor (expected the tensor to begin at {}). {}",
                  label(path), e.name, e.begin, e.end, prev->name, start, e.begin - start, start, kHintOffsets);
    }
    if (e.begin < start) {
      ADAPT_THROW(IoError,
                  "{}: tensor '{}' has data_offsets [{}, {}], which overlap the previous tensor '{}' (ending at {}) "
                  "by {} bytes (expected the tensor to begin at {}). {}",
                  label(path), e.name, e.begin, e.end, prev ? prev->name : std::string(), start, start - e.begin, start,
                  kHintOffsets);
    }
    start = e.end;
    prev = &e;

    std::uint64_t count = 1;
    bool overflow = false;
    for (std::uint64_t d : e.dims) overflow = overflow || __builtin_mul_overflow(count, d, &count);
    std::uint64_t bits = 0;
    overflow = overflow || __builtin_mul_overflow(count, static_cast<std::uint64_t>(e.dtype->bits), &bits);
    ADAPT_REQUIRE(!overflow, IoError, "{}: tensor '{}' has shape {} of {}: its size overflows 64 bits. {}", label(path),
                  e.name, dims_str(e.dims), e.dtype->name, kHintCorrupt);
    ADAPT_REQUIRE(bits % 8 == 0, IoError,
                  "{}: tensor '{}' has {} elements of {} ({} bits each) = {} bits, which is not a whole number of "
                  "bytes. {}",
                  label(path), e.name, count, e.dtype->name, e.dtype->bits, bits, kHintCorrupt);
    ADAPT_REQUIRE(e.end - e.begin == bits / 8, IoError,
                  "{}: tensor '{}' (shape {}, {}) needs {} bytes, but its data_offsets [{}, {}] span {} bytes. {}",
                  label(path), e.name, dims_str(e.dims), e.dtype->name, bits / 8, e.begin, e.end, e.end - e.begin,
                  kHintCorrupt);
  }

  // Step 7 (MetadataIncompleteBuffer): the data buffer is exactly the rest of the file.
  std::uint64_t expected = 0;
  ADAPT_REQUIRE(!__builtin_add_overflow(8 + n, start, &expected), IoError,
                "{}: the file is {} bytes, but its tensors claim {} bytes of data. {}", label(path), file_size, start,
                kHintCorrupt);
  if (expected > file_size) {
    ADAPT_THROW(IoError,
                "{}: the file is {} bytes, but its header describes {} bytes (8 + {}-byte header + {} bytes of tensor "
                "data): {} bytes are missing. The file is truncated (an interrupted download or copy): re-download or "
                "re-copy it.",
                label(path), file_size, expected, n, start, expected - file_size);
  }
  if (expected < file_size) {
    ADAPT_THROW(IoError,
                "{}: the file is {} bytes, but its header describes {} bytes (8 + {}-byte header + {} bytes of tensor "
                "data): {} unexpected bytes follow the last tensor. The format forbids trailing data; the file was "
                "modified or is not a pure safetensors file: re-download it.",
                label(path), file_size, expected, n, start, file_size - expected);
  }

  // Limits of adapt's Shape (the reference has none): at most Shape::kMaxDims dims of int64.
  out.tensors.reserve(entries.size());
  for (RawEntry& e : entries) {
    ADAPT_REQUIRE(e.dims.size() <= static_cast<std::size_t>(Shape::kMaxDims), UnsupportedError,
                  "{}: tensor '{}' has {} dimensions; adapt supports at most {}", label(path), e.name, e.dims.size(),
                  Shape::kMaxDims);
    std::vector<std::int64_t> dims;
    for (std::uint64_t d : e.dims) {
      ADAPT_REQUIRE(d <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()), IoError,
                    "{}: tensor '{}' has shape {}: dimension {} does not fit in 63 bits. {}", label(path), e.name,
                    dims_str(e.dims), d, kHintCorrupt);
      dims.push_back(static_cast<std::int64_t>(d));
    }
    out.tensors.push_back(
        TensorInfo{std::move(e.name), std::string(e.dtype->name), e.dtype->dtype, Shape(dims), e.begin, e.end});
  }
  return out;
}

}  // namespace adapt::io
