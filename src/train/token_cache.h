// The token cache: a dataset's documents tokenized once into one binary file per (inputs, settings,
// tokenizer), reused while the inputs are unchanged and rebuilt (saying why) when they change. The
// file layout is in README.md ("Token cache"); TokenDataset maps it read-only.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/file.h"
#include "tokenizer/tokenizer.h"
#include "train/data_config.h"

namespace adapt::train {

namespace fs = std::filesystem;

/// Which input list of a DataConfig a cache holds.
enum class DataInputs { Train /* data.inputs */, Eval /* data.eval_inputs */ };

/// One input file as the cache saw it when it was built.
struct CachedInput {
  std::string path;  // absolute
  std::int64_t size_bytes = 0;
  std::int64_t mtime_ns = 0;
  std::uint64_t xxh64 = 0;  // of all bytes
};

/// Identity of a tokenizer for cache keys: XXH64 over its kind, every token's bytes and special flag,
/// BOS / EOS ids and the encoding of a fixed probe text (which catches different merges). Takes a few
/// milliseconds for a 128k vocabulary.
std::uint64_t tokenizer_fingerprint(const tokenizer::Tokenizer& tok);

/// The cache file for `which` of `config` with `tok`: cache_dir / "tokens-<16 hex>.bin", the hex
/// being XXH64 of the settings that decide the tokens (absolute input paths, globs, format, add_bos,
/// add_eos, chat layout, tokenizer fingerprint, cache format version). Computable on every rank
/// without reading any input.
fs::path token_cache_path(const DataConfig& config, DataInputs which, const tokenizer::Tokenizer& tok);

struct TokenCacheOptions {
  double progress_seconds = 10.0;  // log progress at most this often while building
};

/// Makes the cache for `which` up to date and returns its path: finds the input files
/// (data_files_discover), hashes every byte of each (XXH64), and compares paths, sizes and hashes
/// with the cache's record of them. Equal, and the cache's tokens and flags still have the XXH64 its
/// header recorded → reused (a changed mtime alone is logged and ignored).
/// Otherwise (no cache, unreadable cache, a file added, removed or changed) it logs why, tokenizes
/// every document with config.tokenize_threads threads, logging documents, tokens and tokens/s, and
/// writes the cache atomically (file_write_atomic; a concurrent reader keeps its old mapping).
/// Call it on one rank (rank 0) before the others open the cache; cache_dir must be shared.
/// IoError for missing, unreadable or malformed inputs (file:line) and when no usable document is
/// found (the message names the inputs); ConfigError for unusable settings.
fs::path token_cache_update(const DataConfig& config, DataInputs which, const tokenizer::Tokenizer& tok,
                            const TokenCacheOptions& options = {});

/// A token cache mapped read-only. Documents are numbered 0..n_documents()-1 in input order (files
/// in discovery order, records in file order). Immutable; share it with shared_ptr.
class TokenDataset {
 public:
  /// Opens `path` and checks its header and section sizes (not the token values). IoError when the
  /// file is missing, truncated or not a token cache of this version.
  static std::shared_ptr<const TokenDataset> open(const fs::path& path);

  const fs::path& path() const { return file_.path(); }
  std::int64_t n_documents() const { return n_documents_; }
  std::int64_t n_tokens() const { return n_tokens_; }
  std::int64_t document_size(std::int64_t doc) const { return offsets_[doc + 1] - offsets_[doc]; }
  std::span<const std::int32_t> document_tokens(std::int64_t doc) const;  // (document_size)
  std::span<const std::uint8_t> document_flags(std::int64_t doc) const;   // (document_size) TokenFlag bits
  /// Index into inputs() of the file the document came from.
  std::int64_t document_input(std::int64_t doc) const { return static_cast<std::int64_t>(doc_input_[doc]); }
  const std::vector<CachedInput>& inputs() const { return inputs_; }
  /// XXH64 of the token settings and every input's bytes: changes whenever the tokens may change;
  /// does not depend on where the inputs live.
  std::uint64_t fingerprint() const { return fingerprint_; }
  /// The token rows are padded with (unpacked mode): the tokenizer's first EOS id.
  std::int32_t pad_id() const { return pad_id_; }
  /// Records skipped because they were empty, over all inputs.
  std::int64_t n_empty_records() const { return n_empty_records_; }

 private:
  TokenDataset() = default;
  MappedFile file_;
  std::int64_t n_documents_ = 0;
  std::int64_t n_tokens_ = 0;
  const std::int32_t* tokens_ = nullptr;      // (n_tokens)
  const std::uint8_t* flags_ = nullptr;       // (n_tokens)
  const std::int64_t* offsets_ = nullptr;     // (n_documents + 1), offsets_[0] = 0
  const std::uint32_t* doc_input_ = nullptr;  // (n_documents)
  std::vector<CachedInput> inputs_;
  std::uint64_t fingerprint_ = 0;
  std::int32_t pad_id_ = 0;
  std::int64_t n_empty_records_ = 0;
};

}  // namespace adapt::train
