// KV cache for incremental decoding: the rotated keys and the values of every layer, f32 on the host,
// laid out (B, Hkv, S_max, D) per layer so that attention reads each KV head's keys contiguously.
// All sequences of the batch advance together (one position counter); a prefill of T tokens then
// decode steps of one token continue the positions.
#pragma once

#include <cstdint>
#include <vector>

#include "model/llama_config.h"
#include "tensor/tensor.h"

namespace adapt::model {

class KvCache {
 public:
  /// Room for `capacity` positions of `batch` sequences for every layer of `cfg`. ConfigError when a
  /// size is not positive.
  KvCache(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity);
  KvCache(const KvCache&) = delete;  // tensors share storage: a copy would alias the original
  KvCache& operator=(const KvCache&) = delete;
  KvCache(KvCache&&) = default;
  KvCache& operator=(KvCache&&) = default;

  /// Bytes a cache of this size holds: 2 · L · B · Hkv · S · D · 4.
  static std::uint64_t bytes_needed(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity);

  std::int64_t batch() const { return batch_; }
  std::int64_t capacity() const { return capacity_; }
  /// Positions filled so far (the position of the next token).
  std::int64_t n_past() const { return n_past_; }
  std::uint64_t size_bytes() const;

  /// (B, Hkv, S_max, D); rows [0, n_past) are valid, plus the rows written by the current forward.
  const Tensor& k(int layer) const { return k_[static_cast<std::size_t>(layer)]; }
  const Tensor& v(int layer) const { return v_[static_cast<std::size_t>(layer)]; }

  /// Throws ShapeError (with the sizes and a hint) unless `batch` sequences of `n_tokens` more tokens
  /// fit. Called by the forward before it writes anything.
  void check_room(std::int64_t batch, std::int64_t n_tokens) const;
  /// Copies k_new, v_new (B, T, Hkv, D) into positions [n_past, n_past + T) of `layer`.
  void write(int layer, const Tensor& k_new, const Tensor& v_new);
  /// Marks `n_tokens` more positions as filled (after every layer has written them).
  void advance(std::int64_t n_tokens);
  /// Forgets every position (the memory is kept).
  void clear() { n_past_ = 0; }

 private:
  std::int64_t batch_, capacity_, n_kv_heads_, head_dim_;
  std::int64_t n_past_ = 0;
  std::vector<Tensor> k_, v_;
};

}  // namespace adapt::model
