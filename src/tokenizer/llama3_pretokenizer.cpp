// Hand-written matcher for the Llama 3 split regex. Each alternative is resolved with at most one
// character of lookahead past the run it scans, which is all the regex's backtracking can need.
#include "tokenizer/llama3_pretokenizer.h"

#include <array>

#include "tokenizer/unicode_class.h"

namespace adapt::tokenizer {

namespace {

struct Ch {
  char32_t cp;
  std::uint32_t n_bytes;
  CodePointClass cls;
};

constexpr std::array<CodePointClass, 128> make_ascii_classes() {
  std::array<CodePointClass, 128> t{};
  for (int b = 0; b < 128; ++b) {
    if ((b >= 'A' && b <= 'Z') || (b >= 'a' && b <= 'z')) {
      t[b] = CodePointClass::Letter;
    } else if (b >= '0' && b <= '9') {
      t[b] = CodePointClass::Number;
    } else if ((b >= 0x09 && b <= 0x0D) || b == ' ') {
      t[b] = CodePointClass::Space;
    } else {
      t[b] = CodePointClass::Other;
    }
  }
  return t;
}
constexpr std::array<CodePointClass, 128> kAsciiClasses = make_ascii_classes();

inline Ch char_at(std::string_view text, std::size_t pos) {
  const auto b = static_cast<unsigned char>(text[pos]);
  if (b < 0x80) return {b, 1, kAsciiClasses[b]};
  const Utf8Char u = utf8_char_at(text, pos);
  return {u.cp, u.n_bytes, code_point_class(u.cp)};
}

inline bool is_newline(char32_t cp) { return cp == '\r' || cp == '\n'; }

// End of the run of characters of class `cls` starting at `pos`.
inline std::size_t run_end(std::string_view text, std::size_t pos, CodePointClass cls) {
  while (pos < text.size()) {
    const auto b = static_cast<unsigned char>(text[pos]);
    if (b < 0x80) {
      if (kAsciiClasses[b] != cls) break;
      ++pos;
      continue;
    }
    const Ch c = char_at(text, pos);
    if (c.cls != cls) break;
    pos += c.n_bytes;
  }
  return pos;
}

// Length in bytes of the contraction suffix ("s", "re", ...) at text[pos] after an apostrophe, or 0.
// Case-insensitive with Unicode simple case folding: the only non-ASCII character that folds to one of
// s, t, r, e, v, m, l, d is U+017F LATIN SMALL LETTER LONG S (UTF-8 C5 BF), which folds to s.
std::size_t contraction_len(std::string_view text, std::size_t pos) {
  auto lower = [&](std::size_t k) -> char {
    if (pos + k >= text.size()) return 0;
    const char c = text[pos + k];
    return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
  };
  const char a = lower(0);
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 1;
  const char b = lower(1);
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 2;
  if (text.substr(pos, 2) == "\xC5\xBF") return 2;
  return 0;
}

}  // namespace

std::size_t llama3_piece_end(std::string_view text, std::size_t pos) {
  const std::size_t n = text.size();
  const Ch c = char_at(text, pos);
  const std::size_t next = pos + c.n_bytes;

  // 1. (?i:'s|'t|'re|'ve|'m|'ll|'d)
  if (c.cp == '\'' && next < n) {
    if (std::size_t len = contraction_len(text, next)) return next + len;
  }
  // 2. [^\r\n\p{L}\p{N}]?\p{L}+ : a letter starts a letter run; so does any other non-number,
  // non-newline character directly followed by a letter.
  if (c.cls == CodePointClass::Letter) return run_end(text, next, CodePointClass::Letter);
  if (c.cls != CodePointClass::Number && !is_newline(c.cp) && next < n) {
    const Ch d = char_at(text, next);
    if (d.cls == CodePointClass::Letter) return run_end(text, next + d.n_bytes, CodePointClass::Letter);
  }
  // 3. \p{N}{1,3}
  if (c.cls == CodePointClass::Number) {
    std::size_t end = next;
    for (int k = 1; k < 3 && end < n; ++k) {
      const Ch d = char_at(text, end);
      if (d.cls != CodePointClass::Number) break;
      end += d.n_bytes;
    }
    return end;
  }
  // 4. " ?[^\s\p{L}\p{N}]+[\r\n]*"
  std::size_t start = pos;
  if (c.cp == ' ' && next < n && char_at(text, next).cls == CodePointClass::Other) start = next;
  if (start != pos || c.cls == CodePointClass::Other) {
    std::size_t end = run_end(text, start, CodePointClass::Other);
    while (end < n && (text[end] == '\r' || text[end] == '\n')) ++end;
    return end;
  }
  // Only white space is left. Scan its run once for alternatives 5-7.
  std::size_t end = pos, last_newline_end = 0, last_start = pos;
  int n_chars = 0;
  while (end < n) {
    const Ch d = char_at(text, end);
    if (d.cls != CodePointClass::Space) break;
    if (is_newline(d.cp)) last_newline_end = end + 1;
    last_start = end;
    end += d.n_bytes;
    ++n_chars;
  }
  if (last_newline_end != 0) return last_newline_end;  // 5. \s*[\r\n]+
  if (end == n) return end;                            // 6. \s+(?!\S) at the end of the text
  if (n_chars >= 2) return last_start;                 // 6. leave the last space to the next piece
  return end;                                          // 7. \s+
}

std::vector<std::string_view> llama3_pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = llama3_piece_end(text, pos);
    pieces.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return pieces;
}

}  // namespace adapt::tokenizer
