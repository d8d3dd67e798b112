// Open-addressing tables (power-of-two capacity, load <= 1/2, linear probing) and the BPE merge loop:
// tiktoken's quadratic scan for short pieces, a heap over a linked list for long ones (same result).
#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "tokenizer/unicode_class.h"

namespace adapt::tokenizer {

namespace {

inline std::uint64_t mix(std::uint64_t h) {
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdULL;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ULL;
  return h ^ (h >> 33);
}

inline std::uint64_t hash_bytes(std::string_view s) {
  std::uint64_t h = 0x9E3779B97F4A7C15ULL ^ s.size();
  const char* p = s.data();
  std::size_t n = s.size();
  while (n >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = (h ^ w) * 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 31;
    p += 8, n -= 8;
  }
  if (n > 0) {
    std::uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = (h ^ w) * 0x94d049bb133111ebULL;
  }
  return mix(h);
}

// Pieces up to this many symbols use the quadratic scan (it beats a heap on short words).
constexpr std::size_t kSmallPiece = 128;

}  // namespace

// ---- TokenTable ----

bool TokenTable::insert(TokenId id, std::string_view bytes) {
  ADAPT_CHECK(id >= 0 && !bytes.empty(), "token id {} with {} bytes", id, bytes.size());
  if (find(bytes) != kNoToken) return false;
  if (static_cast<std::size_t>(id) < begin_.size() && length_[id] != 0) return false;
  if (static_cast<std::size_t>(id) >= begin_.size()) {
    begin_.resize(static_cast<std::size_t>(id) + 1, 0);
    length_.resize(static_cast<std::size_t>(id) + 1, 0);
  }
  begin_[id] = static_cast<std::uint32_t>(arena_.size());
  length_[id] = static_cast<std::uint32_t>(bytes.size());
  arena_.append(bytes);
  max_bytes_ = std::max(max_bytes_, bytes.size());
  if ((n_tokens_ + 1) * 2 > slots_.size()) grow();
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = hash_bytes(bytes) & mask;
  while (slots_[i] != kNoToken) i = (i + 1) & mask;
  slots_[i] = id;
  ++n_tokens_;
  return true;
}

void TokenTable::grow() {
  std::vector<TokenId> old = std::move(slots_);
  slots_.assign(std::max<std::size_t>(64, old.size() * 2), kNoToken);
  const std::size_t mask = slots_.size() - 1;
  for (TokenId id : old) {
    if (id == kNoToken) continue;
    std::size_t i = hash_bytes(bytes(id)) & mask;
    while (slots_[i] != kNoToken) i = (i + 1) & mask;
    slots_[i] = id;
  }
}

TokenId TokenTable::find(std::string_view bytes) const {
  if (slots_.empty() || bytes.size() > max_bytes_) return kNoToken;
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = hash_bytes(bytes) & mask;; i = (i + 1) & mask) {
    const TokenId id = slots_[i];
    if (id == kNoToken) return kNoToken;
    if (length_[id] == bytes.size() && std::memcmp(arena_.data() + begin_[id], bytes.data(), bytes.size()) == 0)
      return id;
  }
}

std::string_view TokenTable::bytes(TokenId id) const {
  if (id < 0 || static_cast<std::size_t>(id) >= begin_.size()) return {};
  return std::string_view(arena_).substr(begin_[id], length_[id]);
}

// ---- MergeTable ----

void MergeTable::insert(TokenId left, TokenId right, std::uint32_t priority, TokenId merged) {
  if ((n_ + 1) * 2 > slots_.size()) grow();
  const std::uint64_t key = (std::uint64_t(std::uint32_t(left)) << 32) | std::uint32_t(right);
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = mix(key) & mask;
  while (slots_[i].key != kEmpty && slots_[i].key != key) i = (i + 1) & mask;
  if (slots_[i].key == kEmpty) ++n_;
  slots_[i] = {key, (std::uint64_t(priority) << 32) | std::uint32_t(merged)};
}

void MergeTable::grow() {
  std::vector<Slot> old = std::move(slots_);
  slots_.assign(std::max<std::size_t>(64, old.size() * 2), Slot{kEmpty, 0});
  const std::size_t mask = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.key == kEmpty) continue;
    std::size_t i = mix(s.key) & mask;
    while (slots_[i].key != kEmpty) i = (i + 1) & mask;
    slots_[i] = s;
  }
}

std::uint64_t MergeTable::find(TokenId left, TokenId right) const {
  if (slots_.empty()) return kEmpty;
  const std::uint64_t key = (std::uint64_t(std::uint32_t(left)) << 32) | std::uint32_t(right);
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = mix(key) & mask;; i = (i + 1) & mask) {
    if (slots_[i].key == key) return slots_[i].value;
    if (slots_[i].key == kEmpty) return kEmpty;
  }
}

// ---- BpeModel ----

void BpeModel::merge(std::vector<TokenId>& symbols) const {
  if (symbols.size() < 2) return;
  if (symbols.size() <= kSmallPiece) {
    merge_small(symbols);
  } else {
    merge_large(symbols);
  }
}

