// Pre-tokenizer pieces (against hand-derived matches of the Llama 3 regex) and the BPE trainer:
// small cases worked out by hand, determinism, and that merges stay inside pieces on inputs/corpus.
#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "core/error.h"
#include "tests/support/test_support.h"
#include "tokenizer/bpe_pretokenize.h"
#include "tokenizer/bpe_train.h"

using namespace adapt;
using namespace adapt::tokenizer;

namespace {

std::vector<std::string> pieces(std::string_view text) {
  std::vector<std::string> out;
  for (std::string_view p : bpe_pretokenize(text)) out.emplace_back(p);
  return out;
}

using Pieces = std::vector<std::string>;

}  // namespace

TEST_CASE("bpe_pretokenize follows the Llama 3 regex alternatives") {
  CHECK(pieces("Hello world") == Pieces{"Hello", " world"});
  CHECK(pieces("  Hello") == Pieces{" ", " Hello"});  // \s+(?!\S) leaves the last space to the word
  CHECK(pieces("x = 12345;\n") == Pieces{"x", " =", " ", "123", "45", ";\n"});
  CHECK(pieces("don't I'M we'LL") == Pieces{"don", "'t", " I", "'M", " we", "'LL"});
  CHECK(pieces("a\n\n  b") == Pieces{"a", "\n\n", " ", " b"});
  CHECK(pieces("a \n b") == Pieces{"a", " \n", " b"});
  CHECK(pieces("end   ") == Pieces{"end", "   "});
  CHECK(pieces("\tfoo(bar)") == Pieces{"\tfoo", "(bar", ")"});
  CHECK(pieces("((x)) {") == Pieces{"((", "x", "))", " {"});
  CHECK(pieces("h\xC3\xA9llo w\xC3\xB6rld") == Pieces{"h\xC3\xA9llo", " w\xC3\xB6rld"});
  CHECK(pieces("\r\n\r\n") == Pieces{"\r\n\r\n"});
  CHECK(pieces("").empty());
}

TEST_CASE("bpe_pretokenize pieces concatenate back to the text") {
  const std::vector<std::string> texts = tokenizer::bpe_corpus_read(adapt::test::source_dir() / "inputs" / "corpus");
  for (const std::string& text : texts) {
    std::string joined;
    for (std::string_view p : bpe_pretokenize(text)) {
      CHECK_FALSE(p.empty());
      joined += p;
    }
    CHECK(joined == text);
  }
}

TEST_CASE("bpe_train on hand-worked examples") {
  SUBCASE("most frequent pair first, then pairs with the new token") {
    auto merges = bpe_train({"ab ab ab"}, BpeTrainOptions{.n_merges = 10});
    // pieces "ab" x1, " ab" x2: (a,b) = 3, then (" ", ab) = 2; nothing else reaches 2.
    CHECK(merges == std::vector<BpeMerge>{{"a", "b"}, {" ", "ab"}});
  }
  SUBCASE("ties go to the lexicographically smallest bytes") {
    auto merges = bpe_train({"xy zw"}, BpeTrainOptions{.n_merges = 10, .min_pair_count = 1});
    CHECK(merges == std::vector<BpeMerge>{{" ", "z"}, {" z", "w"}, {"x", "y"}});
  }
  SUBCASE("overlapping pairs merge left to right and are recounted") {
    auto merges = bpe_train({"aaaa"}, BpeTrainOptions{.n_merges = 10, .min_pair_count = 1});
    CHECK(merges == std::vector<BpeMerge>{{"a", "a"}, {"aa", "aa"}});
  }
  SUBCASE("n_merges caps the result and bad options are ConfigErrors") {
    CHECK(bpe_train({"ab ab ab"}, BpeTrainOptions{.n_merges = 1}).size() == 1);
    CHECK(bpe_train({"ab ab ab"}, BpeTrainOptions{.n_merges = 0}).empty());
    CHECK(bpe_train({}, BpeTrainOptions{.n_merges = 5}).empty());
    CHECK_THROWS_AS(bpe_train({"ab"}, BpeTrainOptions{.n_merges = -1}), ConfigError);
    CHECK_THROWS_AS(bpe_train({"ab"}, BpeTrainOptions{.n_merges = 1, .min_pair_count = 0}), ConfigError);
  }
  SUBCASE("letters and digits are never merged together") {
    auto merges = bpe_train({"abc123 abc123 abc123 x9 x9"}, BpeTrainOptions{.n_merges = 50, .min_pair_count = 1});
    for (const auto& [l, r] : merges) {
      std::string m = l + r;
      bool has_digit = std::any_of(m.begin(), m.end(), [](char c) { return c >= '0' && c <= '9'; });
      bool has_letter = std::any_of(m.begin(), m.end(), [](char c) { return c >= 'a' && c <= 'z'; });
      CHECK_FALSE((has_digit && has_letter));
    }
  }
}

TEST_CASE("bpe_train on inputs/corpus is deterministic and stays inside pieces") {
  const std::vector<std::string> texts = tokenizer::bpe_corpus_read(adapt::test::source_dir() / "inputs" / "corpus");
  std::size_t n_bytes = 0;
  for (const auto& t : texts) n_bytes += t.size();
  const BpeTrainOptions options{.n_merges = 2000};

  auto t0 = std::chrono::steady_clock::now();
  const std::vector<BpeMerge> merges = bpe_train(texts, options);
  auto t1 = std::chrono::steady_clock::now();
  MESSAGE("trained " << merges.size() << " merges on " << n_bytes << " bytes in "
                     << std::chrono::duration<double>(t1 - t0).count() << " s");
  REQUIRE(merges.size() == 2000);

  // Same input → same merges, also with the texts in another order (only piece counts matter).
  CHECK(bpe_train(texts, options) == merges);
  std::vector<std::string> reversed(texts.rbegin(), texts.rend());
  CHECK(bpe_train(reversed, options) == merges);
  // A shorter run is a prefix of a longer one.
  std::vector<BpeMerge> first_500 = bpe_train(texts, BpeTrainOptions{.n_merges = 500});
  CHECK(std::equal(first_500.begin(), first_500.end(), merges.begin()));

  // Every part is a byte or an earlier merge; every merge makes a new token.
  std::set<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.insert(std::string(1, static_cast<char>(b)));
  for (const auto& [l, r] : merges) {
    CHECK(tokens.count(l) == 1);
    CHECK(tokens.count(r) == 1);
    CHECK(tokens.insert(l + r).second);
  }

  // No merge crosses a piece boundary: each merged token lies inside some piece of the corpus.
  std::set<std::string_view> all_pieces;
  for (const auto& t : texts)
    for (std::string_view p : bpe_pretokenize(t)) all_pieces.insert(p);
  for (const auto& [l, r] : merges) {
    const std::string m = l + r;
    bool inside = std::any_of(all_pieces.begin(), all_pieces.end(),
                              [&](std::string_view p) { return p.find(m) != std::string_view::npos; });
    CHECK_MESSAGE(inside, "merge '" << l << "' + '" << r << "' is not inside any piece");
  }
}
