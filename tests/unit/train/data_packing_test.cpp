// Rows cut from documents, worked out by hand on one-letter documents (exact inputs, shifted
// targets, -100 masks, segment ids and positions, with and without cross-document attention,
// completion-only loss, unpacked rows, the kept tail), then checked against a plain re-derivation
// on real code documents.
#include <doctest/doctest.h>

#include <algorithm>

#include "core/error.h"
#include "tests/support/test_support.h"
#include "tests/unit/train/data_test_util.h"
#include "train/data_packing.h"

using namespace adapt;
using namespace adapt::train;
using I = std::vector<std::int32_t>;

namespace {

constexpr std::int32_t X = kIgnoreIndex;

std::shared_ptr<const TokenDataset> dataset(const test::TempDir& dir, const std::vector<std::string>& records) {
  test::write_file(dir / "d.jsonl", test::jsonl(records));
  const DataConfig c = test::data_config(dir.path(), {(dir / "d.jsonl").string()});
  return TokenDataset::open(token_cache_update(c, DataInputs::Train, test::data_tokenizer()));
}

struct Row {
  I inputs, targets, positions, segments;
};

Row row(const SequenceSet& s, std::int64_t i) {
  const auto T = static_cast<std::size_t>(s.seq_len());
  Row r{I(T), I(T), I(T), I(T)};
  s.fill(i, {r.inputs, r.targets, r.positions, r.segments});
  return r;
}

std::int32_t id(std::string_view text) {
  const auto ids = test::data_tokenizer().encode(text);
  REQUIRE(ids.size() == 1);
  return ids[0];
}

}  // namespace

TEST_CASE("packed rows of T+1 tokens overlap by one; targets are shifted; document starts are not targets") {
  test::TempDir dir;
  // Three documents [BOS a EOS] [BOS b EOS] [BOS c EOS]: a stream of 9 tokens.
  const auto d = dataset(dir, {R"({"text": "a"})", R"({"text": "b"})", R"({"text": "c"})"});
  const std::int32_t B = test::data_tokenizer().bos_id(), E = test::data_tokenizer().eos_ids().front();
  const std::int32_t a = id("a"), b = id("b"), c = id("c");

  SUBCASE("attention within documents: segments and restarting positions") {
    const SequenceSet s(d, {0, 1, 2}, {.seq_len = 4});
    REQUIRE(s.n_sequences() == 2);  // (9 - 1) / 4
    CHECK(s.n_tokens() == 9);
    CHECK(s.n_tokens_dropped() == 0);
    // row 0 = stream[0, 5) = B a E B b
    Row r = row(s, 0);
    CHECK(r.inputs == I{B, a, E, B});
    CHECK(r.targets == I{a, E, X, b});
    CHECK(r.segments == I{0, 0, 0, 1});
    CHECK(r.positions == I{0, 1, 2, 0});
    CHECK(s.n_loss_tokens(0) == 3);
    // row 1 = stream[4, 9) = b E B c E: begins mid-document, so its positions start at 0 there
    r = row(s, 1);
    CHECK(r.inputs == I{b, E, B, c});
    CHECK(r.targets == I{E, X, c, E});
    CHECK(r.segments == I{0, 0, 1, 1});
    CHECK(r.positions == I{0, 1, 0, 1});
    CHECK(s.n_loss_tokens(1) == 3);
  }
  SUBCASE("attention across documents: one segment, positions 0..T-1, same targets") {
    const SequenceSet s(d, {0, 1, 2}, {.seq_len = 4, .cross_document_attention = true});
    Row r = row(s, 1);
    CHECK(r.inputs == I{b, E, B, c});
    CHECK(r.targets == I{E, X, c, E});
    CHECK(r.segments == I{0, 0, 0, 0});
    CHECK(r.positions == I{0, 1, 2, 3});
  }
  SUBCASE("the document order decides the stream") {
    const SequenceSet s(d, {2, 0, 1}, {.seq_len = 4});
    CHECK(row(s, 0).inputs == I{B, c, E, B});
  }
  SUBCASE("the tail: dropped for training, kept (padded) for eval") {
    const SequenceSet drop(d, {0, 1, 2}, {.seq_len = 3});
    CHECK(drop.n_sequences() == 2);       // rows stream[0,4), stream[3,7)
    CHECK(drop.n_tokens_dropped() == 2);  // stream[7], stream[8]
    const SequenceSet keep(d, {0, 1, 2}, {.seq_len = 3, .keep_tail = true});
    REQUIRE(keep.n_sequences() == 3);
    CHECK(keep.n_tokens_dropped() == 0);
    const Row r = row(keep, 2);  // stream[6, 9) = B c E, then padding
    CHECK(r.inputs == I{B, c, E});
    CHECK(r.targets == I{c, E, X});
    CHECK(r.segments == I{0, 0, 0});
    CHECK(r.positions == I{0, 1, 2});
    const SequenceSet short_tail(d, {0}, {.seq_len = 8, .keep_tail = true});
    REQUIRE(short_tail.n_sequences() == 1);
    const Row p = row(short_tail, 0);
    CHECK(p.inputs == I{B, a, E, E, E, E, E, E});  // pad id = EOS
    CHECK(p.targets == I{a, E, X, X, X, X, X, X});
    CHECK(p.segments == I{0, 0, 0, -1, -1, -1, -1, -1});
    CHECK(p.positions == I{0, 1, 2, 0, 0, 0, 0, 0});
  }
  SUBCASE("too few tokens for one row: no rows, everything dropped") {
    const SequenceSet s(d, {0, 1}, {.seq_len = 6});
    CHECK(s.n_sequences() == 0);
    CHECK(s.n_tokens_dropped() == 6);
  }
}

