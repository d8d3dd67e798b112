#include "model/kv_cache.h"

#include <algorithm>

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

KvCache::KvCache(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity, int tp_size, Allocator& alloc)
    : batch_(batch), capacity_(capacity), n_kv_heads_(cfg.n_kv_heads / std::max(tp_size, 1)), head_dim_(cfg.head_dim) {
  ADAPT_REQUIRE(batch > 0 && capacity > 0, ConfigError,
                "KV cache: batch = {} and capacity = {} positions must both be positive", batch, capacity);
  ADAPT_REQUIRE(tp_size >= 1 && cfg.n_kv_heads % tp_size == 0, ConfigError,
                "KV cache: num_key_value_heads = {} is not split evenly over tp = {} ranks", cfg.n_kv_heads, tp_size);
  n_past_.assign(static_cast<std::size_t>(batch), 0);
  const Shape shape{batch, n_kv_heads_, capacity, head_dim_};
  for (std::int64_t l = 0; l < cfg.n_layers; ++l) {
    k_.push_back(Tensor::empty(shape, DType::F32, alloc, "kv_cache.k." + std::to_string(l)));
    v_.push_back(Tensor::empty(shape, DType::F32, alloc, "kv_cache.v." + std::to_string(l)));
  }
}

std::uint64_t KvCache::bytes_needed(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity,
                                    int tp_size) {
  const std::int64_t kv_heads = cfg.n_kv_heads / std::max(tp_size, 1);
  return 2ull * static_cast<std::uint64_t>(cfg.n_layers * batch * kv_heads * capacity * cfg.head_dim) *
         sizeof(float);
}

std::uint64_t KvCache::size_bytes() const {
  std::uint64_t n = 0;
  for (const Tensor& t : k_) n += t.size_bytes();
  for (const Tensor& t : v_) n += t.size_bytes();
  return n;
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
                "name the cache rows the sequences go to", batch_, batch);
  check_room(std::span<const std::int64_t>{}, n_tokens);
}

void KvCache::check_room(std::span<const std::int64_t> rows, std::int64_t n_tokens) const {
  const std::int64_t n_rows = rows.empty() ? batch_ : static_cast<std::int64_t>(rows.size());
  for (std::int64_t b = 0; b < n_rows; ++b) {
    const std::int64_t r = row_of(rows, b);
    ADAPT_REQUIRE(r >= 0 && r < batch_, ShapeError, "KV cache row {} (sequence {}) does not exist: the cache has rows "
                  "0..{}", r, b, batch_ - 1);
    for (std::int64_t b2 = 0; b2 < b; ++b2) {
      ADAPT_REQUIRE(row_of(rows, b2) != r, ShapeError,
                    "KV cache row {} is named for sequences {} and {} of one forward; each sequence needs its own row",
                    r, b2, b);
    }
    const std::int64_t used = n_past_[static_cast<std::size_t>(r)];
    ADAPT_REQUIRE(used + n_tokens <= capacity_, ShapeError,
                  "KV cache is full: it holds {} positions per row, {} are used in row {} and {} more were requested. "
                  "Allocate it with capacity >= prompt + generated tokens ({} here; {} per position for this model).",
                  capacity_, used, r, n_tokens, used + n_tokens,
                  format_bytes(size_bytes() / static_cast<std::uint64_t>(capacity_ * batch_)));
  }
}

void KvCache::write(int layer, const Tensor& k_new, const Tensor& v_new, std::span<const std::int64_t> rows) {
  ADAPT_CHECK(layer >= 0 && layer < static_cast<int>(k_.size()), "layer {} of {}", layer, k_.size());
  const Shape& s = k_new.shape();
  const std::int64_t n_rows = rows.empty() ? batch_ : static_cast<std::int64_t>(rows.size());
  ADAPT_REQUIRE(s.rank() == 4 && s[0] == n_rows && s[2] == n_kv_heads_ && s[3] == head_dim_ && v_new.shape() == s &&
                    k_new.is_contiguous() && v_new.is_contiguous() && k_new.dtype() == DType::F32 &&
                    v_new.dtype() == DType::F32,
                ShapeError, "KV cache write: keys {} and values {} must be contiguous f32 (B = {}, T, Hkv = {}, D = {})",
                s.str(), v_new.shape().str(), n_rows, n_kv_heads_, head_dim_);
  const std::int64_t T = s[1];
  check_room(rows, T);
  std::vector<std::int64_t> dst_rows(static_cast<std::size_t>(n_rows)), pos0(static_cast<std::size_t>(n_rows));
  for (std::int64_t b = 0; b < n_rows; ++b) {
    dst_rows[static_cast<std::size_t>(b)] = row_of(rows, b);
    pos0[static_cast<std::size_t>(b)] = n_past_[static_cast<std::size_t>(row_of(rows, b))];
  }
  ops::kv_cache_write(k_[static_cast<std::size_t>(layer)], k_new, dst_rows, pos0);
  ops::kv_cache_write(v_[static_cast<std::size_t>(layer)], v_new, dst_rows, pos0);
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

void KvCache::clear() { std::fill(n_past_.begin(), n_past_.end(), 0); }

void KvCache::clear_row(std::int64_t row) {
  ADAPT_REQUIRE(row >= 0 && row < batch_, ShapeError, "KV cache row {} does not exist: the cache has rows 0..{}", row,
                batch_ - 1);
  n_past_[static_cast<std::size_t>(row)] = 0;
}

}  // namespace adapt::model
