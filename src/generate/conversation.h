// Conversations kept between generation jobs: a prompt with `conversation = "name"` is the next turn
// of that conversation. Its tokens are everything the conversation holds so far (earlier prompts and
// the model's replies, as the exact token ids the model saw and produced, not re-tokenized text),
// followed by what the turn adds: a user message in the Llama 3.1 chat layout, raw text, or nothing
// (the model continues a reply that was cut short). When the turn finishes, its prompt and reply are
// saved to <store>/<name>.json (written atomically), and the next job that names the conversation
// continues from there.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "generate/sequence.h"
#include "tokenizer/tokenizer.h"

namespace adapt::generate {

namespace fs = std::filesystem;

/// One finished turn: the tokens it added are [start, end) of the conversation's tokens, its prompt
/// [start, reply_start), the model's reply [reply_start, end).
struct ConversationTurn {
  std::string id;     // the prompt's id
  std::string kind;   // "user" (a user message), "text" (raw text) or "continue" (nothing added)
  std::string input;  // the user message or raw text as written (empty for "continue")
  std::int64_t start = 0;
  std::int64_t reply_start = 0;
  std::int64_t end = 0;
  std::string finish_reason;  // eos | stop | length
  std::string reply;          // the reply's text (stop string removed)
};

struct Conversation {
  std::string name;
  std::string tokenizer;     // description of the tokenizer whose ids `tokens` are
  std::int64_t n_vocab = 0;  // its vocabulary size (checked when the conversation is loaded)
  std::vector<std::int32_t> tokens;
  std::vector<ConversationTurn> turns;

  bool empty() const { return turns.empty(); }
};

/// What a prompt adds to its conversation (a PromptSpec's fields): `user` (with `system` on the
/// first turn only), raw `text`, or neither (continue the last reply). `chat` = false writes a user
/// message as raw text, as for a prompt without a conversation.
struct TurnInput {
  std::string id;
  std::optional<std::string> system;
  std::optional<std::string> user;
  std::optional<std::string> text;
  bool chat = true;
};

/// The prompt tokens of the turn `in` of `c`: c.tokens followed by what the turn adds. A user
/// message on an empty conversation is the chat layout of [system, user]: adapt_gen makes the tokens
/// of a prompt without a conversation this way, as a first turn; on a later turn it closes the last reply with
/// <|eot_id|> where it did not end with it (a reply cut short, or ended by <|end_of_text|> or <|eom_id|>, whose token
/// stays: the conversation keeps the exact ids the model read and wrote), then adds the user message and the assistant
/// header (as the chat layout of the whole dialog would, with the replies' own tokens). Raw text is appended as encoded
/// (with
/// <|begin_of_text|> on an empty conversation). ConfigError naming the prompt and conversation for a
/// `system` message after the first turn, or a continue turn on an empty conversation or after a
/// reply that ended with EOS.
std::vector<std::int32_t> conversation_turn_prompt(const Conversation& c, const TurnInput& in,
                                                   const tokenizer::Tokenizer& tokenizer);

/// Appends the finished turn: `prompt` (from conversation_turn_prompt; it starts with c.tokens) and
/// the reply `out`. InternalError when `prompt` does not continue c.tokens.
void conversation_add_turn(Conversation& c, const TurnInput& in, std::span<const std::int32_t> prompt,
                           const GenerationOutput& out);

/// The text of the last turn's reply, preceded by the replies of the turns it continues (a chain of
/// "continue" turns back to the first turn that asked): the whole answer so far, decoded from its
/// tokens in one pass (an earlier turn's stop string stays in, as the model saw it; the last turn's
/// is cut, as from its reply).
std::string conversation_reply_chain(const Conversation& c, const tokenizer::Tokenizer& tokenizer);

/// For a rerun after a crash between saving a turn and recording its result: where the last turn is
/// `id`, removes it (and its tokens) and returns true. ConfigError when an earlier turn has that id
/// (a prompt id reused in a later job), false when none has.
bool conversation_drop_unrecorded(Conversation& c, const std::string& id, const fs::path& file);

std::string conversation_to_json(const Conversation& c);
/// IoError naming `file` for a malformed conversation (bad JSON, missing fields, turns that do not
/// tile the tokens).
Conversation conversation_from_json(std::string_view text, const fs::path& file);

/// The conversations of a job: one JSON file each in `dir` (output.dir/output.conversations).
class ConversationStore {
 public:
  explicit ConversationStore(fs::path dir) : dir_(std::move(dir)) {}
  const fs::path& dir() const { return dir_; }
  fs::path path_of(const std::string& name) const { return dir_ / (name + ".json"); }
  bool exists(const std::string& name) const { return fs::exists(path_of(name)); }
  /// The stored conversation, or an empty one named `name` when there is no file. IoError for a
  /// malformed file; ConfigError when it was written with a tokenizer of another vocabulary size.
  Conversation load(const std::string& name, const tokenizer::Tokenizer& tokenizer) const;
  /// The stored conversation as a rerun continues it: load(), less the turns a run saved but stopped
  /// before recording (conversation_drop_unrecorded for each of `pending`, the job's prompt ids of
  /// this conversation not in the results, in file order). Their ids go to `dropped` when given.
  Conversation load_for_rerun(const std::string& name, const tokenizer::Tokenizer& tokenizer,
                              const std::vector<std::string>& pending,
                              std::vector<std::string>* dropped = nullptr) const;
  /// Writes the conversation atomically (a crash leaves the previous version); IoError on failure.
  void save(const Conversation& c) const;

 private:
  fs::path dir_;
};

}  // namespace adapt::generate
