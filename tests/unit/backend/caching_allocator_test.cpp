// CachingAllocator over a fake raw allocator that counts its calls and can run out of memory: rounding
// and segment sizes, reuse, splitting and merging, per-stream pools, stats and peaks, empty_cache, the
// empty-the-cache-and-retry path on out-of-memory and the final error's message, misuse, and a random
// sequence checked against an independent model (no overlaps, byte counts).
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "backend/caching_allocator.h"
#include "core/error.h"
#include "tensor/tensor.h"
#include "tests/support/test_support.h"

using namespace adapt;
using backend::CachingAllocator;
using backend::MemoryInfo;
using backend::OutOfMemoryError;

namespace {

constexpr std::size_t kMiB = std::size_t{1} << 20;

// Real (aligned, never touched) host memory, so sanitizers see genuine pointers; a byte limit.
class FakeRaw final : public backend::RawAllocator {
 public:
  explicit FakeRaw(std::size_t limit = std::size_t{1} << 34) : limit_(limit) {}
  ~FakeRaw() override { CHECK(in_use == 0); }
  void* raw_allocate(std::size_t n) override {
    ++calls;
    if (in_use + n > limit_) {
      ++failed;
      return nullptr;
    }
    void* p = std::aligned_alloc(256, (n + 255) / 256 * 256);
    REQUIRE(p != nullptr);
    in_use += n;
    sizes[p] = n;
    return p;
  }
  void raw_free(void* p, std::size_t n) override {
    REQUIRE(sizes.count(p) == 1);
    CHECK(sizes[p] == n);
    sizes.erase(p);
    in_use -= n;
    ++frees;
    std::free(p);
  }
  Device device() const override { return Device{DeviceKind::Cuda, 3}; }
  MemoryInfo memory_info() const override { return MemoryInfo{true, limit_ - in_use, limit_}; }

  std::int64_t calls = 0, failed = 0, frees = 0;
  std::size_t in_use = 0;
  std::map<void*, std::size_t> sizes;

 private:
  std::size_t limit_;
};

char* as_bytes(void* p) { return static_cast<char*>(p); }

}  // namespace

TEST_CASE("caching allocator rounds requests and sizes segments like PyTorch's") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  CHECK(ca.rounded_size(0) == 512);
  CHECK(ca.rounded_size(1) == 512);
  CHECK(ca.rounded_size(512) == 512);
  CHECK(ca.rounded_size(513) == 1024);
  CHECK(ca.segment_size(512) == 2 * kMiB);
  CHECK(ca.segment_size(kMiB) == 2 * kMiB);
  CHECK(ca.segment_size(kMiB + 512) == 20 * kMiB);
  CHECK(ca.segment_size(10 * kMiB - 512) == 20 * kMiB);
  CHECK(ca.segment_size(10 * kMiB) == 10 * kMiB);
  CHECK(ca.segment_size(11 * kMiB) == 12 * kMiB);
  CHECK(ca.device() == (Device{DeviceKind::Cuda, 3}));
}

TEST_CASE("a freed block is reused without a new raw allocation") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  void* p = ca.allocate(1000);
  CHECK(raw.calls == 1);
  CHECK(raw.in_use == 2 * kMiB);
  ca.deallocate(p);
  void* q = ca.allocate(1000);
  CHECK(q == p);
  CHECK(raw.calls == 1);
  ca.deallocate(q);
  const auto s = ca.stats();
  CHECK(s.n_raw_allocs == 1);
  CHECK(s.n_allocations == 2);
  CHECK(s.n_live == 0);
  CHECK(s.allocated == 0);
  CHECK(s.reserved == 2 * kMiB);
}

