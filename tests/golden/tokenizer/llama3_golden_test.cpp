// Llama 3 parity over Meta's tokenizer.model (tiktoken path) and tokenizer.json files converted from it (HF
// path, both merge forms): ids of tiktoken 0.14.0 / HF tokenizers 0.23.3 (tests/golden/data/tokenizer),
// HF decode, streaming, and chats as HF's template and Meta's ChatFormat lay them out; a conversation
// built turn by turn (generate/conversation.h) as HF's template lays out the whole dialog.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include "generate/conversation.h"
#include "tests/golden/tokenizer/tokenizer_fixtures.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/stream_decoder.h"

using namespace adapt;
using namespace adapt::tokenizer;
using json = nlohmann::json;

namespace {

const Tokenizer& meta() {
  static const Tokenizer tok = Tokenizer::from_file(test::meta_tokenizer_path());
  return tok;
}

// Every fixture string through `tok`: ids without specials (tiktoken), with specials split (HF), and
// the decode round trip. Reports the first mismatches with the string, expected and actual ids.
void check_encode_fixtures(const Tokenizer& tok) {
  const auto rows = test::read_jsonl(test::tokenizer_fixture("llama3_encode.jsonl"));
  REQUIRE(rows.size() >= 2000);
  std::size_t n_bad = 0, n_special = 0;
  for (const json& row : rows) {
    const std::string text = row["text"];
    const auto expected = test::ids_of(row["ids"]);
    const auto expected_special = row.contains("ids_special") ? test::ids_of(row["ids_special"]) : expected;
    n_special += row.contains("ids_special");
    const auto ids = tok.encode(text);
    const auto ids_special = tok.encode(text, {.allow_special = true});
    const std::string decoded = tok.decode(ids);
    if (ids != expected || ids_special != expected_special || decoded != text) {
      if (++n_bad <= 5)
        FAIL_CHECK(fmt::format("[{}] '{}'\n  {}\n  with specials: {}\n  decoded '{}'", row["cat"].get<std::string>(),
                               test::escaped(text), test::ids_diff(expected, ids),
                               test::ids_diff(expected_special, ids_special), test::escaped(decoded)));
    }
  }
  MESSAGE(fmt::format("{}: {} strings ({} with special tokens), {} mismatches", tok.description(), rows.size(),
                      n_special, n_bad));
  CHECK(n_bad == 0);
}

}  // namespace

TEST_CASE("Meta's check value: \"This is a test sentence.\" with BOS and EOS") {
  const auto ids = meta().encode("This is a test sentence.", {.bos = true, .eos = true});
  CHECK(ids == std::vector<TokenId>{128000, 2028, 374, 264, 1296, 11914, 13, 128001});
  CHECK(meta().decode(ids) == "<|begin_of_text|>This is a test sentence.<|end_of_text|>");
  CHECK(meta().decode(ids, {.skip_special = true}) == "This is a test sentence.");
  CHECK(meta().n_vocab() == 128256);
  CHECK(meta().bos_id() == 128000);
  CHECK(meta().eos_ids() == std::vector<TokenId>{128001, 128008, 128009});
  CHECK(meta().token_id("<|eot_id|>") == 128009);
  CHECK(meta().token_id("<|image|>") == 128011);
  CHECK(meta().token_id("<|reserved_special_token_245|>") == 128255);
  CHECK(meta().encode(" Việt") == std::vector<TokenId>{101798});  // whole-piece lookup (llama.cpp PR #7193)
}

TEST_CASE("tiktoken path: every fixture string encodes to tiktoken's and HF's ids") { check_encode_fixtures(meta()); }

TEST_CASE("HF tokenizer.json path (converted from Meta's file, both merge forms): the same ids") {
  test::TempDir dir("adapt-llama3-json");
  for (bool pair_merges : {false, true}) {
    CAPTURE(pair_merges);
    const fs::path path = dir / (pair_merges ? "pairs.json" : "legacy.json");
    test::write_llama3_tokenizer_json(test::meta_tokenizer_path(), path, pair_merges);
    const Tokenizer tok = Tokenizer::from_file(path);
    CHECK(tok.kind() == TokenizerKind::ByteLevel);
    CHECK(tok.n_vocab() == 128256);
    CHECK(tok.bos_id() == 128000);
    check_encode_fixtures(tok);
  }
}

TEST_CASE("decode matches HF decode (lossy UTF-8, specials as text or skipped), and so does streaming") {
  const auto rows = test::read_jsonl(test::tokenizer_fixture("llama3_decode.jsonl"));
  REQUIRE(rows.size() >= 100);
  std::size_t n_bad = 0;
  for (const json& row : rows) {
    const auto ids = test::ids_of(row["ids"]);
    const DecodeOptions options{.skip_special = row["skip_special"].get<bool>()};
    const std::string expected = row["text"];
    const std::string got = meta().decode(ids, options);
    StreamDecoder stream(meta(), options);
    std::string streamed;
    for (TokenId id : ids) {
      streamed += stream.push(id);
      CHECK(stream.n_pending_bytes() <= 3);
    }
    streamed += stream.finish();
    if ((got != expected || streamed != expected) && ++n_bad <= 5)
      FAIL_CHECK(fmt::format("{} skip={}: expected '{}', decode '{}', stream '{}'", test::ids_text(ids),
                             options.skip_special, test::escaped(expected), test::escaped(got),
                             test::escaped(streamed)));
  }
  CHECK(n_bad == 0);
}

