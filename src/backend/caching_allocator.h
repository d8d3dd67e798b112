// A caching allocator over any raw allocator (cudaMalloc, cudaHostAlloc, or a fake in the tests), in
// the manner of PyTorch's CUDACachingAllocator: freed blocks are kept and reused, so that a training
// step allocates nothing from the driver once warm.
//
//   - Sizes are rounded up to 512 bytes. Requests of at most 1 MiB come from the small pool, whose
//     segments (one raw allocation each) are 2 MiB; larger requests come from the large pool: 20 MiB
//     segments below 10 MiB, otherwise the request rounded up to 2 MiB.
//   - A cached block larger than the request is split; the rest stays cached when it is at least 512
//     bytes (small pool) or more than 1 MiB (large pool). A freed block merges with free neighbours of
//     its segment.
//   - Blocks belong to the stream they were allocated for and are reused only on that stream, so
//     stream-ordered reuse needs no synchronisation. Memory used on another stream must be
//     synchronised by the caller before it is freed (no record_stream).
//   - When the raw allocator runs out of memory, every wholly free cached segment is given back and
//     the allocation is retried once; then OutOfMemoryError says what was asked for, what this
//     allocator holds (current, peak, reserved) and what the device has free.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "core/error.h"
#include "tensor/storage.h"

namespace adapt::backend {

/// An opaque stream identity (a cudaStream_t as an integer; 0 is the legacy default stream).
using StreamId = std::uintptr_t;

/// Free and total bytes of the memory behind a raw allocator, when it can tell.
struct MemoryInfo {
  bool known = false;
  std::size_t free = 0;
  std::size_t total = 0;
};

/// What really hands out memory. Implementations need not be thread-safe (CachingAllocator locks).
class RawAllocator {
 public:
  virtual ~RawAllocator() = default;
  /// nullptr when out of memory (the caching allocator then empties its cache and retries); throws
  /// on any other failure.
  virtual void* raw_allocate(std::size_t n_bytes) = 0;
  virtual void raw_free(void* p, std::size_t n_bytes) = 0;
  virtual Device device() const = 0;
  virtual MemoryInfo memory_info() const { return {}; }
};

/// Counters of one caching allocator. Bytes are the rounded block sizes unless said otherwise.
struct MemoryStats {
  std::size_t allocated = 0;       // in live allocations
  std::size_t allocated_peak = 0;  // max of `allocated` since creation or reset_peak()
  std::size_t requested = 0;       // in live allocations, as requested (before rounding)
  std::size_t reserved = 0;        // held from the raw allocator (live + cached)
  std::size_t reserved_peak = 0;
  std::int64_t n_allocations = 0;  // allocate() calls that succeeded
  std::int64_t n_live = 0;         // live allocations
  std::int64_t n_segments = 0;     // raw allocations held
  std::int64_t n_raw_allocs = 0;   // calls into the raw allocator that returned memory (cudaMalloc calls)
  std::int64_t n_raw_frees = 0;
  std::int64_t n_oom_retries = 0;  // times the cache was emptied to retry an allocation
  /// "allocated 1.0 GiB (peak 2.0 GiB), reserved 3.0 GiB (peak 3.0 GiB) in 4 segments, 12 raw allocs"
  std::string str() const;
};

/// Sizes that shape the pools (PyTorch's constants by default).
struct CachingAllocatorOptions {
  std::size_t round = 512;               // every block is a multiple of this
  std::size_t small_request = 1 << 20;   // requests up to this go to the small pool
  std::size_t small_segment = 2 << 20;   // raw allocation size of the small pool
  std::size_t large_segment = 20 << 20;  // raw allocation for large requests below mid_request
  std::size_t mid_request = 10 << 20;
  std::size_t large_round = 2 << 20;  // larger requests are rounded up to this
};

/// Thrown when memory cannot be had even after emptying the cache. Exit code as for CUDA failures.
class OutOfMemoryError : public CudaError {
 public:
  OutOfMemoryError(std::string message, SourceLoc where) : CudaError(std::move(message), where) {}
};

class CachingAllocator final : public Allocator {
 public:
  /// `raw` must outlive this allocator.
  explicit CachingAllocator(RawAllocator& raw, CachingAllocatorOptions options = {});
  /// Gives back the cached segments; live blocks are left to the process (and reported by stats).
  ~CachingAllocator() override;
  CachingAllocator(const CachingAllocator&) = delete;
  CachingAllocator& operator=(const CachingAllocator&) = delete;

  /// A block of at least n_bytes (aligned like the raw allocator's segments, and to `round`) for use on
  /// `stream`. OutOfMemoryError when it cannot be had.
  void* allocate(std::size_t n_bytes, StreamId stream);
  /// Allocator interface: the default stream (StreamId 0).
  void* allocate(std::size_t n_bytes) override { return allocate(n_bytes, 0); }
  /// Returns the block to the cache. InternalError for a pointer this allocator did not hand out.
  void deallocate(void* p, std::size_t n_bytes = 0) override;
  Device device() const override;

  /// Gives every wholly free cached segment back to the raw allocator; returns the bytes released.
  std::size_t empty_cache();
  MemoryStats stats() const;
  /// Sets the peaks to the current values.
  void reset_peak();
  /// The rounded size a request of n_bytes occupies, and the raw allocation made for it when nothing
  /// is cached (exposed for the tests and the memory plan).
  std::size_t rounded_size(std::size_t n_bytes) const;
  std::size_t segment_size(std::size_t rounded) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace adapt::backend
