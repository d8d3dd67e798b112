// Conversations (generate/conversation.h) with the tiny model's tokenizer (made by adapt_model): a
// first turn is the prompt a prompt without a conversation gets; later turns add exactly the chat
// layout of the new message after the stored tokens, closing a cut reply with <|eot_id|>; raw and
// continue turns; the rules that refuse a turn; the file round trip, and files that are refused
// (malformed, turns that do not tile the tokens, another tokenizer); a rerun's rollback of a turn
// saved without its result. tests/golden/tokenizer/llama3_golden_test.cpp checks a dialog built turn
// by turn against HF's template with Meta's tokenizer.
#include <doctest/doctest.h>

#include <memory>

#include "core/error.h"
#include "core/file.h"
#include "generate/conversation.h"
#include "generate/gen_config.h"
#include "tests/support/test_support.h"
#include "tokenizer/chat_format.h"

using namespace adapt;
using namespace adapt::generate;

namespace {

const tokenizer::Tokenizer& tok() {
  static test::TempDir dir{"adapt-conversation"};
  static std::unique_ptr<tokenizer::Tokenizer> t;
  if (!t) {
    const std::string cmd = (test::binary_dir() / "bin" / "adapt_model").string() + " make --recipe " +
                            (test::source_dir() / "inputs/models/tiny.toml").string() + " --out " +
                            (dir / "model").string();
    std::string log;
    REQUIRE_MESSAGE(test::run_command(cmd, &log) == 0, cmd, "\n", log);
    t = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(dir / "model"));
  }
  return *t;
}

std::vector<std::int32_t> ids32(const std::vector<tokenizer::TokenId>& ids) { return {ids.begin(), ids.end()}; }

std::int32_t id_of(const char* token) { return static_cast<std::int32_t>(tok().token_id(token)); }

GenerationOutput reply(const std::string& text, FinishReason reason) {
  GenerationOutput o;
  o.tokens = ids32(tok().encode(text));
  if (reason == FinishReason::Eos) o.tokens.push_back(id_of("<|eot_id|>"));
  o.text = text;
  o.reason = reason;
  return o;
}

/// A reply whose tokens are those of `generated` and whose text was cut by a stop string to `kept`.
GenerationOutput reply_stopped(const std::string& generated, const std::string& kept) {
  GenerationOutput o = reply(generated, FinishReason::StopString);
  o.text = kept;
  return o;
}

Conversation empty(const std::string& name) {
  Conversation c;
  c.name = name;
  c.tokenizer = tok().description();
  c.n_vocab = tok().n_vocab();
  return c;
}

}  // namespace

TEST_CASE("names: letters, digits, '.', '_', '-'; no path") {
  // The prompt file's check (gen_config_test.cpp: the ConfigError it gives) uses this rule.
  CHECK(conversation_name_ok("server-v2.design_1"));
  for (const char* bad : {"", ".hidden", "a/b", "../x", "a b", "caf\xc3\xa9"}) {
    CAPTURE(bad);
    CHECK(!conversation_name_ok(bad));
  }
  CHECK(conversation_name_ok(std::string(128, 'a')));
  CHECK(!conversation_name_ok(std::string(129, 'a')));
}

