// The loaders: a seeded shuffle per epoch that visits every row once, data-parallel slices whose
// union is the single-rank global batch, exact resume from a saved state (10 batches straight =
// 5 + save + new loader + 5), the eval split (disjoint from training, seeded, padded last batch),
// and the errors for unusable batch sizes and mismatched states.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>

#include "core/error.h"
#include "tests/support/test_support.h"
#include "tests/unit/train/data_test_util.h"
#include "train/data_loader.h"

using namespace adapt;
using namespace adapt::train;

namespace {

/// A corpus of `n` small documents and its config (seq_len 16, packed).
DataConfig corpus_config(const test::TempDir& dir, int n) {
  std::vector<std::string> records;
  for (int i = 0; i < n; ++i)
    records.push_back(
        "{\"text\": " +
        test::json_quote("def f" + std::to_string(i) + "(x):\n    return x * " + std::to_string(i * 31 % 97) + "\n") +
        "}");
  test::write_file(dir / "code.jsonl", test::jsonl(records));
  DataConfig c = test::data_config(dir.path(), {(dir / "code.jsonl").string()});
  c.seq_len = 16;
  return c;
}

bool same(const Batch& a, const Batch& b) {
  return a.n_rows == b.n_rows && a.seq_len == b.seq_len && a.inputs == b.inputs && a.targets == b.targets &&
         a.positions == b.positions && a.segment_ids == b.segment_ids && a.sequence_ids == b.sequence_ids &&
         a.n_loss_tokens == b.n_loss_tokens && a.n_loss_tokens_global == b.n_loss_tokens_global && a.epoch == b.epoch &&
         a.step == b.step;
}

}  // namespace

TEST_CASE("training batches: a seeded permutation per epoch, every row once per epoch") {
  test::TempDir dir;
  const TrainData data = train_data_prepare(corpus_config(dir, 60), test::data_tokenizer());
  const std::int64_t n = data.train->n_sequences();
  REQUIRE(n >= 20);
  DataLoader loader(data.train, 7, {.global_batch_size = 4});
  const std::int64_t steps = loader.steps_per_epoch();
  CHECK(steps == n / 4);
  std::vector<std::int64_t> epoch0, epoch1;
  for (std::int64_t s = 0; s < steps; ++s) {
    const Batch b = loader.next();
    CHECK(b.epoch == 0);
    CHECK(b.step == s);
    CHECK(b.n_rows == 4);
    CHECK(b.inputs.size() == 4 * 16);
    epoch0.insert(epoch0.end(), b.sequence_ids.begin(), b.sequence_ids.end());
  }
  for (std::int64_t s = 0; s < steps; ++s) {
    const Batch b = loader.next();
    CHECK(b.epoch == 1);
    epoch1.insert(epoch1.end(), b.sequence_ids.begin(), b.sequence_ids.end());
  }
  CHECK(std::set<std::int64_t>(epoch0.begin(), epoch0.end()).size() == static_cast<std::size_t>(steps * 4));
  CHECK(epoch0 != epoch1);  // a new permutation each epoch
  std::vector<std::int64_t> sorted = epoch0;
  std::sort(sorted.begin(), sorted.end());
  CHECK(sorted != epoch0);  // shuffled, not in order

  // The rows' contents are the SequenceSet's rows.
  DataLoader again(data.train, 7, {.global_batch_size = 4});
  const Batch b = again.next();
  for (std::int64_t r = 0; r < 4; ++r) {
    std::vector<std::int32_t> in(16), tg(16), pos(16), seg(16);
    data.train->fill(b.sequence_ids[static_cast<std::size_t>(r)], {in, tg, pos, seg});
    CHECK(std::equal(in.begin(), in.end(), b.inputs.begin() + r * 16));
    CHECK(std::equal(tg.begin(), tg.end(), b.targets.begin() + r * 16));
  }
  CHECK(b.sequence_ids == again.global_batch_rows(0, 0));

  SUBCASE("same seed, same batches; another seed, other batches") {
    DataLoader x(data.train, 7, {.global_batch_size = 4});
    DataLoader y(data.train, 8, {.global_batch_size = 4});
    CHECK(x.next().sequence_ids == b.sequence_ids);
    CHECK(y.next().sequence_ids != b.sequence_ids);
  }
}

