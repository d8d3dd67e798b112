// Tokenizer: encode/decode for Llama 3 (byte-level BPE: Meta's tiktoken file or HF tokenizer.json) and
// Llama 2 / CodeLlama (SentencePiece-style tokenizer.json), ids identical to tiktoken and HF `tokenizers`
// (tests/golden/tokenizer). Copies share the immutable tables; const methods are thread-safe.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/bpe_model.h"

namespace adapt::tokenizer {

namespace fs = std::filesystem;

/// The two tokenizer families adapt reads (SPEC-llama §4.1, §4.6).
enum class TokenizerKind {
  ByteLevel,      // Llama 3: Llama 3 split regex + GPT-2 byte alphabet, whole-piece lookup first
  SentencePiece,  // Llama 2 / CodeLlama: "▁" for spaces, <0xXX> byte fallback, no pre-split
};

/// Options of Tokenizer::encode.
struct EncodeOptions {
  bool bos = false;  // prepend the BOS token (HF add_special_tokens = true for Llama files)
  bool eos = false;  // append the first EOS token (<|end_of_text|> / </s>)
  /// true: special-token strings in the text (e.g. "<|eot_id|>") become their ids, as HF tokenizers
  /// do by default. false: they are ordinary text, as tiktoken's encode(text, allowed_special=set(),
  /// disallowed_special=()) and HF's encode_special_tokens = true do; use this for untrusted text.
  /// Non-special added tokens (none in Llama files) are always matched, as in HF.
  bool allow_special = false;
};

/// Options of Tokenizer::decode.
struct DecodeOptions {
  bool skip_special = false;  // drop special tokens (HF skip_special_tokens) instead of writing their text
};

/// A loaded tokenizer. See README.md for the exact reference behaviours it reproduces.
class Tokenizer {
 public:
  /// Loads `path`: a model folder (its tokenizer.json, else its tokenizer.model), a tokenizer.json
  /// (HF; detected by the .json extension or a leading '{') or a tiktoken rank file (Meta's Llama 3
  /// tokenizer.model: "base64 rank" lines; the 256 Llama 3 special tokens follow the ranks, named as
  /// llama3_meta_special_tokens()). IoError naming the file for missing or malformed files;
  /// UnsupportedError for tokenizer.json features adapt does not implement (the message names them).
  static Tokenizer from_file(const fs::path& path);
  /// A tiktoken rank file, as from_file.
  static Tokenizer from_tiktoken_file(const fs::path& path);
  /// An HF tokenizer.json given as text; `source` names it in error messages.
  static Tokenizer from_hf_json(std::string_view json_text, const std::string& source);

  /// Token ids of `text`, which is taken byte for byte: invalid UTF-8 is encoded as its raw bytes
  /// (byte-level; SentencePiece style: <0xXX> byte fallback), each ill-formed sequence splitting the
  /// pieces as a U+FFFD would, so the token bytes concatenate back to `text` for any input. The text is
  /// not chunked: ids equal tiktoken's encode of the whole text (Meta's Tokenizer.encode also cuts
  /// inputs at runs of 25,000 space or non-space characters, which changes ids only inside such runs).
  std::vector<TokenId> encode(std::string_view text, const EncodeOptions& options = {}) const;
  /// As encode, appending to `out`.
  void encode_append(std::string_view text, const EncodeOptions& options, std::vector<TokenId>& out) const;

  /// Text of `ids`: the token bytes concatenated, then lossy UTF-8 (each ill-formed sequence →
  /// U+FFFD), special tokens as their text unless skipped. SentencePiece style follows the file's
  /// decoder (▁ → space, <0xXX> runs → bytes, one U+FFFD per byte of an invalid run, leading space
  /// stripped), exactly as HF decode. IoError for an id outside [0, n_vocab()) or without a token.
  std::string decode(std::span<const TokenId> ids, const DecodeOptions& options = {}) const;

  /// The raw bytes that token `id` contributes to decoded text (no lossy conversion, no stripping;
  /// ▁ → space and <0xXX> → that byte for SentencePiece style; specials → their text). Used by
  /// StreamDecoder. IoError for an unknown id.
  std::string token_bytes(TokenId id) const;
  /// token_bytes for the first token of a text: SentencePiece decoders drop the leading space there
  /// (Strip / Metaspace); byte-level tokenizers return token_bytes(id).
  std::string first_token_bytes(TokenId id) const;

  TokenizerKind kind() const;
  /// Largest id + 1 (the embedding rows the model needs at least).
  std::int64_t n_vocab() const;
  /// BOS id (<|begin_of_text|> / <s>), or kNoToken.
  TokenId bos_id() const;
  /// EOS ids: <|end_of_text|>, <|eom_id|>, <|eot_id|> / </s> — whichever exist, ascending.
  const std::vector<TokenId>& eos_ids() const;
  /// The id of a special or added token given by its text ("<|eot_id|>"), else of the vocabulary
  /// entry with exactly these bytes; kNoToken when neither exists.
  TokenId token_id(std::string_view text) const;
  /// True for special tokens (Meta's 256; tokenizer.json added tokens with "special": true).
  bool is_special(TokenId id) const;
  /// Where the tokenizer came from and what it is, e.g. "tokenizer.model (tiktoken, 128256 tokens)".
  const std::string& description() const;

  struct Impl;  // defined in tokenizer_impl.h

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::string token_bytes_at(TokenId id, bool first) const;
  std::shared_ptr<const Impl> impl_;
};

/// Meta's names of the 256 Llama 3 special tokens in id order (128000 + index for Meta's file), as
/// listed in shared/models/llama3/README.md and Meta's llama-models tokenizer (3.2+ names):
/// <|begin_of_text|>, <|end_of_text|>, <|reserved_special_token_0|>, <|reserved_special_token_1|>,
/// <|finetune_right_pad_id|>, <|step_id|>, <|start_header_id|>, <|end_header_id|>, <|eom_id|>,
/// <|eot_id|>, <|python_tag|>, <|image|>, then <|reserved_special_token_2|> … _245|>. The ids that
/// matter (128000/1/4/6/7/8/9/10) agree with HF's 3.1 names (llama3_special_tokens.h).
std::vector<std::string> llama3_meta_special_tokens();

}  // namespace adapt::tokenizer
