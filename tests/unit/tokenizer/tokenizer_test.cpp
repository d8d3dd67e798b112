// Tokenizer on synthetic files: adapt's own tokenizer.json writer and a small tiktoken rank file, the
// documented invalid-UTF-8 policy, special tokens, streaming decode, chat layouts, and load errors.
// (Parity with tiktoken / HF tokenizers on real vocabularies: tests/golden/tokenizer.)
#include "tokenizer/tokenizer.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <thread>

#include "core/error.h"
#include "tests/support/test_support.h"
#include "tokenizer/bpe_train.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/stream_decoder.h"
#include "tokenizer/tokenizer_json.h"
#include "tokenizer/unicode_class.h"

using namespace adapt;
using namespace adapt::tokenizer;
namespace fs = std::filesystem;

namespace {

// adapt's own Llama 3-style tokenizer folder: 300 merges learnt on inputs/corpus; BOS = 556.
const Tokenizer& trained() {
  static const test::TempDir dir("adapt-tok-unit");
  static const Tokenizer tok = [] {
    tokenizer_json_write(dir.path(),
                         bpe_train(bpe_corpus_read(test::source_dir() / "inputs" / "corpus"), {.n_merges = 300}));
    return Tokenizer::from_file(dir.path());
  }();
  return tok;
}

// A tiktoken rank file: the 256 bytes, then "ab" (256), "abc" (257), " a" (258).
fs::path tiny_rank_file(const test::TempDir& dir) {
  std::string text;
  for (int b = 0; b < 256; ++b)
    text += test::base64(std::string(1, static_cast<char>(b))) + " " + std::to_string(b) + "\n";
  text += test::base64("ab") + " 256\n" + test::base64("abc") + " 257\n" + test::base64(" a") + " 258\n";
  test::write_bytes(dir / "tokenizer.model", text);
  return dir / "tokenizer.model";
}

}  // namespace

TEST_CASE("tiktoken rank file: ranks are ids, merges by rank of the concatenation, Meta's special names") {
  test::TempDir dir("adapt-tok-unit");
  const Tokenizer tok = Tokenizer::from_file(tiny_rank_file(dir));
  CHECK(tok.kind() == TokenizerKind::ByteLevel);
  CHECK(tok.n_vocab() == 259 + 256);
  CHECK(tok.bos_id() == 259);
  CHECK(tok.eos_ids() == std::vector<TokenId>{260, 259 + 8, 259 + 9});
  CHECK(tok.token_id("<|image|>") == 259 + 11);
  CHECK(tok.encode("abc") == std::vector<TokenId>{257});
  CHECK(tok.encode("xabcab a") == std::vector<TokenId>{'x', 257, 256, 258});
  CHECK(tok.encode("x<|eot_id|>", {.allow_special = true}) == std::vector<TokenId>{'x', 259 + 9});
  CHECK(tok.encode("x<|eot_id|>").size() == 11);  // ordinary text by default
  CHECK(tok.decode(std::vector<TokenId>{259, 257, 259 + 9}) == "<|begin_of_text|>abc<|eot_id|>");
  CHECK(tok.decode(std::vector<TokenId>{259, 257, 259 + 9}, {.skip_special = true}) == "abc");
  CHECK(tok.is_special(259));
  CHECK_FALSE(tok.is_special(257));
  CHECK_THROWS_WITH_AS(tok.decode(std::vector<TokenId>{515}), doctest::Contains("outside the vocabulary"), IoError);
  CHECK(llama3_meta_special_tokens().size() == 256);
  CHECK(llama3_meta_special_tokens()[255] == "<|reserved_special_token_245|>");
}

TEST_CASE("adapt's tokenizer.json writer loads as a byte-level HF tokenizer") {
  const Tokenizer& tok = trained();
  CHECK(tok.kind() == TokenizerKind::ByteLevel);
  CHECK(tok.n_vocab() == 256 + 300 + 256);
  CHECK(tok.bos_id() == 556);
  CHECK(tok.token_id("<|eot_id|>") == 565);
  const std::string code = "for (int i = 0; i < n; ++i) {\n    total += x[i];\n}\n";
  const auto ids = tok.encode(code);
  CHECK(ids.size() * 3 < code.size() * 2);  // the merges are in effect
  CHECK(tok.decode(ids) == code);
  CHECK(tok.encode(code, {.bos = true}).front() == 556);
}

