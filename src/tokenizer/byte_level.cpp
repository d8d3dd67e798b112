// GPT-2 byte-level alphabet and its inverse, with a minimal strict UTF-8 codec (no overlongs, no
// surrogates) so that decoding rejects anything HF `tokenizers` would not have written.
#include "tokenizer/byte_level.h"

#include "tokenizer/unicode_class.h"

namespace adapt::tokenizer {

namespace {

// The alphabet's code points are all below U+0100 + 68 = U+0144.
constexpr char32_t kAlphabetEnd = 0x144;

bool byte_is_printable(int b) { return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE); }

std::array<char32_t, 256> make_alphabet() {
  std::array<char32_t, 256> table{};
  char32_t next = 0x100;
  for (int b = 0; b < 256; ++b) table[b] = byte_is_printable(b) ? static_cast<char32_t>(b) : next++;
  return table;
}

// inverse[cp] = byte for cp < kAlphabetEnd, or -1.
std::array<int, kAlphabetEnd> make_inverse() {
  std::array<int, kAlphabetEnd> inverse{};
  inverse.fill(-1);
  const auto& table = bytes_to_unicode();
  for (int b = 0; b < 256; ++b) inverse[table[b]] = b;
  return inverse;
}

// Decodes the code point starting at text[i] and advances i; false on malformed UTF-8.
bool utf8_next(std::string_view text, std::size_t& i, char32_t& cp) {
  auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  unsigned char lead = byte(i);
  int n_cont = 0;
  char32_t min_cp = 0;
  if (lead < 0x80) {
    cp = lead;
    ++i;
    return true;
  } else if ((lead & 0xE0) == 0xC0) {
    cp = lead & 0x1F, n_cont = 1, min_cp = 0x80;
  } else if ((lead & 0xF0) == 0xE0) {
    cp = lead & 0x0F, n_cont = 2, min_cp = 0x800;
  } else if ((lead & 0xF8) == 0xF0) {
    cp = lead & 0x07, n_cont = 3, min_cp = 0x10000;
  } else {
    return false;
  }
  if (i + n_cont >= text.size()) return false;  // truncated sequence
  for (int k = 1; k <= n_cont; ++k) {
    unsigned char c = byte(i + k);
    if ((c & 0xC0) != 0x80) return false;
    cp = (cp << 6) | (c & 0x3F);
  }
  if (cp < min_cp || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
  i += n_cont + 1;
  return true;
}

}  // namespace

const std::array<char32_t, 256>& bytes_to_unicode() {
  static const std::array<char32_t, 256> table = make_alphabet();
  return table;
}

std::optional<std::uint8_t> unicode_to_byte(char32_t code_point) {
  static const std::array<int, kAlphabetEnd> inverse = make_inverse();
  if (code_point >= kAlphabetEnd || inverse[code_point] < 0) return std::nullopt;
  return static_cast<std::uint8_t>(inverse[code_point]);
}

std::string byte_level_encode(std::string_view bytes) {
  const auto& table = bytes_to_unicode();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) utf8_append(out, table[static_cast<unsigned char>(c)]);
  return out;
}

std::optional<std::string> byte_level_decode(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    char32_t cp = 0;
    if (!utf8_next(text, i, cp)) return std::nullopt;
    auto b = unicode_to_byte(cp);
    if (!b) return std::nullopt;
    out.push_back(static_cast<char>(*b));
  }
  return out;
}

}  // namespace adapt::tokenizer
