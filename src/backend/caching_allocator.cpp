#include "backend/caching_allocator.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <mutex>
#include <set>
#include <tuple>
#include <unordered_map>

#include "core/strings.h"

namespace adapt::backend {

std::string MemoryStats::str() const {
  return fmt::format("allocated {} (peak {}), reserved {} (peak {}) in {} segment(s), {} raw alloc(s)",
                     format_bytes(allocated), format_bytes(allocated_peak), format_bytes(reserved),
                     format_bytes(reserved_peak), n_segments, n_raw_allocs);
}

namespace {

struct Block {
  char* ptr = nullptr;
  std::size_t size = 0;
  std::size_t requested = 0;
  StreamId stream = 0;
  bool small = false;
  bool allocated = false;
  Block* prev = nullptr;  // neighbours inside the same segment
  Block* next = nullptr;
};

struct BlockOrder {
  bool operator()(const Block* a, const Block* b) const {
    return std::tie(a->stream, a->size, a->ptr) < std::tie(b->stream, b->size, b->ptr);
  }
};

using FreeSet = std::set<Block*, BlockOrder>;

}  // namespace

struct CachingAllocator::Impl {
  RawAllocator& raw;
  CachingAllocatorOptions opt;
  mutable std::mutex mutex;
  FreeSet free_small, free_large;
  std::unordered_map<void*, Block*> live;
  MemoryStats stats;

  Impl(RawAllocator& r, CachingAllocatorOptions o) : raw(r), opt(o) {}

  FreeSet& pool(bool small) { return small ? free_small : free_large; }

  std::size_t round_up(std::size_t n, std::size_t to) const { return (n + to - 1) / to * to; }

  std::size_t rounded(std::size_t n) const { return round_up(std::max<std::size_t>(n, 1), opt.round); }

  std::size_t segment(std::size_t size) const {
    if (size <= opt.small_request) return opt.small_segment;
    if (size < opt.mid_request) return opt.large_segment;
    return round_up(size, opt.large_round);
  }

  bool should_split(const Block* b, std::size_t size) const {
    const std::size_t rest = b->size - size;
    return b->small ? rest >= opt.round : rest > opt.small_request;
  }

  Block* find_cached(bool small, std::size_t size, StreamId stream) {
    FreeSet& set = pool(small);
    Block key;
    key.stream = stream;
    key.size = size;
    auto it = set.lower_bound(&key);
    if (it == set.end() || (*it)->stream != stream) return nullptr;
    Block* b = *it;
    set.erase(it);
    return b;
  }

  std::size_t release_free_segments() {
    std::size_t released = 0;
    for (FreeSet* set : {&free_small, &free_large}) {
      for (auto it = set->begin(); it != set->end();) {
        Block* b = *it;
        if (b->prev || b->next) {
          ++it;
          continue;
        }
        it = set->erase(it);
        raw.raw_free(b->ptr, b->size);
        stats.reserved -= b->size;
        --stats.n_segments;
        ++stats.n_raw_frees;
        released += b->size;
        delete b;
      }
    }
    return released;
  }

  [[noreturn]] void throw_oom(std::size_t n_bytes, std::size_t seg, bool retried) {
    const MemoryInfo info = raw.memory_info();
    const std::string device_line =
        info.known ? fmt::format("; the device has {} free of {}", format_bytes(info.free), format_bytes(info.total))
                   : std::string();
    // Page-locked host memory holds the offloaded optimizer state, not activations: the batch shape does
    // not change its size.
    const char* hint = raw.device().kind == DeviceKind::PinnedHost
                           ? "Page-locked host memory holds the offloaded optimizer state (optim.offload): give the "
                             "job more host RAM or fewer ranks per node, shard the state over data parallelism "
                             "(parallel.zero1 = true), or keep it on the GPU (optim.offload = false)."
                           : "Reduce the micro-batch or the sequence length, or spread the model over more GPUs "
                             "(tensor/pipeline parallelism).";
    ADAPT_THROW(OutOfMemoryError,
                "out of memory on {}: cannot allocate {} (a request of {} bytes; new segment of {}){}. This allocator "
                "holds: allocated {} (peak {}), reserved {} (peak {}) in {} segment(s){}{}. {}",
                raw.device().str(), format_bytes(n_bytes), n_bytes, format_bytes(seg), device_line,
                format_bytes(stats.allocated), format_bytes(stats.allocated_peak), format_bytes(stats.reserved),
                format_bytes(stats.reserved_peak), stats.n_segments,
                retried ? "; its cache was emptied and the allocation retried once" : "",
                stats.reserved > stats.allocated ? fmt::format(" ({} still cached in partly used segments)",
                                                               format_bytes(stats.reserved - stats.allocated))
                                                 : std::string(),
                hint);
  }

