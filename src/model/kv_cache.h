// KV cache for incremental decoding: the rotated keys and the values of every layer, f32 or bf16
// (KvPlacement::dtype; bf16 halves the memory and the bytes attention reads, and attention widens
// each element exactly to f32, so only the rounding on write differs) on the host or on the model's
// CUDA device (the allocator given), laid out (B, Hkv, S_max, D) per layer so that
// attention reads each KV head's keys contiguously. Each row (sequence slot) has its own length, so
// sequences of different lengths share one cache: a row is prefilled on its own, rows decode together
// each at its own position, and a finished row is cleared and reused for the next sequence
// (continuous batching).
// A pipeline stage's cache holds only its layers (KvPlacement::layers). Layers past
// KvPlacement::device_layers spill to host RAM (pinned for a CUDA device): before its attention such a
// layer is copied into one of two staging buffers on the device (the next spilled layer is copied while
// the current one computes; only positions the staging buffer lacks travel, so with at most two spilled
// layers only the new positions move), and its new keys and values are copied back as they are written.
#pragma once

#include <algorithm>
#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

#include "backend/offload_copier.h"
#include "model/llama_config.h"
#include "parallel/shard_spec.h"
#include "tensor/tensor.h"

namespace adapt::model {

/// Which layers a KvCache holds and where.
struct KvPlacement {
  /// The layers held: a pipeline stage's (stage_layer_range); count 0: every layer of the config.
  parallel::Range layers{};
  /// Of those, the first `device_layers` live in the allocator's memory and the rest in host RAM,
  /// staged layer by layer (see the file comment). −1: all of them (nothing spills).
  std::int64_t device_layers = -1;
  /// Element type of the cache: F32, or BF16 (keys and values rounded to nearest even as they are
  /// written; ConfigError for any other type).
  DType dtype = DType::F32;
};

class KvCache {
 public:
  /// Room for `capacity` positions in each of `batch` rows for every layer of `cfg`; every row starts
  /// empty. ConfigError when a size is not positive. With tensor parallelism over `tp_size` ranks
  /// (model::TensorParallel::size) a rank's cache holds only its Hkv / tp_size KV heads. The tensors
  /// come from `alloc`: model_allocator(model) (llama_device.h) puts them next to the model's weights.
  /// `placement` chooses the layers held and how many stay in `alloc`'s memory (ConfigError when the
  /// layers lie outside the config or device_layers is below −1).
  KvCache(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity, int tp_size = 1,
          Allocator& alloc = host_allocator(), const KvPlacement& placement = {});
  ~KvCache();
  KvCache(const KvCache&) = delete;  // tensors share storage: a copy would alias the original
  KvCache& operator=(const KvCache&) = delete;
  KvCache(KvCache&&) noexcept;
  /// Deleted: a defaulted move-assignment would free this cache's buffers before its copier (declared
  /// last) waits for the copies still queued into them. Construct a new cache instead.
  KvCache& operator=(KvCache&&) = delete;

  /// Bytes a cache of this size holds: 2 · L · B · (Hkv / tp_size) · S · D · (4 for f32, 2 for bf16)
  /// (L: every layer, or `n_layers`).
  static std::uint64_t bytes_needed(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity, int tp_size = 1,
                                    std::int64_t n_layers = -1, DType dtype = DType::F32);
  /// Staging buffers on the device of a cache with `n_spilled` layers in host RAM: min(n_spilled, 2).
  static std::int64_t staging_layers(std::int64_t n_spilled) { return std::min<std::int64_t>(n_spilled, 2); }
  /// The device layers (KvPlacement::device_layers) that fit in `budget` bytes when each layer takes
  /// `per_layer`: all `layers` when they fit, else those that fit beside the two staging buffers
  /// (0 when not even those do).
  static std::int64_t device_layers_within(std::uint64_t budget, std::uint64_t per_layer, std::int64_t layers);

