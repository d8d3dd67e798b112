// Tokenizer file inspection: a validating scan of tiktoken rank files and a structural read of HF
// tokenizer.json. Neither builds an encoder; errors name the file and say what a valid file holds.
#include "tokenizer/tokenizer_file_info.h"

#include <algorithm>
#include <charconv>
#include <nlohmann/json.hpp>
#include <string_view>

#include "core/error.h"
#include "core/file.h"
#include "tokenizer/llama3_special_tokens.h"

namespace adapt::tokenizer {

namespace {

// Ranks far above any real vocabulary are rejected before they size the duplicate check.
constexpr std::int64_t kMaxRank = std::int64_t{1} << 24;

bool is_base64(std::string_view s) {
  if (s.empty() || s.size() % 4 != 0) return false;
  std::size_t n_pad = 0;
  while (n_pad < 2 && n_pad < s.size() && s[s.size() - 1 - n_pad] == '=') ++n_pad;
  for (std::size_t i = 0; i < s.size() - n_pad; ++i) {
    char c = s[i];
    bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
    if (!ok) return false;
  }
  return true;
}

// At most 40 bytes of `s` for a message, with non-printable bytes shown as '?'.
std::string clip(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size() && i < 40; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    out.push_back(c >= 0x20 && c < 0x7F ? static_cast<char>(c) : '?');
  }
  if (s.size() > 40) out += "...";
  return out;
}

TokenizerFileInfo tiktoken_info(const fs::path& path, std::string_view text) {
  std::vector<bool> seen;
  std::int64_t max_rank = -1;
  std::size_t line_no = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    std::size_t space = line.find(' ');
    ADAPT_REQUIRE(space != std::string_view::npos, IoError,
                  "tokenizer file '{}', line {}: '{}' is not of the form 'base64 rank' (a tiktoken rank file such "
                  "as Meta's Llama 3 tokenizer.model, or an HF tokenizer.json, is expected; for Llama 2 "
                  "SentencePiece models use their tokenizer.json)",
                  path.string(), line_no, clip(line));
    std::string_view token = line.substr(0, space);
    std::string_view rank_text = line.substr(space + 1);
    ADAPT_REQUIRE(is_base64(token), IoError,
                  "tokenizer file '{}', line {}: token '{}' is not base64 (expected lines 'base64 rank')",
                  path.string(), line_no, clip(token));
    std::int64_t rank = -1;
    auto [ptr, ec] = std::from_chars(rank_text.data(), rank_text.data() + rank_text.size(), rank);
    ADAPT_REQUIRE(ec == std::errc() && ptr == rank_text.data() + rank_text.size() && rank >= 0 && rank < kMaxRank,
                  IoError,
                  "tokenizer file '{}', line {}: rank '{}' is not an integer in [0, {}) (expected lines 'base64 "
                  "rank')",
                  path.string(), line_no, clip(rank_text), kMaxRank);
    if (static_cast<std::size_t>(rank) >= seen.size()) seen.resize(static_cast<std::size_t>(rank) + 1, false);
    ADAPT_REQUIRE(!seen[static_cast<std::size_t>(rank)], IoError, "tokenizer file '{}', line {}: rank {} appears twice",
                  path.string(), line_no, rank);
    seen[static_cast<std::size_t>(rank)] = true;
    max_rank = std::max(max_rank, rank);
  }
  ADAPT_REQUIRE(max_rank >= 0, IoError, "tokenizer file '{}' holds no 'base64 rank' lines", path.string());

  TokenizerFileInfo info;
  info.kind = "tiktoken";
  const std::int64_t base = max_rank + 1;
  info.vocab_size = base + kLlama3NumSpecialTokens;
  info.bos_id = llama3_special_id(base, Llama3Special::BeginOfText);
  info.eos_ids = {llama3_special_id(base, Llama3Special::EndOfText), llama3_special_id(base, Llama3Special::EomId),
                  llama3_special_id(base, Llama3Special::EotId)};
  return info;
}

