// Two-stage class lookup built once from the generated ranges (blocks of 128 code points, identical
// blocks shared: ~70 KB), plus the UTF-8 reader and lossy decoder.
#include "tokenizer/unicode_class.h"

#include <array>
#include <map>
#include <string>
#include <vector>

namespace adapt::tokenizer {

namespace {

constexpr int kBlockBits = 7;
constexpr std::size_t kBlockSize = std::size_t{1} << kBlockBits;
constexpr std::size_t kNumBlocks = 0x110000 >> kBlockBits;

struct ClassTable {
  std::array<std::uint16_t, kNumBlocks> stage1{};  // block index per 128 code points
  std::vector<std::uint8_t> stage2;                // kBlockSize classes per distinct block
};

ClassTable build_class_table() {
  std::vector<std::uint8_t> flat(0x110000, static_cast<std::uint8_t>(CodePointClass::Other));
  auto paint = [&](const detail::CodePointRange* ranges, std::size_t n, CodePointClass cls) {
    for (std::size_t i = 0; i < n; ++i)
      for (char32_t cp = ranges[i].first; cp <= ranges[i].last; ++cp) flat[cp] = static_cast<std::uint8_t>(cls);
  };
  paint(detail::kLetterRanges, detail::kLetterRangesCount, CodePointClass::Letter);
  paint(detail::kNumberRanges, detail::kNumberRangesCount, CodePointClass::Number);
  paint(detail::kWhiteSpaceRanges, detail::kWhiteSpaceRangesCount, CodePointClass::Space);

  ClassTable t;
  std::map<std::string, std::uint16_t> seen;
  for (std::size_t b = 0; b < kNumBlocks; ++b) {
    std::string block(flat.begin() + b * kBlockSize, flat.begin() + (b + 1) * kBlockSize);
    auto [it, inserted] = seen.emplace(block, static_cast<std::uint16_t>(seen.size()));
    if (inserted) t.stage2.insert(t.stage2.end(), block.begin(), block.end());
    t.stage1[b] = it->second;
  }
  return t;
}

const ClassTable& class_table() {
  static const ClassTable table = build_class_table();
  return table;
}

// Forces the table to be built during static initialisation, so the first encode does not pay for it
// and the hot path's function-local static is already initialised.
[[maybe_unused]] const ClassTable& kWarmTable = class_table();

}  // namespace

CodePointClass code_point_class(char32_t cp) {
  if (cp >= 0x110000) return CodePointClass::Other;
  const ClassTable& t = class_table();
  return static_cast<CodePointClass>(
      t.stage2[(std::size_t{t.stage1[cp >> kBlockBits]} << kBlockBits) | (cp & (kBlockSize - 1))]);
}

const char* unicode_tables_version() { return detail::kUnicodeVersion; }

Utf8Char utf8_char_at(std::string_view text, std::size_t pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const std::size_t n = text.size();
  const unsigned lead = s[pos];
  if (lead < 0x80) return {lead, 1};
  // Expected continuation count and the allowed range of the first continuation byte (Table 3-7).
  unsigned n_cont = 0, lo = 0x80, hi = 0xBF;
  char32_t cp = 0;
  if (lead >= 0xC2 && lead <= 0xDF) {
    n_cont = 1, cp = lead & 0x1F;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    n_cont = 2, cp = lead & 0x0F;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    n_cont = 3, cp = lead & 0x07;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {kInvalidCodePoint, 1};  // stray continuation byte, C0, C1, F5..FF
  }
  for (unsigned k = 1; k <= n_cont; ++k) {
    if (pos + k >= n) return {kInvalidCodePoint, k};
    const unsigned c = s[pos + k];
    if (c < lo || c > hi) return {kInvalidCodePoint, k};
    lo = 0x80, hi = 0xBF;
    cp = (cp << 6) | (c & 0x3F);
  }
  return {cp, n_cont + 1};
}

void utf8_append(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    // ASCII runs are copied without decoding.
    std::size_t run = pos;
    while (run < bytes.size() && static_cast<unsigned char>(bytes[run]) < 0x80) ++run;
    out.append(bytes.data() + pos, run - pos);
    pos = run;
    if (pos == bytes.size()) break;
    const Utf8Char c = utf8_char_at(bytes, pos);
    if (c.cp == kInvalidCodePoint) {
      out += "\xEF\xBF\xBD";
    } else {
      out.append(bytes.data() + pos, c.n_bytes);
    }
    pos += c.n_bytes;
  }
  return out;
}

}  // namespace adapt::tokenizer
