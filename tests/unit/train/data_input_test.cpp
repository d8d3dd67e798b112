// Every input format turned into documents (tokens and completion flags, checked against the
// tokenizer's own encode / chat_encode), and every bad input: malformed and mixed JSON Lines (named
// file:line), unknown formats, binary files, missing files, datasets with no usable example.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "tests/support/test_support.h"
#include "tests/unit/train/data_test_util.h"
#include "tokenizer/chat_format.h"
#include "train/data_document.h"
#include "train/token_cache.h"

using namespace adapt;
using namespace adapt::train;
using tokenizer::TokenId;
using Ids = std::vector<TokenId>;
using Flags = std::vector<std::uint8_t>;

namespace {

std::shared_ptr<const TokenDataset> build(const DataConfig& c) {
  return TokenDataset::open(token_cache_update(c, DataInputs::Train, test::data_tokenizer()));
}

Ids doc_ids(const TokenDataset& d, std::int64_t i) {
  auto s = d.document_tokens(i);
  return {s.begin(), s.end()};
}
Flags doc_flags(const TokenDataset& d, std::int64_t i) {
  auto s = d.document_flags(i);
  return {s.begin(), s.end()};
}

Ids cat(std::initializer_list<Ids> parts) {
  Ids out;
  for (const Ids& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

}  // namespace

TEST_CASE("text records: [BOS] text [EOS], every token a completion; empty texts skipped") {
  const auto& tok = test::data_tokenizer();
  test::TempDir dir;
  test::write_file(dir / "a.jsonl",
                   test::jsonl({R"({"text": "def f(x):\n    return x"})", "", R"({"text": "", "id": 3})", "   ",
                                R"({"text": "int main() {}", "meta": {"lang": "c"}})"}));
  const auto d = build(test::data_config(dir.path(), {(dir / "a.jsonl").string()}));
  REQUIRE(d->n_documents() == 2);
  const Ids bos{tok.bos_id()}, eos{tok.eos_ids().front()};
  CHECK(doc_ids(*d, 0) == cat({bos, tok.encode("def f(x):\n    return x"), eos}));
  CHECK(doc_ids(*d, 1) == cat({bos, tok.encode("int main() {}"), eos}));
  CHECK(doc_flags(*d, 1) == Flags(doc_ids(*d, 1).size(), kTokenCompletion));
  CHECK(d->n_empty_records() == 1);
  CHECK(d->n_tokens() == static_cast<std::int64_t>(doc_ids(*d, 0).size() + doc_ids(*d, 1).size()));
  CHECK(d->pad_id() == tok.eos_ids().front());
}

TEST_CASE("special-token text inside records stays text") {
  const auto& tok = test::data_tokenizer();
  test::TempDir dir;
  test::write_file(dir / "a.jsonl", test::jsonl({R"({"text": "x<|eot_id|>y"})"}));
  const auto d = build(test::data_config(dir.path(), {(dir / "a.jsonl").string()}));
  const Ids ids = doc_ids(*d, 0);
  CHECK(std::count(ids.begin(), ids.end(), tok.token_id("<|eot_id|>")) == 0);
}

TEST_CASE("add_bos / add_eos = false leave the text alone") {
  const auto& tok = test::data_tokenizer();
  test::TempDir dir;
  test::write_file(dir / "a.jsonl", test::jsonl({R"({"text": "hello world"})"}));
  DataConfig c = test::data_config(dir.path(), {(dir / "a.jsonl").string()});
  c.add_bos = false;
  c.add_eos = false;
  CHECK(doc_ids(*build(c), 0) == tok.encode("hello world"));
}

TEST_CASE("prompt/completion records: prompt and completion encoded separately, completion + EOS flagged") {
  const auto& tok = test::data_tokenizer();
  test::TempDir dir;
  test::write_file(
      dir / "pc.jsonl",
      test::jsonl({R"({"prompt": "# add two numbers\ndef add(a, b):", "completion": "\n    return a + b\n"})",
                   R"({"prompt": "x", "completion": ""})", R"j({"prompt": "", "completion": "print(1)"})j"}));
  const auto d = build(test::data_config(dir.path(), {(dir / "pc.jsonl").string()}));
  REQUIRE(d->n_documents() == 2);
  const Ids prompt = tok.encode("# add two numbers\ndef add(a, b):");
  const Ids completion = tok.encode("\n    return a + b\n");
  CHECK(doc_ids(*d, 0) == cat({{tok.bos_id()}, prompt, completion, {tok.eos_ids().front()}}));
  Flags want(1 + prompt.size(), 0);
  want.resize(1 + prompt.size() + completion.size() + 1, kTokenCompletion);
  CHECK(doc_flags(*d, 0) == want);
  CHECK(doc_ids(*d, 1) == cat({{tok.bos_id()}, tok.encode("print(1)"), {tok.eos_ids().front()}}));
  CHECK(d->n_empty_records() == 1);
}

TEST_CASE("chat records: chat_encode layout, only assistant content and its <|eot_id|> flagged") {
  const auto& tok = test::data_tokenizer();
  test::TempDir dir;
  const std::vector<tokenizer::ChatMessage> msgs{{"system", "You write C."},
                                                 {"user", "Say hi"},
                                                 {"assistant", "puts(\"hi\");"},
                                                 {"user", "Again"},
                                                 {"assistant", "  puts(\"hi again\");\n"}};
  nlohmann::json record{{"messages", nlohmann::json::array()}};
  for (const auto& m : msgs) record["messages"].push_back({{"role", m.role}, {"content", m.content}});
  test::write_file(dir / "chat.jsonl", test::jsonl({record.dump(), R"({"messages": []})"}));
  const auto d = build(test::data_config(dir.path(), {(dir / "chat.jsonl").string()}));
  REQUIRE(d->n_documents() == 1);
  CHECK(d->n_empty_records() == 1);
  const Ids ids = tokenizer::chat_encode(tok, msgs, {.add_generation_prompt = false});
  CHECK(doc_ids(*d, 0) == ids);
  // Flagged tokens decode to exactly the assistant contents (stripped), each followed by <|eot_id|>.
  const Flags flags = doc_flags(*d, 0);
  std::string flagged;
  for (std::size_t i = 0; i < ids.size(); ++i)
    if (flags[i]) flagged += tok.decode(std::span(&ids[i], 1));
  CHECK(flagged == "puts(\"hi\");<|eot_id|>puts(\"hi again\");<|eot_id|>");
  // The flagged runs start right after "<|start_header_id|>assistant<|end_header_id|>\n\n".
  const Ids header = tok.encode("<|start_header_id|>assistant<|end_header_id|>\n\n", {.allow_special = true});
  std::size_t runs = 0;
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (flags[i] && (i == 0 || !flags[i - 1])) {
      ++runs;
      REQUIRE(i >= header.size());
      CHECK(Ids(ids.begin() + static_cast<std::ptrdiff_t>(i - header.size()),
                ids.begin() + static_cast<std::ptrdiff_t>(i)) == header);
    }
  }
  CHECK(runs == 2);
}

TEST_CASE("a folder of source files: one raw document per file, in path order") {
  const auto& tok = test::data_tokenizer();
  test::TempDir dir;
  test::write_file(dir / "src/b/main.cpp", "int main() { return 0; }\n");
  test::write_file(dir / "src/a.py", "print('a')\n");
  test::write_file(dir / "src/empty.py", "");
  test::write_file(dir / "src/notes.md", "# not matched\n");
  test::write_file(dir / "src/data.jsonl", "{\"text\": \"a JSON Lines file found by a glob is read as records\"}\n");
  DataConfig c = test::data_config(dir.path(), {(dir / "src").string()});
  c.globs = {"**/*.py", "**/*.cpp", "*.jsonl"};
  const auto d = build(c);
  REQUIRE(d->n_documents() == 3);
  const Ids bos{tok.bos_id()}, eos{tok.eos_ids().front()};
  CHECK(doc_ids(*d, 0) == cat({bos, tok.encode("print('a')\n"), eos}));
  CHECK(doc_ids(*d, 1) == cat({bos, tok.encode("int main() { return 0; }\n"), eos}));
  CHECK(doc_ids(*d, 2) == cat({bos, tok.encode("a JSON Lines file found by a glob is read as records"), eos}));
  CHECK(d->n_empty_records() == 1);
  CHECK(d->inputs().size() == 4);  // a.py, b/main.cpp, data.jsonl, empty.py
  CHECK(d->document_input(1) == 1);

  SUBCASE("format = raw takes .jsonl files as bytes too") {
    c.format = DataFormat::Raw;
    const auto r = build(c);
    REQUIRE(r->n_documents() == 3);
    CHECK(doc_ids(*r, 2) == cat({bos, tok.encode(file_read_text(dir / "src/data.jsonl")), eos}));
  }
}

TEST_CASE("the inputs of the example corpus: every language, one document per file") {
  test::TempDir dir;
  DataConfig c = test::data_config(dir.path(), {(test::source_dir() / "inputs/corpus").string()});
  c.globs = {"**/*.py", "**/*.c",  "**/*.cpp", "**/*.go",  "**/*.java",
             "**/*.js", "**/*.rs", "**/*.sh",  "**/*.sql", "**/*.ts"};
  const auto d = build(c);
  CHECK(d->n_documents() >= 10);
  CHECK(d->n_tokens() > 10000);
}

TEST_CASE("a UTF-8 byte order mark and CRLF line ends are accepted") {
  const auto& tok = test::data_tokenizer();
  test::TempDir dir;
  test::write_file(dir / "a.jsonl", "\xEF\xBB\xBF{\"text\": \"a\"}\r\n{\"text\": \"b\"}\r\n");
  const auto d = build(test::data_config(dir.path(), {(dir / "a.jsonl").string()}));
  REQUIRE(d->n_documents() == 2);
  CHECK(doc_ids(*d, 1) == cat({{tok.bos_id()}, tok.encode("b"), {tok.eos_ids().front()}}));
}

TEST_CASE("bad inputs fail with file:line and what to do") {
  test::TempDir dir;
  auto fails = [&](const std::string& content, const std::string& message,
                   std::optional<DataFormat> format = std::nullopt) {
    test::write_file(dir / "bad.jsonl", content);
    DataConfig c = test::data_config(dir.path(), {(dir / "bad.jsonl").string()});
    c.format = format;
    CHECK_THROWS_WITH_AS(build(c), doctest::Contains(message.c_str()), IoError);
  };
  const std::string f = (dir / "bad.jsonl").string();
  SUBCASE("malformed JSON") { fails("{\"text\": \"a\"}\n\n{\"text\": \"b\"\n", f + ":3: malformed JSON"); }
  SUBCASE("not an object") {
    fails("{\"text\": \"a\"}\n[1, 2]\n", f + ":2: a record must be a JSON object, got an array");
  }
  SUBCASE("mixed formats") {
    fails("{\"text\": \"a\"}\n{\"prompt\": \"p\", \"completion\": \"c\"}\n",
          f + ":2: a prompt_completion record, but line 1 of this file is a text record");
  }
  SUBCASE("unknown record format") {
    fails("{\"text\": \"a\"}\n{\"foo\": 1, \"bar\": 2}\n", f + ":2: unknown record format: keys \"bar\", \"foo\"");
  }
  SUBCASE("ambiguous record") { fails("{\"text\": \"a\", \"messages\": []}\n", f + ":1: ambiguous record"); }
  SUBCASE("wrong field type") { fails("{\"text\": 12}\n", f + ":1: \"text\" must be a string, got a number"); }
  SUBCASE("bad chat message") {
    fails("{\"messages\": [{\"role\": \"user\"}]}\n", f + ":1: messages[0] must be an object with string \"role\"");
  }
  SUBCASE("chat role outside Llama 3.1's") {
    fails("{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"gpt\", \"content\": \"b\"}]}\n",
          f + ":1: messages[1] has role \"gpt\"");
  }
  SUBCASE("messages not an array") { fails("{\"messages\": \"hi\"}\n", f + ":1: \"messages\" must be an array"); }
  SUBCASE("format forced by data.format") {
    fails("{\"text\": \"a\"}\n", f + ":1: a text record, but data.format = \"chat\"", DataFormat::Chat);
  }
  SUBCASE("invalid UTF-8 inside JSON") { fails("{\"text\": \"a\xff\"}\n", f + ":1: malformed JSON"); }
}

TEST_CASE("unknown input formats, binary files and missing files are errors") {
  test::TempDir dir;
  test::write_file(dir / "table.csv", "a,b\n1,2\n");
  test::write_file(dir / "data.json", "[{\"text\": \"a\"}]");
  test::write_file(dir / "src/blob.py", std::string("ab\0cd", 5));
  CHECK_THROWS_WITH_AS(build(test::data_config(dir.path(), {(dir / "table.csv").string()})),
                       doctest::Contains("unknown input format '.csv'"), IoError);
  CHECK_THROWS_WITH_AS(build(test::data_config(dir.path(), {(dir / "data.json").string()})),
                       doctest::Contains("unknown input format '.json'"), IoError);
  DataConfig c = test::data_config(dir.path(), {(dir / "src").string()});
  c.globs = {"**/*.py"};
  CHECK_THROWS_WITH_AS(build(c), doctest::Contains("blob.py' holds a NUL byte at offset 2"), IoError);
  CHECK_THROWS_WITH_AS(
      build(test::data_config(dir.path(), {(dir / "nope.jsonl").string()})),
      doctest::Contains(("data.inputs[0] = '" + (dir / "nope.jsonl").string() + "' does not exist").c_str()), IoError);
  DataConfig raw = test::data_config(dir.path(), {(dir / "table.csv").string()});
  raw.format = DataFormat::Raw;
  CHECK(build(raw)->n_documents() == 1);
}

TEST_CASE("a dataset with no usable examples names its inputs") {
  test::TempDir dir;
  test::write_file(dir / "a.jsonl", "{\"text\": \"\"}\n\n");
  test::write_file(dir / "b.jsonl", "");
  DataConfig c = test::data_config(dir.path(), {(dir / "a.jsonl").string(), (dir / "b.jsonl").string()});
  CHECK_THROWS_WITH_AS(
      build(c),
      doctest::Contains(("no usable examples in data.inputs = ['" + (dir / "a.jsonl").string() + "', '" +
                         (dir / "b.jsonl").string() + "']: 2 files, 1 records, 1 of them empty")
                            .c_str()),
      IoError);
  c.inputs.clear();
  CHECK_THROWS_WITH_AS(build(c), doctest::Contains("data.inputs is empty"), ConfigError);
}

TEST_CASE("documents tokenize the same with many threads as with one") {
  test::TempDir dir;
  std::vector<std::string> records;
  for (int i = 0; i < 300; ++i)
    records.push_back("{\"text\": " +
                      test::json_quote("value_" + std::to_string(i * 7919) + " = f(" + std::to_string(i) + ")") + "}");
  test::write_file(dir / "a.jsonl", test::jsonl(records));
  DataConfig one = test::data_config(dir.path() / "one", {(dir / "a.jsonl").string()});
  DataConfig many = test::data_config(dir.path() / "many", {(dir / "a.jsonl").string()});
  many.tokenize_threads = 4;
  const auto a = build(one);
  const auto b = build(many);
  REQUIRE(a->n_documents() == 300);
  REQUIRE(b->n_documents() == 300);
  for (std::int64_t i = 0; i < 300; ++i) CHECK(doc_ids(*a, i) == doc_ids(*b, i));
  CHECK(a->fingerprint() == b->fingerprint());
}