TEST_CASE("exact resume: 10 batches straight = 5, save state, new loader from it, 5 more") {
  test::TempDir dir;
  const TrainData data = train_data_prepare(corpus_config(dir, 40), test::data_tokenizer());
  const LoaderOptions opts{.global_batch_size = 6};
  DataLoader straight(data.train, 7, opts);
  REQUIRE(straight.steps_per_epoch() < 10);  // the resume crosses an epoch boundary
  std::vector<Batch> want;
  for (int i = 0; i < 10; ++i) want.push_back(straight.next());

  for (const std::int64_t split : {std::int64_t{5}, straight.steps_per_epoch()}) {
    CAPTURE(split);
    DataLoader first(data.train, 7, opts);
    for (std::int64_t i = 0; i < split; ++i) CHECK(same(first.next(), want[static_cast<std::size_t>(i)]));
    const DataLoaderState saved = first.state();
    // Through a checkpoint's integer scalars.
    const DataLoaderState loaded = DataLoaderState::from_ints(saved.to_ints(), "step_5.h5");
    CHECK(loaded == saved);
    // A new process: the data is opened again and a fresh loader restored.
    const TrainData reopened = train_data_open(corpus_config(dir, 40), test::data_tokenizer());
    DataLoader resumed(reopened.train, 7, opts);
    resumed.restore(loaded);
    for (std::int64_t i = split; i < 10; ++i) CHECK(same(resumed.next(), want[static_cast<std::size_t>(i)]));
  }
  CHECK_THROWS_WITH_AS(DataLoaderState::from_ints({{"data/epoch", 1}}, "ckpt.h5"),
                       doctest::Contains("ckpt.h5 has no 'data/position'"), IoError);
}

TEST_CASE("data-parallel slices: the union over ranks is the single-rank global batch") {
  test::TempDir dir;
  DataConfig c = corpus_config(dir, 40);
  c.loss_on_completions_only = true;  // text: every token a completion; exercises the mask path
  const TrainData data = train_data_prepare(c, test::data_tokenizer());
  const std::int64_t B = 8;
  DataLoader single(data.train, 7, {.global_batch_size = B});
  std::vector<Batch> want;
  for (int i = 0; i < 6; ++i) want.push_back(single.next());
  for (const std::int64_t n : {2, 4, 8}) {
    CAPTURE(n);
    std::vector<DataLoader> ranks;
    for (std::int64_t r = 0; r < n; ++r) ranks.emplace_back(data.train, 7, LoaderOptions{B, r, n});
    for (int i = 0; i < 6; ++i) {
      Batch joined;
      std::int64_t loss_tokens = 0;
      for (DataLoader& rank : ranks) {
        const Batch b = rank.next();
        CHECK(b.n_rows == B / n);
        CHECK(b.n_loss_tokens_global == want[static_cast<std::size_t>(i)].n_loss_tokens_global);
        loss_tokens += b.n_loss_tokens;
        joined.sequence_ids.insert(joined.sequence_ids.end(), b.sequence_ids.begin(), b.sequence_ids.end());
        joined.inputs.insert(joined.inputs.end(), b.inputs.begin(), b.inputs.end());
        joined.targets.insert(joined.targets.end(), b.targets.begin(), b.targets.end());
        joined.positions.insert(joined.positions.end(), b.positions.begin(), b.positions.end());
        joined.segment_ids.insert(joined.segment_ids.end(), b.segment_ids.begin(), b.segment_ids.end());
      }
      const Batch& w = want[static_cast<std::size_t>(i)];
      CHECK(joined.sequence_ids == w.sequence_ids);
      CHECK(joined.inputs == w.inputs);
      CHECK(joined.targets == w.targets);
      CHECK(joined.positions == w.positions);
      CHECK(joined.segment_ids == w.segment_ids);
      CHECK(loss_tokens == w.n_loss_tokens_global);
      CHECK(w.n_loss_tokens == w.n_loss_tokens_global);
    }
  }
  CHECK_THROWS_WITH_AS(DataLoader(data.train, 7, {.global_batch_size = 6, .dp_rank = 0, .dp_size = 4}),
                       doctest::Contains("global batch of 6 sequences does not split evenly over 4"), ConfigError);
  CHECK_THROWS_WITH_AS(DataLoader(data.train, 7, {.global_batch_size = 4, .dp_rank = 4, .dp_size = 4}),
                       doctest::Contains("rank 4 is outside"), ConfigError);
  CHECK_THROWS_WITH_AS(DataLoader(data.train, 7, {.global_batch_size = 100000}),
                       doctest::Contains("fewer than one global batch of 100000"), ConfigError);
}

