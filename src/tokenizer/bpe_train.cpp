// BPE trainer. Pieces are counted once into "words" (symbol sequence + count). Pair counts live in a
// hash map, an index maps each pair to the words that may contain it, and a lazy max-heap picks the
// best pair: a popped entry whose count is stale is pushed back with its current count. Counts of
// existing pairs only ever fall, and new pairs always contain the new token, so this is exact.
#include "tokenizer/bpe_train.h"

#include <algorithm>
#include <queue>
#include <string_view>
#include <unordered_map>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/bpe_pretokenize.h"

namespace adapt::tokenizer {

namespace {

using TokenId = std::int32_t;

struct Word {
  std::vector<TokenId> symbols;
  std::int64_t count = 0;
};

struct HeapEntry {
  std::int64_t count = 0;
  TokenId left = 0;
  TokenId right = 0;
};

std::uint64_t pair_key(TokenId left, TokenId right) {
  return (static_cast<std::uint64_t>(static_cast<std::uint32_t>(left)) << 32) | static_cast<std::uint32_t>(right);
}

bool word_has_pair(const Word& w, TokenId left, TokenId right) {
  for (std::size_t i = 0; i + 1 < w.symbols.size(); ++i)
    if (w.symbols[i] == left && w.symbols[i + 1] == right) return true;
  return false;
}

// Distinct pieces with their counts, sorted by bytes so that word indices do not depend on hashing.
std::vector<Word> count_words(const std::vector<std::string>& texts) {
  std::unordered_map<std::string_view, std::int64_t> piece_counts;
  for (const std::string& text : texts)
    for (std::string_view piece : bpe_pretokenize(text)) ++piece_counts[piece];
  std::vector<std::pair<std::string_view, std::int64_t>> sorted(piece_counts.begin(), piece_counts.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<Word> words;
  words.reserve(sorted.size());
  for (const auto& [piece, count] : sorted) {
    if (piece.size() < 2) continue;  // a single byte has no pair to merge
    Word w;
    w.count = count;
    for (char c : piece) w.symbols.push_back(static_cast<unsigned char>(c));
    words.push_back(std::move(w));
  }
  return words;
}

}  // namespace

std::vector<BpeMerge> bpe_train(const std::vector<std::string>& texts, const BpeTrainOptions& options) {
  ADAPT_REQUIRE(options.n_merges >= 0, ConfigError, "bpe_train: n_merges = {} must be >= 0", options.n_merges);
  ADAPT_REQUIRE(options.min_pair_count >= 1, ConfigError, "bpe_train: min_pair_count = {} must be >= 1",
                options.min_pair_count);

  std::vector<Word> words = count_words(texts);

  std::vector<std::string> tokens;  // token id → raw bytes
  std::unordered_map<std::string, TokenId> token_ids;
  for (int b = 0; b < 256; ++b) {
    tokens.emplace_back(1, static_cast<char>(b));
    token_ids.emplace(tokens.back(), b);
  }

  std::unordered_map<std::uint64_t, std::int64_t> pair_counts;
  std::unordered_map<std::uint64_t, std::vector<std::int32_t>> pair_words;  // may hold stale/duplicate words
  for (std::size_t wi = 0; wi < words.size(); ++wi) {
    const Word& w = words[wi];
    for (std::size_t i = 0; i + 1 < w.symbols.size(); ++i) {
      std::uint64_t key = pair_key(w.symbols[i], w.symbols[i + 1]);
      pair_counts[key] += w.count;
      auto& list = pair_words[key];
      if (list.empty() || list.back() != static_cast<std::int32_t>(wi)) list.push_back(static_cast<std::int32_t>(wi));
    }
  }

  // Max-heap on count; among equal counts the lexicographically smallest (left, right) bytes first.
  auto lower_priority = [&tokens](const HeapEntry& x, const HeapEntry& y) {
    if (x.count != y.count) return x.count < y.count;
    if (int c = tokens[x.left].compare(tokens[y.left]); c != 0) return c > 0;
    return tokens[x.right].compare(tokens[y.right]) > 0;
  };
  std::priority_queue<HeapEntry, std::vector<HeapEntry>, decltype(lower_priority)> heap(lower_priority);
  for (const auto& [key, count] : pair_counts)
    if (count >= options.min_pair_count)
      heap.push({count, static_cast<TokenId>(key >> 32), static_cast<TokenId>(key & 0xFFFFFFFFu)});

  std::vector<BpeMerge> merges;
  merges.reserve(static_cast<std::size_t>(options.n_merges));
  std::vector<std::uint64_t> new_pairs;
  while (merges.size() < static_cast<std::size_t>(options.n_merges) && !heap.empty()) {
    HeapEntry top = heap.top();
    heap.pop();
    const std::uint64_t key = pair_key(top.left, top.right);
    auto it = pair_counts.find(key);
    const std::int64_t current = it == pair_counts.end() ? 0 : it->second;
    if (current != top.count) {
      if (current >= options.min_pair_count) heap.push({current, top.left, top.right});
      continue;
    }
    // top.count is exact and no other pair's count exceeds it.
    if (current < options.min_pair_count) break;
    std::string merged = tokens[top.left] + tokens[top.right];
    if (token_ids.count(merged)) continue;  // another split already made this token: skip the pair for good

    const auto new_id = static_cast<TokenId>(tokens.size());
    merges.emplace_back(tokens[top.left], tokens[top.right]);
    tokens.push_back(merged);
    token_ids.emplace(std::move(merged), new_id);

    std::vector<std::int32_t> affected = std::move(pair_words[key]);
    pair_words.erase(key);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    new_pairs.clear();
    for (std::int32_t wi : affected) {
      Word& w = words[static_cast<std::size_t>(wi)];
      if (!word_has_pair(w, top.left, top.right)) continue;  // stale index entry
      // Words are short pieces, so recounting the whole word is cheaper than tracking neighbours.
      for (std::size_t i = 0; i + 1 < w.symbols.size(); ++i)
        pair_counts[pair_key(w.symbols[i], w.symbols[i + 1])] -= w.count;
      std::vector<TokenId> merged_symbols;
      merged_symbols.reserve(w.symbols.size());
      for (std::size_t i = 0; i < w.symbols.size(); ++i) {
        if (i + 1 < w.symbols.size() && w.symbols[i] == top.left && w.symbols[i + 1] == top.right) {
          merged_symbols.push_back(new_id);
          ++i;
        } else {
          merged_symbols.push_back(w.symbols[i]);
        }
      }
      w.symbols = std::move(merged_symbols);
      for (std::size_t i = 0; i + 1 < w.symbols.size(); ++i) {
        TokenId l = w.symbols[i], r = w.symbols[i + 1];
        std::uint64_t k = pair_key(l, r);
        pair_counts[k] += w.count;
        if (l == new_id || r == new_id) {
          auto& list = pair_words[k];
          if (list.empty() || list.back() != wi) list.push_back(wi);
          new_pairs.push_back(k);
        }
      }
    }
    pair_counts.erase(key);
    std::sort(new_pairs.begin(), new_pairs.end());
    new_pairs.erase(std::unique(new_pairs.begin(), new_pairs.end()), new_pairs.end());
    for (std::uint64_t k : new_pairs) {
      std::int64_t count = pair_counts[k];
      if (count >= options.min_pair_count)
        heap.push({count, static_cast<TokenId>(k >> 32), static_cast<TokenId>(k & 0xFFFFFFFFu)});
    }
  }
  return merges;
}

std::vector<std::string> bpe_corpus_read(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> paths;
  ADAPT_REQUIRE(std::filesystem::is_directory(dir), IoError, "corpus folder '{}' not found", dir.string());
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir))
    if (entry.is_regular_file() && entry.path().filename() != "README.md") paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  ADAPT_REQUIRE(!paths.empty(), IoError, "corpus folder '{}' holds no files", dir.string());
  std::vector<std::string> texts;
  for (const auto& p : paths) texts.push_back(file_read_text(p));
  return texts;
}

}  // namespace adapt::tokenizer
