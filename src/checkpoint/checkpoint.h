// Checkpoint files in a folder: save with an atomic commit (step_N.h5.tmp -> fsync -> rename ->
// fsync folder -> rewrite `latest`), find the newest usable one (falling back past a corrupt or
// truncated file, with a warning), load with a base-model check. One process per folder writes
// (rank 0 after gathering); any rank may read. Calls are serialised internally (the HDF5 library
// in Debian's parallel build is not thread-safe).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "checkpoint/checkpoint_state.h"
#include "core/error.h"

namespace adapt::checkpoint {

namespace fs = std::filesystem;

/// A checkpoint that cannot be written, read or used: the message names the file, the HDF5 object
/// and, for HDF5 failures, the library's error stack. Exits like any IoError (ExitCode::Io).
class CheckpointError : public IoError {
 public:
  CheckpointError(std::string message, SourceLoc where) : IoError(std::move(message), where) {}
};

/// The schema version this build writes; the reader accepts exactly the versions it knows.
constexpr std::int64_t kFormatVersion = 1;

struct SaveOptions {
  /// Keep the checkpoint just written and the keep_last - 1 newest earlier ones; delete the rest
  /// (including files of a higher step, left by a run that was resumed from an earlier one).
  /// 0 keeps everything.
  int keep_last = 0;
  /// Called after each tensor is added to the file (built in memory before it is written);
  /// for progress reporting. An exception thrown here aborts the save like any other failure.
  std::function<void(std::string_view dataset, std::int64_t bytes_done, std::int64_t bytes_total)> on_dataset;
};

struct LoadOptions {
  /// When set, the checkpoint's base_model_fingerprint must equal it (CheckpointError otherwise).
  std::optional<std::string> expected_base_model_fingerprint;
};

/// A checkpoint file found in a folder (by name; not opened).
struct CheckpointFile {
  std::int64_t step = 0;
  fs::path path;
};

/// "step_00000400.h5" (at least 8 digits). Throws CheckpointError for a negative step.
std::string checkpoint_file_name(std::int64_t step);

/// Writes `state` as `dir/step_<step>.h5` and points `dir/latest` at it; creates `dir` if needed.
/// The file is built in memory (one file-sized buffer), written as `step_<step>.h5.tmp`, fsynced and
/// renamed. On a failure before the rename (full disk, HDF5 error, an exception from on_dataset) the
/// .tmp file is removed, the previous checkpoint and `latest` are untouched, and CheckpointError (or
/// the exception from on_dataset) is thrown. If only rewriting `latest` fails, the new file stays,
/// complete, and `latest` still names the previous one. Rotation (keep_last) and removal of .tmp
/// files left by crashed writers happen after the commit; a file that cannot be removed is a
/// warning. Returns the path written. Called by one process per folder.
fs::path checkpoint_save(const fs::path& dir, const CheckpointState& state, const SaveOptions& options = {});

/// True when `dir` exists and holds a `latest` pointer or a step_*.h5 file, i.e. a run should resume
/// rather than start fresh (checkpoint_latest then says whether one is usable).
bool checkpoint_exists(const fs::path& dir);

/// The committed checkpoint files in `dir` (step_<digits>.h5; .tmp files never), by increasing
/// step. Nothing is opened. Empty when `dir` does not exist.
std::vector<CheckpointFile> checkpoint_list(const fs::path& dir);

/// Reads `path` and checks it completely: its seal (file length, CRC-32C of the whole file; checked
/// before HDF5 sees the bytes), /meta complete == 1, a known format_version, every
/// dataset readable with its recorded shape and dtype, and the HDF5 Fletcher-32 checksum of every
/// chunk (so it reads all data once). Returns the step recorded in /meta. Throws CheckpointError
/// saying what is wrong.
std::int64_t checkpoint_verify(const fs::path& path);

/// The checkpoint `dir/latest` names, verified (checkpoint_verify). When it is unusable (missing,
/// truncated, corrupt, incomplete), falls back to the newest earlier file that verifies and
/// log::warn's both names and the reason. Throws IoError when `dir` is missing or holds no usable
/// checkpoint, listing what was tried and why.
fs::path checkpoint_latest(const fs::path& dir);

/// Reads a whole checkpoint into host tensors. Checks the seal, the completion marker and format version, and
/// options.expected_base_model_fingerprint before reading any tensor. Throws CheckpointError.
CheckpointState checkpoint_load(const fs::path& path, const LoadOptions& options = {});

}  // namespace adapt::checkpoint
