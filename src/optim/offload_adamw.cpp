#include "optim/offload_adamw.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <utility>

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
    : n_(n),
      segments_(std::move(segments)),
      adamw_(adamw),
      options_(options),
      copier_(backend::offload_copier_for(param_device)),
      pool_(resolve_threads(options.threads)),
      isa_(cpu_isa_best()) {
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
  progress_ = n_;
}

OffloadAdamW::~OffloadAdamW() {
  if (runner_.joinable()) runner_.join();  // an unfinished step (an exception unwinding): its error is dropped
  // No copy may still run into or out of the state when its buffers go back to the allocator. A CUDA
  // error here (a sticky one, when the destructor runs because of it) must not leave the destructor:
  // during unwinding that would call std::terminate and hide the error being reported.
  try {
    if (copier_) copier_->synchronize();
  } catch (...) {
  }
}

void OffloadAdamW::set_targets(std::vector<OffloadTarget> targets) {
  ADAPT_CHECK(!stepping(), "offloaded AdamW: set_targets while a step runs (call finish() first)");
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
  const backend::HostCopy copy{
      .host_dst = grad() + begin, .src = src, .n_bytes = static_cast<std::size_t>(count) * sizeof(float)};
  last_ticket_ = copier_->to_host({&copy, 1}, compute_stream);
}

void OffloadAdamW::wait_grads() { copier_->wait_host(last_ticket_); }

void OffloadAdamW::load_grads(std::int64_t begin, std::int64_t count, const float* src) {
  ADAPT_REQUIRE(begin >= 0 && count >= 0 && begin + count <= n_, ShapeError,
                "offloaded AdamW: gradient range [{}, {}) leaves the state of {} elements", begin, begin + count, n_);
  ADAPT_CHECK(!stepping(), "offloaded AdamW: gradients loaded while a step runs (call finish() first)");
  if (count > 0) std::memcpy(grad() + begin, src, static_cast<std::size_t>(count) * sizeof(float));
}

void OffloadAdamW::step(double lr, void* compute_stream) {
  ADAPT_CHECK(!stepping(), "offloaded AdamW: step() while an asynchronous step runs (call finish() first)");
  wait_grads();
  // The previous step's write-backs read master() and the bf16 staging buffer, which the update below
  // overwrites. Staged gradients were queued after them on the in-order copy stream, but gradients loaded
  // with load_grads() did not pass it: wait for the write-backs (at once when they are done).
  copier_->synchronize();
  // The write-backs overwrite device values that kernels queued on the compute stream may still read.
  copier_->order_after(compute_stream);
  ++n_steps_;
  {
    std::lock_guard lock(mutex_);
    progress_ = 0;
  }
  run_step(lr);
}

void OffloadAdamW::step_async(double lr, void* compute_stream) {
  ADAPT_CHECK(!stepping(), "offloaded AdamW: step_async() while a step runs (call finish() first)");
  wait_grads();
  // Gradients loaded with load_grads() did not pass the copy stream: make sure that the previous step's
  // write-backs, which read master() and the bf16 staging buffer, are done before they change.
  copier_->synchronize();
  copier_->order_after(compute_stream);
  ++n_steps_;
  {
    std::lock_guard lock(mutex_);
    progress_ = 0;
    running_ = true;
    error_ = nullptr;
  }
  runner_ = std::thread([this, lr] {
    std::exception_ptr err;
    try {
      copier_->bind_thread();  // the write-backs' CUDA calls on the parameters' device, not device 0
      run_step(lr);
    } catch (...) {
      err = std::current_exception();
    }
    std::lock_guard lock(mutex_);
    running_ = false;
    error_ = err;
    moved_.notify_all();
  });
}

std::int64_t OffloadAdamW::progress() const {
  std::lock_guard lock(mutex_);
  return progress_;
}

void OffloadAdamW::publish(std::int64_t done) {
  std::lock_guard lock(mutex_);
  progress_ = done;
  moved_.notify_all();
}

void OffloadAdamW::wait_updated(std::int64_t end) {
  end = std::min(end, n_);
  std::unique_lock lock(mutex_);
  moved_.wait(lock, [&] { return progress_ >= end || !running_; });
  if (progress_ >= end) return;
  if (error_) std::rethrow_exception(error_);
  ADAPT_CHECK(false, "offloaded AdamW: waiting for elements [0, {}) of a step that stopped at {}", end, progress_);
}

void OffloadAdamW::finish() {
  if (!runner_.joinable()) return;
  runner_.join();
  std::exception_ptr err;
  {
    std::lock_guard lock(mutex_);
    err = std::exchange(error_, nullptr);
  }
  if (err) std::rethrow_exception(err);
}

void OffloadAdamW::run_step(double lr) {
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
      char* dst = static_cast<char*>(t.dst) + static_cast<std::size_t>(lo - t.begin) * size;
      const auto n_bytes = static_cast<std::size_t>(hi - lo) * size;
      if (t.host) {
        std::memcpy(dst, src, n_bytes);
      } else {
        copier_->to_device(dst, src, n_bytes);
      }
    }
    publish(b1);
  }
  publish(n_);
}

void OffloadAdamW::weights_ready(void* compute_stream) { copier_->order_before(compute_stream); }

void OffloadAdamW::synchronize() { copier_->synchronize(); }

}  // namespace adapt::optim
