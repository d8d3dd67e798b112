// The hand-written Llama 3 pre-tokenizer against HF tokenizers' Split(regex) pieces, recorded for every
// non-code fixture string (tests/golden/data/tokenizer/llama3_encode.jsonl, "pieces"). Independent of
// Meta's file, and sharper than ids: a misplaced cut that BPE happens to hide still fails here.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include "tests/golden/tokenizer/tokenizer_fixtures.h"
#include "tokenizer/llama3_pretokenizer.h"

using namespace adapt;

TEST_CASE("llama3_pretokenize cuts every fixture string exactly where HF's Split pre-tokenizer does") {
  const auto rows = test::read_jsonl(test::tokenizer_fixture("llama3_encode.jsonl"));
  std::size_t n_checked = 0, n_bad = 0;
  for (const auto& row : rows) {
    if (!row.contains("pieces")) continue;
    ++n_checked;
    const std::string text = row["text"];
    std::vector<std::size_t> got;
    for (std::string_view p : tokenizer::llama3_pretokenize(text)) got.push_back(p.size());
    const auto expected = row["pieces"].get<std::vector<std::size_t>>();
    if (got != expected && ++n_bad <= 5)
      FAIL_CHECK(fmt::format("[{}] '{}': piece lengths {} expected {}", row["cat"].get<std::string>(),
                             test::escaped(text), fmt::join(got, ","), fmt::join(expected, ",")));
  }
  MESSAGE(fmt::format("{} strings compared piece by piece, {} mismatches", n_checked, n_bad));
  CHECK(n_checked > 1500);
  CHECK(n_bad == 0);
}