TEST_CASE("completion-only loss masks prompt tokens to -100") {
  test::TempDir dir;
  // Two documents [BOS p c EOS] with p the prompt, c the completion: a stream of 8 tokens.
  const auto d = dataset(dir, {R"({"prompt": "p", "completion": "c"})", R"({"prompt": "q", "completion": "d"})"});
  const std::int32_t B = test::data_tokenizer().bos_id(), E = test::data_tokenizer().eos_ids().front();
  const std::int32_t p = id("p"), c = id("c"), q = id("q"), dd = id("d");
  const SequenceSet all(d, {0, 1}, {.seq_len = 3});
  const SequenceSet completions(d, {0, 1}, {.seq_len = 3, .loss_on_completions_only = true});
  REQUIRE(all.n_sequences() == 2);
  CHECK(all.n_tokens_dropped() == 1);
  CHECK(row(all, 0).inputs == I{B, p, c});
  CHECK(row(all, 0).targets == I{p, c, E});
  CHECK(row(completions, 0).targets == I{X, c, E});
  CHECK(row(all, 1).inputs == I{E, B, q});  // stream[3, 7)
  CHECK(row(all, 1).targets == I{X, q, dd});
  CHECK(row(completions, 1).targets == I{X, X, dd});
  CHECK(completions.n_loss_tokens(0) == 2);
  CHECK(completions.n_loss_tokens(1) == 1);
  CHECK(all.fingerprint() != completions.fingerprint());
}

TEST_CASE("unpacked rows: one document each, truncated to T+1 tokens or padded") {
  test::TempDir dir;
  const auto d = dataset(dir, {R"({"text": "a"})", R"({"text": "x = 1; y = 2; z = 3; w = 4;"})"});
  const std::int32_t B = test::data_tokenizer().bos_id(), E = test::data_tokenizer().eos_ids().front();
  const std::int32_t a = id("a");
  const SequenceSet s(d, {0, 1}, {.seq_len = 4, .pack = false});
  REQUIRE(s.n_sequences() == 2);
  Row r = row(s, 0);
  CHECK(r.inputs == I{B, a, E, E});
  CHECK(r.targets == I{a, E, X, X});
  CHECK(r.positions == I{0, 1, 2, 0});
  CHECK(r.segments == I{0, 0, 0, -1});
  const auto long_doc = d->document_tokens(1);
  REQUIRE(long_doc.size() > 5);
  r = row(s, 1);
  CHECK(r.inputs == I(long_doc.begin(), long_doc.begin() + 4));
  CHECK(r.targets == I(long_doc.begin() + 1, long_doc.begin() + 5));
  CHECK(r.positions == I{0, 1, 2, 3});
  CHECK(r.segments == I{0, 0, 0, 0});
  CHECK(s.n_documents_truncated() == 1);
  CHECK(s.n_tokens_dropped() == static_cast<std::int64_t>(long_doc.size()) - 5);
}

TEST_CASE("packed rows equal a plain re-derivation on real code documents") {
  test::TempDir dir;
  DataConfig c = test::data_config(dir.path(), {(test::source_dir() / "inputs/corpus").string()});
  c.globs = {"**/*.py", "**/*.rs", "**/*.sql"};
  const auto d = TokenDataset::open(token_cache_update(c, DataInputs::Train, test::data_tokenizer()));
  std::vector<std::int64_t> docs;
  for (std::int64_t i = d->n_documents() - 1; i >= 0; --i) docs.push_back(i);
  // The stream, each token's offset in its document and its flags.
  I stream, offset;
  for (std::int64_t doc : docs) {
    const auto t = d->document_tokens(doc);
    for (std::size_t k = 0; k < t.size(); ++k) {
      stream.push_back(t[k]);
      offset.push_back(static_cast<std::int32_t>(k));
    }
  }
  for (const bool cross : {false, true}) {
    for (const std::int64_t T : {1, 7, 64, 1000}) {
      CAPTURE(cross);
      CAPTURE(T);
      const SequenceSet s(d, docs, {.seq_len = T, .cross_document_attention = cross});
      const auto S = static_cast<std::int64_t>(stream.size());
      REQUIRE(s.n_sequences() == (S - 1) / T);
      std::int64_t n_targets = 0;
      for (std::int64_t i = 0; i < s.n_sequences(); ++i) {
        const Row r = row(s, i);
        std::int32_t seg = 0, pos = 0;
        bool ok = true;
        for (std::int64_t t = 0; t < T; ++t) {
          const std::int64_t j = i * T + t;
          if (t > 0) {
            const bool start = offset[static_cast<std::size_t>(j)] == 0;
            seg = cross ? 0 : seg + (start ? 1 : 0);
            pos = cross ? static_cast<std::int32_t>(t) : (start ? 0 : pos + 1);
          }
          const std::int32_t want_target =
              offset[static_cast<std::size_t>(j + 1)] > 0 ? stream[static_cast<std::size_t>(j + 1)] : X;
          n_targets += want_target != X;
          ok = ok && r.inputs[static_cast<std::size_t>(t)] == stream[static_cast<std::size_t>(j)] &&
               r.targets[static_cast<std::size_t>(t)] == want_target &&
               r.segments[static_cast<std::size_t>(t)] == seg && r.positions[static_cast<std::size_t>(t)] == pos;
        }
        CHECK(ok);
        CHECK(s.n_loss_tokens(i) ==
              std::count_if(r.targets.begin(), r.targets.end(), [](std::int32_t v) { return v != X; }));
      }
      // Every token after the first of the covered stream is a target exactly once, except document starts.
      std::int64_t starts = 0;
      for (std::int64_t j = 1; j <= s.n_sequences() * T; ++j) starts += offset[static_cast<std::size_t>(j)] == 0;
      CHECK(n_targets == s.n_sequences() * T - starts);
    }
  }
}
