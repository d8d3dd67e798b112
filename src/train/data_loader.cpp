#include "train/data_loader.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "train/data_hash.h"

namespace adapt::train {

namespace {

void options_check(const LoaderOptions& o, std::int64_t n_sequences, const char* what, bool need_full_batch) {
  ADAPT_REQUIRE(o.global_batch_size >= 1, ConfigError, "the global batch size must be >= 1, got {}",
                o.global_batch_size);
  ADAPT_REQUIRE(o.dp_size >= 1 && o.dp_rank >= 0 && o.dp_rank < o.dp_size, ConfigError,
                "data-parallel rank {} is outside [0, dp_size = {})", o.dp_rank, o.dp_size);
  ADAPT_REQUIRE(o.global_batch_size % o.dp_size == 0, ConfigError,
                "the global batch of {} sequences does not split evenly over {} data-parallel ranks; choose a "
                "multiple of {}",
                o.global_batch_size, o.dp_size, o.dp_size);
  ADAPT_REQUIRE(!need_full_batch || n_sequences >= o.global_batch_size, ConfigError,
                "the {} data yields {} sequences, fewer than one global batch of {}; lower the batch size or "
                "data.seq_len, or add data",
                what, n_sequences, o.global_batch_size);
}

/// This rank's slice of the global batch `rows` (-1 = padding row).
Batch batch_build(const SequenceSet& s, const std::vector<std::int64_t>& rows, const LoaderOptions& o) {
  const std::int64_t B = static_cast<std::int64_t>(rows.size());
  const std::int64_t n_local = B / o.dp_size;
  const std::int64_t lo = o.dp_rank * n_local;
  const std::int64_t T = s.seq_len();
  Batch b;
  b.n_rows = n_local;
  b.seq_len = T;
  const auto n = static_cast<std::size_t>(n_local * T);
  b.inputs.resize(n);
  b.targets.resize(n);
  b.positions.resize(n);
  b.segment_ids.resize(n);
  for (std::int64_t r = 0; r < n_local; ++r) {
    const std::int64_t id = rows[static_cast<std::size_t>(lo + r)];
    b.sequence_ids.push_back(id);
    if (id >= 0) {
      s.fill(id, b.row(r));
    } else {
      s.fill_padding(b.row(r));
    }
  }
  b.n_loss_tokens = std::count_if(b.targets.begin(), b.targets.end(), [](std::int32_t t) { return t != kIgnoreIndex; });
  b.n_loss_tokens_global = b.n_loss_tokens;
  for (std::int64_t r = 0; r < B; ++r) {
    const std::int64_t id = rows[static_cast<std::size_t>(r)];
    if ((r < lo || r >= lo + n_local) && id >= 0) b.n_loss_tokens_global += s.n_loss_tokens(id);
  }
  return b;
}

std::int64_t find_int(const std::map<std::string, std::int64_t>& ints, std::string_view source,
                      const std::string& key) {
  auto it = ints.find(key);
  ADAPT_REQUIRE(it != ints.end(), IoError,
                "{} has no '{}': it holds no data loader state (written by an older adapt, or not a training "
                "checkpoint)",
                source, key);
  return it->second;
}

}  // namespace

SequenceRow Batch::row(std::int64_t r) {
  const auto at = static_cast<std::size_t>(r * seq_len);
  const auto T = static_cast<std::size_t>(seq_len);
  return {std::span(inputs).subspan(at, T), std::span(targets).subspan(at, T), std::span(positions).subspan(at, T),
          std::span(segment_ids).subspan(at, T)};
}

std::map<std::string, std::int64_t> DataLoaderState::to_ints(std::string_view prefix) const {
  const std::string p(prefix);
  return {{p + "epoch", epoch},
          {p + "position", position},
          {p + "seed", seed},
          {p + "n_sequences", n_sequences},
          {p + "fingerprint", data_fingerprint}};
}

DataLoaderState DataLoaderState::from_ints(const std::map<std::string, std::int64_t>& ints, std::string_view source,
                                           std::string_view prefix) {
  const std::string p(prefix);
  return {.epoch = find_int(ints, source, p + "epoch"),
          .position = find_int(ints, source, p + "position"),
          .seed = find_int(ints, source, p + "seed"),
          .n_sequences = find_int(ints, source, p + "n_sequences"),
          .data_fingerprint = find_int(ints, source, p + "fingerprint")};
}

DataLoader::DataLoader(std::shared_ptr<const SequenceSet> sequences, std::int64_t seed, const LoaderOptions& options)
    : sequences_(std::move(sequences)), seed_(seed), options_(options) {
  ADAPT_CHECK(sequences_ != nullptr, "DataLoader without sequences");
  options_check(options_, sequences_->n_sequences(), "training", /*need_full_batch=*/true);
}

const std::vector<std::int64_t>& DataLoader::epoch_order(std::int64_t epoch) const {
  if (order_epoch_ != epoch) {
    order_ = permutation(sequences_->n_sequences(), seed_derive(seed_, "epoch", epoch));
    order_epoch_ = epoch;
  }
  return order_;
}

std::vector<std::int64_t> DataLoader::global_batch_rows(std::int64_t epoch, std::int64_t step) const {
  const std::int64_t B = options_.global_batch_size;
  ADAPT_CHECK(step >= 0 && (step + 1) * B <= sequences_->n_sequences(), "step {} of epoch {}", step, epoch);
  const auto& order = epoch_order(epoch);
  return {order.begin() + step * B, order.begin() + (step + 1) * B};
}

Batch DataLoader::next() {
  const std::int64_t B = options_.global_batch_size;
  if (position_ + B > sequences_->n_sequences()) {
    ++epoch_;
    position_ = 0;
  }
  const auto& order = epoch_order(epoch_);
  const std::vector<std::int64_t> rows(order.begin() + position_, order.begin() + position_ + B);
  Batch b = batch_build(*sequences_, rows, options_);
  b.epoch = epoch_;
  b.step = position_ / B;
  position_ += B;
  return b;
}

DataLoaderState DataLoader::state() const {
  return {.epoch = epoch_,
          .position = position_,
          .seed = seed_,
          .n_sequences = sequences_->n_sequences(),
          .data_fingerprint = std::bit_cast<std::int64_t>(sequences_->fingerprint())};
}

void DataLoader::restore(const DataLoaderState& s) {
  ADAPT_REQUIRE(s.seed == seed_, ConfigError,
                "the saved data loader state was written with data.seed = {}, this run has data.seed = {}; set "
                "data.seed = {} to resume that run (or start a new one)",
                s.seed, seed_, s.seed);
  ADAPT_REQUIRE(s.n_sequences == sequences_->n_sequences() &&
                    s.data_fingerprint == std::bit_cast<std::int64_t>(sequences_->fingerprint()),
                ConfigError,
                "the saved data loader state is for other training data ({} sequences, fingerprint {}); this run "
                "has {} sequences (fingerprint {}). The inputs or the data settings (seq_len, pack, eval split, "
                "...) changed since the checkpoint; restore them to resume exactly, or start a new run",
                s.n_sequences, hex64(std::bit_cast<std::uint64_t>(s.data_fingerprint)), sequences_->n_sequences(),
                hex64(sequences_->fingerprint()));
  ADAPT_REQUIRE(s.epoch >= 0 && s.position >= 0 && s.position <= s.n_sequences, ConfigError,
                "the saved data loader state is out of range (epoch {}, position {} of {} sequences)", s.epoch,
                s.position, s.n_sequences);
  epoch_ = s.epoch;
  position_ = s.position;
}

EvalLoader::EvalLoader(std::shared_ptr<const SequenceSet> sequences, const LoaderOptions& options)
    : sequences_(std::move(sequences)), options_(options) {
  ADAPT_CHECK(sequences_ != nullptr, "EvalLoader without sequences");
  options_check(options_, sequences_->n_sequences(), "evaluation", /*need_full_batch=*/false);
}

std::int64_t EvalLoader::n_batches() const {
  const std::int64_t B = options_.global_batch_size;
  return (sequences_->n_sequences() + B - 1) / B;
}

Batch EvalLoader::batch(std::int64_t k) const {
  ADAPT_CHECK(k >= 0 && k < n_batches(), "eval batch {} of {}", k, n_batches());
  const std::int64_t B = options_.global_batch_size;
  std::vector<std::int64_t> rows(static_cast<std::size_t>(B), -1);
  for (std::int64_t r = 0; r < B && k * B + r < sequences_->n_sequences(); ++r)
    rows[static_cast<std::size_t>(r)] = k * B + r;
  Batch b = batch_build(*sequences_, rows, options_);
  b.step = k;
  return b;
}

std::uint64_t document_content_key(const TokenDataset& dataset, std::int64_t doc) {
  const std::span<const std::int32_t> t = dataset.document_tokens(doc);
  return xxh64(std::string_view(reinterpret_cast<const char*>(t.data()), t.size_bytes()));
}

DocumentSplit documents_split(std::int64_t n_documents, const std::function<std::uint64_t(std::int64_t)>& content_key,
                              const DataConfig& c) {
  DocumentSplit split;
  std::vector<std::int64_t> order = permutation(n_documents, seed_derive(c.seed, "documents"));
  std::int64_t n_eval = 0;
  if (c.eval_inputs.empty()) {
    if (c.eval_documents) {
      n_eval = *c.eval_documents;
      ADAPT_REQUIRE(n_eval < n_documents, ConfigError,
                    "data.eval_documents = {} leaves no training document: data.inputs hold {} documents; lower it",
                    n_eval, n_documents);
    } else if (c.eval_fraction) {
      n_eval = std::max<std::int64_t>(1, std::llround(*c.eval_fraction * static_cast<double>(n_documents)));
      ADAPT_REQUIRE(n_eval < n_documents, ConfigError,
                    "data.eval_fraction = {} takes {} of the {} documents of data.inputs for evaluation, leaving "
                    "none for training; lower it or add data",
                    *c.eval_fraction, n_eval, n_documents);
    }
  }
  // The eval documents: the smallest keys of (content, seed), ties by position.
  std::vector<bool> is_eval(static_cast<std::size_t>(n_documents), false);
  if (n_eval > 0) {  // the keys read every token: only for an eval split
    const std::uint64_t salt = seed_derive(c.seed, "eval split");
    std::vector<std::pair<std::uint64_t, std::int64_t>> ranked(static_cast<std::size_t>(n_documents));
    for (std::int64_t d = 0; d < n_documents; ++d) {
      const std::uint64_t key = content_key(d);
      ranked[static_cast<std::size_t>(d)] = {
          xxh64(std::string_view(reinterpret_cast<const char*>(&key), sizeof key), salt), d};
    }
    std::partial_sort(ranked.begin(), ranked.begin() + n_eval, ranked.end());
    for (std::int64_t k = 0; k < n_eval; ++k) {
      split.eval.push_back(ranked[static_cast<std::size_t>(k)].second);
      is_eval[static_cast<std::size_t>(ranked[static_cast<std::size_t>(k)].second)] = true;
    }
  }
  std::sort(split.eval.begin(), split.eval.end());
  for (const std::int64_t d : order)
    if (!is_eval[static_cast<std::size_t>(d)]) split.train.push_back(d);
  return split;
}

TrainData train_data_open(const DataConfig& config, const tokenizer::Tokenizer& tok) {
  TrainData d;
  d.dataset = TokenDataset::open(token_cache_path(config, DataInputs::Train, tok));
  d.split = documents_split(
      d.dataset->n_documents(), [&](std::int64_t doc) { return document_content_key(*d.dataset, doc); }, config);
  PackingOptions po{.seq_len = config.seq_len,
                    .pack = config.pack,
                    .cross_document_attention = config.cross_document_attention,
                    .loss_on_completions_only = config.loss_on_completions_only};
  d.train = std::make_shared<SequenceSet>(d.dataset, d.split.train, po);
  ADAPT_REQUIRE(d.train->n_sequences() > 0, ConfigError,
                "data.seq_len = {}: the {} training documents hold {} tokens, fewer than one packed row of seq_len + "
                "1 = {} tokens; lower data.seq_len, set data.pack = false, or add data",
                config.seq_len, d.split.train.size(), d.train->n_tokens(), config.seq_len + 1);
  if (!config.eval_inputs.empty()) {
    d.eval_dataset = TokenDataset::open(token_cache_path(config, DataInputs::Eval, tok));
    for (const CachedInput& e : d.eval_dataset->inputs())
      for (const CachedInput& t : d.dataset->inputs())
        ADAPT_REQUIRE(e.path != t.path && (e.size_bytes == 0 || e.xxh64 != t.xxh64), ConfigError,
                      "evaluation file '{}' {} training file '{}'; data.eval_inputs must not overlap data.inputs",
                      e.path, e.path == t.path ? "is also the" : "has the same bytes as the", t.path);
    d.split.eval.resize(static_cast<std::size_t>(d.eval_dataset->n_documents()));
    for (std::size_t i = 0; i < d.split.eval.size(); ++i) d.split.eval[i] = static_cast<std::int64_t>(i);
  } else if (!d.split.eval.empty()) {
    d.eval_dataset = d.dataset;
  }
  if (d.eval_dataset) {
    PackingOptions eo = po;
    eo.keep_tail = true;
    d.eval = std::make_shared<SequenceSet>(d.eval_dataset, d.split.eval, eo);
  }
  const char* layout = !config.pack                      ? "one document per row"
                       : config.cross_document_attention ? "packed, attention across documents"
                                                         : "packed, attention within documents";
  log::info0(
      "data: {} documents, {} tokens ({} empty records skipped); train: {} documents -> {} rows of {}+1 tokens "
      "({}; {} tokens dropped{})",
      format_count(d.dataset->n_documents()), format_count(d.dataset->n_tokens()), d.dataset->n_empty_records(),
      format_count(static_cast<std::int64_t>(d.split.train.size())), format_count(d.train->n_sequences()),
      config.seq_len, layout, format_count(d.train->n_tokens_dropped()),
      config.pack ? "" : fmt::format(", {} documents truncated", d.train->n_documents_truncated()));
  if (d.eval)
    log::info0("data: eval: {} documents of {} -> {} rows",
               format_count(static_cast<std::int64_t>(d.split.eval.size())),
               config.eval_inputs.empty() ? "data.inputs" : "data.eval_inputs", format_count(d.eval->n_sequences()));
  return d;
}

TrainData train_data_prepare(const DataConfig& config, const tokenizer::Tokenizer& tok,
                             const TokenCacheOptions& options) {
  token_cache_update(config, DataInputs::Train, tok, options);
  if (!config.eval_inputs.empty()) token_cache_update(config, DataInputs::Eval, tok, options);
  return train_data_open(config, tok);
}

}  // namespace adapt::train