  std::int64_t batch() const { return batch_; }
  std::int64_t capacity() const { return capacity_; }
  /// KV heads held per layer (Hkv, or Hkv / tp_size).
  std::int64_t n_kv_heads() const { return n_kv_heads_; }
  std::int64_t head_dim() const { return head_dim_; }
  /// Element type of the keys and values (KvPlacement::dtype).
  DType dtype() const { return dtype_; }
  /// Positions filled in `row` (the position of its next token).
  std::int64_t n_past(std::int64_t row) const;
  /// Positions filled in every row, for a cache whose rows advance together (one forward over all
  /// rows at a time). InternalError when the rows differ: ask n_past(row) then.
  std::int64_t n_past() const;
  /// (B) positions filled per row.
  std::span<const std::int64_t> lengths() const { return n_past_; }
  /// Every byte held: device_bytes() + host_bytes().
  std::uint64_t size_bytes() const { return device_bytes() + host_bytes(); }
  /// Bytes in the allocator's memory: the device layers and the staging buffers.
  std::uint64_t device_bytes() const;
  /// Bytes of the spilled layers in host RAM.
  std::uint64_t host_bytes() const;

  /// The layers held (KvPlacement::layers, resolved).
  parallel::Range layers() const { return layers_; }
  /// Layers kept in the allocator's memory (the first ones); the rest are spilled.
  std::int64_t device_layers() const { return device_layers_; }
  bool spilled(int layer) const { return layer >= layers_.begin + device_layers_; }

  /// Makes `layer`'s keys and values of `rows` (every row when empty) readable through k() and v() on
  /// the cache's device, and starts copying the next spilled layer for the same rows. The forward calls
  /// it for each layer in order before write(). Nothing to do for a layer in device memory.
  void begin_layer(int layer, std::span<const std::int64_t> rows = {});
  /// (B, Hkv, S_max, D) on the cache's device; in row r, positions [0, n_past(r)) are valid, plus the
  /// positions written by the current forward. A spilled layer's tensor is a staging buffer, valid from
  /// its begin_layer() until another layer takes the buffer.
  const Tensor& k(int layer) const { return k_[slot_of(layer)]; }
  const Tensor& v(int layer) const { return v_[slot_of(layer)]; }

  /// Throws ShapeError (with the sizes and a hint) unless `batch` sequences of `n_tokens` more tokens
  /// fit in rows 0 .. batch − 1 (batch must equal batch()). Called by the forward before it writes.
  void check_room(std::int64_t batch, std::int64_t n_tokens) const;
  /// The same for the given rows (distinct, in [0, batch())): ShapeError naming the row otherwise.
  void check_room(std::span<const std::int64_t> rows, std::int64_t n_tokens) const;
  /// Copies k_new, v_new (B', T, Hkv, D) into `layer`: sequence b into row rows[b] at positions
  /// [n_past(rows[b]), n_past(rows[b]) + T). Empty `rows` means rows 0 .. B − 1 with B' = batch().
  /// k_new and v_new are f32 on the cache's device (ops::kv_cache_write rounds them to a bf16 cache).
  void write(int layer, const Tensor& k_new, const Tensor& v_new, std::span<const std::int64_t> rows = {});
  /// Marks `n_tokens` more positions as filled in `rows` (every row when empty), after every layer
  /// has written them.
  void advance(std::int64_t n_tokens, std::span<const std::int64_t> rows = {});
  /// Bytes of n positions of one row and layer, keys or values: n_kv_heads() · n · head_dim() elements.
  std::size_t row_bytes(std::int64_t n) const {
    return static_cast<std::size_t>(n_kv_heads_ * n * head_dim_) * dtype_size(dtype_);
  }
  /// Copies positions [0, n) of `row` in `layer` (held by this cache) to host memory: k_out and v_out
  /// each receive (Hkv, n, D) elements of dtype(), head after head (row_bytes(n) bytes). n <= n_past(row). Synchronous;
  /// a spilled layer is read from host RAM once its pending copies there are done.
  void read_row(int layer, std::int64_t row, std::int64_t n, void* k_out, void* v_out);
  /// The reverse, into an empty `row` (n_past(row) == 0): positions [0, n) of `layer` from host memory
  /// laid out as read_row writes it. After every layer held has been loaded, advance(n, {row}) marks
  /// them filled. ShapeError when n exceeds the capacity or the row is not empty.
  void write_row(int layer, std::int64_t row, std::int64_t n, const void* k_in, const void* v_in);
  /// Copies positions [begin, end) of every layer held from `src_row` to the empty `dst_row`
  /// (n_past(dst_row) == 0; positions before `begin` may have been loaded by write_row), for a sequence
  /// whose first tokens are those of `src_row`'s (prefix sharing, generate/generator.h). The caller knows
  /// what `src_row` holds there: its filled positions, or those of a sequence cleared from it since
  /// (clear_row keeps the bytes). After the copy, advance(end, {dst_row}) marks them filled. On the
  /// cache's device for the device layers, in host RAM for the spilled ones. ShapeError for rows that do
  /// not exist or are the same, a non-empty `dst_row` or a range past the capacity.
  void copy_prefix(std::int64_t src_row, std::int64_t dst_row, std::int64_t begin, std::int64_t end);
  /// Forgets every position of every row (the memory is kept).
  void clear();
  /// Forgets the positions of one row, so that a new sequence can be prefilled into it. The bytes stay
  /// until the row is written again (copy_prefix may read them).
  void clear_row(std::int64_t row);
  /// Waits until the spilled layers' copies in host RAM are complete.
  void synchronize();

