// Documents of a dataset: reading them from input files (JSON Lines records of one format per file,
// or a whole file as one raw document) and turning each into tokens plus a per-token completion flag
// (the tokens that count when only completions are trained).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/chat_format.h"
#include "tokenizer/tokenizer.h"
#include "train/data_config.h"
#include "train/data_glob.h"

namespace adapt::train {

/// What one document is.
enum class RecordFormat : std::uint8_t {
  Text,              // {"text": "..."}
  PromptCompletion,  // {"prompt": "...", "completion": "..."}
  Chat,              // {"messages": [{"role": "...", "content": "..."}, ...]}
  Raw,               // a whole file, bytes as they are
};

/// "text", "prompt_completion", "chat", "raw".
const char* record_format_name(RecordFormat format);

struct DataDocument {
  RecordFormat format = RecordFormat::Text;
  std::string text;                              // Text, Raw
  std::string prompt, completion;                // PromptCompletion
  std::vector<tokenizer::ChatMessage> messages;  // Chat
  std::int64_t line = 0;                         // 1-based JSON Lines line; 0 for Raw
};

/// How a file is read: JSON Lines (records detected per file or forced by DataConfig::format) or raw.
struct FileReadStats {
  RecordFormat format = RecordFormat::Raw;  // the format of the file's records (Raw: one document)
  std::int64_t n_records = 0;               // non-blank lines (JSON Lines) or 1 (raw)
  std::int64_t n_empty = 0;                 // records skipped because they hold no text
};

/// Reads `file` (shown as file.name in messages) and calls `emit` for each usable document, in file
/// order. `format` unset: files ending in .jsonl are JSON Lines, other files raw documents; Raw: every
/// file a raw document; Text, PromptCompletion or Chat: every file JSON Lines of that record format. Each JSON Lines
/// file holds records of one format, detected from its first record by its keys ("messages" → chat, "prompt" +
/// "completion" → prompt_completion, "text" → text; other keys are ignored). Blank lines are skipped; records with an
/// empty text / completion / message list are counted in n_empty and skipped. IoError naming file:line for malformed
/// JSON, a record that is not an object, a record of an unknown or different format, fields of the wrong type; for a
/// raw file that holds NUL bytes (binary); and for a listed file (not one found in a folder) whose extension says it is
/// neither JSON Lines nor text (.json, .csv, .parquet, .gz, ...) when `format` is unset.
FileReadStats data_file_read(const DataFile& file, const std::optional<DataFormat>& format,
                             const std::function<void(DataDocument&&)>& emit);

/// Which layout the token cache uses for chat documents (part of the cache key).
inline constexpr tokenizer::ChatTemplate kDataChatTemplate = tokenizer::ChatTemplate::Hf31;

/// Per-token flags of a tokenized document.
enum TokenFlag : std::uint8_t {
  kTokenCompletion = 1,  // a target when loss_on_completions_only (completions, assistant turns, text)
};

struct DocumentTokenizeOptions {
  bool add_bos = true;
  bool add_eos = true;
};

/// Token ids and flags of one document. Text / Raw: [BOS] text [EOS], all completion. Prompt /
/// completion: [BOS] prompt completion [EOS], prompt and completion encoded separately (so the
/// boundary is a token boundary), completion and EOS flagged. Chat: chat_encode (Llama 3.1 layout,
/// kDataChatTemplate, no generation prompt; it writes BOS itself and ends every turn with <|eot_id|>),
/// with the content and closing <|eot_id|> of each assistant turn flagged. Special-token text inside
/// any field is encoded as plain text. Appends to `tokens` / `flags`.
void document_tokenize(const DataDocument& doc, const tokenizer::Tokenizer& tok, const DocumentTokenizeOptions& options,
                       std::vector<tokenizer::TokenId>& tokens, std::vector<std::uint8_t>& flags);

}  // namespace adapt::train