TEST_CASE("small blocks are split out of one 2 MiB segment and merge back when freed") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  void* a = ca.allocate(512);
  void* b = ca.allocate(512);
  void* c = ca.allocate(512);
  CHECK(as_bytes(b) == as_bytes(a) + 512);
  CHECK(as_bytes(c) == as_bytes(b) + 512);
  CHECK(raw.calls == 1);
  ca.deallocate(b);
  ca.deallocate(a);
  // a and b merged into one 1 KiB block: the best fit for 1 KiB, at a's address.
  void* ab = ca.allocate(1024);
  CHECK(ab == a);
  CHECK(raw.calls == 1);
  ca.deallocate(ab);
  ca.deallocate(c);
  // Everything merged: the whole segment is one free block again, so the cache can give it back.
  CHECK(ca.empty_cache() == 2 * kMiB);
  CHECK(raw.frees == 1);
  CHECK(ca.stats().reserved == 0);
  CHECK(ca.stats().n_segments == 0);
}

TEST_CASE("a full small segment makes the allocator take a second one") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  std::vector<void*> blocks;
  for (int i = 0; i < 4096; ++i) blocks.push_back(ca.allocate(512));  // exactly 2 MiB
  CHECK(raw.calls == 1);
  blocks.push_back(ca.allocate(1));
  CHECK(raw.calls == 2);
  for (void* p : blocks) ca.deallocate(p);
  CHECK(ca.stats().allocated == 0);
  CHECK(ca.empty_cache() == 4 * kMiB);
}

TEST_CASE("large requests share a 20 MiB segment; big ones get their own rounded to 2 MiB") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  void* a = ca.allocate(2 * kMiB);
  CHECK(raw.in_use == 20 * kMiB);
  void* b = ca.allocate(5 * kMiB);  // from the 18 MiB left of the first segment
  CHECK(raw.calls == 1);
  CHECK(as_bytes(b) == as_bytes(a) + 2 * kMiB);
  void* c = ca.allocate(14 * kMiB - 3);  // its own 14 MiB segment: the 13 MiB left do not fit
  CHECK(raw.calls == 2);
  CHECK(raw.in_use == 34 * kMiB);
  // Small and large pools are separate: a small request never takes a large block.
  void* s = ca.allocate(100);
  CHECK(raw.calls == 3);
  const auto st = ca.stats();
  CHECK(st.allocated == 2 * kMiB + 5 * kMiB + 14 * kMiB + 512);
  CHECK(st.requested == 2 * kMiB + 5 * kMiB + (14 * kMiB - 3) + 100);
  CHECK(st.reserved == 36 * kMiB);
  CHECK(st.n_segments == 3);
  for (void* p : {a, b, c, s}) ca.deallocate(p);
}

TEST_CASE("a large remainder of at most 1 MiB is not split off") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  void* a = ca.allocate(12 * kMiB);  // 12 MiB segment
  ca.deallocate(a);
  void* b = ca.allocate(11 * kMiB);  // takes the cached 12 MiB block; 1 MiB rest is not > 1 MiB: whole block
  CHECK(b == a);
  CHECK(ca.stats().allocated == 12 * kMiB);
  ca.deallocate(b);
}

TEST_CASE("blocks are reused only on the stream they were allocated for") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  void* p1 = ca.allocate(4096, 1);
  ca.deallocate(p1);
  void* p2 = ca.allocate(4096, 2);
  CHECK(raw.calls == 2);
  CHECK(as_bytes(p2) != as_bytes(p1));
  void* p1b = ca.allocate(4096, 1);
  CHECK(p1b == p1);
  CHECK(raw.calls == 2);
  ca.deallocate(p2);
  ca.deallocate(p1b);
}

TEST_CASE("stats track current and peak use; reset_peak starts over") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  void* a = ca.allocate(3 * kMiB);
  void* b = ca.allocate(4 * kMiB);
  CHECK(ca.stats().allocated == 7 * kMiB);
  CHECK(ca.stats().allocated_peak == 7 * kMiB);
  ca.deallocate(b);
  CHECK(ca.stats().allocated == 3 * kMiB);
  CHECK(ca.stats().allocated_peak == 7 * kMiB);
  CHECK(ca.stats().reserved_peak == 20 * kMiB);
  ca.reset_peak();
  CHECK(ca.stats().allocated_peak == 3 * kMiB);
  void* c = ca.allocate(kMiB + 1);
  CHECK(ca.stats().allocated_peak == 4 * kMiB + 512);
  const std::string line = ca.stats().str();
  CHECK(line.find("allocated 4.00 MiB") != std::string::npos);
  CHECK(line.find("reserved 20.00 MiB") != std::string::npos);
  ca.deallocate(a);
  ca.deallocate(c);
}