TEST_CASE("restore refuses a state from another seed or other data") {
  test::TempDir dir;
  const TrainData data = train_data_prepare(corpus_config(dir, 40), test::data_tokenizer());
  DataLoader a(data.train, 7, {.global_batch_size = 2});
  a.next();
  const DataLoaderState s = a.state();
  DataLoader other_seed(data.train, 8, {.global_batch_size = 2});
  CHECK_THROWS_WITH_AS(other_seed.restore(s),
                       doctest::Contains("written with data.seed = 7, this run has data.seed = 8"), ConfigError);
  DataConfig c = corpus_config(dir, 40);
  c.seq_len = 15;
  const TrainData changed = train_data_prepare(c, test::data_tokenizer());
  DataLoader b(changed.train, 7, {.global_batch_size = 2});
  CHECK_THROWS_WITH_AS(b.restore(s), doctest::Contains("the saved data loader state is for other training data"),
                       ConfigError);
  DataLoaderState bad = s;
  bad.position = s.n_sequences + 1;
  CHECK_THROWS_WITH_AS(a.restore(bad), doctest::Contains("out of range"), ConfigError);
}

TEST_CASE("the eval split: seeded, disjoint from training, complete; eval batches are padded") {
  test::TempDir dir;
  DataConfig c = corpus_config(dir, 50);
  c.eval_fraction = 0.2;
  const TrainData data = train_data_prepare(c, test::data_tokenizer());
  REQUIRE(data.eval != nullptr);
  CHECK(data.eval_dataset == data.dataset);
  CHECK(data.split.eval.size() == 10);
  CHECK(data.split.train.size() == 40);
  std::set<std::int64_t> train(data.split.train.begin(), data.split.train.end());
  std::set<std::int64_t> eval(data.split.eval.begin(), data.split.eval.end());
  CHECK(train.size() == 40);
  for (std::int64_t e : eval) CHECK(train.count(e) == 0);
  CHECK(train.size() + eval.size() == 50);
  CHECK(std::is_sorted(data.split.eval.begin(), data.split.eval.end()));

  SUBCASE("the split is a function of the documents' contents and the seed") {
    std::vector<std::uint64_t> keys;
    for (std::int64_t d = 0; d < data.dataset->n_documents(); ++d)
      keys.push_back(document_content_key(*data.dataset, d));
    const auto documents_split = [](const std::vector<std::uint64_t>& k, const DataConfig& config) {
      return train::documents_split(
          static_cast<std::int64_t>(k.size()), [&](std::int64_t d) { return k[static_cast<std::size_t>(d)]; }, config);
    };
    CHECK(documents_split(keys, c).eval == data.split.eval);
    DataConfig other = c;
    other.seed = 8;
    CHECK(documents_split(keys, other).eval != data.split.eval);
    DataConfig count = c;
    count.eval_fraction.reset();
    count.eval_documents = 3;
    CHECK(documents_split(keys, count).eval.size() == 3);
    DataConfig tiny = c;
    tiny.eval_fraction = 0.001;
    CHECK(documents_split(keys, tiny).eval.size() == 1);  // at least one
    DataConfig all = c;
    all.eval_fraction.reset();
    all.eval_documents = 50;
    CHECK_THROWS_WITH_AS(documents_split(keys, all), doctest::Contains("data.eval_documents = 50 leaves no training"),
                         ConfigError);
    // More data (documents added before, after, between): the eval documents of before still evaluate,
    // but for those the new ones push out (at most as many as were added).
    std::vector<std::uint64_t> more;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (i % 10 == 0) more.push_back(0x9e3779b97f4a7c15ULL * (i + 1));  // a new document
      more.push_back(keys[i]);
    }
    // One document added to 50: of the 3 held out, at least 2 stay (a permutation of the count would
    // keep ~0.2 of them).
    std::vector<std::uint64_t> one_more = keys;
    one_more.insert(one_more.begin() + 20, 0x9e3779b97f4a7c15ULL);
    std::set<std::uint64_t> before_eval, after_eval;
    for (std::int64_t d : documents_split(keys, count).eval) before_eval.insert(keys[static_cast<std::size_t>(d)]);
    for (std::int64_t d : documents_split(one_more, count).eval)
      after_eval.insert(one_more[static_cast<std::size_t>(d)]);
    std::int64_t kept = 0;
    for (std::uint64_t k : before_eval) kept += after_eval.count(k);
    CHECK(kept >= 2);
    const std::int64_t added = static_cast<std::int64_t>(more.size() - keys.size());
    DataConfig frac = c;  // eval_fraction 0.2: the eval set grows with the data and keeps its documents
    std::set<std::uint64_t> f_before, f_after;
    for (std::int64_t d : documents_split(keys, frac).eval) f_before.insert(keys[static_cast<std::size_t>(d)]);
    for (std::int64_t d : documents_split(more, frac).eval) f_after.insert(more[static_cast<std::size_t>(d)]);
    std::int64_t f_kept = 0;
    for (std::uint64_t k : f_before) f_kept += f_after.count(k);
    CHECK(f_kept >= static_cast<std::int64_t>(f_before.size()) - added);
  }
  SUBCASE("eval batches cover the eval rows once, in order, the last padded") {
    const std::int64_t n = data.eval->n_sequences();
    REQUIRE(n >= 2);
    std::int64_t tokens_seen = 0;
    const std::int64_t B = 4;
    for (const std::int64_t dp : {1, 2}) {
      std::vector<std::int64_t> rows;
      std::int64_t loss_tokens = 0;
      for (std::int64_t r = 0; r < dp; ++r) {
        EvalLoader ev(data.eval, {.global_batch_size = B, .dp_rank = r, .dp_size = dp});
        CHECK(ev.n_batches() == (n + B - 1) / B);
        for (std::int64_t k = 0; k < ev.n_batches(); ++k) {
          const Batch b = ev.batch(k);
          CHECK(b.n_rows == B / dp);
          rows.insert(rows.end(), b.sequence_ids.begin(), b.sequence_ids.end());
          loss_tokens += b.n_loss_tokens;
        }
      }
      std::sort(rows.begin(), rows.end());
      const auto first_real = std::find_if(rows.begin(), rows.end(), [](std::int64_t v) { return v >= 0; });
      CHECK(first_real - rows.begin() == (n + B - 1) / B * B - n);  // padding rows
      std::vector<std::int64_t> real(first_real, rows.end());
      for (std::int64_t i = 0; i < n; ++i) CHECK(real[static_cast<std::size_t>(i)] == i);
      if (dp == 1) tokens_seen = loss_tokens;
      CHECK(loss_tokens == tokens_seen);
    }
    // Eval rows keep the tail: every eval token but each document's first is a target.
    std::int64_t want = 0;
    for (std::int64_t e : data.split.eval) want += data.dataset->document_size(e) - 1;
    CHECK(tokens_seen == want);
  }
}

