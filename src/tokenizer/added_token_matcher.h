// Finds special / added token strings in text before pre-tokenization: leftmost-longest, as HF's
// AddedVocabulary (Aho-Corasick, MatchKind::LeftmostLongest) does. A byte trie with a first-byte filter.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe_model.h"

namespace adapt::tokenizer {

class AddedTokenMatcher {
 public:
  struct Match {
    std::size_t pos;  // byte offset in the text
    std::size_t n_bytes;
    TokenId id;
  };

  /// Adds a token string (non-empty). A later add of the same string replaces the earlier one.
  void add(std::string_view content, TokenId id, bool special);

  /// The leftmost match at or after `from`, the longest one there. Special tokens take part only when
  /// `allow_special`; non-special added tokens always do.
  std::optional<Match> find(std::string_view text, std::size_t from, bool allow_special) const;

  /// True when some token could match with `allow_special` (lets encode skip the scan).
  bool can_match(bool allow_special) const { return allow_special ? n_tokens_ > 0 : n_non_special_ > 0; }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, std::uint32_t>> children;  // sorted by byte
    TokenId id = kNoToken;                                          // token ending here
    bool special = false;
  };
  std::uint32_t child(std::uint32_t node, unsigned char byte) const;
  std::vector<Node> nodes_{Node{}};
  std::array<bool, 256> first_byte_{};  // bytes that start some token
  std::size_t n_tokens_ = 0, n_non_special_ = 0;
};

}  // namespace adapt::tokenizer
