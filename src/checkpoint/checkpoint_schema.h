// The HDF5 schema of a checkpoint file (internal to checkpoint/; README.md documents it): reserved
// names, name rules, file naming, and DType <-> HDF5 type. bf16 is stored as its raw 16-bit pattern
// (uint16) so round trips are bit-exact; every dataset carries a `dtype` attribute saying what it is.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "checkpoint/checkpoint_state.h"
#include "checkpoint/hdf5_call.h"
#include "dtype/dtype.h"

namespace adapt::checkpoint::detail {

inline constexpr const char* kMetaGroup = "/meta";
inline constexpr const char* kAttrFormatVersion = "format_version";
inline constexpr const char* kAttrCreatedBy = "created_by";
inline constexpr const char* kAttrStep = "step";
inline constexpr const char* kAttrComplete = "complete";
inline constexpr const char* kAttrFingerprint = "base_model_fingerprint";
inline constexpr const char* kAttrWorldLayout = "world_layout";
inline constexpr const char* kAttrConfigToml = "config_toml";
inline constexpr const char* kAttrTensorCount = "n_tensors";
/// On every dataset: the adapt dtype name ("f32", "bf16", ...).
inline constexpr const char* kAttrDtype = "dtype";
/// Name of the pointer file in a checkpoint folder.
inline constexpr const char* kLatestFile = "latest";
/// Target size of one HDF5 chunk (each chunk carries a Fletcher-32 checksum).
inline constexpr std::size_t kChunkTargetBytes = std::size_t{4} << 20;

/// Checks every name of `state` (syntax, reserved "meta", tensor/group and scalar clashes) and the
/// strings (no NUL, valid UTF-8). Throws CheckpointError naming the offending key.
void validate_state_names(const CheckpointState& state);

/// "adapters/layers.0.q" -> "/adapters/layers.0.q".
inline std::string h5_path(std::string_view name) {
  std::string path(1, '/');
  path.append(name);
  return path;
}

/// Splits a scalar key into its group path ("/" for a key without '/') and attribute name.
std::pair<std::string, std::string> scalar_location(std::string_view key);

/// step from "step_00000400.h5"; nullopt for anything else (including "*.h5.tmp").
std::optional<std::int64_t> parse_checkpoint_file_name(std::string_view file_name);

/// The type a dataset of `dtype` has in the file (little-endian; bf16 as uint16; f16 as IEEE half),
/// and the matching in-memory type (the host is little-endian, so no conversion happens).
H5Id h5_file_type(DType dtype);
H5Id h5_mem_type(DType dtype);

/// True when the UTF-8 check of `s` passes.
bool is_valid_utf8(std::string_view s);

}  // namespace adapt::checkpoint::detail
