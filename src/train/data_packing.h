// Cutting documents into fixed-length training rows. Packed: the documents, in the given order, form
// one token stream cut into rows of T+1 tokens that overlap by one (row i = stream[i*T, i*T+T+1)), so
// every stream token but the first is a target exactly once. Unpacked: one document per row,
// truncated to T+1 tokens and padded. Rows carry inputs, shifted targets, RoPE positions and
// attention segment ids; README.md ("Rows") has worked examples.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "train/token_cache.h"

namespace adapt::train {

/// Target of a position that has no loss (HF's ignore_index).
inline constexpr std::int32_t kIgnoreIndex = -100;
/// Segment id of padding positions (unpacked rows, the padded last eval row).
inline constexpr std::int32_t kPadSegment = -1;

struct PackingOptions {
  std::int64_t seq_len = 0;  // T
  bool pack = true;
  bool cross_document_attention = false;  // packed rows only
  bool loss_on_completions_only = false;
  /// Packed only: keep the last, partial row (padded) instead of dropping it. Eval sets keep it so
  /// that no eval token is lost; training drops it so every row is full.
  bool keep_tail = false;
};

/// The (T) arrays of one row; spans into a Batch.
struct SequenceRow {
  std::span<std::int32_t> inputs;       // (T) tokens[t]
  std::span<std::int32_t> targets;      // (T) tokens[t+1], or kIgnoreIndex
  std::span<std::int32_t> positions;    // (T) RoPE position of tokens[t]
  std::span<std::int32_t> segment_ids;  // (T) attention segment of tokens[t]; kPadSegment = padding
};

/// The rows cut from `documents` (indices into the dataset, in stream order). Immutable and cheap
/// to query: row i is built on demand from the memory-mapped cache.
///
/// Per row of window w[0..T] (T+1 tokens; j = position in the window):
///  - inputs[t] = w[t]; targets[t] = w[t+1] when w[t+1] is a target, else kIgnoreIndex. A token is a
///    target unless it starts a document (nothing in its document predicts it; this also masks the
///    EOS -> next-BOS pair), is padding, or loss_on_completions_only is set and the token is not
///    flagged kTokenCompletion.
///  - cross_document_attention = false (or unpacked): segment_ids count document starts inside the
///    row (0, 1, 2, ...; a row that begins mid-document starts at 0), positions restart at 0 at each
///    document start and at the row start. The model lets t attend to s <= t with
///    segment_ids[s] == segment_ids[t] (and never to kPadSegment).
///  - cross_document_attention = true: segment_ids = 0 and positions = t (padding: -1 and 0).
///  - padding: inputs = pad_id, targets = kIgnoreIndex, positions = 0, segment_ids = kPadSegment.
class SequenceSet {
 public:
  SequenceSet(std::shared_ptr<const TokenDataset> data, std::vector<std::int64_t> documents,
              const PackingOptions& options);

  std::int64_t n_sequences() const { return n_sequences_; }
  std::int64_t seq_len() const { return options_.seq_len; }
  const PackingOptions& options() const { return options_; }
  const std::vector<std::int64_t>& documents() const { return documents_; }
  const TokenDataset& dataset() const { return *data_; }
  std::int32_t pad_id() const { return data_->pad_id(); }

  /// Writes row `i` (0 <= i < n_sequences()) into `row` (each span of size T).
  void fill(std::int64_t i, const SequenceRow& row) const;
  /// Writes an all-padding row (no targets).
  void fill_padding(const SequenceRow& row) const;
  /// Targets of row `i` that are not kIgnoreIndex (without building the row).
  std::int64_t n_loss_tokens(std::int64_t i) const;

  /// Tokens of the documents.
  std::int64_t n_tokens() const { return n_tokens_; }
  /// Tokens in no row: the stream's tail (packed, keep_tail = false) or the cut-off ends of long
  /// documents (unpacked).
  std::int64_t n_tokens_dropped() const { return n_tokens_dropped_; }
  /// Unpacked: documents longer than T+1 tokens.
  std::int64_t n_documents_truncated() const { return n_documents_truncated_; }
  /// XXH64 of the dataset fingerprint, the document list and the options: equal fingerprints give
  /// equal rows.
  std::uint64_t fingerprint() const { return fingerprint_; }

 private:
  /// Calls fn(j, token, offset_in_document, flags) for the real tokens of row i's window, j ascending
  /// from 0; returns how many there were (< T+1 only for padded rows).
  template <typename Fn>
  std::int64_t window_for_each(std::int64_t i, Fn&& fn) const;
  bool is_target(std::int64_t offset_in_doc, std::uint8_t flags) const;

  std::shared_ptr<const TokenDataset> data_;
  std::vector<std::int64_t> documents_;
  PackingOptions options_;
  std::vector<std::int64_t> stream_starts_;  // packed: (n_docs + 1) prefix sums of document sizes
  std::int64_t n_sequences_ = 0;
  std::int64_t n_tokens_ = 0;
  std::int64_t n_tokens_dropped_ = 0;
  std::int64_t n_documents_truncated_ = 0;
  std::uint64_t fingerprint_ = 0;
};

}  // namespace adapt::train