  Block* new_segment(std::size_t n_bytes, std::size_t size, bool small, StreamId stream) {
    const std::size_t seg = segment(size);
    void* p = raw.raw_allocate(seg);
    bool retried = false;
    if (!p) {
      ++stats.n_oom_retries;
      retried = true;
      release_free_segments();
      p = raw.raw_allocate(seg);
    }
    if (!p) throw_oom(n_bytes, seg, retried);
    ++stats.n_raw_allocs;
    ++stats.n_segments;
    stats.reserved += seg;
    stats.reserved_peak = std::max(stats.reserved_peak, stats.reserved);
    auto* b = new Block;
    b->ptr = static_cast<char*>(p);
    b->size = seg;
    b->stream = stream;
    b->small = small;
    return b;
  }

  void* allocate(std::size_t n_bytes, StreamId stream) {
    const std::size_t limit = std::numeric_limits<std::size_t>::max() / 2;
    std::lock_guard<std::mutex> lock(mutex);
    if (n_bytes > limit) throw_oom(n_bytes, n_bytes, false);
    const std::size_t size = rounded(n_bytes);
    const bool small = size <= opt.small_request;
    Block* b = find_cached(small, size, stream);
    if (!b) b = new_segment(n_bytes, size, small, stream);
    if (should_split(b, size)) {
      auto* rest = new Block;
      rest->ptr = b->ptr + size;
      rest->size = b->size - size;
      rest->stream = b->stream;
      rest->small = b->small;
      rest->prev = b;
      rest->next = b->next;
      if (b->next) b->next->prev = rest;
      b->next = rest;
      b->size = size;
      pool(small).insert(rest);
    }
    b->allocated = true;
    b->requested = n_bytes;
    live.emplace(b->ptr, b);
    stats.allocated += b->size;
    stats.allocated_peak = std::max(stats.allocated_peak, stats.allocated);
    stats.requested += n_bytes;
    ++stats.n_allocations;
    ++stats.n_live;
    return b->ptr;
  }

  // Merges `from` (free, cached) into `into`; `from` is deleted.
  void absorb(Block* into, Block* from) {
    pool(from->small).erase(from);
    if (from == into->next) {
      into->next = from->next;
      if (from->next) from->next->prev = into;
    } else {  // from == into->prev: into takes its start
      into->ptr = from->ptr;
      into->prev = from->prev;
      if (from->prev) from->prev->next = into;
    }
    into->size += from->size;
    delete from;
  }

  void deallocate(void* p) {
    if (!p) return;
    std::lock_guard<std::mutex> lock(mutex);
    auto it = live.find(p);
    ADAPT_CHECK(it != live.end(),
                "deallocate({}) on {}: this pointer was not handed out by this allocator, or was "
                "already freed",
                p, raw.device().str());
    Block* b = it->second;
    live.erase(it);
    b->allocated = false;
    stats.allocated -= b->size;
    stats.requested -= b->requested;
    b->requested = 0;
    --stats.n_live;
    if (b->prev && !b->prev->allocated) absorb(b, b->prev);
    if (b->next && !b->next->allocated) absorb(b, b->next);
    pool(b->small).insert(b);
  }
};

CachingAllocator::CachingAllocator(RawAllocator& raw, CachingAllocatorOptions options)
    : impl_(std::make_unique<Impl>(raw, options)) {
  ADAPT_CHECK(options.round > 0 && options.small_segment >= options.small_request &&
                  options.large_segment >= options.mid_request && options.large_round % options.round == 0,
              "inconsistent caching allocator sizes");
}

CachingAllocator::~CachingAllocator() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->release_free_segments();
}

void* CachingAllocator::allocate(std::size_t n_bytes, StreamId stream) { return impl_->allocate(n_bytes, stream); }
void CachingAllocator::deallocate(void* p, std::size_t) { impl_->deallocate(p); }
Device CachingAllocator::device() const { return impl_->raw.device(); }

std::size_t CachingAllocator::empty_cache() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->release_free_segments();
}

MemoryStats CachingAllocator::stats() const {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  return impl_->stats;
}

void CachingAllocator::reset_peak() {
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->stats.allocated_peak = impl_->stats.allocated;
  impl_->stats.reserved_peak = impl_->stats.reserved;
}

std::size_t CachingAllocator::rounded_size(std::size_t n_bytes) const { return impl_->rounded(n_bytes); }
std::size_t CachingAllocator::segment_size(std::size_t rounded) const { return impl_->segment(rounded); }

}  // namespace adapt::backend
