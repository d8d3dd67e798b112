// Byte-pair encoding of one piece: vocabulary (bytes ↔ id hash table) and merge table ((left, right) →
// (priority, merged)). One loop serves tiktoken (priority = rank of the merged token) and HF (priority
// = index in merges): both merge the lowest-priority adjacent pair, leftmost first.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace adapt::tokenizer {

/// A token id (row of the embedding matrix).
using TokenId = std::int32_t;
inline constexpr TokenId kNoToken = -1;

/// Token id ↔ token bytes. Ids may have gaps (bytes() of a gap is empty and find() never returns it).
class TokenTable {
 public:
  /// Adds `bytes` as token `id`. Returns false (and changes nothing) when `bytes` is already a token
  /// or `id` already has bytes. Precondition: id >= 0, bytes non-empty.
  bool insert(TokenId id, std::string_view bytes);
  /// The id of `bytes`, or kNoToken.
  TokenId find(std::string_view bytes) const;
  /// The bytes of token `id` (empty for an id without bytes or out of range).
  std::string_view bytes(TokenId id) const;
  /// Largest id + 1.
  TokenId end_id() const { return static_cast<TokenId>(begin_.size()); }
  std::size_t n_tokens() const { return n_tokens_; }

 private:
  void grow();
  std::string arena_;
  std::vector<std::uint32_t> begin_, length_;  // per id; length 0 = no token
  std::vector<TokenId> slots_;                 // hash slots: token id or kNoToken
  std::size_t n_tokens_ = 0;
  std::size_t max_bytes_ = 0;  // longest token: longer lookups fail without hashing
};

/// (left, right) → (priority, merged id). Lookups are one multiplicative hash and a short probe.
class MergeTable {
 public:
  static constexpr std::uint32_t kNoMerge = 0xFFFFFFFFu;
  /// Adds or replaces (the last insertion wins, as in HF's merge map) the merge of left and right.
  void insert(TokenId left, TokenId right, std::uint32_t priority, TokenId merged);
  /// Priority in the high 32 bits and merged id in the low 32 bits; ~0 when there is no such merge,
  /// so the value compares by priority first.
  std::uint64_t find(TokenId left, TokenId right) const;
  std::size_t size() const { return n_; }

 private:
  struct Slot {
    std::uint64_t key;    // (left << 32) | right, or kEmpty
    std::uint64_t value;  // (priority << 32) | merged
  };
  static constexpr std::uint64_t kEmpty = ~std::uint64_t{0};
  void grow();
  std::vector<Slot> slots_;
  std::size_t n_ = 0;
};

/// How a piece is cut into initial symbols and merged.
struct BpeOptions {
  bool ignore_merges = false;  // look the whole piece up first (tiktoken; HF "ignore_merges": true)
  bool byte_level = true;      // initial symbols are single bytes; else UTF-8 characters (SentencePiece style)
  bool byte_fallback = false;  // characters missing from the vocabulary become <0xXX> tokens
  bool fuse_unk = false;       // consecutive unknown characters become one unk token
  TokenId unk_id = kNoToken;   // the unk token, if any
};

/// The BPE model: vocabulary, merges and options. Immutable after loading; encode_piece is const and
/// thread-safe.
class BpeModel {
 public:
  TokenTable vocab;
  MergeTable merges;
  BpeOptions options;
  /// Byte-level: the id of each single-byte token. With byte_fallback: the id of <0xXX>. Else kNoToken.
  std::array<TokenId, 256> byte_ids{};

  BpeModel() { byte_ids.fill(kNoToken); }

  /// Appends the ids of `piece` to `out`. Throws IoError when a character can be neither found, nor
  /// byte-fallen-back, nor mapped to an unk token (`what` names the tokenizer in the message).
  void encode_piece(std::string_view piece, std::vector<TokenId>& out, std::string_view what) const;

  /// Runs the merge loop over `symbols` in place (exposed for tests): repeatedly replaces the adjacent
  /// pair with the lowest merge priority, leftmost on ties, by its merged id.
  void merge(std::vector<TokenId>& symbols) const;

 private:
  void merge_small(std::vector<TokenId>& symbols) const;
  void merge_large(std::vector<TokenId>& symbols) const;
};

}  // namespace adapt::tokenizer
