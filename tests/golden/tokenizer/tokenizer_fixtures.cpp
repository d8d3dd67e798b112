// Tokenizer fixture helpers, and the test-only conversion of Meta's rank file to a tokenizer.json (so the
// HF loading path is checked against the same references without committing a derived file).
#include "tests/golden/tokenizer/tokenizer_fixtures.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <unordered_map>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer_json.h"

namespace adapt::test {

fs::path meta_tokenizer_path() { return shared_dir() / "models" / "llama3" / "tokenizer.model"; }

fs::path tokenizer_fixture(const std::string& name) { return data_dir() / "tokenizer" / name; }

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  ADAPT_REQUIRE(f.good(), IoError, "cannot open fixture {} (regenerate with scripts/make_tokenizer_fixtures.py)",
                path.string());
  std::vector<nlohmann::json> rows;
  std::string line;
  for (std::size_t line_no = 1; std::getline(f, line); ++line_no) {
    if (line.empty()) continue;
    try {
      rows.push_back(nlohmann::json::parse(line));
    } catch (const nlohmann::json::parse_error& e) {
      ADAPT_THROW(IoError, "fixture {}, line {}: {}", path.string(), line_no, e.what());
    }
  }
  return rows;
}

std::vector<tokenizer::TokenId> ids_of(const nlohmann::json& array) {
  return array.get<std::vector<tokenizer::TokenId>>();
}

std::string escaped(std::string_view text, std::size_t max_bytes) {
  std::string out;
  for (std::size_t i = 0; i < text.size() && i < max_bytes; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c >= 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else {
      out.push_back(static_cast<char>(c));
    }
  }
  return text.size() > max_bytes ? out + "..." : out;
}

std::string ids_text(const std::vector<tokenizer::TokenId>& ids, std::size_t max_ids) {
  std::string out = "[";
  for (std::size_t i = 0; i < ids.size() && i < max_ids; ++i) out += (i ? ", " : "") + std::to_string(ids[i]);
  return out + (ids.size() > max_ids ? ", ...]" : "]");
}

std::string ids_diff(const std::vector<tokenizer::TokenId>& expected, const std::vector<tokenizer::TokenId>& got) {
  if (expected == got) return "";
  std::size_t i = 0;
  while (i < expected.size() && i < got.size() && expected[i] == got[i]) ++i;
  const std::size_t from = i > 3 ? i - 3 : 0;
  auto window = [&](const std::vector<tokenizer::TokenId>& v) {
    return ids_text(
        std::vector<tokenizer::TokenId>(v.begin() + std::min(from, v.size()), v.begin() + std::min(i + 8, v.size())),
        12);
  };
  return fmt::format("ids differ from index {} (expected {} ids, got {}): expected ...{} got ...{}", i, expected.size(),
                     got.size(), window(expected), window(got));
}

void write_llama3_tokenizer_json(const fs::path& rank_file, const fs::path& out, bool pair_merges) {
  // Read "base64 rank" lines through the tokenizer itself: token_bytes(rank) gives the bytes.
  const tokenizer::Tokenizer tok = tokenizer::Tokenizer::from_tiktoken_file(rank_file);
  const auto n_ranks = static_cast<tokenizer::TokenId>(tok.bos_id());
  std::unordered_map<std::string, tokenizer::TokenId> rank_of;
  std::vector<std::string> bytes(static_cast<std::size_t>(n_ranks));
  for (tokenizer::TokenId r = 0; r < n_ranks; ++r) rank_of[bytes[r] = tok.token_bytes(r)] = r;
  struct Merge {
    tokenizer::TokenId rank, left, right;
  };
  std::vector<Merge> merges;
  for (tokenizer::TokenId r = 0; r < n_ranks; ++r) {
    for (std::size_t k = 1; k < bytes[r].size(); ++k) {
      auto a = rank_of.find(bytes[r].substr(0, k)), b = rank_of.find(bytes[r].substr(k));
      if (a != rank_of.end() && b != rank_of.end()) merges.push_back({r, a->second, b->second});
    }
  }
  std::sort(merges.begin(), merges.end(), [](const Merge& x, const Merge& y) {
    return std::tie(x.rank, x.left, x.right) < std::tie(y.rank, y.left, y.right);
  });
  nlohmann::json vocab = nlohmann::json::object(), merge_list = nlohmann::json::array();
  std::vector<std::string> text(bytes.size());
  for (tokenizer::TokenId r = 0; r < n_ranks; ++r) vocab[text[r] = tokenizer::byte_level_encode(bytes[r])] = r;
  for (const Merge& m : merges) {
    if (pair_merges) {
      merge_list.push_back({text[m.left], text[m.right]});
    } else {
      merge_list.push_back(text[m.left] + " " + text[m.right]);
    }
  }
  nlohmann::json added = nlohmann::json::array();
  const auto names = tokenizer::llama3_meta_special_tokens();
  for (std::size_t i = 0; i < names.size(); ++i)
    added.push_back({{"id", n_ranks + static_cast<int>(i)},
                     {"content", names[i]},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  const nlohmann::json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  nlohmann::json root = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", added},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", std::string(tokenizer::kLlama3SplitPattern)}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          byte_level}}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single",
         {{{"SpecialToken", {{"id", names[0]}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", nlohmann::json::array()},
        {"special_tokens", {{names[0], {{"id", names[0]}, {"ids", {n_ranks}}, {"tokens", {names[0]}}}}}}}},
      {"decoder", byte_level},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", true},
        {"vocab", vocab},
        {"merges", merge_list}}},
  };
  file_write_atomic(out, root.dump());
}

}  // namespace adapt::test
