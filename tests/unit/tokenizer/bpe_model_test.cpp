// BpeModel: the tables, hand-worked merges (lowest priority first, leftmost on ties), and the two merge
// loops (quadratic scan for short pieces, heap for long ones) against a naive reference on random input.
#include "tokenizer/bpe_model.h"

#include <doctest/doctest.h>

#include <random>

#include "core/error.h"
#include "tests/support/test_support.h"

using namespace adapt::tokenizer;

namespace {

// Byte-level model over "abcd": single bytes are 0..3, merges as given (priority = order).
BpeModel model(const std::vector<std::pair<std::string, std::string>>& merges) {
  BpeModel m;
  for (int b = 0; b < 4; ++b) {
    const char c = static_cast<char>('a' + b);
    m.vocab.insert(b, std::string(1, c));
    m.byte_ids[static_cast<unsigned char>(c)] = b;
  }
  std::uint32_t priority = 0;
  for (const auto& [l, r] : merges) {
    TokenId id = m.vocab.find(l + r);
    if (id == kNoToken) {
      id = m.vocab.end_id();
      m.vocab.insert(id, l + r);
    }
    m.merges.insert(m.vocab.find(l), m.vocab.find(r), priority++, id);
  }
  return m;
}

std::vector<TokenId> encode(const BpeModel& m, std::string_view piece) {
  std::vector<TokenId> out;
  m.encode_piece(piece, out, "test");
  return out;
}

// The textbook loop: find the lowest-priority adjacent pair (leftmost), merge, repeat.
std::vector<TokenId> naive_merge(const BpeModel& m, std::vector<TokenId> s) {
  while (s.size() > 1) {
    std::uint64_t best = ~std::uint64_t{0};
    std::size_t at = 0;
    for (std::size_t i = 0; i + 1 < s.size(); ++i) {
      const std::uint64_t v = m.merges.find(s[i], s[i + 1]);
      if (v < best) best = v, at = i;
    }
    if (best == ~std::uint64_t{0}) break;
    s[at] = static_cast<TokenId>(best & 0xFFFFFFFFu);
    s.erase(s.begin() + static_cast<std::ptrdiff_t>(at) + 1);
  }
  return s;
}

}  // namespace

TEST_CASE("TokenTable: ids with gaps, duplicates rejected, lookups by bytes") {
  TokenTable t;
  CHECK(t.insert(0, "a"));
  CHECK(t.insert(5, "hello"));
  CHECK_FALSE(t.insert(6, "hello"));  // bytes already a token
  CHECK_FALSE(t.insert(5, "other"));  // id already used
  CHECK(t.find("hello") == 5);
  CHECK(t.find("hell") == kNoToken);
  CHECK(t.bytes(5) == "hello");
  CHECK(t.bytes(3).empty());
  CHECK(t.end_id() == 6);
  CHECK(t.n_tokens() == 2);
  for (int i = 0; i < 5000; ++i) REQUIRE(t.insert(100 + i, "tok" + std::to_string(i)));  // growth keeps entries
  CHECK(t.find("tok4999") == 5099);
  CHECK(t.find("a") == 0);
}

TEST_CASE("MergeTable: the last insertion of a pair wins, absent pairs compare highest") {
  MergeTable m;
  m.insert(1, 2, 7, 10);
  m.insert(1, 2, 3, 11);
  CHECK(m.find(1, 2) == ((std::uint64_t{3} << 32) | 11));
  CHECK(m.find(2, 1) == ~std::uint64_t{0});
  CHECK(m.size() == 1);
}

TEST_CASE("merges apply lowest priority first, leftmost on ties") {
  const BpeModel m = model({{"a", "b"}, {"ab", "c"}, {"b", "c"}, {"a", "a"}});
  CHECK(encode(m, "abc") == std::vector<TokenId>{m.vocab.find("abc")});
  CHECK(encode(m, "bc") == std::vector<TokenId>{m.vocab.find("bc")});
  CHECK(encode(m, "aaa") == std::vector<TokenId>{m.vocab.find("aa"), 0});  // leftmost pair first
  CHECK(encode(m, "abbc") == std::vector<TokenId>{m.vocab.find("ab"), m.vocab.find("bc")});
  CHECK(encode(m, "d").size() == 1);
  CHECK(encode(m, "").empty());
}

TEST_CASE("ignore_merges looks the whole piece up first (tiktoken, HF ignore_merges)") {
  BpeModel m = model({{"a", "b"}, {"b", "c"}});
  m.vocab.insert(m.vocab.end_id(), "abc");  // a token that no merge sequence reaches
  CHECK(encode(m, "abc").size() == 2);      // ab + c
  m.options.ignore_merges = true;
  CHECK(encode(m, "abc") == std::vector<TokenId>{m.vocab.find("abc")});
}

TEST_CASE("short and long pieces merge exactly like the naive loop") {
  const BpeModel m = model({{"a", "b"},
                            {"c", "d"},
                            {"ab", "cd"},
                            {"a", "a"},
                            {"aa", "aa"},
                            {"b", "a"},
                            {"d", "d"},
                            {"abcd", "abcd"},
                            {"ba", "ba"},
                            {"c", "c"},
                            {"aaaa", "b"},
                            {"dd", "a"}});
  std::mt19937_64 rng(adapt::test::kSeed);
  for (int trial = 0; trial < 400; ++trial) {
    const std::size_t n = 1 + rng() % (trial < 200 ? 64 : 400);  // both sides of the 64-symbol switch
    std::string piece;
    for (std::size_t i = 0; i < n; ++i) piece.push_back(static_cast<char>('a' + rng() % 4));
    std::vector<TokenId> symbols;
    for (char c : piece) symbols.push_back(c - 'a');
    const auto expected = naive_merge(m, symbols);
    m.merge(symbols);
    CAPTURE(piece);
    REQUIRE(symbols == expected);
  }
}

TEST_CASE("SentencePiece-style symbols: characters, byte fallback, fused unk") {
  BpeModel m;
  m.options.byte_level = false;
  m.vocab.insert(0, "<unk>");
  m.vocab.insert(1, "\xe2\x96\x81");  // ▁
  m.vocab.insert(2, "h");
  m.vocab.insert(3, "\xc3\xa9");  // é is in the vocabulary
  m.options.unk_id = 0;
  CHECK(encode(m, "h\xc3\xa9") == std::vector<TokenId>{2, 3});
  CHECK(encode(m, "hxy") == std::vector<TokenId>{2, 0, 0});
  m.options.fuse_unk = true;
  CHECK(encode(m, "hxyh") == std::vector<TokenId>{2, 0, 2});
  m.options.byte_fallback = true;
  m.vocab.insert(10 + 'x', "<0x78>");
  m.byte_ids['x'] = 10 + 'x';
  CHECK(encode(m, "hxy") == std::vector<TokenId>{2, 10 + 'x', 0});  // y has no byte token: unk
  m.options.unk_id = kNoToken;
  CHECK_THROWS_WITH_AS(encode(m, "y"), doctest::Contains("cannot encode the character"), adapt::IoError);
}
