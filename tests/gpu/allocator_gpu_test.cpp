// The CUDA runtime layer on a real device: device selection errors, the caching device allocator
// (stats, reuse, per-stream blocks, empty_cache, the out-of-memory message on an impossible request),
// streams and events (ordering, timing), and the cached pinned host allocator (page-locked, async
// round trip). Compiled in every configuration; without CUDA the main skips before any case runs.
#include <doctest/doctest.h>

#include <cstring>
#include <numeric>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"

#if ADAPT_HAVE_CUDA
#include "backend/cuda/cuda_runtime.h"

using namespace adapt;
namespace bc = adapt::backend::cuda;

TEST_CASE("gpu.backend device selection names the index and the device count") {
  const int n = bc::device_count();
  REQUIRE(n > 0);
  const std::string expected = fmt::format("cuda:{} requested but {} CUDA", n, n);
  CHECK_THROWS_WITH_AS(bc::require_device(n), doctest::Contains(expected.c_str()), UnsupportedError);
  CHECK_THROWS_AS(bc::set_device(-1), UnsupportedError);
  CHECK_THROWS_AS(backend::cuda_allocator(n), UnsupportedError);
  bc::set_device(0);
  CHECK(bc::current_device() == 0);
  if (n > 1) {
    {
      bc::DeviceGuard guard(1);
      CHECK(bc::current_device() == 1);
    }
    CHECK(bc::current_device() == 0);
  }
  CHECK(bc::device_name(0).find("sm_") != std::string::npos);
  const backend::MemoryInfo info = bc::device_memory_info(0);
  CHECK(info.known);
  CHECK(info.total > 0);
  CHECK(info.free <= info.total);
}

TEST_CASE("gpu.backend the caching device allocator reuses blocks and reports its use") {
  backend::CachingAllocator& ca = bc::device_allocator(0);
  CHECK(&ca == &backend::cuda_allocator(0));
  ca.empty_cache();
  const backend::MemoryStats s0 = ca.stats();
  void* p = ca.allocate(1000);
  const backend::MemoryStats s1 = ca.stats();
  CHECK(s1.allocated == s0.allocated + 1024);
  CHECK(s1.allocated_peak >= s1.allocated);
  CHECK(s1.n_raw_allocs == s0.n_raw_allocs + 1);  // one cudaMalloc of a 2 MiB segment
  CHECK(s1.reserved == s0.reserved + (2 << 20));
  ADAPT_CUDA_CHECK(cudaMemset(p, 0x5a, 1000));  // the memory is real device memory
  cudaPointerAttributes attr{};
  ADAPT_CUDA_CHECK(cudaPointerGetAttributes(&attr, p));
  CHECK(attr.type == cudaMemoryTypeDevice);
  CHECK(attr.device == 0);
  ca.deallocate(p);
  void* q = ca.allocate(900);
  CHECK(q == p);
  CHECK(ca.stats().n_raw_allocs == s1.n_raw_allocs);
  ca.deallocate(q);
  CHECK(ca.stats().allocated == s0.allocated);
  CHECK(backend::cuda_empty_cache(0) >= (2u << 20));
  CHECK(ca.stats().reserved == s0.reserved);
  CHECK(backend::cuda_memory_stats(0).n_raw_frees >= 1);
}

TEST_CASE("gpu.backend blocks belong to their stream") {
  backend::CachingAllocator& ca = bc::device_allocator(0);
  bc::Stream s(0);
  void* a = ca.allocate(4096, s.id());
  ca.deallocate(a);
  void* b = ca.allocate(4096, 0);  // the default stream does not get s's block
  CHECK(b != a);
  void* c = ca.allocate(4096, s.id());
  CHECK(c == a);
  ca.deallocate(b);
  ca.deallocate(c);
}

TEST_CASE("gpu.backend tensors round-trip through the caching allocator") {
  Tensor host = Tensor::empty({1000, 37}, DType::F32, host_allocator(), "host");
  std::iota(host.data<float>(), host.data<float>() + host.numel(), 0.5f);
  Tensor dev = Tensor::empty(host.shape(), DType::F32, backend::cuda_allocator(0), "dev");
  backend::copy(dev, host);
  Tensor back = Tensor::empty(host.shape(), DType::F32, host_allocator(), "back");
  backend::copy(back, dev);
  CHECK(std::memcmp(back.raw(), host.raw(), host.size_bytes()) == 0);
}

