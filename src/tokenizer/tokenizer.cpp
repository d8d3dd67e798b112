// Tokenizer encode/decode and file dispatch. Encoding: split on added tokens (leftmost-longest), then
// per segment either the Llama 3 scanner (byte level) or SentencePiece normalization, then BPE per
// piece. Decoding: byte concatenation + lossy UTF-8, or HF's decoder chain step by step.
#include "tokenizer/tokenizer.h"

#include <algorithm>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/llama3_pretokenizer.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/unicode_class.h"

namespace adapt::tokenizer {

namespace {

constexpr std::string_view kMetaspace = "\xE2\x96\x81";  // ▁ U+2581

void encode_segment(const Tokenizer::Impl& im, std::string_view seg, bool at_text_start, std::vector<TokenId>& out) {
  if (seg.empty()) return;
  if (im.kind == TokenizerKind::ByteLevel) {
    for (std::size_t pos = 0; pos < seg.size();) {
      const std::size_t end = llama3_piece_end(seg, pos);
      im.bpe.encode_piece(seg.substr(pos, end - pos), out, im.description);
      pos = end;
    }
    return;
  }
  // SentencePiece style: ' ' → ▁, maybe a leading ▁, maybe split before every ▁.
  const SentencePieceInput& in = im.sp_input;
  std::string norm;
  norm.reserve(seg.size() + 8);
  for (char c : seg) {
    if (c == ' ' && in.replace_spaces) {
      norm += kMetaspace;
    } else {
      norm.push_back(c);
    }
  }
  const bool starts_with_meta = norm.starts_with(kMetaspace);
  using Prepend = SentencePieceInput::Prepend;
  if (in.prepend == Prepend::Always || (in.prepend == Prepend::IfMissing && !starts_with_meta) ||
      (in.prepend == Prepend::FirstIfMissing && at_text_start && !starts_with_meta))
    norm.insert(0, kMetaspace);
  const std::string_view text = norm;
  if (!in.split) {
    im.bpe.encode_piece(text, out, im.description);
    return;
  }
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t next =
        text.find(kMetaspace, start + (text.substr(start).starts_with(kMetaspace) ? kMetaspace.size() : 0));
    if (next == std::string_view::npos) next = text.size();
    im.bpe.encode_piece(text.substr(start, next - start), out, im.description);
    start = next;
  }
}

void replace_all(std::string& s, std::string_view pattern, std::string_view with) {
  if (pattern.empty()) return;
  std::string out;
  std::size_t pos = 0;
  for (std::size_t hit; (hit = s.find(pattern, pos)) != std::string::npos; pos = hit + pattern.size())
    out.append(s, pos, hit - pos).append(with);
  out.append(s, pos);
  s = std::move(out);
}

// "<0xXX>" → XX, else -1 (ByteFallback's test: 6 characters, hex digits in either case).
int fallback_byte(std::string_view token) {
  if (token.size() != 6 || !token.starts_with("<0x") || token.back() != '>') return -1;
  auto hex = [](char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
  };
  const int hi = hex(token[3]), lo = hex(token[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

bool is_utf8(std::string_view bytes) {
  for (std::size_t pos = 0; pos < bytes.size();) {
    const Utf8Char c = utf8_char_at(bytes, pos);
    if (c.cp == kInvalidCodePoint) return false;
    pos += c.n_bytes;
  }
  return true;
}

// One HF decoder step over the token strings (tokenizers' decoders/*.rs decode_chain).
void apply_step(const DecoderStep& step, std::vector<std::string>& tokens) {
  using T = DecoderStep::Type;
  switch (step.type) {
    case T::ByteLevel: {
      std::string bytes;
      for (const auto& t : tokens) {
        auto raw = byte_level_decode(t);
        bytes += raw ? *raw : t;
      }
      tokens.assign(1, utf8_lossy(bytes));
      return;
    }
    case T::Replace:
      for (auto& t : tokens) replace_all(t, step.pattern, step.content);
      return;
    case T::ByteFallback: {
      std::vector<std::string> out;
      std::string run;
      auto flush = [&] {
        if (run.empty()) return;
        if (is_utf8(run)) {
          out.push_back(run);
        } else {
          for (std::size_t i = 0; i < run.size(); ++i) out.emplace_back("\xEF\xBF\xBD");
        }
        run.clear();
      };
      for (auto& t : tokens) {
        if (int b = fallback_byte(t); b >= 0) {
          run.push_back(static_cast<char>(b));
        } else {
          flush();
          out.push_back(std::move(t));
        }
      }
      flush();
      tokens = std::move(out);
      return;
    }
    case T::Fuse: {
      std::string all;
      for (const auto& t : tokens) all += t;
      tokens.assign(1, all);
      return;
    }
    case T::Strip:
      for (auto& t : tokens) {
        for (int i = 0; i < step.start && t.starts_with(step.content); ++i) t.erase(0, step.content.size());
        for (int i = 0; i < step.stop && t.ends_with(step.content); ++i) t.erase(t.size() - step.content.size());
      }
      return;
    case T::Metaspace:
      for (std::size_t i = 0; i < tokens.size(); ++i)
        replace_all(tokens[i], step.content, i == 0 && step.prepend ? "" : " ");
      return;
  }
}

}  // namespace

// ---- Impl ----

void Tokenizer::Impl::add_token(TokenId id, const std::string& content, bool is_special) {
  if (static_cast<std::size_t>(id) >= added_content.size()) {
    added_content.resize(static_cast<std::size_t>(id) + 1);
    special.resize(static_cast<std::size_t>(id) + 1, false);
  }
  added_content[id] = content;
  special[id] = is_special;
  added.add(content, id, is_special);
}

void Tokenizer::Impl::finish(TokenId bos_hint) {
  n_vocab = std::max<std::int64_t>(bpe.vocab.end_id(), static_cast<std::int64_t>(added_content.size()));
  special.resize(static_cast<std::size_t>(n_vocab), false);
  auto find = [&](std::string_view text) -> TokenId {
    for (std::size_t id = 0; id < added_content.size(); ++id)
      if (added_content[id] == text) return static_cast<TokenId>(id);
    return bpe.vocab.find(text);
  };
  bos = bos_hint != kNoToken ? bos_hint : find("<|begin_of_text|>");
  if (bos == kNoToken) bos = find("<s>");
  for (const char* name : {"<|end_of_text|>", "<|eom_id|>", "<|eot_id|>", "</s>"})
    if (TokenId id = find(name); id != kNoToken) eos.push_back(id);
  std::sort(eos.begin(), eos.end());
}

std::string Tokenizer::Impl::token_string(TokenId id) const {
  if (static_cast<std::size_t>(id) < added_content.size() && !added_content[id].empty()) return added_content[id];
  const std::string_view bytes = bpe.vocab.bytes(id);
  return kind == TokenizerKind::ByteLevel ? byte_level_encode(bytes) : std::string(bytes);
}

// ---- Tokenizer ----

Tokenizer Tokenizer::from_file(const fs::path& path) {
  fs::path file = path;
  if (fs::is_directory(path)) {
    if (fs::exists(path / "tokenizer.json")) {
      file = path / "tokenizer.json";
    } else if (fs::exists(path / "tokenizer.model")) {
      file = path / "tokenizer.model";
    } else {
      ADAPT_THROW(IoError,
                  "model folder '{}' has neither tokenizer.json nor tokenizer.model; give the tokenizer "
                  "file itself (model.tokenizer in a job file, --tokenizer on the command line) or copy it into "
                  "the folder",
                  path.string());
    }
  }
  ADAPT_REQUIRE(fs::exists(file), IoError,
                "tokenizer '{}' does not exist (expected a model folder, a tokenizer.json "
                "or a tokenizer.model)",
                file.string());
  const std::string text = file_read_text(file);
  const std::size_t first = text.find_first_not_of(" \t\r\n");
  if (file.extension() == ".json" || (first != std::string::npos && text[first] == '{'))
    return from_hf_json(text, file.string());
  return from_tiktoken_file(file);
}

void Tokenizer::encode_append(std::string_view text, const EncodeOptions& options, std::vector<TokenId>& out) const {
  const Impl& im = *impl_;
  if (options.bos) {
    ADAPT_REQUIRE(im.bos != kNoToken, UnsupportedError, "tokenizer {} has no BOS token (<|begin_of_text|> or <s>)",
                  im.description);
    out.push_back(im.bos);
  }
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const auto match = im.added.find(text, pos, options.allow_special);
    const std::size_t end = match ? match->pos : text.size();
    encode_segment(im, text.substr(pos, end - pos), pos == 0, out);
    if (!match) break;
    out.push_back(match->id);
    pos = match->pos + match->n_bytes;
  }
  if (options.eos) {
    ADAPT_REQUIRE(!im.eos.empty(), UnsupportedError, "tokenizer {} has no EOS token", im.description);
    out.push_back(im.eos.front());
  }
}

std::vector<TokenId> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
  std::vector<TokenId> ids;
  ids.reserve(text.size() / 3 + 4);
  encode_append(text, options, ids);
  return ids;
}

std::string Tokenizer::token_bytes(TokenId id) const { return token_bytes_at(id, /*first=*/false); }
std::string Tokenizer::first_token_bytes(TokenId id) const { return token_bytes_at(id, /*first=*/true); }

std::string Tokenizer::token_bytes_at(TokenId id, bool first) const {
  const Impl& im = *impl_;
  ADAPT_REQUIRE(id >= 0 && id < im.n_vocab, IoError, "token id {} is outside the vocabulary of {} [0, {})", id,
                im.description, im.n_vocab);
  const bool added = static_cast<std::size_t>(id) < im.added_content.size() && !im.added_content[id].empty();
  if (!added && im.bpe.vocab.bytes(id).empty())
    ADAPT_THROW(IoError, "token id {} has no token in {} (a gap in the vocabulary)", id, im.description);
  if (im.kind == TokenizerKind::ByteLevel) {
    if (!added) return std::string(im.bpe.vocab.bytes(id));
    auto raw = byte_level_decode(im.added_content[id]);
    return raw ? *raw : im.added_content[id];
  }
  // The decoder chain applied to one token: per-token steps as HF runs them; Strip, which HF applies
  // to the fused text, only at the start of the text.
  std::string s = im.token_string(id);
  for (const DecoderStep& step : im.decoder) {
    using T = DecoderStep::Type;
    if (step.type == T::ByteFallback) {
      if (int b = fallback_byte(s); b >= 0) s.assign(1, static_cast<char>(b));
    } else if (step.type == T::Replace) {
      replace_all(s, step.pattern, step.content);
    } else if (step.type == T::Metaspace) {
      replace_all(s, step.content, first && step.prepend ? "" : " ");
    } else if (step.type == T::Strip && first) {
      for (int i = 0; i < step.start && s.starts_with(step.content); ++i) s.erase(0, step.content.size());
    }
  }
  return s;
}

std::string Tokenizer::decode(std::span<const TokenId> ids, const DecodeOptions& options) const {
  const Impl& im = *impl_;
  const bool plain =
      im.decoder.empty() || (im.decoder.size() == 1 && im.decoder[0].type == DecoderStep::Type::ByteLevel);
  if (plain && im.kind == TokenizerKind::ByteLevel) {
    std::string bytes;
    bytes.reserve(ids.size() * 4);
    for (TokenId id : ids) {
      if (options.skip_special && is_special(id)) continue;
      const bool added = static_cast<std::size_t>(id) < im.added_content.size() && !im.added_content[id].empty();
      if (!added && id >= 0 && id < im.n_vocab && !im.bpe.vocab.bytes(id).empty()) {
        bytes += im.bpe.vocab.bytes(id);  // the fast path: no copy through token_bytes
      } else {
        bytes += token_bytes(id);
      }
    }
    return utf8_lossy(bytes);
  }
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (TokenId id : ids) {
    token_bytes(id);  // validates the id
    if (options.skip_special && is_special(id)) continue;
    tokens.push_back(im.token_string(id));
  }
  for (const DecoderStep& step : im.decoder) apply_step(step, tokens);
  std::string text;
  for (const auto& t : tokens) text += t;
  return utf8_lossy(text);
}

TokenizerKind Tokenizer::kind() const { return impl_->kind; }
std::int64_t Tokenizer::n_vocab() const { return impl_->n_vocab; }
TokenId Tokenizer::bos_id() const { return impl_->bos; }
const std::vector<TokenId>& Tokenizer::eos_ids() const { return impl_->eos; }
const std::string& Tokenizer::description() const { return impl_->description; }

bool Tokenizer::is_special(TokenId id) const {
  return id >= 0 && static_cast<std::size_t>(id) < impl_->special.size() && impl_->special[id];
}

TokenId Tokenizer::token_id(std::string_view text) const {
  const Impl& im = *impl_;
  for (std::size_t id = 0; id < im.added_content.size(); ++id)
    if (!im.added_content[id].empty() && im.added_content[id] == text) return static_cast<TokenId>(id);
  return im.bpe.vocab.find(text);
}

}  // namespace adapt::tokenizer
