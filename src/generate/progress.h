// Generation progress kept across preemption: a prompt still being generated when its job stops
// (SIGUSR1/SIGTERM before a time limit or a preemption, or a crash) continues where it stood when the
// job runs again, instead of starting over. Its generated tokens and sampler state are saved every
// runtime.progress_every tokens and when the job stops on a signal, one JSON file per prompt in
// output.dir/output.progress, written atomically, and removed once the prompt's result is recorded.
// A saved progress belongs to one request: a fingerprint of its prompt tokens, sampling, stop rules,
// max_new_tokens and the model and adapter named by the job; a file whose fingerprint differs (the
// prompt file or the model changed) is set aside and the prompt starts afresh.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "generate/sequence.h"

namespace adapt::generate {

namespace fs = std::filesystem;

struct ProgressRecord {
  std::string id;           // the prompt's id
  std::string fingerprint;  // request_fingerprint of the request it continues
  SequenceProgress progress;
};

/// Identifies a request: its prompt tokens, sampling parameters, stop strings and max_new_tokens,
/// and `context` (the model and adapter the job names), as 16 hex digits (two CRC-32C).
std::string request_fingerprint(const GenerationRequest& r, std::string_view context);

std::string progress_to_json(const ProgressRecord& p);
/// IoError naming `file` for a malformed record (not JSON, missing fields, negative token ids).
ProgressRecord progress_from_json(std::string_view text, const fs::path& file);

/// The progress files of a job: one per prompt in `dir`.
class ProgressStore {
 public:
  explicit ProgressStore(fs::path dir) : dir_(std::move(dir)) {}
  const fs::path& dir() const { return dir_; }
  /// <id>.json for ids that are file names (letters, digits, '.', '_', '-'), else id-<hash>.json.
  fs::path path_of(const std::string& id) const;
  /// The saved progress of prompt `id`, or nullopt when there is none. IoError for a malformed file
  /// or one that holds another prompt; token ids must lie below `n_vocab`.
  std::optional<ProgressRecord> load(const std::string& id, std::int64_t n_vocab) const;
  /// Writes atomically (a crash leaves the previous version); IoError on failure.
  void save(const ProgressRecord& p) const;
  /// Removes the file of `id` if there is one.
  void remove(const std::string& id) const;
  /// Renames the file of `id` to <file>.stale (kept for inspection, no longer read).
  fs::path set_aside(const std::string& id) const;

 private:
  fs::path dir_;
};

}  // namespace adapt::generate