TEST_CASE("gpu.backend an impossible request fails with a clear out-of-memory error") {
  backend::CachingAllocator& ca = bc::device_allocator(0);
  const backend::MemoryInfo info = bc::device_memory_info(0);
  const std::size_t huge = info.total * 2;
  const std::int64_t retries = ca.stats().n_oom_retries;
  try {
    ca.allocate(huge);
    FAIL("expected OutOfMemoryError");
  } catch (const backend::OutOfMemoryError& e) {
    const std::string msg = e.what();
    MESSAGE(msg);
    CHECK(msg.find("out of memory on cuda:0") != std::string::npos);
    CHECK(msg.find(std::to_string(huge) + " bytes") != std::string::npos);
    CHECK(msg.find("free of") != std::string::npos);
    CHECK(msg.find("retried once") != std::string::npos);
  }
  CHECK(ca.stats().n_oom_retries == retries + 1);
  CHECK(cudaGetLastError() == cudaSuccess);  // the failed cudaMalloc left no error behind
  void* p = ca.allocate(1 << 20);            // and the allocator still works
  ca.deallocate(p);
}

TEST_CASE("gpu.backend events order streams and time work") {
  bc::Stream s1(0), s2(0);
  const std::size_t n = std::size_t{256} << 20;
  backend::CachingAllocator& ca = bc::device_allocator(0);
  void* buf = ca.allocate(n, s1.id());
  bc::Event start, stop, done(false);
  start.record(s1.get());
  ADAPT_CUDA_CHECK(cudaMemsetAsync(buf, 1, n, s1.get()));
  stop.record(s1.get());
  done.record(s1.get());
  done.block(s2.get());  // s2 waits for s1's memset
  unsigned char probe = 0;
  ADAPT_CUDA_CHECK(cudaMemcpyAsync(&probe, static_cast<char*>(buf) + n - 1, 1, cudaMemcpyDeviceToHost, s2.get()));
  s2.synchronize();
  CHECK(probe == 1);
  stop.synchronize();
  CHECK(stop.query());
  CHECK(s1.query());
  const float ms = stop.elapsed_ms_since(start);
  MESSAGE("memset of 256 MiB: ", ms, " ms");
  CHECK(ms > 0.0f);
  CHECK(ms < 10000.0f);
  CHECK_THROWS_AS(done.elapsed_ms_since(start), UnsupportedError);  // created without timing
  s1.synchronize();
  ca.deallocate(buf);
}

TEST_CASE("gpu.backend pinned host memory is page-locked, cached, and copies asynchronously") {
  backend::CachingAllocator& pinned = bc::pinned_host_allocator();
  CHECK(&pinned == &backend::pinned_host_allocator());
  const std::size_t n = 3 << 20;
  void* h = pinned.allocate(n);
  CHECK(pinned.device().kind == DeviceKind::PinnedHost);
  cudaPointerAttributes attr{};
  ADAPT_CUDA_CHECK(cudaPointerGetAttributes(&attr, h));
  CHECK(attr.type == cudaMemoryTypeHost);
  auto* bytes = static_cast<unsigned char*>(h);
  for (std::size_t i = 0; i < n; ++i) bytes[i] = static_cast<unsigned char>(i * 7);
  bc::Stream s(0);
  backend::CachingAllocator& dev = bc::device_allocator(0);
  void* d = dev.allocate(n, s.id());
  void* h2 = pinned.allocate(n);
  ADAPT_CUDA_CHECK(cudaMemcpyAsync(d, h, n, cudaMemcpyHostToDevice, s.get()));
  ADAPT_CUDA_CHECK(cudaMemcpyAsync(h2, d, n, cudaMemcpyDeviceToHost, s.get()));
  s.synchronize();
  CHECK(std::memcmp(h, h2, n) == 0);
  const std::int64_t raw_before = backend::pinned_memory_stats().n_raw_allocs;
  pinned.deallocate(h2);
  void* h3 = pinned.allocate(n);
  CHECK(h3 == h2);  // cached, no new cudaHostAlloc
  CHECK(backend::pinned_memory_stats().n_raw_allocs == raw_before);
  CHECK(backend::pinned_memory_stats().allocated >= 2 * n);
  pinned.deallocate(h3);
  pinned.deallocate(h);
  dev.deallocate(d);
}

#endif  // ADAPT_HAVE_CUDA
