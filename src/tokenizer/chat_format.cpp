// Chat layouts as a list of parts (special token or text); ids and rendered text come from the same
// list, so the two cannot drift apart.
#include "tokenizer/chat_format.h"

#include "core/error.h"
#include "core/strings.h"
#include "tokenizer/unicode_class.h"

namespace adapt::tokenizer {

namespace {

struct Part {
  bool special;  // `text` is a special token's name
  std::string text;
};

bool is_py_space(std::string_view text, std::size_t pos, std::size_t& n_bytes) {
  const Utf8Char c = utf8_char_at(text, pos);
  n_bytes = c.n_bytes;
  return c.cp != kInvalidCodePoint &&
         (code_point_class(c.cp) == CodePointClass::Space || (c.cp >= 0x1C && c.cp <= 0x1F));
}

void header(std::vector<Part>& parts, const std::string& role) {
  parts.push_back({true, "<|start_header_id|>"});
  parts.push_back({false, role});
  parts.push_back({true, "<|end_header_id|>"});
  parts.push_back({false, "\n\n"});
}

std::vector<Part> chat_parts(std::span<const ChatMessage> messages, const ChatOptions& options) {
  std::vector<Part> parts;
  if (options.begin) parts.push_back({true, "<|begin_of_text|>"});
  std::size_t first = 0;
  if (options.begin && options.layout == ChatTemplate::Hf31) {
    std::string system;
    if (!messages.empty() && messages[0].role == "system") {
      system = chat_strip(messages[0].content);
      first = 1;
    }
    header(parts, "system");
    // HF renders "\n\n" and the system text as one string; it is tokenized as one segment.
    parts.back().text += "Cutting Knowledge Date: December 2023\nToday Date: " + options.date + "\n\n" + system;
    parts.push_back({true, "<|eot_id|>"});
  }
  for (std::size_t i = first; i < messages.size(); ++i) {
    const std::string& role = messages[i].role;
    const bool tool = options.layout == ChatTemplate::Hf31 && (role == "tool" || role == "ipython");
    header(parts, tool ? "ipython" : role);
    // HF's template writes a tool result `content | tojson` (a string is iterable in Jinja): quoted and
    // escaped as JSON, not trimmed.
    std::string content;
    if (tool) json_append_string(content, messages[i].content);
    else content = chat_strip(messages[i].content);
    if (options.layout == ChatTemplate::Hf31) {
      parts.back().text += content;
    } else {
      parts.push_back({false, content});
    }
    parts.push_back({true, "<|eot_id|>"});
  }
  if (options.add_generation_prompt) header(parts, "assistant");
  return parts;
}

}  // namespace

std::string_view chat_strip(std::string_view text) {
  std::size_t begin = 0, n = 0;
  while (begin < text.size() && is_py_space(text, begin, n)) begin += n;
  std::size_t end = begin, pos = begin;
  while (pos < text.size()) {
    const bool space = is_py_space(text, pos, n);
    pos += n;
    if (!space) end = pos;
  }
  return text.substr(begin, end - begin);
}

std::vector<TokenId> chat_encode(const Tokenizer& tokenizer, std::span<const ChatMessage> messages,
                                 const ChatOptions& options) {
  std::vector<TokenId> ids;
  const EncodeOptions text_options{.allow_special = options.allow_special};
  for (const Part& p : chat_parts(messages, options)) {
    if (!p.special) {
      tokenizer.encode_append(p.text, text_options, ids);
      continue;
    }
    const TokenId id = tokenizer.token_id(p.text);
    ADAPT_REQUIRE(id != kNoToken && tokenizer.is_special(id), UnsupportedError,
                  "the Llama 3 chat layout needs the special token {}, which tokenizer {} does not have (Llama 2 "
                  "chat uses [INST] text markers, which adapt does not render)",
                  p.text, tokenizer.description());
    ids.push_back(id);
  }
  return ids;
}

std::string chat_render(std::span<const ChatMessage> messages, const ChatOptions& options) {
  std::string text;
  for (const Part& p : chat_parts(messages, options)) text += p.text;
  return text;
}

}  // namespace adapt::tokenizer
