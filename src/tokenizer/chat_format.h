// Llama 3.1 chat layout (SPEC-llama §4.5): messages → ids with header tokens, in either HF's template
// (default; always a system block with the knowledge/date lines) or Meta's plain layout.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace adapt::tokenizer {

/// One chat message. Roles used by Llama 3.1: "system", "user", "assistant", "ipython" (HF's template
/// writes "tool" as "ipython"); other role strings are written as given.
struct ChatMessage {
  std::string role;
  std::string content;
};

/// Which published layout to reproduce. Both: <|begin_of_text|>, then per message
/// <|start_header_id|>role<|end_header_id|> "\n\n" content <|eot_id|>, content trimmed of white space
/// at both ends (Python str.strip; Hf31 writes a "tool" or "ipython" message's content as a JSON string
/// instead, as HF's template does), then optionally the generation prompt
/// <|start_header_id|>assistant<|end_header_id|> "\n\n".
enum class ChatTemplate {
  /// HF Llama-3.1-*-Instruct tokenizer_config.json chat_template without tools: a system block is
  /// ALWAYS written first: "Cutting Knowledge Date: December 2023\nToday Date: <date>\n\n" followed by
  /// the first message's content if its role is "system" (that message is consumed), else nothing.
  /// The default: it is what HF apply_chat_template, vLLM and the hub models' fine-tuning data use.
  Hf31,
  /// Meta's meta-llama/llama3 ChatFormat.encode_dialog_prompt: the messages exactly as given (no
  /// default system block); role, "\n\n" and content tokenized separately (same ids as together).
  Meta,
};

struct ChatOptions {
  ChatTemplate layout = ChatTemplate::Hf31;
  bool add_generation_prompt = true;  // end with the assistant header
  /// false: the messages continue a dialog already begun (a conversation's next turn): no
  /// <|begin_of_text|> and, for Hf31, no system block; each message as it would follow earlier ones.
  bool begin = true;
  std::string date = "26 Jul 2024";  // Hf31 "Today Date:" (the template's default date_string)
  /// Special-token strings inside message content: false (default) keeps them as text, as Meta's
  /// encode(..., allowed_special=set()) does; true makes them special ids, as HF's tokenization of the
  /// rendered template does (so a user could inject <|eot_id|>).
  bool allow_special = false;
};

/// Ids of the dialog. UnsupportedError when the tokenizer lacks the Llama 3 header tokens
/// (<|begin_of_text|>, <|start_header_id|>, <|end_header_id|>, <|eot_id|>), e.g. a Llama 2 tokenizer.
std::vector<TokenId> chat_encode(const Tokenizer& tokenizer, std::span<const ChatMessage> messages,
                                 const ChatOptions& options = {});

/// The same dialog as text, special tokens written as their strings (what HF's template renders).
std::string chat_render(std::span<const ChatMessage> messages, const ChatOptions& options = {});

/// Python str.strip(): removes leading and trailing characters for which str.isspace() is true
/// (Unicode White_Space plus U+001C..U+001F). Invalid UTF-8 is never stripped.
std::string_view chat_strip(std::string_view text);

}  // namespace adapt::tokenizer
