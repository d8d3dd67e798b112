// KV cache for incremental decoding: the rotated keys and the values of every layer, f32 on the host
// or on the model's CUDA device (the allocator given), laid out (B, Hkv, S_max, D) per layer so that
// attention reads each KV head's keys contiguously. Each row (sequence slot) has its own length, so
// sequences of different lengths share one cache: a row is prefilled on its own, rows decode together
// each at its own position, and a finished row is cleared and reused for the next sequence
// (continuous batching).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/llama_config.h"
#include "tensor/tensor.h"

namespace adapt::model {

class KvCache {
 public:
  /// Room for `capacity` positions in each of `batch` rows for every layer of `cfg`; every row starts
  /// empty. ConfigError when a size is not positive. With tensor parallelism over `tp_size` ranks
  /// (model::TensorParallel::size) a rank's cache holds only its Hkv / tp_size KV heads. The tensors
  /// come from `alloc`: model_allocator(model) (llama_device.h) puts them next to the model's weights.
  KvCache(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity, int tp_size = 1,
          Allocator& alloc = host_allocator());
  KvCache(const KvCache&) = delete;  // tensors share storage: a copy would alias the original
  KvCache& operator=(const KvCache&) = delete;
  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = default;

  /// Bytes a cache of this size holds: 2 · L · B · (Hkv / tp_size) · S · D · 4.
  static std::uint64_t bytes_needed(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity,
                                    int tp_size = 1);

  std::int64_t batch() const { return batch_; }
  std::int64_t capacity() const { return capacity_; }
  /// KV heads held per layer (Hkv, or Hkv / tp_size).
  std::int64_t n_kv_heads() const { return n_kv_heads_; }
  /// Positions filled in `row` (the position of its next token).
  std::int64_t n_past(std::int64_t row) const;
  /// Positions filled in every row, for a cache whose rows advance together (one forward over all
  /// rows at a time). InternalError when the rows differ: ask n_past(row) then.
  std::int64_t n_past() const;
  /// (B) positions filled per row.
  std::span<const std::int64_t> lengths() const { return n_past_; }
  std::uint64_t size_bytes() const;

  /// (B, Hkv, S_max, D); in row r, positions [0, n_past(r)) are valid, plus the positions written by
  /// the current forward.
  const Tensor& k(int layer) const { return k_[static_cast<std::size_t>(layer)]; }
  const Tensor& v(int layer) const { return v_[static_cast<std::size_t>(layer)]; }

  /// Throws ShapeError (with the sizes and a hint) unless `batch` sequences of `n_tokens` more tokens
  /// fit in rows 0 .. batch − 1 (batch must equal batch()). Called by the forward before it writes.
  void check_room(std::int64_t batch, std::int64_t n_tokens) const;
  /// The same for the given rows (distinct, in [0, batch())): ShapeError naming the row otherwise.
  void check_room(std::span<const std::int64_t> rows, std::int64_t n_tokens) const;
  /// Copies k_new, v_new (B', T, Hkv, D) into `layer`: sequence b into row rows[b] at positions
  /// [n_past(rows[b]), n_past(rows[b]) + T). Empty `rows` means rows 0 .. B − 1 with B' = batch().
  /// k_new and v_new live on the cache's device (ops::kv_cache_write).
  void write(int layer, const Tensor& k_new, const Tensor& v_new, std::span<const std::int64_t> rows = {});
  /// Marks `n_tokens` more positions as filled in `rows` (every row when empty), after every layer
  /// has written them.
  void advance(std::int64_t n_tokens, std::span<const std::int64_t> rows = {});
  /// Forgets every position of every row (the memory is kept).
  void clear();
  /// Forgets the positions of one row, so that a new sequence can be prefilled into it.
  void clear_row(std::int64_t row);

 private:
  std::int64_t batch_, capacity_, n_kv_heads_, head_dim_;
  std::vector<std::int64_t> n_past_;  // (B) per row
  std::vector<Tensor> k_, v_;
};

}  // namespace adapt::model