void BpeModel::merge_small(std::vector<TokenId>& s) const {
  // pair[i] = merge of (s[i], s[i+1]); the minimum is the lowest priority, and the strict '<' keeps
  // the leftmost of equal ones (equal priority implies the same merge, so ties are exact).
  std::uint64_t pair[kSmallPiece];
  std::size_t n = s.size();
  for (std::size_t i = 0; i + 1 < n; ++i) pair[i] = merges.find(s[i], s[i + 1]);
  while (n > 1) {
    std::size_t best = 0;
    std::uint64_t best_value = pair[0];
    for (std::size_t i = 1; i + 1 < n; ++i) {
      if (pair[i] < best_value) best_value = pair[i], best = i;
    }
    if (best_value == ~std::uint64_t{0}) break;
    s[best] = static_cast<TokenId>(best_value & 0xFFFFFFFFu);
    for (std::size_t i = best + 1; i + 1 < n; ++i) s[i] = s[i + 1];
    for (std::size_t i = best; i + 2 < n; ++i) pair[i] = pair[i + 1];
    --n;
    if (best > 0) pair[best - 1] = merges.find(s[best - 1], s[best]);
    if (best + 1 < n) pair[best] = merges.find(s[best], s[best + 1]);
  }
  s.resize(n);
}

void BpeModel::merge_large(std::vector<TokenId>& s) const {
  // Symbols keep their original index (a merged symbol lives at its left index), so ordering the
  // heap by (priority, index) is "lowest priority, leftmost first" as in the quadratic scan.
  struct Candidate {
    std::uint32_t priority;
    std::uint32_t pos;
    TokenId left, right, merged;
  };
  auto later = [](const Candidate& a, const Candidate& b) {
    return a.priority != b.priority ? a.priority > b.priority : a.pos > b.pos;
  };
  // Per-thread buffers: long pieces are rare but can be long (a run of 10,000 spaces is one piece).
  thread_local std::vector<std::int64_t> next, prev;
  thread_local std::vector<std::uint8_t> alive;
  thread_local std::vector<Candidate> heap;
  const std::size_t n = s.size();
  next.resize(n), prev.resize(n), alive.assign(n, 1), heap.clear();
  for (std::size_t i = 0; i < n; ++i) next[i] = i + 1 < n ? std::int64_t(i + 1) : -1, prev[i] = std::int64_t(i) - 1;
  auto push = [&](std::size_t i) {
    if (next[i] < 0) return;
    const std::uint64_t v = merges.find(s[i], s[next[i]]);
    if (v == ~std::uint64_t{0}) return;
    heap.push_back({static_cast<std::uint32_t>(v >> 32), static_cast<std::uint32_t>(i), s[i], s[next[i]],
                    static_cast<TokenId>(v & 0xFFFFFFFFu)});
    std::push_heap(heap.begin(), heap.end(), later);
  };
  for (std::size_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), later);
    const Candidate c = heap.back();
    heap.pop_back();
    const std::size_t i = c.pos;
    if (alive[i] == 0 || next[i] < 0 || s[i] != c.left || s[next[i]] != c.right) continue;  // stale
    const std::size_t j = static_cast<std::size_t>(next[i]);
    s[i] = c.merged;
    alive[j] = 0;
    next[i] = next[j];
    if (next[j] >= 0) prev[next[j]] = std::int64_t(i);
    if (prev[i] >= 0) push(static_cast<std::size_t>(prev[i]));
    push(i);
  }
  std::size_t out = 0;
  for (std::size_t i = 0; i < n; ++i)
    if (alive[i]) s[out++] = s[i];
  s.resize(out);
}

void BpeModel::encode_piece(std::string_view piece, std::vector<TokenId>& out, std::string_view what) const {
  if (piece.empty()) return;
  if (options.ignore_merges) {
    if (TokenId id = vocab.find(piece); id != kNoToken) {
      out.push_back(id);
      return;
    }
  }
  thread_local std::vector<TokenId> symbols;
  symbols.clear();
  if (options.byte_level) {
    for (char c : piece) {
      const TokenId id = byte_ids[static_cast<unsigned char>(c)];
      ADAPT_REQUIRE(id != kNoToken, IoError,
                    "tokenizer {} has no token for the byte 0x{:02X}; a byte-level vocabulary needs all 256", what,
                    static_cast<unsigned char>(c));
      symbols.push_back(id);
    }
  } else {
    bool previous_unk = false;
    for (std::size_t pos = 0; pos < piece.size();) {
      const std::uint32_t len = utf8_char_at(piece, pos).n_bytes;
      const std::string_view ch = piece.substr(pos, len);
      pos += len;
      if (TokenId id = vocab.find(ch); id != kNoToken) {
        symbols.push_back(id);
        previous_unk = false;
        continue;
      }
      bool all_bytes = options.byte_fallback;
      for (char c : ch) all_bytes = all_bytes && byte_ids[static_cast<unsigned char>(c)] != kNoToken;
      if (all_bytes) {
        for (char c : ch) symbols.push_back(byte_ids[static_cast<unsigned char>(c)]);
        previous_unk = false;
        continue;
      }
      ADAPT_REQUIRE(options.unk_id != kNoToken, IoError,
                    "tokenizer {} cannot encode the character at byte {} of a piece: it is not in the vocabulary, "
                    "and the tokenizer has neither byte-fallback tokens nor an unk token",
                    what, pos - len);
      if (!(options.fuse_unk && previous_unk)) symbols.push_back(options.unk_id);
      previous_unk = true;
    }
  }
  merge(symbols);
  out.insert(out.end(), symbols.begin(), symbols.end());
}

}  // namespace adapt::tokenizer
