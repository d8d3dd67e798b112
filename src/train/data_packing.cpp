#include "train/data_packing.h"

#include <algorithm>

#include "core/error.h"
#include "train/data_document.h"
#include "train/data_hash.h"

namespace adapt::train {

SequenceSet::SequenceSet(std::shared_ptr<const TokenDataset> data, std::vector<std::int64_t> documents,
                         const PackingOptions& options)
    : data_(std::move(data)), documents_(std::move(documents)), options_(options) {
  ADAPT_CHECK(data_ != nullptr, "SequenceSet without a dataset");
  const std::int64_t T = options_.seq_len;
  ADAPT_REQUIRE(T > 0, ConfigError, "data.seq_len = {} must be > 0", T);
  for (std::int64_t d : documents_)
    ADAPT_CHECK(d >= 0 && d < data_->n_documents(), "document {} of {}", d, data_->n_documents());
  if (options_.pack) {
    stream_starts_.reserve(documents_.size() + 1);
    stream_starts_.push_back(0);
    for (std::int64_t d : documents_) stream_starts_.push_back(stream_starts_.back() + data_->document_size(d));
    n_tokens_ = stream_starts_.back();
    const std::int64_t S = n_tokens_;
    if (options_.keep_tail) {
      n_sequences_ = S >= 2 ? (S - 1 + T - 1) / T : 0;
      n_tokens_dropped_ = S >= 2 ? 0 : S;
    } else {
      n_sequences_ = S >= T + 1 ? (S - 1) / T : 0;
      n_tokens_dropped_ = n_sequences_ > 0 ? S - (n_sequences_ * T + 1) : S;
    }
  } else {
    n_sequences_ = static_cast<std::int64_t>(documents_.size());
    for (std::int64_t d : documents_) {
      const std::int64_t n = data_->document_size(d);
      n_tokens_ += n;
      if (n > T + 1) {
        ++n_documents_truncated_;
        n_tokens_dropped_ += n - (T + 1);
      }
    }
  }
  Xxh64 h(data_->fingerprint());
  h.update(documents_.data(), documents_.size() * sizeof(std::int64_t));
  const std::int64_t opts[] = {T, options_.pack, options_.cross_document_attention, options_.loss_on_completions_only,
                               options_.keep_tail};
  h.update(opts, sizeof opts);
  fingerprint_ = h.digest();
}

template <typename Fn>
std::int64_t SequenceSet::window_for_each(std::int64_t i, Fn&& fn) const {
  ADAPT_CHECK(i >= 0 && i < n_sequences_, "row {} of {}", i, n_sequences_);
  const std::int64_t W = options_.seq_len + 1;
  if (!options_.pack) {
    const std::int64_t d = documents_[static_cast<std::size_t>(i)];
    const auto toks = data_->document_tokens(d);
    const auto flags = data_->document_flags(d);
    const std::int64_t n = std::min<std::int64_t>(W, static_cast<std::int64_t>(toks.size()));
    for (std::int64_t j = 0; j < n; ++j) fn(j, toks[j], j, flags[j]);
    return n;
  }
  const std::int64_t start = i * options_.seq_len;
  // The document holding stream position `start`: the last k with stream_starts_[k] <= start.
  auto k = static_cast<std::size_t>(std::upper_bound(stream_starts_.begin(), stream_starts_.end(), start) -
                                    stream_starts_.begin() - 1);
  std::int64_t offset = start - stream_starts_[k];
  std::int64_t j = 0;
  while (j < W && k < documents_.size()) {
    const std::int64_t d = documents_[k];
    const auto toks = data_->document_tokens(d);
    const auto flags = data_->document_flags(d);
    for (; j < W && offset < static_cast<std::int64_t>(toks.size()); ++j, ++offset)
      fn(j, toks[offset], offset, flags[offset]);
    ++k;
    offset = 0;
  }
  return j;
}

bool SequenceSet::is_target(std::int64_t offset_in_doc, std::uint8_t flags) const {
  return offset_in_doc > 0 && (!options_.loss_on_completions_only || (flags & kTokenCompletion) != 0);
}

void SequenceSet::fill_padding(const SequenceRow& row) const {
  std::fill(row.inputs.begin(), row.inputs.end(), data_->pad_id());
  std::fill(row.targets.begin(), row.targets.end(), kIgnoreIndex);
  std::fill(row.positions.begin(), row.positions.end(), 0);
  std::fill(row.segment_ids.begin(), row.segment_ids.end(), kPadSegment);
}

void SequenceSet::fill(std::int64_t i, const SequenceRow& row) const {
  const std::int64_t T = options_.seq_len;
  ADAPT_CHECK(static_cast<std::int64_t>(row.inputs.size()) == T && static_cast<std::int64_t>(row.targets.size()) == T &&
                  static_cast<std::int64_t>(row.positions.size()) == T &&
                  static_cast<std::int64_t>(row.segment_ids.size()) == T,
              "row spans must have seq_len = {} elements", T);
  fill_padding(row);
  const bool one_segment = options_.pack && options_.cross_document_attention;
  std::int32_t segment = 0;
  std::int32_t position = 0;
  window_for_each(i, [&](std::int64_t j, std::int32_t token, std::int64_t offset, std::uint8_t flags) {
    if (j < T) {
      row.inputs[j] = token;
      if (one_segment) {
        position = static_cast<std::int32_t>(j);
      } else if (j > 0) {
        if (offset == 0) {
          ++segment;
          position = 0;
        } else {
          ++position;
        }
      }
      row.positions[j] = position;
      row.segment_ids[j] = segment;
    }
    if (j > 0 && is_target(offset, flags)) row.targets[j - 1] = token;
  });
}

std::int64_t SequenceSet::n_loss_tokens(std::int64_t i) const {
  std::int64_t n = 0;
  window_for_each(i, [&](std::int64_t j, std::int32_t, std::int64_t offset, std::uint8_t flags) {
    if (j > 0 && is_target(offset, flags)) ++n;
  });
  return n;
}

}  // namespace adapt::train