TEST_CASE("empty_cache keeps segments that hold a live block") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  void* live = ca.allocate(1024);
  void* dead = ca.allocate(8 * kMiB);
  ca.deallocate(dead);
  CHECK(ca.empty_cache() == 20 * kMiB);
  CHECK(raw.in_use == 2 * kMiB);
  CHECK(ca.stats().reserved == 2 * kMiB);
  CHECK(ca.stats().n_raw_frees == 1);
  ca.deallocate(live);
  CHECK(ca.empty_cache() == 2 * kMiB);
  CHECK(raw.in_use == 0);
}

TEST_CASE("out of memory: the cache is emptied and the allocation retried once") {
  FakeRaw raw(24 * kMiB);
  CachingAllocator ca(raw);
  void* a = ca.allocate(2 * kMiB);   // 20 MiB segment
  ca.deallocate(a);                  // cached, not returned
  void* b = ca.allocate(22 * kMiB);  // bigger than the cached block; 20 + 22 > 24: fails, cache emptied, retried
  CHECK(b != nullptr);
  CHECK(raw.failed == 1);
  CHECK(raw.frees == 1);
  const auto s = ca.stats();
  CHECK(s.n_oom_retries == 1);
  CHECK(s.reserved == 22 * kMiB);
  CHECK(s.allocated == 22 * kMiB);
  ca.deallocate(b);
}

TEST_CASE("out of memory after the retry: a clear error, and the allocator still works") {
  FakeRaw raw(24 * kMiB);
  CachingAllocator ca(raw);
  void* keep = ca.allocate(4 * kMiB);  // 20 MiB reserved, 4 MiB allocated
  try {
    ca.allocate(30 * kMiB);
    FAIL("expected OutOfMemoryError");
  } catch (const OutOfMemoryError& e) {
    const std::string msg = e.what();
    MESSAGE(msg);
    CHECK(msg.find("out of memory on cuda:3") != std::string::npos);
    CHECK(msg.find("30.00 MiB") != std::string::npos);
    CHECK(msg.find("31457280 bytes") != std::string::npos);
    CHECK(msg.find("allocated 4.00 MiB (peak 4.00 MiB), reserved 20.00 MiB") != std::string::npos);
    CHECK(msg.find("4.00 MiB free of 24.00 MiB") != std::string::npos);
    CHECK(msg.find("retried once") != std::string::npos);
    CHECK(e.exit_code() == ExitCode::Cuda);
  }
  CHECK(raw.failed == 2);  // the first try and the retry
  CHECK(ca.stats().n_oom_retries == 1);
  CHECK(ca.stats().allocated == 4 * kMiB);
  void* more = ca.allocate(2 * kMiB);  // still served from the cached rest of the segment
  CHECK(raw.calls == 3);
  ca.deallocate(more);
  ca.deallocate(keep);
}

TEST_CASE("an absurd request fails with OutOfMemoryError, not an overflow") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  CHECK_THROWS_AS(ca.allocate(std::numeric_limits<std::size_t>::max()), OutOfMemoryError);
  CHECK_THROWS_AS(ca.allocate(std::numeric_limits<std::size_t>::max() - 100), OutOfMemoryError);
  CHECK(raw.calls == 0);
}

TEST_CASE("freeing a foreign or already freed pointer is an internal error") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  int local = 0;
  CHECK_THROWS_AS(ca.deallocate(&local), InternalError);
  void* p = ca.allocate(64);
  ca.deallocate(p);
  CHECK_THROWS_WITH_AS(ca.deallocate(p), doctest::Contains("already freed"), InternalError);
  ca.deallocate(nullptr);  // a no-op, like free(nullptr)
}

