// The safetensors header: the dtype table of the reference implementation, TensorInfo, and the
// header parser that applies the reference reader's validation rules (SPEC-llama.md §1.4) in order.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "dtype/dtype.h"
#include "tensor/shape.h"

namespace adapt::io {

namespace fs = std::filesystem;

/// Largest header the reference reader accepts (MAX_HEADER_SIZE) and the writer produces.
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  std::string dtype_name;      // safetensors spelling, e.g. "BF16", "F64", "I8"
  std::optional<DType> dtype;  // nullopt for dtypes the reference accepts but adapt has no DType for
  Shape shape;
  std::uint64_t begin = 0, end = 0;  // data_offsets, relative to the start of the data buffer
  std::uint64_t size_bytes() const { return end - begin; }
};

/// One entry of the reference implementation's `Dtype` enum (declared in increasing alignment order).
struct SafetensorsDType {
  std::string_view name;  // "BF16"
  int bits;               // element size in bits (4 for F4, 6 for F6_*)
  int order;              // position in the reference enum; the writer sorts by it, descending
  std::optional<DType> dtype;
};

/// Every dtype the reference reader accepts, in enum order.
const std::vector<SafetensorsDType>& safetensors_dtypes();
/// The table entry for a safetensors dtype string (case-sensitive, as the format is); nullptr if unknown.
const SafetensorsDType* safetensors_dtype_find(std::string_view name);
/// The safetensors spelling of an adapt dtype: F32, BF16, F16, I32, I64, U8.
std::string_view safetensors_dtype_name(DType t);
/// Position of an adapt dtype in the reference enum (writer ordering).
int safetensors_dtype_order(DType t);

/// A parsed, validated header.
struct SafetensorsHeader {
  std::vector<TensorInfo> tensors;  // sorted by (begin, end), then name
  std::map<std::string, std::string> metadata;
};

/// Validates header bytes as the reference reader does, from step 4 on (UTF-8, JSON shape, dtypes,
/// duplicate names, offsets walk, element-count overflow, whole bytes, sizes, total length). `n` is
/// the header length field and `file_size` the whole file's size; the caller has already checked
/// steps 1-3 (file >= 8 bytes, n <= kMaxHeaderBytes, 8 + n <= file_size). Throws IoError naming
/// `path` (and the tensor, where there is one) with observed and expected values and a hint.
SafetensorsHeader safetensors_header_parse(const fs::path& path, std::string_view header, std::uint64_t file_size);

/// Index of the first byte that is not valid UTF-8 (overlong forms, surrogates and code points
/// above U+10FFFF are invalid, as in Rust's str::from_utf8), or nullopt when all of `s` is valid.
std::optional<std::size_t> utf8_first_invalid(std::string_view s);

}  // namespace adapt::io
