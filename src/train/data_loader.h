// The training and evaluation data of a run: the document split, the packed row sets, and loaders
// that hand each data-parallel rank its slice of every global batch. The shuffle is a seeded
// permutation per epoch, so a DataLoaderState (epoch, position, seed) restores the exact stream.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/tokenizer.h"
#include "train/data_config.h"
#include "train/data_packing.h"
#include "train/token_cache.h"

namespace adapt::train {

/// A data-parallel rank's rows of one global batch. Arrays are row-major (B_local, T).
struct Batch {
  std::int64_t n_rows = 0;                 // B_local = global_batch_size / dp_size
  std::int64_t seq_len = 0;                // T
  std::vector<std::int32_t> inputs;        // (B_local, T) token ids fed to the model
  std::vector<std::int32_t> targets;       // (B_local, T) next token id or kIgnoreIndex (-100)
  std::vector<std::int32_t> positions;     // (B_local, T) RoPE positions
  std::vector<std::int32_t> segment_ids;   // (B_local, T) attention segments; kPadSegment = padding
  std::vector<std::int64_t> sequence_ids;  // (B_local) row index in the SequenceSet; -1 = padding row
  std::int64_t n_loss_tokens = 0;          // targets != kIgnoreIndex in this batch
  /// ... in the whole global batch (every dp rank's slice): normalise the summed token loss by this,
  /// so dp runs and gradient accumulation match the single-rank loss. May be 0 (loss-free batch).
  std::int64_t n_loss_tokens_global = 0;
  std::int64_t epoch = 0;  // training: the epoch the batch belongs to
  std::int64_t step = 0;   // training: batch index within the epoch; eval: batch index

  SequenceRow row(std::int64_t r);  // spans of row r
};

/// Where a training loader stands. Saved in checkpoints; a loader restored from it continues with
/// exactly the batches the saved one would have drawn next.
struct DataLoaderState {
  std::int64_t epoch = 0;
  std::int64_t position = 0;          // rows of this epoch's permutation already drawn (all dp ranks together)
  std::int64_t seed = 0;              // data.seed the permutations come from
  std::int64_t n_sequences = 0;       // rows of the training set (a resumed run must have as many)
  std::int64_t data_fingerprint = 0;  // SequenceSet::fingerprint(), bit-cast: same data and settings

  bool operator==(const DataLoaderState&) const = default;
  /// {"<prefix>epoch": ..., "<prefix>position": ..., ...} for a checkpoint's integer scalars.
  std::map<std::string, std::int64_t> to_ints(std::string_view prefix = "data/") const;
  /// The inverse; IoError naming `source` and the missing key.
  static DataLoaderState from_ints(const std::map<std::string, std::int64_t>& ints, std::string_view source,
                                   std::string_view prefix = "data/");
};

struct LoaderOptions {
  std::int64_t global_batch_size = 1;  // rows per optimizer step, all dp ranks together
  std::int64_t dp_rank = 0;
  std::int64_t dp_size = 1;
};

/// Training batches: epoch e draws the rows in the order of a permutation seeded by (seed, e);
/// global batch k of the epoch is rows perm[k*B, (k+1)*B), and dp rank r takes its slice
/// [r*B/n, (r+1)*B/n). The rows left over at an epoch's end (fewer than B) are skipped. So the
/// union of the ranks' slices, in rank order, is the global batch a single rank would draw.
/// Not thread-safe; one per rank.
class DataLoader {
 public:
  /// ConfigError when B is not a multiple of dp_size, the rank is out of range, or the set has
  /// fewer rows than one global batch.
  DataLoader(std::shared_ptr<const SequenceSet> sequences, std::int64_t seed, const LoaderOptions& options);

  /// This rank's slice of the next global batch; moves on to the next epoch when needed.
  Batch next();
  DataLoaderState state() const;
  /// Continues from `state`. ConfigError when it was saved with another seed or for other data
  /// (different row count or fingerprint), or its position is out of range.
  void restore(const DataLoaderState& state);

  std::int64_t steps_per_epoch() const { return sequences_->n_sequences() / options_.global_batch_size; }
  /// Row indices of global batch `step` of `epoch` (all ranks).
  std::vector<std::int64_t> global_batch_rows(std::int64_t epoch, std::int64_t step) const;
  const SequenceSet& sequences() const { return *sequences_; }

 private:
  const std::vector<std::int64_t>& epoch_order(std::int64_t epoch) const;

  std::shared_ptr<const SequenceSet> sequences_;
  std::int64_t seed_;
  LoaderOptions options_;
  std::int64_t epoch_ = 0;
  std::int64_t position_ = 0;
  mutable std::int64_t order_epoch_ = -1;
  mutable std::vector<std::int64_t> order_;
};

/// Evaluation batches: the rows in set order, global batch k = rows [k*B, (k+1)*B), sliced per dp
/// rank like training; the last global batch is filled up with padding rows (sequence_ids = -1), so
/// every rank gets the same shapes and every eval token is seen once.
class EvalLoader {
 public:
  EvalLoader(std::shared_ptr<const SequenceSet> sequences, const LoaderOptions& options);
  std::int64_t n_batches() const;
  Batch batch(std::int64_t k) const;

 private:
  std::shared_ptr<const SequenceSet> sequences_;
  LoaderOptions options_;
};

/// Which documents train and which evaluate.
struct DocumentSplit {
  std::vector<std::int64_t> train;  // in stream (packing) order: a seeded permutation
  std::vector<std::int64_t> eval;   // ascending
};

/// Splits the `n_documents` documents of data.inputs, given each one's content hash (`content_key`,
/// asked only when there is an eval split to make): eval_documents (or round(eval_fraction * n), at least 1) of them
/// evaluate, those whose hash mixed with data.seed is smallest; the rest train, in the order of a permutation seeded by
/// data.seed. A document's side depends on its content and the seed, not on the other documents, so
/// adding data keeps the eval documents evaluating (but for those that new, smaller keys push out).
/// With eval_inputs (or no eval split) all documents
/// train. ConfigError when the split would leave no training document.
DocumentSplit documents_split(std::int64_t n_documents, const std::function<std::uint64_t(std::int64_t)>& content_key,
                              const DataConfig& config);
/// The content hash of document `doc` of `dataset` (its tokens), for documents_split.
std::uint64_t document_content_key(const TokenDataset& dataset, std::int64_t doc);

/// Everything the trainer reads.
struct TrainData {
  std::shared_ptr<const TokenDataset> dataset;       // data.inputs
  std::shared_ptr<const TokenDataset> eval_dataset;  // data.eval_inputs, or `dataset`; null without eval
  DocumentSplit split;                               // eval indices refer to eval_dataset
  std::shared_ptr<const SequenceSet> train;
  std::shared_ptr<const SequenceSet> eval;  // null without eval data
};

/// Opens the caches token_cache_update() made (on every rank, after rank 0 updated them), splits
/// the documents and cuts the rows; logs a summary on rank 0. Does not read the inputs.
/// ConfigError when the training rows come out empty (too little data for one row).
TrainData train_data_open(const DataConfig& config, const tokenizer::Tokenizer& tok);

/// token_cache_update() for data.inputs (and data.eval_inputs) then train_data_open(): for a single
/// process, or for tests.
TrainData train_data_prepare(const DataConfig& config, const tokenizer::Tokenizer& tok,
                             const TokenCacheOptions& options = {});

}  // namespace adapt::train
