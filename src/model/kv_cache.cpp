#include "model/kv_cache.h"

#include <algorithm>

#include "backend/backend.h"
#include "core/error.h"
#include "core/strings.h"
#include "ops/elementwise.h"

namespace adapt::model {

namespace {
// Cache row of sequence b: rows[b], or b itself when no rows are given.
std::int64_t row_of(std::span<const std::int64_t> rows, std::int64_t b) {
  return rows.empty() ? b : rows[static_cast<std::size_t>(b)];
}
}  // namespace

KvCache::KvCache(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity, int tp_size, Allocator& alloc,
                 const KvPlacement& placement)
    : batch_(batch),
      capacity_(capacity),
      n_kv_heads_(cfg.n_kv_heads / std::max(tp_size, 1)),
      head_dim_(cfg.head_dim),
      dtype_(placement.dtype),
      layers_(placement.layers.count == 0 ? parallel::Range{0, cfg.n_layers} : placement.layers) {
  ADAPT_REQUIRE(batch > 0 && capacity > 0, ConfigError,
                "KV cache: batch = {} and capacity = {} positions must both be positive", batch, capacity);
  ADAPT_REQUIRE(tp_size >= 1 && cfg.n_kv_heads % tp_size == 0, ConfigError,
                "KV cache: num_key_value_heads = {} is not split evenly over tp = {} ranks", cfg.n_kv_heads, tp_size);
  ADAPT_REQUIRE(layers_.begin >= 0 && layers_.count > 0 && layers_.end() <= cfg.n_layers, ConfigError,
                "KV cache: layers [{}, {}) are not among the model's {} layers", layers_.begin, layers_.end(),
                cfg.n_layers);
  ADAPT_REQUIRE(placement.device_layers >= -1, ConfigError,
                "KV cache: device_layers = {} must be -1 (every layer) or a number of layers >= 0",
                placement.device_layers);
  ADAPT_REQUIRE(dtype_ == DType::F32 || dtype_ == DType::BF16, ConfigError,
                "KV cache: element type {} is not supported; use f32 or bf16", dtype_name(dtype_));
  device_layers_ = placement.device_layers < 0 ? layers_.count : std::min(placement.device_layers, layers_.count);
  n_past_.assign(static_cast<std::size_t>(batch), 0);
  const Shape shape{batch, n_kv_heads_, capacity, head_dim_};
  for (std::int64_t i = 0; i < device_layers_; ++i) {
    const std::string l = std::to_string(layers_.begin + i);
    k_.push_back(Tensor::empty(shape, dtype_, alloc, "kv_cache.k." + l));
    v_.push_back(Tensor::empty(shape, dtype_, alloc, "kv_cache.v." + l));
  }
  const std::int64_t n_spilled = layers_.count - device_layers_;
  if (n_spilled == 0) return;
  copier_ = backend::offload_copier_for(alloc.device());
  for (std::int64_t i = 0; i < n_spilled; ++i) {
    const std::string l = std::to_string(layers_.begin + device_layers_ + i);
    host_k_.push_back(Tensor::empty(shape, dtype_, copier_->host_allocator(), "kv_cache.k." + l + ".host"));
    host_v_.push_back(Tensor::empty(shape, dtype_, copier_->host_allocator(), "kv_cache.v." + l + ".host"));
  }
  for (std::int64_t s = 0; s < staging_layers(n_spilled); ++s) {
    k_.push_back(Tensor::empty(shape, dtype_, alloc, "kv_cache.k.staging" + std::to_string(s)));
    v_.push_back(Tensor::empty(shape, dtype_, alloc, "kv_cache.v.staging" + std::to_string(s)));
    staging_[static_cast<std::size_t>(s)].valid.assign(static_cast<std::size_t>(batch), 0);
  }
}

KvCache::~KvCache() = default;  // the copier waits for its copies before the host layers are freed
KvCache::KvCache(KvCache&&) noexcept = default;

std::uint64_t KvCache::bytes_needed(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity, int tp_size,
                                    std::int64_t n_layers, DType dtype) {
  const std::int64_t kv_heads = cfg.n_kv_heads / std::max(tp_size, 1);
  const std::int64_t layers = n_layers < 0 ? cfg.n_layers : n_layers;
  return 2ull * static_cast<std::uint64_t>(layers * batch * kv_heads * capacity * cfg.head_dim) * dtype_size(dtype);
}

std::int64_t KvCache::device_layers_within(std::uint64_t budget, std::uint64_t per_layer, std::int64_t layers) {
  if (static_cast<std::uint64_t>(layers) * per_layer <= budget) return layers;
  const auto fit = static_cast<std::int64_t>(budget / per_layer);  // per_layer > 0 here
  return std::max<std::int64_t>(fit - 2, 0);
}

std::uint64_t KvCache::device_bytes() const {
  std::uint64_t n = 0;
  for (const Tensor& t : k_) n += t.size_bytes();
  for (const Tensor& t : v_) n += t.size_bytes();
  return n;
}

std::uint64_t KvCache::host_bytes() const {
  std::uint64_t n = 0;
  for (const Tensor& t : host_k_) n += t.size_bytes();
  for (const Tensor& t : host_v_) n += t.size_bytes();
  return n;
}

std::int64_t KvCache::index_of(int layer) const {
  ADAPT_CHECK(layer >= layers_.begin && layer < layers_.end(), "KV cache: layer {} is not among its layers [{}, {})",
              layer, layers_.begin, layers_.end());
  return layer - layers_.begin;
}

std::size_t KvCache::staging_slot(int layer) const {
  return host_index(layer) % static_cast<std::size_t>(staging_layers(layers_.count - device_layers_));
}

std::size_t KvCache::slot_of(int layer) const {
  if (!spilled(layer)) return static_cast<std::size_t>(index_of(layer));
  const std::size_t s = staging_slot(layer);
  ADAPT_CHECK(staging_[s].layer == layer,
              "KV cache: spilled layer {} is not staged (its buffer holds layer {}); "
              "begin_layer({}) comes first",
              layer, staging_[s].layer, layer);
  return static_cast<std::size_t>(device_layers_) + s;
}

void KvCache::stage(int layer, std::span<const std::int64_t> rows) {
  const std::size_t s = staging_slot(layer);
  Staging& st = staging_[s];
  if (st.layer != layer) {
    st.layer = layer;
    std::fill(st.valid.begin(), st.valid.end(), 0);
  }
  const Tensor& dk = k_[static_cast<std::size_t>(device_layers_) + s];
  const Tensor& dv = v_[static_cast<std::size_t>(device_layers_) + s];
  const std::size_t h = host_index(layer);
  const std::int64_t n_rows = rows.empty() ? batch_ : static_cast<std::int64_t>(rows.size());
  bool fenced = false;
  for (std::int64_t b = 0; b < n_rows; ++b) {
    const auto r = static_cast<std::size_t>(row_of(rows, b));
    const std::int64_t from = st.valid[r], to = n_past_[r];
    if (from >= to) continue;
    if (!fenced) {  // the buffer's previous layer may still be read by queued attention
      copier_->order_after(backend::cuda_compute_stream());
      fenced = true;
    }
    // Positions [from, to) of every head of the row: one strided copy each for k and v.
    const std::size_t elem = dtype_size(dtype_), pitch = head_pitch_bytes();
    const auto bytes = static_cast<std::size_t>((to - from) * head_dim_) * elem;
    const std::size_t at = element_of(static_cast<std::int64_t>(r), 0, from) * elem;
    const auto heads = static_cast<std::size_t>(n_kv_heads_);
    copier_->to_device_rows(static_cast<char*>(dk.raw()) + at, pitch, static_cast<const char*>(host_k_[h].raw()) + at,
                            pitch, bytes, heads);
    copier_->to_device_rows(static_cast<char*>(dv.raw()) + at, pitch, static_cast<const char*>(host_v_[h].raw()) + at,
                            pitch, bytes, heads);
    st.valid[r] = to;
  }
}

void KvCache::begin_layer(int layer, std::span<const std::int64_t> rows) {
  index_of(layer);  // checks that the cache holds it
  if (!copier_) return;
  if (layer == layers_.begin && last_ticket_ != 0) {  // the last forward's copies back (done by now)
    copier_->wait_host(last_ticket_);
    last_ticket_ = 0;
  }
  if (spilled(layer)) {
    stage(layer, rows);
    copier_->order_before(backend::cuda_compute_stream());
  }
  if (layer + 1 < layers_.end() && spilled(layer + 1)) stage(layer + 1, rows);  // overlaps this layer
}

std::int64_t KvCache::n_past(std::int64_t row) const {
  ADAPT_CHECK(row >= 0 && row < batch_, "KV cache row {} of {}", row, batch_);
  return n_past_[static_cast<std::size_t>(row)];
}

std::int64_t KvCache::n_past() const {
  const bool same = std::all_of(n_past_.begin(), n_past_.end(), [&](std::int64_t n) { return n == n_past_[0]; });
  ADAPT_CHECK(same, "n_past() of a KV cache whose rows have different lengths (row 0 has {}); use n_past(row)",
              n_past_[0]);
  return n_past_[0];
}

void KvCache::check_room(std::int64_t batch, std::int64_t n_tokens) const {
  ADAPT_REQUIRE(batch == batch_, ShapeError,
                "KV cache was made for {} sequences but this forward has {}; make one cache per batch shape, or "
                "name the cache rows the sequences go to",
                batch_, batch);
  check_room(std::span<const std::int64_t>{}, n_tokens);
}

void KvCache::check_room(std::span<const std::int64_t> rows, std::int64_t n_tokens) const {
  const std::int64_t n_rows = rows.empty() ? batch_ : static_cast<std::int64_t>(rows.size());
  for (std::int64_t b = 0; b < n_rows; ++b) {
    const std::int64_t r = row_of(rows, b);
    ADAPT_REQUIRE(r >= 0 && r < batch_, ShapeError,
                  "KV cache row {} (sequence {}) does not exist: the cache has rows "
                  "0..{}",
                  r, b, batch_ - 1);
    for (std::int64_t b2 = 0; b2 < b; ++b2) {
      ADAPT_REQUIRE(row_of(rows, b2) != r, ShapeError,
                    "KV cache row {} is named for sequences {} and {} of one forward; each sequence needs its own row",
                    r, b2, b);
    }
    const std::int64_t used = n_past_[static_cast<std::size_t>(r)];
    ADAPT_REQUIRE(
        used + n_tokens <= capacity_, ShapeError,
        "KV cache is full: it holds {} positions per row, {} are used in row {} and {} more were requested. "
        "Allocate it with capacity >= prompt + generated tokens ({} here; {} per position for this model).",
        capacity_, used, r, n_tokens, used + n_tokens,
        format_bytes(2ull * static_cast<std::uint64_t>(layers_.count * n_kv_heads_ * head_dim_) * dtype_size(dtype_)));
  }
}

void KvCache::write(int layer, const Tensor& k_new, const Tensor& v_new, std::span<const std::int64_t> rows) {
  const std::size_t slot = slot_of(layer);
  const Shape& s = k_new.shape();
  const std::int64_t n_rows = rows.empty() ? batch_ : static_cast<std::int64_t>(rows.size());
  ADAPT_REQUIRE(
      s.rank() == 4 && s[0] == n_rows && s[2] == n_kv_heads_ && s[3] == head_dim_ && v_new.shape() == s &&
          k_new.is_contiguous() && v_new.is_contiguous() && k_new.dtype() == DType::F32 && v_new.dtype() == DType::F32,
      ShapeError, "KV cache write: keys {} and values {} must be contiguous f32 (B = {}, T, Hkv = {}, D = {})", s.str(),
      v_new.shape().str(), n_rows, n_kv_heads_, head_dim_);
  const std::int64_t T = s[1];
  check_room(rows, T);
  std::vector<std::int64_t> dst_rows(static_cast<std::size_t>(n_rows)), pos0(static_cast<std::size_t>(n_rows));
  for (std::int64_t b = 0; b < n_rows; ++b) {
    dst_rows[static_cast<std::size_t>(b)] = row_of(rows, b);
    pos0[static_cast<std::size_t>(b)] = n_past_[static_cast<std::size_t>(row_of(rows, b))];
  }
  ops::kv_cache_write(k_[slot], k_new, dst_rows, pos0);
  ops::kv_cache_write(v_[slot], v_new, dst_rows, pos0);
  if (!spilled(layer)) return;
  // The new positions are in the staging buffer; copy them to the layer's host memory.
  Staging& st = staging_[staging_slot(layer)];
  const std::size_t h = host_index(layer);
  const std::size_t elem = dtype_size(dtype_);
  const auto bytes = static_cast<std::size_t>(T * head_dim_) * elem;
  const std::size_t pitch = head_pitch_bytes();
  std::vector<backend::HostCopy> copies;
  copies.reserve(static_cast<std::size_t>(2 * n_rows));
  for (std::int64_t b = 0; b < n_rows; ++b) {
    const std::int64_t r = dst_rows[static_cast<std::size_t>(b)], p = pos0[static_cast<std::size_t>(b)];
    std::int64_t& valid = st.valid[static_cast<std::size_t>(r)];
    ADAPT_CHECK(valid == p, "KV cache: row {} of spilled layer {} is staged up to {} but written at {}", r, layer,
                valid, p);
    valid = p + T;
    // The row's new positions of every head, one strided copy each for k and v.
    const std::size_t at = element_of(r, 0, p) * elem;
    const auto heads = static_cast<std::size_t>(n_kv_heads_);
    copies.push_back({static_cast<char*>(host_k_[h].raw()) + at, static_cast<const char*>(k_[slot].raw()) + at, bytes,
                      heads, pitch, pitch});
    copies.push_back({static_cast<char*>(host_v_[h].raw()) + at, static_cast<const char*>(v_[slot].raw()) + at, bytes,
                      heads, pitch, pitch});
  }
  last_ticket_ = copier_->to_host(copies, backend::cuda_compute_stream());
}

void KvCache::advance(std::int64_t n_tokens, std::span<const std::int64_t> rows) {
  const std::int64_t n_rows = rows.empty() ? batch_ : static_cast<std::int64_t>(rows.size());
  for (std::int64_t b = 0; b < n_rows; ++b) {
    const std::int64_t r = row_of(rows, b);
    ADAPT_CHECK(r >= 0 && r < batch_, "advance row {} of {}", r, batch_);
    std::int64_t& used = n_past_[static_cast<std::size_t>(r)];
    ADAPT_CHECK(n_tokens >= 0 && used + n_tokens <= capacity_, "advance row {} by {} with {} of {} used", r, n_tokens,
                used, capacity_);
    used += n_tokens;
  }
}

void KvCache::read_row(int layer, std::int64_t row, std::int64_t n, void* k_out, void* v_out) {
  ADAPT_CHECK(row >= 0 && row < batch_ && n >= 0 && n <= n_past_[static_cast<std::size_t>(row)],
              "KV cache read_row: row {} of {}, {} positions of {} filled", row, batch_, n,
              row >= 0 && row < batch_ ? n_past_[static_cast<std::size_t>(row)] : 0);
  copy_row(layer, row, n, k_out, v_out, false);
}

void KvCache::write_row(int layer, std::int64_t row, std::int64_t n, const void* k_in, const void* v_in) {
  ADAPT_REQUIRE(row >= 0 && row < batch_ && n_past_[static_cast<std::size_t>(row)] == 0, ShapeError,
                "KV cache write_row: row {} must exist (rows 0..{}) and be empty", row, batch_ - 1);
  ADAPT_REQUIRE(n >= 0 && n <= capacity_, ShapeError, "KV cache write_row: {} positions, but a row holds {}", n,
                capacity_);
  // A spilled layer's staging buffers hold none of this row (clear_row reset them): stage() copies it.
  copy_row(layer, row, n, const_cast<void*>(k_in), const_cast<void*>(v_in), true);
}

std::pair<Tensor*, Tensor*> KvCache::held(int layer) {
  if (!spilled(layer)) {
    const auto i = static_cast<std::size_t>(index_of(layer));
    return {&k_[i], &v_[i]};
  }
  const std::size_t i = host_index(layer);
  return {&host_k_[i], &host_v_[i]};
}

void KvCache::copy_row(int layer, std::int64_t row, std::int64_t n, void* k_host, void* v_host, bool into_cache) {
  const bool host = spilled(layer);
  // A spilled layer's host copy: its newest positions may still be on their way there (read), and no
  // copy of an earlier sequence may land after these bytes (write).
  if (host) synchronize();
  const auto [kt, vt] = held(layer);
  char* k = static_cast<char*>(kt->raw());
  char* v = static_cast<char*>(vt->raw());
  const std::size_t elem = dtype_size(dtype_);
  const std::size_t bytes = row_bytes(n) / static_cast<std::size_t>(n_kv_heads_);
  for (std::int64_t head = 0; head < n_kv_heads_; ++head) {
    const std::size_t at = element_of(row, head, 0) * elem, buf = static_cast<std::size_t>(head) * bytes;
    char* kb = static_cast<char*>(k_host) + buf;
    char* vb = static_cast<char*>(v_host) + buf;
    backend::copy_bytes(into_cache ? k + at : kb, into_cache ? kb : k + at, bytes);
    backend::copy_bytes(into_cache ? v + at : vb, into_cache ? vb : v + at, bytes);
  }
}

void KvCache::copy_prefix(std::int64_t src_row, std::int64_t dst_row, std::int64_t begin, std::int64_t end) {
  ADAPT_REQUIRE(src_row >= 0 && src_row < batch_ && dst_row >= 0 && dst_row < batch_ && src_row != dst_row, ShapeError,
                "KV cache copy_prefix: rows {} -> {} must be two different rows of 0..{}", src_row, dst_row,
                batch_ - 1);
  ADAPT_REQUIRE(n_past_[static_cast<std::size_t>(dst_row)] == 0, ShapeError,
                "KV cache copy_prefix: row {} must be empty, it holds {} positions", dst_row,
                n_past_[static_cast<std::size_t>(dst_row)]);
  ADAPT_REQUIRE(begin >= 0 && begin <= end && end <= capacity_, ShapeError,
                "KV cache copy_prefix: positions [{}, {}) of a row holding {}", begin, end, capacity_);
  if (begin == end) return;
  // The spilled layers' host copies: the source's newest positions may still be on their way there.
  if (copier_) synchronize();
  const std::size_t elem = dtype_size(dtype_);
  const std::size_t bytes = row_bytes(end - begin) / static_cast<std::size_t>(n_kv_heads_);
  for (int layer = static_cast<int>(layers_.begin); layer < static_cast<int>(layers_.end()); ++layer) {
    const auto [kt, vt] = held(layer);
    for (Tensor* t : {kt, vt}) {
      char* base = static_cast<char*>(t->raw());
      for (std::int64_t head = 0; head < n_kv_heads_; ++head) {
        backend::copy_bytes(base + element_of(dst_row, head, begin) * elem,
                            base + element_of(src_row, head, begin) * elem, bytes);
      }
    }
  }
  // A spilled layer's staging buffers hold none of dst_row (clear_row reset them): stage() copies it.
}

void KvCache::clear() {
  std::fill(n_past_.begin(), n_past_.end(), 0);
  for (Staging& st : staging_) std::fill(st.valid.begin(), st.valid.end(), 0);
}

void KvCache::clear_row(std::int64_t row) {
  ADAPT_REQUIRE(row >= 0 && row < batch_, ShapeError, "KV cache row {} does not exist: the cache has rows 0..{}", row,
                batch_ - 1);
  n_past_[static_cast<std::size_t>(row)] = 0;
  for (Staging& st : staging_)
    if (!st.valid.empty()) st.valid[static_cast<std::size_t>(row)] = 0;
}

void KvCache::synchronize() {
  if (copier_) copier_->synchronize();
  last_ticket_ = 0;
}

}  // namespace adapt::model
