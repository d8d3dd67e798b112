// Internal state of a Tokenizer, shared by the loaders (tokenizer_load_*.cpp) and tokenizer.cpp. Not
// part of the module's API: include tokenizer/tokenizer.h instead.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/added_token_matcher.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/tokenizer.h"

namespace adapt::tokenizer {

/// One step of an HF decoder chain (tokenizers' decoders/*.rs), applied to the list of token strings.
struct DecoderStep {
  enum class Type {
    ByteLevel,     // token chars → bytes through the GPT-2 alphabet (raw UTF-8 for other tokens), lossy UTF-8
    Replace,       // every `pattern` → `content`, per token
    ByteFallback,  // runs of "<0xXX>" tokens → their bytes (U+FFFD per byte when the run is not UTF-8)
    Fuse,          // all tokens → one
    Strip,         // per token: up to `start` leading and `stop` trailing `content` characters removed
    Metaspace,     // ▁ → space, except in the first token when `prepend` (dropped there)
  };
  Type type;
  std::string pattern = {};  // Replace
  std::string content = {};  // Replace, Strip (one character), Metaspace (the replacement)
  int start = 0, stop = 0;
  bool prepend = false;  // Metaspace: prepend_scheme != "never"
};

/// How text segments are normalized and split before BPE (SentencePiece style only). HF normalizes
/// each segment between added tokens on its own, so "prepend" applies per segment.
struct SentencePieceInput {
  enum class Prepend {
    Never,
    Always,          // Prepend("▁") normalizer: every non-empty segment, even one starting with ▁
    IfMissing,       // Metaspace prepend_scheme "always": segments not starting with ▁
    FirstIfMissing,  // Metaspace prepend_scheme "first": only the segment at text offset 0
  };
  bool replace_spaces = false;  // ' ' → ▁ (Replace normalizer or Metaspace pre-tokenizer)
  Prepend prepend = Prepend::Never;
  bool split = false;  // Metaspace split: pieces start at every ▁ (MergedWithNext)
};

struct Tokenizer::Impl {
  TokenizerKind kind = TokenizerKind::ByteLevel;
  BpeModel bpe;
  AddedTokenMatcher added;
  std::vector<std::string> added_content;  // by id; empty for ids that are not added tokens
  std::vector<bool> special;               // by id
  SentencePieceInput sp_input;
  std::vector<DecoderStep> decoder;  // empty: concatenate token bytes, lossy UTF-8
  TokenId bos = kNoToken;
  std::vector<TokenId> eos;
  std::int64_t n_vocab = 0;
  std::string description;

  /// Fills added_content / special / added for one added or special token.
  void add_token(TokenId id, const std::string& content, bool is_special);
  /// Sets n_vocab, bos, eos from the tables (bos_hint: from a post-processor, or kNoToken).
  void finish(TokenId bos_hint);
  /// The string HF's decoder chain starts from for `id` (vocab string or added-token content).
  std::string token_string(TokenId id) const;
};

}  // namespace adapt::tokenizer
