// Writes a trained byte-level BPE vocabulary as an HF-style Llama 3 tokenizer folder: tokenizer.json
// (SPEC-llama §4.1), tokenizer_config.json with a Llama 3.1 chat template, special_tokens_map.json.
// Ids: 0..255 single bytes, 256 + k = merge k, then the 256 Llama 3.1 special tokens.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe_train.h"

namespace adapt::tokenizer {

namespace fs = std::filesystem;

/// The Llama 3 pre-tokenizer regex, verbatim (Meta's `pat_str`, transformers' TikTokenConverter).
inline constexpr std::string_view kLlama3SplitPattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct TokenizerJsonOptions {
  /// tokenizer_config.json `model_max_length` (Llama 3.1: 131072).
  std::int64_t model_max_length = 131072;
  /// tokenizer_config.json / special_tokens_map.json EOS: "<|end_of_text|>" for base models,
  /// "<|eot_id|>" for instruct-style ones. Must be one of the Llama 3.1 special tokens.
  std::string eos_token = "<|end_of_text|>";
};

/// Sizes and ids of a vocabulary written by tokenizer_json_write().
struct TokenizerJsonSummary {
  std::int64_t n_bpe_tokens = 0;    // 256 + n_merges; also the id of <|begin_of_text|>
  std::int64_t vocab_size = 0;      // n_bpe_tokens + 256 specials
  std::int64_t bos_id = 0;          // <|begin_of_text|>
  std::int64_t end_of_text_id = 0;  // <|end_of_text|>
  std::int64_t eot_id = 0;          // <|eot_id|>
  std::int64_t eom_id = 0;          // <|eom_id|>
};

/// The summary tokenizer_json_write() returns for `n_merges` merges, without writing anything.
TokenizerJsonSummary tokenizer_json_summary(std::int64_t n_merges);

/// The tokenizer.json text for `merges` (raw-byte pairs as returned by bpe_train, in priority order):
/// model.vocab holds the 256 single bytes in byte order, then one token per merge (its concatenation),
/// all in the byte-level alphabet; merges use the legacy "A B" form; the 256 specials are
/// added_tokens. InternalError when a merge uses a token not defined before it or re-creates an
/// existing token (bpe_train never produces either).
std::string tokenizer_json_text(const std::vector<BpeMerge>& merges);

/// Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json into `dir` (created when
/// missing), each atomically (file_write_atomic). IoError when a file cannot be written; ConfigError
/// when options.eos_token is not a Llama 3.1 special token.
TokenizerJsonSummary tokenizer_json_write(const fs::path& dir, const std::vector<BpeMerge>& merges,
                                          const TokenizerJsonOptions& options = {});

}  // namespace adapt::tokenizer