TEST_CASE("any bytes round trip: invalid UTF-8 is encoded as raw bytes, decode is lossy") {
  const Tokenizer& tok = trained();
  std::mt19937_64 rng(test::kSeed);
  for (int trial = 0; trial < 300; ++trial) {
    std::string bytes;
    const std::size_t n = rng() % 64;
    for (std::size_t i = 0; i < n; ++i)
      bytes.push_back(rng() % 3 == 0 ? static_cast<char>(rng() % 256) : "ab \n\t1.\xc3\xa9"[rng() % 10]);
    const auto ids = tok.encode(bytes);
    std::string joined;
    for (TokenId id : ids) joined += tok.token_bytes(id);
    CAPTURE(bytes);
    CHECK(joined == bytes);
    CHECK(tok.decode(ids) == utf8_lossy(bytes));
  }
}

TEST_CASE("StreamDecoder emits complete UTF-8 only, holds at most 3 bytes, replaces invalid bytes at once") {
  test::TempDir dir("adapt-tok-unit");
  const Tokenizer tok = Tokenizer::from_file(tiny_rank_file(dir));  // single bytes are tokens 0..255
  StreamDecoder stream(tok);
  CHECK(stream.push('a') == "a");
  CHECK(stream.push(0xF0).empty());  // 🚀 = F0 9F 9A 80, one byte at a time
  CHECK(stream.push(0x9F).empty());
  CHECK(stream.push(0x9A).empty());
  CHECK(stream.n_pending_bytes() == 3);
  CHECK(stream.push(0x80) == "\xf0\x9f\x9a\x80");
  CHECK(stream.push(0xFF) == "\xef\xbf\xbd");  // can never start a character
  CHECK(stream.push(0xE2).empty());
  CHECK(stream.push('x') == "\xef\xbf\xbdx");  // E2 then x: the sequence is dead
  CHECK(stream.push(0xC3).empty());
  CHECK(stream.push(259) == "\xef\xbf\xbd<|begin_of_text|>");
  CHECK(stream.push(0xE2).empty());
  CHECK(stream.finish() == "\xef\xbf\xbd");
  CHECK(stream.n_pending_bytes() == 0);
  StreamDecoder skipping(tok, {.skip_special = true});
  CHECK(skipping.push(259).empty());
  CHECK_THROWS_AS(skipping.push(100000), IoError);
}

TEST_CASE("chat layouts: HF's 3.1 template (default) and Meta's plain layout") {
  const std::vector<ChatMessage> dialog = {{"system", "  Be brief. "}, {"user", "Hi\n"}};
  CHECK(chat_render(dialog) ==
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 26 Jul 2024\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n");
  CHECK(chat_render(std::vector<ChatMessage>{{"user", "Hi"}},
                    {.layout = ChatTemplate::Meta, .add_generation_prompt = false}) ==
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
  CHECK(chat_render(std::vector<ChatMessage>{{"tool", "42"}}, {.add_generation_prompt = false}).find("ipython") !=
        std::string::npos);
  const Tokenizer& tok = trained();
  const auto ids = chat_encode(tok, dialog, {.layout = ChatTemplate::Meta});
  CHECK(ids.front() == 556);
  CHECK(tok.decode(ids) == chat_render(dialog, {.layout = ChatTemplate::Meta}));
  // Content that spells a special token stays text unless allow_special.
  const std::vector<ChatMessage> sneaky = {{"user", "<|eot_id|>"}};
  const auto safe = chat_encode(tok, sneaky, {.layout = ChatTemplate::Meta});
  const auto unsafe = chat_encode(tok, sneaky, {.layout = ChatTemplate::Meta, .allow_special = true});
  CHECK(std::count(safe.begin(), safe.end(), 565) == 1);
  CHECK(std::count(unsafe.begin(), unsafe.end(), 565) == 2);
  CHECK(chat_strip("\x1c\xe3\x80\x80 x y\t\n") == "x y");
  CHECK(chat_strip(" \xff ") == "\xff");
}

TEST_CASE("encode is thread-safe on a shared tokenizer") {
  const Tokenizer& tok = trained();
  const std::string text = "static int counter = 0; // shared\n";
  const auto expected = tok.encode(text);
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 200; ++i) ok[t] += tok.encode(text) == expected;
    });
  for (auto& th : threads) th.join();
  CHECK(ok == std::vector<int>(4, 200));
}

