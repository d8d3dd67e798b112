// Byte trie for added tokens; positions whose byte starts no token are skipped with memchr-like speed.
#include "tokenizer/added_token_matcher.h"

#include <algorithm>

namespace adapt::tokenizer {

std::uint32_t AddedTokenMatcher::child(std::uint32_t node, unsigned char byte) const {
  const auto& ch = nodes_[node].children;
  auto it = std::lower_bound(ch.begin(), ch.end(), byte, [](const auto& p, unsigned char b) { return p.first < b; });
  return it != ch.end() && it->first == byte ? it->second : 0;
}

void AddedTokenMatcher::add(std::string_view content, TokenId id, bool special) {
  if (content.empty()) return;
  std::uint32_t node = 0;
  for (char c : content) {
    const auto byte = static_cast<unsigned char>(c);
    std::uint32_t next = child(node, byte);
    if (next == 0) {
      next = static_cast<std::uint32_t>(nodes_.size());
      nodes_.emplace_back();
      auto& ch = nodes_[node].children;
      auto it =
          std::lower_bound(ch.begin(), ch.end(), byte, [](const auto& p, unsigned char b) { return p.first < b; });
      ch.insert(it, {byte, next});
    }
    node = next;
  }
  Node& end = nodes_[node];
  if (end.id == kNoToken) {
    ++n_tokens_;
  } else if (!end.special) {
    --n_non_special_;
  }
  end.id = id;
  end.special = special;
  if (!special) ++n_non_special_;
  first_byte_[static_cast<unsigned char>(content[0])] = true;
}

std::optional<AddedTokenMatcher::Match> AddedTokenMatcher::find(std::string_view text, std::size_t from,
                                                                bool allow_special) const {
  if (!can_match(allow_special)) return std::nullopt;
  for (std::size_t pos = from; pos < text.size(); ++pos) {
    if (!first_byte_[static_cast<unsigned char>(text[pos])]) continue;
    std::uint32_t node = 0;
    std::optional<Match> best;
    for (std::size_t k = pos; k < text.size(); ++k) {
      node = child(node, static_cast<unsigned char>(text[k]));
      if (node == 0) break;
      const Node& n = nodes_[node];
      if (n.id != kNoToken && (allow_special || !n.special)) best = Match{pos, k + 1 - pos, n.id};
    }
    if (best) return best;
  }
  return std::nullopt;
}

}  // namespace adapt::tokenizer