std::int64_t json_id(const fs::path& path, const nlohmann::json& value, std::string_view where) {
  ADAPT_REQUIRE(value.is_number_integer() && value.get<std::int64_t>() >= 0, IoError,
                "tokenizer file '{}': {} is {}, expected a non-negative integer id", path.string(), where,
                value.dump());
  return value.get<std::int64_t>();
}

TokenizerFileInfo hf_json_info(const fs::path& path, std::string_view text) {
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    ADAPT_THROW(IoError, "tokenizer file '{}' is not valid JSON: {}", path.string(), e.what());
  }
  ADAPT_REQUIRE(root.is_object(), IoError, "tokenizer file '{}': the JSON top level is a {}, expected an object",
                path.string(), root.type_name());
  auto model = root.find("model");
  ADAPT_REQUIRE(model != root.end() && model->is_object(), IoError,
                "tokenizer file '{}' has no \"model\" object (is it an HF tokenizer.json?)", path.string());
  auto vocab = model->find("vocab");
  ADAPT_REQUIRE(vocab != model->end() && vocab->is_object(), IoError,
                "tokenizer file '{}' has no \"model.vocab\" object (only BPE tokenizer.json files are supported)",
                path.string());

  std::int64_t max_id = -1;
  for (const auto& [content, id] : vocab->items())
    max_id = std::max(max_id, json_id(path, id, "model.vocab[\"" + clip(content) + "\"]"));

  // content → id, added tokens taking precedence over model.vocab for the BOS/EOS lookup.
  std::vector<std::pair<std::string, std::int64_t>> added;
  if (auto it = root.find("added_tokens"); it != root.end() && !it->is_null()) {
    ADAPT_REQUIRE(it->is_array(), IoError, "tokenizer file '{}': \"added_tokens\" is a {}, expected an array",
                  path.string(), it->type_name());
    for (std::size_t i = 0; i < it->size(); ++i) {
      const auto& entry = (*it)[i];
      std::string where = "added_tokens[" + std::to_string(i) + "]";
      ADAPT_REQUIRE(
          entry.is_object() && entry.contains("id") && entry.contains("content") && entry["content"].is_string(),
          IoError, "tokenizer file '{}': {} needs an integer \"id\" and a string \"content\"", path.string(), where);
      std::int64_t id = json_id(path, entry["id"], where + ".id");
      added.emplace_back(entry["content"].get<std::string>(), id);
      max_id = std::max(max_id, id);
    }
  }
  auto find_id = [&](const std::string& content) -> std::int64_t {
    for (const auto& [c, id] : added)
      if (c == content) return id;
    if (auto v = vocab->find(content); v != vocab->end()) return v->get<std::int64_t>();
    return -1;
  };

  TokenizerFileInfo info;
  info.kind = "hf-json";
  info.vocab_size = max_id + 1;
  for (const char* name : {"<|begin_of_text|>", "<s>"}) {
    if (std::int64_t id = find_id(name); id >= 0) {
      info.bos_id = id;
      break;
    }
  }
  for (const char* name : {"<|end_of_text|>", "<|eot_id|>", "<|eom_id|>", "</s>"})
    if (std::int64_t id = find_id(name); id >= 0) info.eos_ids.push_back(id);
  std::sort(info.eos_ids.begin(), info.eos_ids.end());
  info.eos_ids.erase(std::unique(info.eos_ids.begin(), info.eos_ids.end()), info.eos_ids.end());
  return info;
}

}  // namespace

TokenizerFileInfo tokenizer_file_info(const fs::path& path) {
  const std::string text = file_read_text(path);
  const std::size_t first = text.find_first_not_of(" \t\r\n");
  const bool looks_json = first != std::string::npos && (text[first] == '{' || text[first] == '[');
  if (looks_json || path.extension() == ".json") return hf_json_info(path, text);
  return tiktoken_info(path, text);
}

}  // namespace adapt::tokenizer
