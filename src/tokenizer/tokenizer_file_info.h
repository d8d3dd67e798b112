// Vocabulary size and BOS/EOS ids of a tokenizer file, without building an encoder: enough to check
// a tokenizer against a model's config.json (vocab_size, bos_token_id, eos_token_id) at startup.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace adapt::tokenizer {

namespace fs = std::filesystem;

struct TokenizerFileInfo {
  std::string kind;                   // "tiktoken" (Meta's tokenizer.model) or "hf-json" (tokenizer.json)
  std::int64_t vocab_size = 0;        // including special / added tokens
  std::int64_t bos_id = -1;           // -1 when the file names no BOS token
  std::vector<std::int64_t> eos_ids;  // ascending; empty when the file names no EOS token
};

/// Reads `path` and tells its kind: a file named *.json or whose first non-blank byte is '{' or '['
/// is read as an HF tokenizer.json, anything else as a tiktoken rank file.
/// * tiktoken: non-empty lines "base64 rank"; vocab_size = max rank + 1 + 256 Llama 3 specials,
///   bos = max rank + 1 (<|begin_of_text|>), eos = <|end_of_text|>, <|eom_id|>, <|eot_id|>
///   (128256, 128000, {128001, 128008, 128009} for Meta's file).
/// * hf-json: vocab_size = max id over model.vocab and added_tokens + 1; bos = <|begin_of_text|> or
///   <s>, eos = <|end_of_text|>, <|eot_id|>, <|eom_id|> or </s>, looked up by content among
///   added_tokens (then model.vocab).
/// IoError naming the file (and line, for rank files) when it is missing, unreadable or malformed:
/// a token that is not base64, a rank that is not a non-negative integer, a duplicate rank, JSON that
/// does not parse or is not an object, no model.vocab object, or an id that is not an integer.
TokenizerFileInfo tokenizer_file_info(const fs::path& path);

}  // namespace adapt::tokenizer