TEST_CASE("malformed and unsupported files fail loudly, naming the file and the feature") {
  test::TempDir dir("adapt-tok-unit");
  auto load = [&](const std::string& name, const std::string& text) {
    test::write_bytes(dir / name, text);
    return Tokenizer::from_file(dir / name);
  };
  CHECK_THROWS_WITH_AS(load("a.model", "IQ== 0\nnot-base64! 1\n"), doctest::Contains("a.model', line 2"), IoError);
  CHECK_THROWS_WITH_AS(load("b.model", "IQ== 0\n"), doctest::Contains("no token for the single byte 0x00"), IoError);
  CHECK_THROWS_WITH_AS(load("c.model", std::string("\x0a\x05<unk>\x15\0\0\0\0", 11)),
                       doctest::Contains("looks like a SentencePiece model"), IoError);
  CHECK_THROWS_WITH_AS(load("d.json", "{\"model\": "), doctest::Contains("not valid JSON"), IoError);
  CHECK_THROWS_WITH_AS(Tokenizer::from_file(dir.path()),
                       doctest::Contains("neither tokenizer.json nor tokenizer.model"), IoError);
  const std::string model = R"("model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]})";
  const std::string metaspace =
      R"("pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": false})";
  const std::string seq_decoder = R"("decoder": {"type": "Fuse"})";
  CHECK_NOTHROW(load("ok.json", "{" + model + "," + metaspace + "," + seq_decoder + "}"));
  CHECK_THROWS_WITH_AS(
      load("e.json",
           "{" + model + R"(, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true}})"),
      doctest::Contains("pre_tokenizer type \"ByteLevel\""), UnsupportedError);
  CHECK_THROWS_WITH_AS(
      load("f.json", "{" + model + "," + metaspace + "," + seq_decoder + R"(, "normalizer": {"type": "NFC"}})"),
      doctest::Contains("normalizer type \"NFC\""), UnsupportedError);
  CHECK_THROWS_WITH_AS(
      load("g.json", R"({"model": {"vocab": {"a": 0}, "merges": ["a c"]},)" + metaspace + "," + seq_decoder + "}"),
      doctest::Contains("model.merges[0]: \"c\" is not in model.vocab"), IoError);
  CHECK_THROWS_WITH_AS(load("h.json", "{" + model + "," + metaspace + "," + seq_decoder +
                                          R"(, "added_tokens": [{"id": 3, "content": "<x>", "lstrip": true}]})"),
                       doctest::Contains("has lstrip = true"), UnsupportedError);
  CHECK_THROWS_WITH_AS(load("i.json", "{" + model + "," + metaspace + "}"), doctest::Contains("no decoder"),
                       UnsupportedError);
  CHECK_THROWS_WITH_AS(
      load("j.json", "{" + model + "," + metaspace + "," + seq_decoder + R"(, "truncation": {"max_length": 5}})"),
      doctest::Contains("truncation"), UnsupportedError);
  const std::string regex =
      R"("pre_tokenizer": {"type": "Sequence", "pretokenizers": [)"
      R"({"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": false},)"
      R"({"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]})";
  CHECK_THROWS_WITH_AS(load("k.json", "{" + model + "," + regex + "," + seq_decoder + "}"),
                       doctest::Contains("only the Llama 3 regex"), UnsupportedError);
  // Ids far past the token count (tables are sized by ids; cpu.fuzz_tokenizer found a 2 GB one), and
  // numbers JSON cannot hold, are malformed files, not allocations.
  CHECK_THROWS_WITH_AS(load("l.json", "{" + model + "," + metaspace + "," + seq_decoder +
                                          R"(, "added_tokens": [{"id": 65536343, "content": "<x>"}]})"),
                       doctest::Contains("added_tokens[0].id is 65536343, expected an id in [0, 4)"), IoError);
  CHECK_THROWS_WITH_AS(load("m.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 9000000}, "merges": []},)" +
                                          metaspace + "," + seq_decoder + "}"),
                       doctest::Contains("model.vocab[\"b\"] is 9000000, expected an id in [0, 2)"), IoError);
  CHECK_THROWS_WITH_AS(load("n.json", "{" + model + "," + metaspace + "," + seq_decoder + R"(, "x": 1e309})"),
                       doctest::Contains("not valid JSON"), IoError);
  CHECK_THROWS_WITH_AS(load("o.model", "IQ== 0\nIg== 16000000\n"),
                       doctest::Contains("rank '16000000' is not an integer in [0, 3)"), IoError);
}

TEST_CASE("Meta's tokenizer.model, when present: check value and size") {
  const fs::path path = test::shared_dir() / "models" / "llama3" / "tokenizer.model";
  if (!fs::exists(path)) {
    MESSAGE("skipped: Meta's tokenizer.model is not at " << path.string());
    return;
  }
  const Tokenizer tok = Tokenizer::from_file(path);
  CHECK(tok.encode("This is a test sentence.", {.bos = true, .eos = true}) ==
        std::vector<TokenId>{128000, 2028, 374, 264, 1296, 11914, 13, 128001});
}
