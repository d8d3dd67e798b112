// Hand-written matcher for the Llama 3 split regex on bytes. Each alternative of
//   (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
//   \s*[\r\n]+|\s+(?!\S)|\s+
// is one block of piece_length(), in the regex's order (first matching alternative wins).
#include "tokenizer/bpe_pretokenize.h"

#include <cstddef>

namespace adapt::tokenizer {

namespace {

bool is_letter(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c >= 0x80; }
bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
bool is_newline(unsigned char c) { return c == '\r' || c == '\n'; }
bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'; }
// [^\s\p{L}\p{N}]: punctuation, symbols and control bytes.
bool is_other(unsigned char c) { return !is_letter(c) && !is_digit(c) && !is_space(c); }

unsigned char lower(unsigned char c) { return (c >= 'A' && c <= 'Z') ? static_cast<unsigned char>(c + 32) : c; }

// Length of the contraction starting at s[i] ('s, 't, 're, 've, 'm, 'll, 'd; case-insensitive), or 0.
std::size_t contraction_length(std::string_view s, std::size_t i) {
  if (s[i] != '\'' || i + 1 >= s.size()) return 0;
  unsigned char a = lower(static_cast<unsigned char>(s[i + 1]));
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 >= s.size()) return 0;
  unsigned char b = lower(static_cast<unsigned char>(s[i + 2]));
  if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return 3;
  return 0;
}

// Length (>= 1) of the piece that starts at s[i].
std::size_t piece_length(std::string_view s, std::size_t i) {
  const std::size_t n = s.size();
  auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };

  if (std::size_t len = contraction_length(s, i)) return len;

  // [^\r\n\p{L}\p{N}]?\p{L}+
  std::size_t j = i;
  if (!is_letter(at(j)) && !is_newline(at(j)) && !is_digit(at(j)) && j + 1 < n && is_letter(at(j + 1))) ++j;
  if (is_letter(at(j))) {
    while (j < n && is_letter(at(j))) ++j;
    return j - i;
  }

  // \p{N}{1,3}
  if (is_digit(at(i))) {
    j = i;
    while (j < n && j - i < 3 && is_digit(at(j))) ++j;
    return j - i;
  }

  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  j = i;
  if (at(j) == ' ' && j + 1 < n && is_other(at(j + 1))) ++j;
  if (is_other(at(j))) {
    while (j < n && is_other(at(j))) ++j;
    while (j < n && is_newline(at(j))) ++j;
    return j - i;
  }

  // Only whitespace can start here. Take the maximal run [i, end).
  std::size_t end = i;
  while (end < n && is_space(at(end))) ++end;
  // \s*[\r\n]+ : backtracking ends the match just after the run's last newline.
  std::size_t last_newline_end = end;
  while (last_newline_end > i && !is_newline(at(last_newline_end - 1))) --last_newline_end;
  if (last_newline_end > i) return last_newline_end - i;
  // \s+(?!\S) : the whole run at the end of text, else all but its last byte, which then prefixes
  // the following word or punctuation.
  if (end == n || end - i >= 2) return end == n ? end - i : end - i - 1;
  // \s+
  return end - i;
}

}  // namespace

std::vector<std::string_view> bpe_pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t len = piece_length(text, i);
    pieces.push_back(text.substr(i, len));
    i += len;
  }
  return pieces;
}

}  // namespace adapt::tokenizer