TEST_CASE("turns: the first as a lone prompt, later ones append the chat layout of the message") {
  Conversation c = empty("c");
  const TurnInput t1{.id = "t1", .system = "You write C.", .user = "Write a loop."};
  const auto p1 = conversation_turn_prompt(c, t1, tok());
  const std::vector<tokenizer::ChatMessage> first{{"system", "You write C."}, {"user", "Write a loop."}};
  CHECK(p1 == ids32(tokenizer::chat_encode(tok(), first)));
  conversation_add_turn(c, t1, p1, reply("for (;;) {}", FinishReason::Eos));
  REQUIRE(c.turns.size() == 1);
  CHECK(c.turns[0].start == 0);
  CHECK(c.turns[0].reply_start == static_cast<std::int64_t>(p1.size()));
  CHECK(c.turns[0].end == static_cast<std::int64_t>(c.tokens.size()));

  // After a reply that ended with <|eot_id|>: the user message and the assistant header, nothing else.
  const TurnInput t2{.id = "t2", .user = "  Now in C++.\n"};
  const auto p2 = conversation_turn_prompt(c, t2, tok());
  const std::vector<tokenizer::ChatMessage> next{{"user", "Now in C++."}};
  std::vector<std::int32_t> want = c.tokens;
  for (auto id : tokenizer::chat_encode(tok(), next, {.begin = false})) want.push_back(static_cast<std::int32_t>(id));
  CHECK(p2 == want);
  CHECK(want[c.tokens.size()] == id_of("<|start_header_id|>"));

  // A reply cut by max_new_tokens is closed with <|eot_id|> before the next message.
  conversation_add_turn(c, t2, p2, reply("template <class T>", FinishReason::Length));
  const auto p3 = conversation_turn_prompt(c, {.id = "t3", .user = "Go on."}, tok());
  REQUIRE(p3.size() > c.tokens.size());
  CHECK(std::equal(c.tokens.begin(), c.tokens.end(), p3.begin()));
  CHECK(p3[c.tokens.size()] == id_of("<|eot_id|>"));
  CHECK(p3[c.tokens.size() + 1] == id_of("<|start_header_id|>"));

  // Continue: the prompt is the conversation as it stands; the reply chain joins the two replies.
  const TurnInput t3{.id = "t3"};
  const auto p3c = conversation_turn_prompt(c, t3, tok());
  CHECK(p3c == c.tokens);
  conversation_add_turn(c, t3, p3c, reply(" struct S {};", FinishReason::Eos));
  CHECK(c.turns.back().kind == "continue");
  CHECK(c.turns.back().start == c.turns.back().reply_start);
  CHECK(conversation_reply_chain(c, tok()) == "template <class T> struct S {};");

  // The chain is decoded from its tokens: an earlier turn's stop string stays in (the model went on
  // after it), the last turn's is cut as from its reply.
  Conversation s = empty("s");
  const TurnInput s1{.id = "s1", .user = "Write a struct."};
  conversation_add_turn(s, s1, conversation_turn_prompt(s, s1, tok()), reply_stopped("struct A { // x", "struct A { "));
  const TurnInput s2{.id = "s2"};
  conversation_add_turn(s, s2, conversation_turn_prompt(s, s2, tok()), reply(" int a; };", FinishReason::Length));
  CHECK(conversation_reply_chain(s, tok()) == "struct A { // x int a; };");
  const TurnInput s3{.id = "s3"};
  conversation_add_turn(s, s3, conversation_turn_prompt(s, s3, tok()), reply_stopped(" // end\nmore", " "));
  CHECK(conversation_reply_chain(s, tok()) == "struct A { // x int a; }; ");
  CHECK(conversation_reply_chain(empty("none"), tok()).empty());

  // A reply ended by another end token (<|end_of_text|>) is closed with <|eot_id|> too; one ended by
  // <|eot_id|> is not (above, t2).
  Conversation e = empty("e");
  const TurnInput e1{.id = "e1", .user = "Hi."};
  GenerationOutput eot = reply("Hello", FinishReason::Length);
  eot.tokens.push_back(id_of("<|end_of_text|>"));
  eot.reason = FinishReason::Eos;
  conversation_add_turn(e, e1, conversation_turn_prompt(e, e1, tok()), eot);
  const auto e2 = conversation_turn_prompt(e, {.id = "e2", .user = "Again."}, tok());
  CHECK(e2[e.tokens.size()] == id_of("<|eot_id|>"));
  CHECK(e2[e.tokens.size() + 1] == id_of("<|start_header_id|>"));
  CHECK_THROWS_WITH_AS(conversation_turn_prompt(e, {.id = "e3"}, tok()), doctest::Contains("ended with the end"),
                       ConfigError);

  // Raw text: appended as encoded, no BOS after the first turn; with BOS on an empty conversation.
  const auto p4 = conversation_turn_prompt(c, {.id = "t4", .text = "int x;"}, tok());
  std::vector<std::int32_t> raw = c.tokens;
  for (auto id : tok().encode("int x;")) raw.push_back(static_cast<std::int32_t>(id));
  CHECK(p4 == raw);
  tokenizer::EncodeOptions bos;
  bos.bos = true;
  CHECK(conversation_turn_prompt(empty("d"), {.id = "x", .text = "int x;"}, tok()) ==
        ids32(tok().encode("int x;", bos)));
  // chat = false: a user message is raw text too, as for a prompt without a conversation.
  CHECK(conversation_turn_prompt(empty("d"), {.id = "x", .system = "S", .user = "U", .chat = false}, tok()) ==
        ids32(tok().encode("S\n\nU", bos)));
}

