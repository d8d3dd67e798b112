#include "generate/conversation.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "generate/stop.h"
#include "tokenizer/chat_format.h"

namespace adapt::generate {

using json = nlohmann::json;

namespace {

/// Whether the last reply ended at an end token (the tokenizer's or the model's eos_token_id).
bool ends_with_eos(const Conversation& c) {
  return !c.turns.empty() && c.turns.back().finish_reason == finish_reason_name(FinishReason::Eos);
}

void append_ids(std::vector<std::int32_t>& out, const std::vector<tokenizer::TokenId>& ids) {
  for (auto id : ids) out.push_back(static_cast<std::int32_t>(id));
}

}  // namespace

std::vector<std::int32_t> conversation_turn_prompt(const Conversation& c, const TurnInput& in,
                                                   const tokenizer::Tokenizer& tokenizer) {
  const std::string who = fmt::format("prompt '{}' (conversation '{}')", in.id, c.name);
  std::vector<std::int32_t> ids = c.tokens;
  if (!in.user && !in.text) {  // continue the last reply
    ADAPT_REQUIRE(!c.empty(), ConfigError,
                  "{}: has neither user nor text, which continues the conversation's last reply, but the "
                  "conversation has no turns yet; give user or text",
                  who);
    ADAPT_REQUIRE(!ends_with_eos(c), ConfigError,
                  "{}: has neither user nor text, which continues the last reply, but that reply (prompt '{}') "
                  "ended with the end-of-turn token; give user (a new question) or text",
                  who, c.turns.back().id);
    return ids;
  }
  ADAPT_REQUIRE(!in.system || c.empty(), ConfigError,
                "{}: system is only allowed on a conversation's first turn, and '{}' already has {} turn(s); "
                "remove system (it stays from the first turn) or start a new conversation",
                who, c.name, c.turns.size());
  if (in.user && in.chat) {
    std::vector<tokenizer::ChatMessage> msgs;
    if (in.system) msgs.push_back({"system", *in.system});
    msgs.push_back({"user", *in.user});
    tokenizer::ChatOptions options;
    options.begin = c.empty();
    if (!c.empty()) {
      // The chat layout ends every message with <|eot_id|>: a reply cut short (length, stop string) or
      // ended by another end token (<|end_of_text|>, <|eom_id|>) is closed with it.
      const tokenizer::TokenId eot = tokenizer.token_id("<|eot_id|>");
      ADAPT_REQUIRE(eot != tokenizer::kNoToken, UnsupportedError,
                    "{}: the chat layout needs <|eot_id|>, which tokenizer {} does not have", who,
                    tokenizer.description());
      if (c.tokens.back() != static_cast<std::int32_t>(eot)) ids.push_back(static_cast<std::int32_t>(eot));
    }
    append_ids(ids, tokenizer::chat_encode(tokenizer, msgs, options));
    return ids;
  }
  const std::string text = in.user ? (in.system ? *in.system + "\n\n" + *in.user : *in.user) : *in.text;
  tokenizer::EncodeOptions eo;
  eo.bos = c.empty();
  append_ids(ids, tokenizer.encode(text, eo));
  return ids;
}

void conversation_add_turn(Conversation& c, const TurnInput& in, std::span<const std::int32_t> prompt,
                           const GenerationOutput& out) {
  ADAPT_CHECK(prompt.size() >= c.tokens.size() && std::equal(c.tokens.begin(), c.tokens.end(), prompt.begin()),
              "prompt '{}' does not continue conversation '{}'", in.id, c.name);
  ConversationTurn t;
  t.id = in.id;
  t.kind = in.user ? "user" : in.text ? "text" : "continue";
  t.input = in.user ? *in.user : in.text ? *in.text : std::string();
  t.start = static_cast<std::int64_t>(c.tokens.size());
  c.tokens.assign(prompt.begin(), prompt.end());
  t.reply_start = static_cast<std::int64_t>(c.tokens.size());
  c.tokens.insert(c.tokens.end(), out.tokens.begin(), out.tokens.end());
  t.end = static_cast<std::int64_t>(c.tokens.size());
  t.finish_reason = finish_reason_name(out.reason);
  t.reply = out.text;
  c.turns.push_back(std::move(t));
}

std::string conversation_reply_chain(const Conversation& c, const tokenizer::Tokenizer& tokenizer) {
  if (c.turns.empty()) return {};
  std::size_t first = c.turns.size() - 1;
  while (first > 0 && c.turns[first].kind == "continue") --first;
  const ConversationTurn& last = c.turns.back();
  if (first + 1 == c.turns.size()) return last.reply;
  // A continue turn adds no prompt tokens, so the chain's replies are one run of tokens, decoded in
  // one pass: a character split between two turns comes out whole, and an earlier turn's stop string
  // (which its reply had cut, its tokens not) stays in, as the model saw it when it went on.
  const std::span<const std::int32_t> all(c.tokens);
  auto decode = [&](std::int64_t begin, std::int64_t end) {
    tokenizer::DecodeOptions o;
    o.skip_special = true;
    return tokenizer.decode(all.subspan(static_cast<std::size_t>(begin), static_cast<std::size_t>(end - begin)), o);
  };
  std::string text = decode(c.turns[first].reply_start, last.end);
  // The last turn's stop string and what followed it: cut here as from its reply.
  if (last.finish_reason == finish_reason_name(FinishReason::StopString)) {
    const std::size_t whole = decode(last.reply_start, last.end).size();
    text.resize(text.size() - std::min(text.size(), whole - std::min(whole, last.reply.size())));
  }
  return text;
}

bool conversation_drop_unrecorded(Conversation& c, const std::string& id, const fs::path& file) {
  for (std::size_t i = 0; i < c.turns.size(); ++i) {
    if (c.turns[i].id != id) continue;
    ADAPT_REQUIRE(i + 1 == c.turns.size(), ConfigError,
                  "{}: turn {} of conversation '{}' already has the id '{}' of a prompt that is not in the results "
                  "file; prompt ids must be new in each turn: rename the prompt",
                  file.string(), i + 1, c.name, id);
    c.tokens.resize(static_cast<std::size_t>(c.turns[i].start));
    c.turns.pop_back();
    return true;
  }
  return false;
}

std::string conversation_to_json(const Conversation& c) {
  nlohmann::ordered_json turns = nlohmann::ordered_json::array();  // fields in the order written
  for (const ConversationTurn& t : c.turns) {
    nlohmann::ordered_json turn;
    turn["id"] = t.id;
    turn["kind"] = t.kind;
    turn["input"] = t.input;
    turn["reply"] = t.reply;
    turn["finish_reason"] = t.finish_reason;
    turn["start"] = t.start;
    turn["reply_start"] = t.reply_start;
    turn["end"] = t.end;
    turns.push_back(std::move(turn));
  }
  // The turns one field per line (a readable transcript), the token ids on one line.
  auto dump = [](const nlohmann::ordered_json& v, int indent) {
    return v.dump(indent, ' ', false, json::error_handler_t::replace);
  };
  return "{\n \"conversation\": " + dump(c.name, -1) + ",\n \"tokenizer\": " + dump(c.tokenizer, -1) +
         ",\n \"n_vocab\": " + std::to_string(c.n_vocab) + ",\n \"turns\": " + dump(turns, 1) +
         ",\n \"tokens\": " + dump(nlohmann::ordered_json(c.tokens), -1) + "\n}\n";
}

Conversation conversation_from_json(std::string_view text, const fs::path& file) {
  const json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  const std::string fix = "move the file away to start the conversation afresh";
  ADAPT_REQUIRE(j.is_object() && j.contains("conversation") && j.contains("turns") && j.contains("tokens") &&
                    j["turns"].is_array() && j["tokens"].is_array(),
                IoError, "{}: not a conversation file (a JSON object with conversation, turns and tokens); {}",
                file.string(), fix);
  Conversation c;
  std::int64_t at = 0;
  try {
    c.name = j.at("conversation").get<std::string>();
    c.tokenizer = j.value("tokenizer", std::string());
    c.n_vocab = j.value("n_vocab", std::int64_t{0});
    c.tokens = j.at("tokens").get<std::vector<std::int32_t>>();
    for (const json& t : j.at("turns")) {
      ConversationTurn turn;
      turn.id = t.at("id").get<std::string>();
      turn.kind = t.at("kind").get<std::string>();
      turn.input = t.value("input", std::string());
      turn.start = t.at("start").get<std::int64_t>();
      turn.reply_start = t.at("reply_start").get<std::int64_t>();
      turn.end = t.at("end").get<std::int64_t>();
      turn.finish_reason = t.value("finish_reason", std::string());
      turn.reply = t.value("reply", std::string());
      ADAPT_REQUIRE(turn.start == at && turn.reply_start >= turn.start && turn.end >= turn.reply_start, IoError,
                    "{}: turn '{}' covers tokens [{}, {}) but the turns before it end at {}; {}", file.string(),
                    turn.id, turn.start, turn.end, at, fix);
      ADAPT_REQUIRE(turn.kind == "user" || turn.kind == "text" || turn.kind == "continue", IoError,
                    "{}: turn '{}' has kind \"{}\" (expected user, text or continue); {}", file.string(), turn.id,
                    turn.kind, fix);
      at = turn.end;
      c.turns.push_back(std::move(turn));
    }
  } catch (const json::exception& e) {
    ADAPT_THROW(IoError, "{}: malformed conversation ({}); {}", file.string(), e.what(), fix);
  }
  ADAPT_REQUIRE(at == static_cast<std::int64_t>(c.tokens.size()), IoError,
                "{}: the turns cover {} tokens but the file holds {}; {}", file.string(), at, c.tokens.size(), fix);
  return c;
}

Conversation ConversationStore::load(const std::string& name, const tokenizer::Tokenizer& tokenizer) const {
  const fs::path file = path_of(name);
  if (!fs::exists(file)) {
    Conversation c;
    c.name = name;
    c.tokenizer = tokenizer.description();
    c.n_vocab = tokenizer.n_vocab();
    return c;
  }
  Conversation c = conversation_from_json(file_read_text(file), file);
  ADAPT_REQUIRE(c.name == name, IoError, "{}: holds conversation '{}', not '{}'; move it away or rename it",
                file.string(), c.name, name);
  ADAPT_REQUIRE(c.n_vocab == tokenizer.n_vocab(), ConfigError,
                "{}: conversation '{}' was written with tokenizer {} ({} tokens); this job's tokenizer {} has {}. Its "
                "token ids mean nothing to another tokenizer: use the model it was started with, or a new "
                "conversation name",
                file.string(), name, c.tokenizer, c.n_vocab, tokenizer.description(), tokenizer.n_vocab());
  for (const std::int32_t id : c.tokens) {
    ADAPT_REQUIRE(id >= 0 && id < tokenizer.n_vocab(), IoError, "{}: token id {} is outside the vocabulary (0..{})",
                  file.string(), id, tokenizer.n_vocab() - 1);
  }
  return c;
}

Conversation ConversationStore::load_for_rerun(const std::string& name, const tokenizer::Tokenizer& tokenizer,
                                               const std::vector<std::string>& pending,
                                               std::vector<std::string>* dropped) const {
  Conversation c = load(name, tokenizer);
  for (const std::string& id : pending)
    if (conversation_drop_unrecorded(c, id, path_of(name)) && dropped) dropped->push_back(id);
  return c;
}

void ConversationStore::save(const Conversation& c) const {
  fs::create_directories(dir_);
  file_write_atomic(path_of(c.name), conversation_to_json(c));
}

}  // namespace adapt::generate
