// StreamDecoder: appends token bytes to the held-back tail, emits the longest prefix that lossy UTF-8
// would not change by seeing more bytes, and keeps the rest (an incomplete but so far valid sequence).
#include "tokenizer/stream_decoder.h"

#include "tokenizer/unicode_class.h"

namespace adapt::tokenizer {

StreamDecoder::StreamDecoder(Tokenizer tokenizer, DecodeOptions options)
    : tokenizer_(std::move(tokenizer)), options_(options) {}

std::string StreamDecoder::push(TokenId id) {
  if (options_.skip_special && tokenizer_.is_special(id)) return {};
  std::string bytes = first_ ? tokenizer_.first_token_bytes(id) : tokenizer_.token_bytes(id);
  first_ = false;  // HF's decoders treat the first token (after skipping) specially, not the first bytes
  std::string buffer = std::move(pending_);
  buffer += bytes;
  pending_.clear();
  // A sequence that ends the buffer early (utf8_char_at reports it invalid only because the bytes
  // run out) may still complete: hold it back. Anything else is final.
  std::size_t pos = 0, emit_end = buffer.size();
  while (pos < buffer.size()) {
    const Utf8Char c = utf8_char_at(buffer, pos);
    if (c.cp == kInvalidCodePoint && pos + c.n_bytes == buffer.size() && c.n_bytes < 4) {
      const auto lead = static_cast<unsigned char>(buffer[pos]);
      const std::size_t need = lead >= 0xF5 ? 1 : lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC2 ? 2 : 1;
      if (need > c.n_bytes) {
        emit_end = pos;
        break;
      }
    }
    pos += c.n_bytes;
  }
  pending_ = buffer.substr(emit_end);
  buffer.resize(emit_end);
  return utf8_lossy(buffer);
}

std::string StreamDecoder::finish() {
  std::string out = utf8_lossy(pending_);
  pending_.clear();
  first_ = true;
  return out;
}

}  // namespace adapt::tokenizer
