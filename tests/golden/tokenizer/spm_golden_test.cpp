// SentencePiece-style (Llama 2 / CodeLlama) parity: the three committed spm_*.tokenizer.json layouts must
// encode every fixture string to HF tokenizers 0.23.3's ids, with and without special-token splitting, and
// decode (also streaming) as HF does.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include "tests/golden/tokenizer/tokenizer_fixtures.h"
#include "tokenizer/stream_decoder.h"

using namespace adapt;
using namespace adapt::tokenizer;
using json = nlohmann::json;

TEST_CASE("SentencePiece-style tokenizer.json: ids, special splitting and decoding match HF tokenizers") {
  const auto rows = test::read_jsonl(test::tokenizer_fixture("spm_encode.jsonl"));
  REQUIRE(rows.size() >= 500);
  for (const char* variant : {"legacy", "metaspace", "metaspace_split"}) {
    CAPTURE(variant);
    const Tokenizer tok = Tokenizer::from_file(test::tokenizer_fixture(fmt::format("spm_{}.tokenizer.json", variant)));
    CHECK(tok.kind() == TokenizerKind::SentencePiece);
    CHECK(tok.bos_id() == 1);
    CHECK(tok.eos_ids() == std::vector<TokenId>{2});
    CHECK(tok.token_id("<0x0A>") == 3 + 0x0A);
    std::size_t n_bad = 0, n_fallback = 0;
    for (const json& row : rows) {
      const std::string text = row["text"];
      const auto expected = test::ids_of(row["ids"][variant]);
      const auto expected_special = row.contains("ids_special") && row["ids_special"].contains(variant)
                                        ? test::ids_of(row["ids_special"][variant])
                                        : expected;
      const std::string expected_text = row.contains("decoded") && row["decoded"].contains(variant)
                                            ? row["decoded"][variant].get<std::string>()
                                            : text;
      for (TokenId id : expected) n_fallback += id >= 3 && id < 259;
      const auto ids = tok.encode(text);
      const auto ids_special = tok.encode(text, {.allow_special = true});
      const std::string decoded = tok.decode(expected);
      StreamDecoder stream(tok);
      std::string streamed;
      for (TokenId id : expected) streamed += stream.push(id);
      streamed += stream.finish();
      if ((ids != expected || ids_special != expected_special || decoded != expected_text ||
           streamed != expected_text) &&
          ++n_bad <= 5)
        FAIL_CHECK(fmt::format("[{}] '{}'\n  {}\n  with specials: {}\n  decoded '{}' streamed '{}' expected '{}'",
                               row["cat"].get<std::string>(), test::escaped(text), test::ids_diff(expected, ids),
                               test::ids_diff(expected_special, ids_special), test::escaped(decoded),
                               test::escaped(streamed), test::escaped(expected_text)));
    }
    MESSAGE(
        fmt::format("{}: {} strings, {} byte-fallback tokens, {} mismatches", variant, rows.size(), n_fallback, n_bad));
    CHECK(n_fallback > 100);  // the fixtures do exercise <0xXX> byte fallback
    CHECK(n_bad == 0);
  }
}

TEST_CASE("SentencePiece-style: BOS/EOS options and invalid UTF-8 round trips through byte fallback") {
  const Tokenizer tok = Tokenizer::from_file(test::tokenizer_fixture("spm_legacy.tokenizer.json"));
  const auto ids = tok.encode("Hello", {.bos = true, .eos = true});
  REQUIRE(ids.size() >= 3);
  CHECK(ids.front() == 1);
  CHECK(ids.back() == 2);
  const std::string bytes = "a\xff\xc3 b\xe2\x82";
  const auto raw = tok.encode(bytes);
  CHECK(tok.decode(raw) != bytes);  // HF's decoder: an invalid byte run becomes U+FFFD per byte
  std::string joined;
  for (std::size_t i = 0; i < raw.size(); ++i)
    joined += i == 0 ? tok.first_token_bytes(raw[i]) : tok.token_bytes(raw[i]);
  CHECK(joined == bytes);  // the token bytes themselves are exact
}