 private:
  // One staging buffer: which spilled layer it holds and, per row, how many positions are valid.
  struct Staging {
    std::int64_t layer = -1;
    std::vector<std::int64_t> valid;
  };
  std::int64_t batch_, capacity_, n_kv_heads_, head_dim_;
  DType dtype_;
  parallel::Range layers_;
  std::int64_t device_layers_ = 0;
  std::vector<std::int64_t> n_past_;  // (B) per row
  // k_, v_: the device layers, then up to two staging buffers (the spilled layers' device side).
  std::vector<Tensor> k_, v_;
  std::vector<Tensor> host_k_, host_v_;  // the spilled layers in host RAM
  std::array<Staging, 2> staging_{};
  std::unique_ptr<backend::OffloadCopier> copier_;  // only with spilled layers
  std::int64_t last_ticket_ = 0;

  // `layer` − the first layer held (InternalError unless it is held), and its place among the spilled.
  std::int64_t index_of(int layer) const;
  std::size_t host_index(int layer) const { return static_cast<std::size_t>(index_of(layer) - device_layers_); }
  // The element where position `pos` of (row, head) starts in a layer's (B, Hkv, S_max, D) tensor.
  std::size_t element_of(std::int64_t row, std::int64_t head, std::int64_t pos) const {
    return static_cast<std::size_t>(((row * n_kv_heads_ + head) * capacity_ + pos) * head_dim_);
  }
  // Bytes from one head's positions of a row to the next head's: S_max · D elements.
  std::size_t head_pitch_bytes() const { return static_cast<std::size_t>(capacity_ * head_dim_) * dtype_size(dtype_); }
  std::size_t slot_of(int layer) const;
  std::size_t staging_slot(int layer) const;
  // The tensors that hold `layer`'s keys and values: its device tensors, or its host copies when it is
  // spilled (whose newest positions may still be on their way: synchronize() before reading them).
  std::pair<Tensor*, Tensor*> held(int layer);
  // read_row (into_cache false) and write_row (true): positions [0, n) of (layer, row), head by head,
  // between the layer's memory (its host copy when spilled) and host buffers laid out (Hkv, n, D).
  void copy_row(int layer, std::int64_t row, std::int64_t n, void* k_host, void* v_host, bool into_cache);
  // Queues the copies that bring `layer`'s positions of `rows` missing from its staging buffer there.
  void stage(int layer, std::span<const std::int64_t> rows);
};

}  // namespace adapt::model
