// Deterministic byte-level BPE training: count pre-tokenized pieces once, then repeatedly merge the
// most frequent adjacent pair, updating pair counts only in the pieces that contain the merged pair.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

namespace adapt::tokenizer {

/// One merge rule: the raw bytes of its left and right parts (not byte-level-alphabet text).
using BpeMerge = std::pair<std::string, std::string>;

struct BpeTrainOptions {
  /// Number of merges to learn; training stops earlier when no pair is seen min_pair_count times.
  int n_merges = 1000;
  /// A pair seen fewer times than this (over the whole corpus) is never merged.
  std::int64_t min_pair_count = 2;
};

/// Learns up to `options.n_merges` merges from `texts`. Texts are cut with bpe_pretokenize(), so no
/// merge crosses a piece boundary. Each step merges the adjacent pair with the highest count; ties go
/// to the pair whose (left bytes, right bytes) is lexicographically smallest (bytes compared as
/// unsigned). A pair whose concatenation is already a token is skipped, so every merge adds exactly
/// one new token: merge k is token 256 + k. The result depends only on the inputs (same texts and
/// options → the same merges, bit for bit). ConfigError when n_merges < 0 or min_pair_count < 1.
/// Contents of the training files under `dir` (recursively; every regular file except README.md),
/// sorted by path so that training on them is deterministic. IoError when the folder is missing or
/// holds no files.
std::vector<std::string> bpe_corpus_read(const std::filesystem::path& dir);

std::vector<BpeMerge> bpe_train(const std::vector<std::string>& texts, const BpeTrainOptions& options);

}  // namespace adapt::tokenizer