TEST_CASE("turns that cannot run say why") {
  Conversation c = empty("c");
  CHECK_THROWS_WITH_AS(conversation_turn_prompt(c, {.id = "k"}, tok()),
                       doctest::Contains("the conversation has no turns yet"), ConfigError);
  const TurnInput t1{.id = "t1", .user = "Hi"};
  conversation_add_turn(c, t1, conversation_turn_prompt(c, t1, tok()), reply("Hello", FinishReason::Eos));
  CHECK_THROWS_WITH_AS(conversation_turn_prompt(c, {.id = "k"}, tok()),
                       doctest::Contains("ended with the end-of-turn token"), ConfigError);
  CHECK_THROWS_WITH_AS(conversation_turn_prompt(c, {.id = "k", .system = "S", .user = "U"}, tok()),
                       doctest::Contains("system is only allowed on a conversation's first turn"), ConfigError);
  // add_turn refuses a prompt that does not continue the conversation.
  CHECK_THROWS_AS(conversation_add_turn(c, {.id = "z", .user = "U"}, std::vector<std::int32_t>{1, 2},
                                        reply("x", FinishReason::Eos)),
                  InternalError);
}

TEST_CASE("files: round trip, refused files, the rollback of a turn saved without its result") {
  test::TempDir dir{"adapt-conversation-store"};
  const ConversationStore store(dir / "conv");
  Conversation c = store.load("c", tok());
  CHECK(c.empty());
  CHECK(c.n_vocab == tok().n_vocab());
  for (const char* id : {"t1", "t2"}) {
    const TurnInput t{.id = id, .user = std::string("Question ") + id};
    conversation_add_turn(c, t, conversation_turn_prompt(c, t, tok()), reply("Answer \xc3\xa9", FinishReason::Length));
  }
  store.save(c);
  const Conversation back = store.load("c", tok());
  CHECK(back.tokens == c.tokens);
  REQUIRE(back.turns.size() == 2);
  CHECK(back.turns[1].id == "t2");
  CHECK(back.turns[1].input == "Question t2");
  CHECK(back.turns[1].reply == "Answer \xc3\xa9");
  CHECK(back.turns[1].finish_reason == "length");
  CHECK(conversation_to_json(back) == file_read_text(store.path_of("c")));

  // Malformed files name the file; turns must tile the tokens.
  const std::string good = conversation_to_json(c);
  CHECK_THROWS_WITH_AS(conversation_from_json(good.substr(0, good.size() / 2), "f.json"), doctest::Contains("f.json"),
                       IoError);
  Conversation gap = c;
  gap.turns[1].start += 1;
  CHECK_THROWS_WITH_AS(conversation_from_json(conversation_to_json(gap), "f.json"),
                       doctest::Contains("but the turns before it end at"), IoError);
  Conversation extra = c;
  extra.tokens.push_back(1);
  CHECK_THROWS_WITH_AS(conversation_from_json(conversation_to_json(extra), "f.json"),
                       doctest::Contains("the turns cover"), IoError);
  // Another tokenizer's ids are refused; so are ids outside the vocabulary.
  Conversation other = c;
  other.n_vocab = 128256;
  test::write_bytes(store.path_of("c"), conversation_to_json(other));
  CHECK_THROWS_WITH_AS(store.load("c", tok()), doctest::Contains("was written with tokenizer"), ConfigError);
  Conversation wild = c;
  wild.tokens[0] = static_cast<std::int32_t>(tok().n_vocab());
  test::write_bytes(store.path_of("c"), conversation_to_json(wild));
  CHECK_THROWS_WITH_AS(store.load("c", tok()), doctest::Contains("outside the vocabulary"), IoError);

  // Rollback: the last turn goes with its tokens; an earlier turn's id is a reused id.
  Conversation r = c;
  CHECK(!conversation_drop_unrecorded(r, "t9", "f.json"));
  CHECK_THROWS_WITH_AS(conversation_drop_unrecorded(r, "t1", "f.json"), doctest::Contains("rename the prompt"),
                       ConfigError);
  CHECK(conversation_drop_unrecorded(r, "t2", "f.json"));
  REQUIRE(r.turns.size() == 1);
  CHECK(static_cast<std::int64_t>(r.tokens.size()) == c.turns[1].start);
  // A rerun's load: the pending ids that end the stored conversation are dropped and reported.
  test::write_bytes(store.path_of("c"), conversation_to_json(c));
  std::vector<std::string> dropped;
  const Conversation rerun = store.load_for_rerun("c", tok(), {"t2", "t3"}, &dropped);
  CHECK(dropped == std::vector<std::string>{"t2"});
  CHECK(rerun.tokens == r.tokens);
  CHECK(store.load_for_rerun("c", tok(), {"t3"}).turns.size() == 2);
  CHECK_THROWS_WITH_AS(store.load_for_rerun("c", tok(), {"t1"}), doctest::Contains("rename the prompt"), ConfigError);
}
