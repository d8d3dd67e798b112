#include "model/kv_cache.h"

#include <cstring>

#include "core/error.h"
#include "core/strings.h"

namespace adapt::model {

KvCache::KvCache(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity)
    : batch_(batch), capacity_(capacity), n_kv_heads_(cfg.n_kv_heads), head_dim_(cfg.head_dim) {
  ADAPT_REQUIRE(batch > 0 && capacity > 0, ConfigError,
                "KV cache: batch = {} and capacity = {} positions must both be positive", batch, capacity);
  const Shape shape{batch, n_kv_heads_, capacity, head_dim_};
  for (std::int64_t l = 0; l < cfg.n_layers; ++l) {
    k_.push_back(Tensor::empty(shape, DType::F32, host_allocator(), "kv_cache.k." + std::to_string(l)));
    v_.push_back(Tensor::empty(shape, DType::F32, host_allocator(), "kv_cache.v." + std::to_string(l)));
  }
}

std::uint64_t KvCache::bytes_needed(const LlamaConfig& cfg, std::int64_t batch, std::int64_t capacity) {
  return 2ull * static_cast<std::uint64_t>(cfg.n_layers * batch * cfg.n_kv_heads * capacity * cfg.head_dim) *
         sizeof(float);
}

std::uint64_t KvCache::size_bytes() const {
  std::uint64_t n = 0;
  for (const Tensor& t : k_) n += t.size_bytes();
  for (const Tensor& t : v_) n += t.size_bytes();
  return n;
}

void KvCache::check_room(std::int64_t batch, std::int64_t n_tokens) const {
  ADAPT_REQUIRE(batch == batch_, ShapeError,
                "KV cache was made for {} sequences but this forward has {}; make one cache per batch shape", batch_,
                batch);
  ADAPT_REQUIRE(n_past_ + n_tokens <= capacity_, ShapeError,
                "KV cache is full: it holds {} positions, {} are used and {} more were requested. Allocate it with "
                "capacity >= prompt + generated tokens ({} here; {} per position for this model).",
                capacity_, n_past_, n_tokens, n_past_ + n_tokens,
                format_bytes(size_bytes() / static_cast<std::uint64_t>(capacity_)));
}

void KvCache::write(int layer, const Tensor& k_new, const Tensor& v_new) {
  ADAPT_CHECK(layer >= 0 && layer < static_cast<int>(k_.size()), "layer {} of {}", layer, k_.size());
  const Shape& s = k_new.shape();
  ADAPT_REQUIRE(s.rank() == 4 && s[0] == batch_ && s[2] == n_kv_heads_ && s[3] == head_dim_ && v_new.shape() == s &&
                    k_new.is_contiguous() && v_new.is_contiguous() && k_new.dtype() == DType::F32 &&
                    v_new.dtype() == DType::F32,
                ShapeError, "KV cache write: keys {} and values {} must be contiguous f32 (B = {}, T, Hkv = {}, D = {})",
                s.str(), v_new.shape().str(), batch_, n_kv_heads_, head_dim_);
  const std::int64_t T = s[1], D = head_dim_, Hkv = n_kv_heads_;
  check_room(batch_, T);
  const float* ks = k_new.data<float>();
  const float* vs = v_new.data<float>();
  float* kd = k_[static_cast<std::size_t>(layer)].data<float>();
  float* vd = v_[static_cast<std::size_t>(layer)].data<float>();
  for (std::int64_t b = 0; b < batch_; ++b) {
    for (std::int64_t t = 0; t < T; ++t) {
      for (std::int64_t g = 0; g < Hkv; ++g) {
        const std::int64_t src = ((b * T + t) * Hkv + g) * D;
        const std::int64_t dst = ((b * Hkv + g) * capacity_ + n_past_ + t) * D;
        std::memcpy(kd + dst, ks + src, static_cast<std::size_t>(D) * sizeof(float));
        std::memcpy(vd + dst, vs + src, static_cast<std::size_t>(D) * sizeof(float));
      }
    }
  }
}

void KvCache::advance(std::int64_t n_tokens) {
  ADAPT_CHECK(n_tokens >= 0 && n_past_ + n_tokens <= capacity_, "advance by {} with {} of {} used", n_tokens, n_past_,
              capacity_);
  n_past_ += n_tokens;
}

}  // namespace adapt::model
