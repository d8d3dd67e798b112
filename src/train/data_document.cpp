#include "train/data_document.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>

#include "core/error.h"
#include "core/file.h"
#include "core/strings.h"
#include "train/data_config_check.h"

namespace adapt::train {

namespace {

using nlohmann::json;

bool ends_with_ci(const std::string& s, std::string_view suffix) {
  if (s.size() < suffix.size()) return false;
  for (std::size_t i = 0; i < suffix.size(); ++i) {
    char c = s[s.size() - suffix.size() + i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != suffix[i]) return false;
  }
  return true;
}

/// Extensions of files that are neither JSON Lines nor text meant to be trained on as they are.
constexpr std::array<std::string_view, 14> kNotTextExtensions = {".json", ".csv", ".tsv", ".parquet",    ".arrow",
                                                                 ".gz",   ".bz2", ".xz",  ".zst",        ".zip",
                                                                 ".tar",  ".npy", ".pt",  ".safetensors"};

std::string json_type(const json& j) {
  switch (j.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned:
    case json::value_t::number_float: return "a number";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "an array";
    case json::value_t::object: return "an object";
    case json::value_t::binary:
    case json::value_t::discarded: return "a value of another kind";
  }
  return "a value of another kind";
}

std::string record_keys(const json& j) {
  std::vector<std::string> keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys.push_back("\"" + it.key() + "\"");
  return keys.empty() ? "none" : join(keys, ", ");
}

std::string string_field(const json& record, const char* key, const std::string& where) {
  const json& v = record.at(key);
  ADAPT_REQUIRE(v.is_string(), IoError, "{}: \"{}\" must be a string, got {}", where, key, json_type(v));
  return v.get<std::string>();
}

RecordFormat detect_format(const json& record, const std::string& where) {
  const bool has_messages = record.contains("messages");
  const bool has_prompt = record.contains("prompt") && record.contains("completion");
  const bool has_text = record.contains("text");
  const int n = int{has_messages} + int{has_prompt} + int{has_text};
  ADAPT_REQUIRE(n > 0, IoError,
                "{}: unknown record format: keys {}. Expected {{\"text\": ...}}, {{\"prompt\": ..., \"completion\": "
                "...}} or {{\"messages\": [{{\"role\": ..., \"content\": ...}}, ...]}}",
                where, record_keys(record));
  ADAPT_REQUIRE(n == 1, IoError,
                "{}: ambiguous record: keys {} fit more than one format (text, prompt_completion, chat); keep the "
                "fields of one format",
                where, record_keys(record));
  return has_messages ? RecordFormat::Chat : has_prompt ? RecordFormat::PromptCompletion : RecordFormat::Text;
}

std::optional<RecordFormat> forced_format(const std::optional<DataFormat>& f) {
  if (!f) return std::nullopt;
  switch (*f) {
    case DataFormat::Text: return RecordFormat::Text;
    case DataFormat::PromptCompletion: return RecordFormat::PromptCompletion;
    case DataFormat::Chat: return RecordFormat::Chat;
    case DataFormat::Raw: return std::nullopt;
  }
  return std::nullopt;
}

/// Fills `doc` from a record of `format`; false when the record holds nothing to train on.
bool record_fill(const json& record, RecordFormat format, const std::string& where, DataDocument& doc) {
  doc.format = format;
  switch (format) {
    case RecordFormat::Text: doc.text = string_field(record, "text", where); return !doc.text.empty();
    case RecordFormat::PromptCompletion:
      doc.prompt = string_field(record, "prompt", where);
      doc.completion = string_field(record, "completion", where);
      return !doc.completion.empty();
    case RecordFormat::Chat: {
      const json& m = record.at("messages");
      ADAPT_REQUIRE(m.is_array(), IoError,
                    "{}: \"messages\" must be an array of {{\"role\", \"content\"}} objects, got {}", where,
                    json_type(m));
      for (std::size_t i = 0; i < m.size(); ++i) {
        const json& msg = m[i];
        ADAPT_REQUIRE(msg.is_object() && msg.contains("role") && msg.contains("content") && msg["role"].is_string() &&
                          msg["content"].is_string(),
                      IoError, "{}: messages[{}] must be an object with string \"role\" and \"content\" fields, got {}",
                      where, i, msg.dump().substr(0, 120));
        const std::string role = msg["role"].get<std::string>();
        // Llama 3.1's roles; another (ShareGPT's "human"/"gpt") would be written as a header of its own,
        // and under loss_on_completions_only leave no assistant turn to learn from.
        ADAPT_REQUIRE(role == "system" || role == "user" || role == "assistant" || role == "tool" || role == "ipython",
                      IoError,
                      "{}: messages[{}] has role \"{}\"; Llama 3.1's chat layout takes system, user, assistant, tool "
                      "or ipython (convert ShareGPT's human/gpt to user/assistant)",
                      where, i, role);
        doc.messages.push_back({role, msg["content"].get<std::string>()});
      }
      return !doc.messages.empty();
    }
    case RecordFormat::Raw: break;
  }
  ADAPT_CHECK(false, "record_fill called for a raw document");
  return false;
}

FileReadStats read_jsonl(const DataFile& file, const std::optional<DataFormat>& format,
                         const std::function<void(DataDocument&&)>& emit) {
  MappedFile mapped(file.path);
  std::string_view all(reinterpret_cast<const char*>(mapped.data()), mapped.size_bytes());
  if (all.starts_with("\xEF\xBB\xBF")) all.remove_prefix(3);  // UTF-8 byte order mark
  FileReadStats stats;
  std::optional<RecordFormat> file_format = forced_format(format);
  std::int64_t first_line = 0;
  std::int64_t line_no = 0;
  std::size_t pos = 0;
  for (std::string_view line; next_line(all, &pos, &line);) {
    ++line_no;
    if (is_blank(line)) continue;
    const std::string where = fmt::format("{}:{}", file.name, line_no);
    json record;
    try {
      record = json::parse(line);
    } catch (const json::exception& e) {
      ADAPT_THROW(IoError, "{}: malformed JSON ({}). Each line must hold one JSON object (JSON Lines).", where,
                  e.what());
    }
    ADAPT_REQUIRE(record.is_object(), IoError, "{}: a record must be a JSON object, got {}", where, json_type(record));
    // forced format (first_line == 0): a mismatch names data.format; auto: the file's first record.
    ++stats.n_records;
    const RecordFormat f = detect_format(record, where);
    if (!file_format) {
      file_format = f;
      first_line = line_no;
    } else if (f != *file_format) {
      if (first_line == 0)
        ADAPT_THROW(IoError,
                    "{}: a {} record, but data.format = \"{}\"; convert the file, or remove data.format to detect "
                    "the format per file",
                    where, record_format_name(f), data_format_name(format));
      ADAPT_THROW(IoError,
                  "{}: a {} record, but line {} of this file is a {} record; each file holds records of one format "
                  "(split the file)",
                  where, record_format_name(f), first_line, record_format_name(*file_format));
    }
    DataDocument doc;
    doc.line = line_no;
    if (record_fill(record, f, where, doc)) {
      emit(std::move(doc));
    } else {
      ++stats.n_empty;
    }
  }
  stats.format = file_format.value_or(RecordFormat::Text);
  return stats;
}

}  // namespace

const char* record_format_name(RecordFormat format) {
  switch (format) {
    case RecordFormat::Text: return "text";
    case RecordFormat::PromptCompletion: return "prompt_completion";
    case RecordFormat::Chat: return "chat";
    case RecordFormat::Raw: return "raw";
  }
  return "?";
}

FileReadStats data_file_read(const DataFile& file, const std::optional<DataFormat>& format,
                             const std::function<void(DataDocument&&)>& emit) {
  const std::string filename = file.path.filename().string();
  const bool jsonl = format ? *format != DataFormat::Raw : ends_with_ci(filename, ".jsonl");
  if (jsonl) return read_jsonl(file, format, emit);
  if (file.listed && !format) {
    for (std::string_view ext : kNotTextExtensions)
      ADAPT_REQUIRE(!ends_with_ci(filename, ext), IoError,
                    "'{}': unknown input format '{}': adapt reads JSON Lines files (.jsonl: one {{\"text\"}}, "
                    "{{\"prompt\", \"completion\"}} or {{\"messages\"}} object per line), folders of source files, "
                    "and text files. Convert the file to .jsonl, or set data.format = \"raw\" to train on its bytes.",
                    file.name, ext);
  }
  MappedFile mapped(file.path);
  FileReadStats stats{.format = RecordFormat::Raw, .n_records = 1};
  if (mapped.size_bytes() == 0) {
    stats.n_empty = 1;
    return stats;
  }
  const char* data = reinterpret_cast<const char*>(mapped.data());
  const void* nul = std::memchr(data, 0, mapped.size_bytes());
  ADAPT_REQUIRE(nul == nullptr, IoError,
                "'{}' holds a NUL byte at offset {}: it looks like a binary file, not text. Narrow data.globs (or "
                "data.inputs) so that it is not taken.",
                file.name, static_cast<const char*>(nul) - data);
  DataDocument doc;
  doc.format = RecordFormat::Raw;
  doc.text.assign(data, mapped.size_bytes());
  emit(std::move(doc));
  return stats;
}

void document_tokenize(const DataDocument& doc, const tokenizer::Tokenizer& tok, const DocumentTokenizeOptions& options,
                       std::vector<tokenizer::TokenId>& tokens, std::vector<std::uint8_t>& flags) {
  using tokenizer::TokenId;
  ADAPT_CHECK(flags.size() == tokens.size(), "tokens ({}) and flags ({}) differ in length", tokens.size(),
              flags.size());
  const std::size_t begin = tokens.size();
  switch (doc.format) {
    case RecordFormat::Text:
    case RecordFormat::Raw:
    case RecordFormat::PromptCompletion: {
      const bool pc = doc.format == RecordFormat::PromptCompletion;
      if (options.add_bos) tokens.push_back(tok.bos_id());
      if (pc) {
        tok.encode_append(doc.prompt, {}, tokens);
        flags.resize(tokens.size(), 0);  // BOS and prompt
        tok.encode_append(doc.completion, {}, tokens);
      } else {
        tok.encode_append(doc.text, {}, tokens);
      }
      if (options.add_eos) tokens.push_back(tok.eos_ids().front());
      flags.resize(tokens.size(), kTokenCompletion);
      return;
    }
    case RecordFormat::Chat: {
      const std::vector<TokenId> ids =
          tokenizer::chat_encode(tok, doc.messages, {.layout = kDataChatTemplate, .add_generation_prompt = false});
      const TokenId start_header = tok.token_id("<|start_header_id|>");
      const TokenId end_header = tok.token_id("<|end_header_id|>");
      const TokenId eot = tok.token_id("<|eot_id|>");
      const std::size_t n_newline = tok.encode("\n\n").size();
      tokens.insert(tokens.end(), ids.begin(), ids.end());
      flags.resize(tokens.size(), 0);
      // Turns are <|start_header_id|> role <|end_header_id|> "\n\n" content <|eot_id|>; content is
      // encoded with special tokens as text, so these ids mark the turns unambiguously.
      std::size_t i = 0;
      while (i < ids.size()) {
        if (ids[i] != start_header) {
          ++i;
          continue;
        }
        const auto header_end = std::find(ids.begin() + static_cast<std::ptrdiff_t>(i), ids.end(), end_header);
        ADAPT_CHECK(header_end != ids.end(), "chat turn without <|end_header_id|>");
        const auto h = static_cast<std::size_t>(header_end - ids.begin());
        const std::string role = tok.decode(std::span(ids).subspan(i + 1, h - i - 1));
        const std::size_t content = h + 1 + n_newline;
        const auto turn_end =
            std::find(ids.begin() + static_cast<std::ptrdiff_t>(std::min(content, ids.size())), ids.end(), eot);
        ADAPT_CHECK(turn_end != ids.end(), "chat turn without <|eot_id|>");
        const auto e = static_cast<std::size_t>(turn_end - ids.begin());
        if (role == "assistant") {
          ADAPT_CHECK(tok.decode(std::span(ids).subspan(h + 1, n_newline)) == "\n\n",
                      "assistant header not followed by \"\\n\\n\"");
          for (std::size_t k = content; k <= e; ++k) flags[begin + k] = kTokenCompletion;
        }
        i = e + 1;
      }
      return;
    }
  }
}

}  // namespace adapt::train