TEST_CASE("separate eval inputs: their own cache, never overlapping the training files") {
  test::TempDir dir;
  DataConfig c = corpus_config(dir, 30);
  test::write_file(dir / "eval.jsonl", test::jsonl({R"({"text": "def held_out():\n    pass\n"})",
                                                    R"({"text": "x = [i for i in range(10)]\n"})"}));
  c.eval_inputs = {(dir / "eval.jsonl").string()};
  const TrainData data = train_data_prepare(c, test::data_tokenizer());
  REQUIRE(data.eval != nullptr);
  CHECK(data.eval_dataset != data.dataset);
  CHECK(data.split.eval == std::vector<std::int64_t>{0, 1});
  CHECK(data.split.train.size() == 30);
  CHECK(data.eval->n_sequences() >= 1);

  DataConfig overlap = c;
  overlap.eval_inputs = {(dir / "code.jsonl").string()};
  CHECK_THROWS_WITH_AS(train_data_prepare(overlap, test::data_tokenizer()),
                       doctest::Contains("data.eval_inputs must not overlap data.inputs"), ConfigError);
  test::write_file(dir / "copy.jsonl", file_read_text(dir / "code.jsonl"));
  overlap.eval_inputs = {(dir / "copy.jsonl").string()};
  CHECK_THROWS_WITH_AS(train_data_prepare(overlap, test::data_tokenizer()), doctest::Contains("has the same bytes as"),
                       ConfigError);
}

TEST_CASE("too little data for one row, and unopened caches, are clear errors") {
  test::TempDir dir;
  test::write_file(dir / "a.jsonl", "{\"text\": \"x\"}\n");
  DataConfig c = test::data_config(dir.path(), {(dir / "a.jsonl").string()});
  c.seq_len = 64;
  CHECK_THROWS_WITH_AS(train_data_open(c, test::data_tokenizer()), doctest::Contains("token_cache_update() builds it"),
                       IoError);
  CHECK_THROWS_WITH_AS(train_data_prepare(c, test::data_tokenizer()),
                       doctest::Contains("fewer than one packed row of seq_len + 1 = 65 tokens"), ConfigError);
  c.pack = false;
  CHECK(train_data_prepare(c, test::data_tokenizer()).train->n_sequences() == 1);
}
