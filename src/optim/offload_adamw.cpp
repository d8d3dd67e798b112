#include "optim/offload_adamw.h"

#include <algorithm>
#include <cstring>
#include <thread>

#include "core/error.h"
#include "dtype/dtype.h"

namespace adapt::optim {

namespace {

int resolve_threads(int threads) {
  if (threads > 0) return threads;
  return std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
}

Tensor host_buffer(Allocator& alloc, std::int64_t n, DType dtype, const char* name) {
  Tensor t = Tensor::empty(Shape{std::max<std::int64_t>(n, 1)}, dtype, alloc, name);
  std::memset(t.raw(), 0, static_cast<std::size_t>(t.numel()) * dtype_size(dtype));
  return t;
}

}  // namespace

OffloadAdamW::OffloadAdamW(std::int64_t n, std::vector<OffloadSegment> segments, const AdamWOptions& adamw,
                           Device param_device, const OffloadOptions& options)
    : n_(n), segments_(std::move(segments)), adamw_(adamw), options_(options),
      copier_(offload_copier_for(param_device)), pool_(resolve_threads(options.threads)), isa_(cpu_isa_best()) {
  ADAPT_REQUIRE(n >= 0, ShapeError, "offloaded AdamW: {} elements", n);
  ADAPT_REQUIRE(options.bucket_elems >= 1 && options.chunk_elems >= 1, ConfigError,
                "offloaded AdamW: bucket_elems ({}) and chunk_elems ({}) must be positive", options.bucket_elems,
                options.chunk_elems);
  std::sort(segments_.begin(), segments_.end(), [](const auto& a, const auto& b) { return a.begin < b.begin; });
  std::int64_t end = 0;
  for (const OffloadSegment& s : segments_) {
    ADAPT_REQUIRE(s.begin >= end && s.count >= 0 && s.begin + s.count <= n, ShapeError,
                  "offloaded AdamW: segment [{}, {}) overlaps another or leaves the state of {} elements", s.begin,
                  s.begin + s.count, n);
    end = s.begin + s.count;
  }
  // Fill the gaps, so every element belongs to exactly one segment.
  std::vector<OffloadSegment> all;
  std::int64_t at = 0;
  for (const OffloadSegment& s : segments_) {
    if (s.begin > at) all.push_back({.begin = at, .count = s.begin - at, .decay = true});
    if (s.count > 0) all.push_back(s);
    at = s.begin + s.count;
  }
  if (at < n) all.push_back({.begin = at, .count = n - at, .decay = true});
  segments_ = std::move(all);
  Allocator& alloc = copier_->host_allocator();
  master_ = host_buffer(alloc, n, DType::F32, "offload.master");
  m_ = host_buffer(alloc, n, DType::F32, "offload.exp_avg");
  v_ = host_buffer(alloc, n, DType::F32, "offload.exp_avg_sq");
  grad_ = host_buffer(alloc, n, DType::F32, "offload.grad");
}

OffloadAdamW::~OffloadAdamW() {
  if (copier_) copier_->synchronize();
}

void OffloadAdamW::set_targets(std::vector<OffloadTarget> targets) {
  bool any_bf16 = false;
  for (const OffloadTarget& t : targets) {
    ADAPT_REQUIRE(t.begin >= 0 && t.count >= 0 && t.begin + t.count <= n_ && (t.dst != nullptr || t.count == 0),
                  ShapeError, "offloaded AdamW: write-back range [{}, {}) leaves the state of {} elements", t.begin,
                  t.begin + t.count, n_);
    ADAPT_REQUIRE(t.dtype == DType::F32 || t.dtype == DType::BF16, UnsupportedError,
                  "offloaded AdamW: weights can be written back as f32 or bf16, not {}", dtype_name(t.dtype));
    any_bf16 = any_bf16 || t.dtype == DType::BF16;
  }
  if (any_bf16 && !staging_bf16_.defined())
    staging_bf16_ = host_buffer(copier_->host_allocator(), n_, DType::BF16, "offload.bf16_staging");
  targets_ = std::move(targets);
}

void OffloadAdamW::stage_grads(std::int64_t begin, std::int64_t count, const float* src, void* compute_stream) {
  ADAPT_REQUIRE(begin >= 0 && count >= 0 && begin + count <= n_, ShapeError,
                "offloaded AdamW: gradient range [{}, {}) leaves the state of {} elements", begin, begin + count, n_);
  last_ticket_ = copier_->to_host(grad() + begin, src, static_cast<std::size_t>(count) * sizeof(float),
                                  compute_stream);
}

void OffloadAdamW::wait_grads() { copier_->wait_host(last_ticket_); }

void OffloadAdamW::step(double lr) {
  // The copy stream is in order: once the staged gradients are in, the previous step's write-backs,
  // which read master() and the bf16 staging buffer, are done too.
  wait_grads();
  ++n_steps_;
  const AdamWScalars with_decay = adamw_scalars(adamw_, lr, n_steps_, /*decay=*/true);
  const AdamWScalars without_decay = adamw_scalars(adamw_, lr, n_steps_, /*decay=*/false);
  const bool use_bf16 = staging_bf16_.defined();
  struct Chunk {
    std::int64_t begin, count;
    const AdamWScalars* s;
  };
  std::vector<Chunk> chunks;
  float* p = master();
  float* g = grad();
  float* m1 = m();
  float* m2 = v();
  bf16* staged = use_bf16 ? staging_bf16_.data<bf16>() : nullptr;
  const CpuIsa isa = isa_;
  std::size_t seg = 0;
  for (std::int64_t b0 = 0; b0 < n_; b0 += options_.bucket_elems) {
    const std::int64_t b1 = std::min(n_, b0 + options_.bucket_elems);
    chunks.clear();
    while (seg < segments_.size() && segments_[seg].begin + segments_[seg].count <= b0) ++seg;
    for (std::size_t k = seg; k < segments_.size() && segments_[k].begin < b1; ++k) {
      const std::int64_t lo = std::max(b0, segments_[k].begin);
      const std::int64_t hi = std::min(b1, segments_[k].begin + segments_[k].count);
      for (std::int64_t c = lo; c < hi; c += options_.chunk_elems)
        chunks.push_back(
            {c, std::min(options_.chunk_elems, hi - c), segments_[k].decay ? &with_decay : &without_decay});
    }
    pool_.parallel_for(static_cast<std::int64_t>(chunks.size()), [&](std::int64_t i) {
      const Chunk& c = chunks[static_cast<std::size_t>(i)];
      adamw_update(p + c.begin, g + c.begin, m1 + c.begin, m2 + c.begin, c.count, *c.s, isa);
      if (staged != nullptr)
        for (std::int64_t j = c.begin; j < c.begin + c.count; ++j) staged[j].bits = f32_to_bf16(p[j]);
    });
    for (const OffloadTarget& t : targets_) {
      const std::int64_t lo = std::max(b0, t.begin), hi = std::min(b1, t.begin + t.count);
      if (hi <= lo) continue;
      const std::size_t size = dtype_size(t.dtype);
      const void* src =
          t.dtype == DType::BF16 ? static_cast<const void*>(staged + lo) : static_cast<const void*>(p + lo);
      copier_->to_device(static_cast<char*>(t.dst) + static_cast<std::size_t>(lo - t.begin) * size, src,
                         static_cast<std::size_t>(hi - lo) * size);
    }
  }
}

void OffloadAdamW::weights_ready(void* compute_stream) { copier_->order_before(compute_stream); }

void OffloadAdamW::synchronize() { copier_->synchronize(); }

}  // namespace adapt::optim