TEST_CASE("streaming every fixture string token by token gives back the text") {
  const auto rows = test::read_jsonl(test::tokenizer_fixture("llama3_encode.jsonl"));
  std::size_t n_bad = 0;
  for (const json& row : rows) {
    const std::string text = row["text"];
    StreamDecoder stream(meta());
    std::string streamed;
    for (TokenId id : test::ids_of(row["ids"])) streamed += stream.push(id);
    streamed += stream.finish();
    if (streamed != text && ++n_bad <= 5)
      FAIL_CHECK(fmt::format("'{}' streamed as '{}'", test::escaped(text), test::escaped(streamed)));
  }
  CHECK(n_bad == 0);
}

TEST_CASE("chat layout: HF's Llama 3.1 template (rendered by jinja2) and Meta's ChatFormat") {
  const auto rows = test::read_jsonl(test::tokenizer_fixture("llama3_chat.jsonl"));
  REQUIRE(rows.size() >= 20);
  for (const json& row : rows) {
    std::vector<ChatMessage> messages;
    for (const json& m : row["messages"]) messages.push_back({m["role"], m["content"]});
    ChatOptions options{.layout = row["layout"] == "meta" ? ChatTemplate::Meta : ChatTemplate::Hf31,
                        .add_generation_prompt = row["add_generation_prompt"].get<bool>(),
                        .allow_special = row["allow_special"].get<bool>()};
    if (row.contains("date")) options.date = row["date"];
    CAPTURE(row.dump());
    CHECK(test::ids_text(chat_encode(meta(), messages, options), 1000) ==
          test::ids_text(test::ids_of(row["ids"]), 1000));
    if (row.contains("text"))
      CHECK(test::escaped(chat_render(messages, options), 5000) == test::escaped(row["text"].get<std::string>(), 5000));
  }
  // SPEC-llama §4.5 token view of Meta's test: header "user" = [128006, 882, 128007, 271].
  const std::vector<ChatMessage> user{{"user", "Hi"}};
  const auto ids = chat_encode(meta(), user, {.layout = ChatTemplate::Meta, .add_generation_prompt = false});
  CHECK(std::vector<TokenId>(ids.begin() + 1, ids.begin() + 5) == std::vector<TokenId>{128006, 882, 128007, 271});
}

TEST_CASE("a conversation built turn by turn is HF's template of the whole dialog") {
  // Every HF-template fixture that is a conversation's prompt: [system] user (assistant user)*, with
  // the generation prompt and the default date. Each assistant message stands for a reply that ended
  // with <|eot_id|>: its ids are those of its stripped text, then <|eot_id|>.
  const auto rows = test::read_jsonl(test::tokenizer_fixture("llama3_chat.jsonl"));
  const TokenId eot = meta().token_id("<|eot_id|>");
  int n_dialogs = 0, n_multi_turn = 0;
  for (const json& row : rows) {
    if (row["layout"] != "hf31" || !row["add_generation_prompt"].get<bool>() || row.value("date", "") != "26 Jul 2024")
      continue;
    const json& m = row["messages"];
    std::size_t i = 0;
    std::optional<std::string> system;
    if (!m.empty() && m[0]["role"] == "system") system = m[i++]["content"].get<std::string>();
    bool fits = i < m.size() && (m.size() - i) % 2 == 1;
    for (std::size_t k = i; fits && k < m.size(); ++k) fits = m[k]["role"] == ((k - i) % 2 == 0 ? "user" : "assistant");
    if (!fits) continue;
    // Content with special-token strings is tokenized as text by adapt and as specials by HF.
    bool plain = true;
    for (const json& msg : m) plain = plain && msg["content"].get<std::string>().find("<|") == std::string::npos;
    if (!plain) continue;
    CAPTURE(row.dump());
    generate::Conversation c;
    c.name = "golden";
    std::vector<std::int32_t> prompt;
    for (std::size_t k = i; k < m.size(); k += 2) {
      const generate::TurnInput turn{.id = fmt::format("t{}", k),
                                     .system = k == i ? system : std::nullopt,
                                     .user = m[k]["content"].get<std::string>()};
      prompt = generate::conversation_turn_prompt(c, turn, meta());
      if (k + 1 == m.size()) break;
      generate::GenerationOutput reply;
      for (TokenId id : meta().encode(chat_strip(m[k + 1]["content"].get<std::string>())))
        reply.tokens.push_back(static_cast<std::int32_t>(id));
      reply.tokens.push_back(static_cast<std::int32_t>(eot));
      reply.reason = generate::FinishReason::Eos;
      generate::conversation_add_turn(c, turn, prompt, reply);
    }
    CHECK(test::ids_text({prompt.begin(), prompt.end()}, 1000) == test::ids_text(test::ids_of(row["ids"]), 1000));
    ++n_dialogs;
    n_multi_turn += m.size() - i > 1;
  }
  CHECK(n_dialogs >= 3);
  CHECK(n_multi_turn >= 1);
}
