// tokenizer_file_info: tiktoken rank files and HF tokenizer.json (synthetic files), error messages
// for malformed files, and Meta's Llama 3 tokenizer.model from ../shared when it is there.
#include <doctest/doctest.h>

#include "core/error.h"
#include "tests/support/test_support.h"
#include "tokenizer/tokenizer_file_info.h"

using namespace adapt;
using namespace adapt::tokenizer;

namespace {

TokenizerFileInfo info_of(const adapt::test::TempDir& dir, const std::string& name, const std::string& contents) {
  adapt::test::write_bytes(dir / name, contents);
  return tokenizer_file_info(dir / name);
}

}  // namespace

TEST_CASE("tiktoken rank files: vocab = max rank + 1 + 256, Llama 3 specials after the ranks") {
  adapt::test::TempDir dir("adapt-tokinfo");
  // "IQ==" = "!", "Ig==" = "\"", "aGk=" = "hi"; ranks need not be in line order.
  TokenizerFileInfo info = info_of(dir, "tokenizer.model", "IQ== 0\naGk= 2\r\nIg== 1\n\n");
  CHECK(info.kind == "tiktoken");
  CHECK(info.vocab_size == 3 + 256);
  CHECK(info.bos_id == 3);
  CHECK(info.eos_ids == std::vector<std::int64_t>{4, 11, 12});
}

TEST_CASE("malformed tiktoken files are IoErrors naming the file and line") {
  adapt::test::TempDir dir("adapt-tokinfo");
  auto bad = [&](const std::string& contents) { return info_of(dir, "bad.model", contents); };
  CHECK_THROWS_WITH_AS(bad("IQ== 0\nnot-base64! 1\n"),
                       doctest::Contains("bad.model', line 2: token 'not-base64!' is not base64"), IoError);
  CHECK_THROWS_WITH_AS(bad("IQ== zero\n"), doctest::Contains("rank 'zero' is not an integer"), IoError);
  CHECK_THROWS_WITH_AS(bad("IQ== -1\n"), doctest::Contains("is not an integer"), IoError);
  CHECK_THROWS_WITH_AS(bad("IQ== 0\nIg== 0\n"), doctest::Contains("rank 0 appears twice"), IoError);
  CHECK_THROWS_WITH_AS(bad("IQ==\n"), doctest::Contains("is not of the form 'base64 rank'"), IoError);
  CHECK_THROWS_WITH_AS(bad(""), doctest::Contains("holds no 'base64 rank' lines"), IoError);
  CHECK_THROWS_WITH_AS(tokenizer_file_info(dir / "missing.model"), doctest::Contains("missing.model"), IoError);
}

TEST_CASE("HF tokenizer.json: vocab = max id + 1, BOS/EOS by name") {
  adapt::test::TempDir dir("adapt-tokinfo");
  SUBCASE("Llama 3 style: specials among added_tokens") {
    TokenizerFileInfo info = info_of(dir, "tokenizer.json", R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1}},
      "added_tokens": [{"id": 2, "content": "<|begin_of_text|>"}, {"id": 3, "content": "<|end_of_text|>"},
                       {"id": 11, "content": "<|eot_id|>"}, {"id": 10, "content": "<|eom_id|>"}]})");
    CHECK(info.kind == "hf-json");
    CHECK(info.vocab_size == 12);
    CHECK(info.bos_id == 2);
    CHECK(info.eos_ids == std::vector<std::int64_t>{3, 10, 11});
  }
  SUBCASE("Llama 2 style: <s> and </s>, also present in model.vocab") {
    TokenizerFileInfo info = info_of(dir, "t.json", R"({"model": {"vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "x": 3}},
      "added_tokens": [{"id": 0, "content": "<unk>"}, {"id": 1, "content": "<s>"}, {"id": 2, "content": "</s>"}]})");
    CHECK(info.vocab_size == 4);
    CHECK(info.bos_id == 1);
    CHECK(info.eos_ids == std::vector<std::int64_t>{2});
  }
  SUBCASE("no special tokens") {
    TokenizerFileInfo info = info_of(dir, "t.json", R"({"model": {"vocab": {"a": 0, "b": 7}}})");
    CHECK(info.vocab_size == 8);
    CHECK(info.bos_id == -1);
    CHECK(info.eos_ids.empty());
  }
}

TEST_CASE("malformed tokenizer.json files are IoErrors naming the file") {
  adapt::test::TempDir dir("adapt-tokinfo");
  auto bad = [&](const std::string& contents) { return info_of(dir, "bad.json", contents); };
  CHECK_THROWS_WITH_AS(bad(R"({"model": )"), doctest::Contains("bad.json' is not valid JSON"), IoError);
  CHECK_THROWS_WITH_AS(bad("[1, 2]"), doctest::Contains("top level is a array, expected an object"), IoError);
  CHECK_THROWS_WITH_AS(bad(R"({"version": "1.0"})"), doctest::Contains("has no \"model\" object"), IoError);
  CHECK_THROWS_WITH_AS(bad(R"({"model": {"type": "WordPiece"}})"), doctest::Contains("no \"model.vocab\" object"),
                       IoError);
  CHECK_THROWS_WITH_AS(bad(R"({"model": {"vocab": {"a": "zero"}}})"),
                       doctest::Contains("expected a non-negative integer"), IoError);
  CHECK_THROWS_WITH_AS(bad(R"({"model": {"vocab": {}}, "added_tokens": [{"content": "x"}]})"),
                       doctest::Contains("added_tokens[0] needs an integer \"id\""), IoError);
}

TEST_CASE("Meta's Llama 3 tokenizer.model (from ../shared, when present)") {
  const fs::path path = adapt::test::shared_dir() / "models" / "llama3" / "tokenizer.model";
  if (!fs::exists(path)) {
    MESSAGE("skipped: " << path.string() << " not found");
    return;
  }
  TokenizerFileInfo info = tokenizer_file_info(path);
  CHECK(info.kind == "tiktoken");
  CHECK(info.vocab_size == 128256);
  CHECK(info.bos_id == 128000);
  CHECK(info.eos_ids == std::vector<std::int64_t>{128001, 128008, 128009});
}
