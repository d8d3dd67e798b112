// Incremental detokenization for streaming generation (SPEC-llama §4.4): token bytes are buffered and
// only complete UTF-8 is emitted; an incomplete trailing sequence (at most 3 bytes) is held back.
#pragma once

#include <string>

#include "tokenizer/tokenizer.h"

namespace adapt::tokenizer {

/// Feeds ids one at a time; the concatenation of everything push() and finish() return equals
/// tokenizer.decode(all ids, options) whenever every run of byte tokens forms valid UTF-8 — always for
/// ids produced by encode of valid text, and for any byte-level id sequence. (For a SentencePiece
/// byte-fallback run that is invalid, HF writes one U+FFFD per byte of the whole run; a stream cannot
/// take back what it emitted, so it replaces each ill-formed sequence by one U+FFFD.)
/// Not thread-safe; one decoder per stream. Keeps a copy of the tokenizer (cheap, shared tables).
class StreamDecoder {
 public:
  explicit StreamDecoder(Tokenizer tokenizer, DecodeOptions options = {});

  /// Adds one token; returns the text that became complete (possibly empty). Bytes that cannot start
  /// a valid sequence, or a sequence that a later byte proved invalid, are emitted as U+FFFD at once.
  /// IoError for an unknown id (the decoder state is unchanged).
  std::string push(TokenId id);

  /// Ends the stream: returns the held-back bytes, each ill-formed sequence as U+FFFD, and resets the
  /// decoder for a new text.
  std::string finish();

  /// Bytes held back (0..3).
  std::size_t n_pending_bytes() const { return pending_.size(); }

 private:
  Tokenizer tokenizer_;
  DecodeOptions options_;
  std::string pending_;  // an incomplete UTF-8 prefix
  bool first_ = true;    // no token has contributed bytes yet
};

}  // namespace adapt::tokenizer