TEST_CASE("tensors allocate through the caching allocator and give the block back") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  {
    Tensor t = Tensor::empty({64, 33}, DType::F32, ca, "t");
    CHECK(t.device() == (Device{DeviceKind::Cuda, 3}));
    CHECK(ca.stats().n_live == 1);
    CHECK(ca.stats().requested == 64 * 33 * 4);
  }
  CHECK(ca.stats().n_live == 0);
  CHECK(ca.stats().allocated == 0);
}

TEST_CASE("random allocations never overlap and the byte counts add up") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  std::mt19937_64 rng(test::kSeed);
  std::map<char*, std::size_t> live;  // pointer -> block size
  std::size_t expect_alloc = 0;
  for (int step = 0; step < 20000; ++step) {
    const bool do_free = !live.empty() && (rng() % 100 < 45 || live.size() > 400);
    if (do_free) {
      auto it = live.begin();
      std::advance(it, static_cast<long>(rng() % live.size()));
      expect_alloc -= it->second;
      ca.deallocate(it->first);
      live.erase(it);
    } else {
      const std::size_t choice = rng() % 10;
      const std::size_t n = choice < 7 ? rng() % (64 * 1024) : choice < 9 ? rng() % (4 * kMiB) : rng() % (24 * kMiB);
      const backend::StreamId stream = rng() % 3;
      const std::size_t before = ca.stats().allocated;
      char* p = static_cast<char*>(ca.allocate(n, stream));
      // The block may be larger than the rounded request when the rest was too small to split off.
      const std::size_t sz = ca.stats().allocated - before;
      const std::size_t rounded = ca.rounded_size(n);
      REQUIRE(sz >= rounded);
      REQUIRE(sz - rounded <= (rounded <= kMiB ? std::size_t{511} : kMiB));
      REQUIRE(reinterpret_cast<std::uintptr_t>(p) % 256 == 0);  // segment alignment kept by 512-byte splits
      auto next = live.lower_bound(p);
      if (next != live.end()) REQUIRE(p + sz <= next->first);
      if (next != live.begin()) {
        auto prev = std::prev(next);
        REQUIRE(prev->first + prev->second <= p);
      }
      live.emplace(p, sz);
      expect_alloc += sz;
    }
    if (step % 997 == 0) ca.empty_cache();
    REQUIRE(ca.stats().allocated == expect_alloc);
    REQUIRE(ca.stats().reserved == raw.in_use);
    REQUIRE(ca.stats().n_live == static_cast<std::int64_t>(live.size()));
  }
  for (auto& [p, sz] : live) ca.deallocate(p);
  ca.empty_cache();
  CHECK(raw.in_use == 0);
  CHECK(ca.stats().n_raw_allocs == ca.stats().n_raw_frees);
  MESSAGE("random run: ", ca.stats().n_raw_allocs, " raw allocations for 20000 steps");
  CHECK(ca.stats().n_raw_allocs < 2000);  // the cache does its job
}

TEST_CASE("concurrent allocations from several threads") {
  FakeRaw raw;
  CachingAllocator ca(raw);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&ca, t] {
      std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed) + static_cast<std::uint32_t>(t));
      std::vector<void*> mine;
      for (int i = 0; i < 2000; ++i) {
        if (!mine.empty() && rng() % 2) {
          ca.deallocate(mine.back());
          mine.pop_back();
        } else {
          mine.push_back(ca.allocate(rng() % 200000, static_cast<backend::StreamId>(t % 2)));
        }
      }
      for (void* p : mine) ca.deallocate(p);
    });
  }
  for (auto& th : threads) th.join();
  CHECK(ca.stats().allocated == 0);
  CHECK(ca.stats().n_live == 0);
  ca.empty_cache();
  CHECK(raw.in_use == 0);
}
