// Loads Meta's tiktoken rank file ("base64 rank" lines) into the BPE tables: id = rank, the merge of
// two tokens has the priority of their concatenation (tiktoken's formulation), specials after the ranks.
#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/tokenizer_impl.h"

namespace adapt::tokenizer {

namespace {

int base64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// Standard base64 with padding; false when `in` is not.
bool base64_decode(std::string_view in, std::string& out) {
  out.clear();
  if (in.empty() || in.size() % 4 != 0) return false;
  std::size_t n_pad = 0;
  while (n_pad < 2 && in[in.size() - 1 - n_pad] == '=') ++n_pad;
  std::uint32_t acc = 0;
  int bits = 0;
  for (std::size_t i = 0; i < in.size() - n_pad; ++i) {
    const int v = base64_value(in[i]);
    if (v < 0) return false;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return !out.empty();
}

std::string clip(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < 40; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    out.push_back(c >= 0x20 && c < 0x7F ? static_cast<char>(c) : '?');
  }
  return s.size() > 40 ? out + "..." : out;
}

}  // namespace

std::vector<std::string> llama3_meta_special_tokens() {
  std::vector<std::string> names = {
      "<|begin_of_text|>",
      "<|end_of_text|>",
      "<|reserved_special_token_0|>",
      "<|reserved_special_token_1|>",
      "<|finetune_right_pad_id|>",
      "<|step_id|>",
      "<|start_header_id|>",
      "<|end_header_id|>",
      "<|eom_id|>",
      "<|eot_id|>",
      "<|python_tag|>",
      "<|image|>",
  };
  for (int i = 2; names.size() < 256; ++i) names.push_back(fmt::format("<|reserved_special_token_{}|>", i));
  return names;
}

Tokenizer Tokenizer::from_tiktoken_file(const fs::path& path) {
  const std::string text = file_read_text(path);
  ADAPT_REQUIRE(text.empty() || (text[0] != '\x0A' && text[0] != '\x08') || text.find('\0') == std::string::npos,
                IoError,
                "tokenizer file '{}' is binary: it looks like a SentencePiece model (Llama 2 / CodeLlama). adapt "
                "reads those tokenizers from their tokenizer.json (HF); convert with transformers' "
                "LlamaTokenizerFast.from_pretrained(...).save_pretrained(dir) and pass that file",
                path.string());
  auto impl = std::make_shared<Impl>();
  impl->kind = TokenizerKind::ByteLevel;
  impl->bpe.options.ignore_merges = true;
  impl->bpe.options.byte_level = true;
  TokenTable& vocab = impl->bpe.vocab;

  std::int64_t max_rank = -1;
  std::size_t line_no = 0;
  std::string bytes;
  // Ranks number the lines' tokens from 0 (the tables are sized by them): at most one per line.
  const std::int64_t rank_end = std::min<std::int64_t>(
      std::int64_t{1} << 24, static_cast<std::int64_t>(std::count(text.begin(), text.end(), '\n')) + 1);
  for (std::size_t pos = 0; pos < text.size();) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line = std::string_view(text).substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const std::size_t space = line.find(' ');
    ADAPT_REQUIRE(space != std::string_view::npos && base64_decode(line.substr(0, space), bytes), IoError,
                  "tokenizer file '{}', line {}: '{}' is not 'base64 rank' (expected a tiktoken rank file such as "
                  "Meta's Llama 3 tokenizer.model, or an HF tokenizer.json)",
                  path.string(), line_no, clip(line));
    const std::string_view rank_text = line.substr(space + 1);
    std::int64_t rank = -1;
    auto [ptr, ec] = std::from_chars(rank_text.data(), rank_text.data() + rank_text.size(), rank);
    ADAPT_REQUIRE(ec == std::errc() && ptr == rank_text.data() + rank_text.size() && rank >= 0 && rank < rank_end,
                  IoError,
                  "tokenizer file '{}', line {}: rank '{}' is not an integer in [0, {}) (ranks number the "
                  "file's lines from 0)",
                  path.string(), line_no, clip(rank_text), rank_end);
    ADAPT_REQUIRE(vocab.insert(static_cast<TokenId>(rank), bytes), IoError,
                  "tokenizer file '{}', line {}: rank {} or its token '{}' appears twice", path.string(), line_no, rank,
                  clip(line.substr(0, space)));
    max_rank = std::max(max_rank, rank);
  }
  ADAPT_REQUIRE(max_rank >= 0, IoError, "tokenizer file '{}' holds no 'base64 rank' lines", path.string());

  for (int b = 0; b < 256; ++b) {
    const char c = static_cast<char>(b);
    impl->bpe.byte_ids[b] = vocab.find(std::string_view(&c, 1));
    ADAPT_REQUIRE(impl->bpe.byte_ids[b] != kNoToken, IoError,
                  "tokenizer file '{}' has no token for the single byte 0x{:02X}; a tiktoken vocabulary needs all 256",
                  path.string(), b);
  }
  // tiktoken merges the adjacent pair whose concatenation has the lowest rank: every split of a token
  // into two tokens is a merge with the token's rank as priority.
  for (TokenId id = 0; id < vocab.end_id(); ++id) {
    const std::string_view t = vocab.bytes(id);
    for (std::size_t k = 1; k < t.size(); ++k) {
      const TokenId left = vocab.find(t.substr(0, k));
      if (left == kNoToken) continue;
      const TokenId right = vocab.find(t.substr(k));
      if (right != kNoToken) impl->bpe.merges.insert(left, right, static_cast<std::uint32_t>(id), id);
    }
  }
  const auto names = llama3_meta_special_tokens();
  for (std::size_t i = 0; i < names.size(); ++i)
    impl->add_token(static_cast<TokenId>(max_rank + 1 + static_cast<std::int64_t>(i)), names[i], /*is_special=*/true);
  impl->finish(kNoToken);
  impl->description = fmt::format("'{}' (tiktoken rank file, {} tokens)", path.string(), impl->n_vocab);
  return Tokenizer(std::move(impl));
}

}  // namespace adapt::tokenizer
