// ops::Workspace: aligned tensors from one block; after a pass has grown it, reset() merges the blocks
// and later passes of the same size allocate nothing.
#include <doctest/doctest.h>

#include <cstdint>

#include "core/error.h"
#include "ops/workspace.h"

using namespace adapt;

TEST_CASE("workspace hands out aligned, disjoint tensors and stops allocating once warm") {
  ops::Workspace ws;
  auto pass = [&] {
    ws.reset();
    Tensor a = ws.take({3, 5}, DType::F32, "a");
    Tensor b = ws.take({1000, 1000}, DType::F32, "b");  // 4 MB: more than the first block
    Tensor c = ws.take({7}, DType::I32, "c");
    for (const Tensor* t : {&a, &b, &c}) CHECK(reinterpret_cast<std::uintptr_t>(t->raw()) % 64 == 0);
    const bool disjoint = static_cast<char*>(a.raw()) + a.size_bytes() <= static_cast<char*>(b.raw()) ||
                          static_cast<char*>(b.raw()) + b.size_bytes() <= static_cast<char*>(a.raw());
    CHECK(disjoint);
    CHECK(a.is_contiguous());
    CHECK(b.name() == "b");
  };
  pass();
  const int after_first = ws.n_allocations();
  CHECK(after_first >= 2);
  pass();  // reset() merged the blocks into one of the high-water size
  const int after_second = ws.n_allocations();
  CHECK(after_second == after_first + 1);
  for (int i = 0; i < 5; ++i) pass();
  CHECK(ws.n_allocations() == after_second);
  CHECK(ws.capacity_bytes() >= ws.high_water_bytes());
}

// On a GPU the caching allocator counts every byte of a block, so the first pass's blocks must not
// overshoot its high-water mark: a large tensor and then smaller ones get blocks of their own sizes, not
// blocks as large as everything handed out so far (which would hold 8 + 8 MiB here for 11 MiB of tensors,
// as they still do on the host, where untouched pages cost nothing). The "device" here is host memory
// that says it is cuda:0; nothing reads it.
TEST_CASE("a workspace's first pass on a device holds little more than its high-water mark") {
  class FakeDevice final : public Allocator {
   public:
    void* allocate(std::size_t n) override { return host_allocator().allocate(n); }
    void deallocate(void* p, std::size_t n) override { host_allocator().deallocate(p, n); }
    Device device() const override { return Device{DeviceKind::Cuda, 0}; }
  };
  FakeDevice fake;
  const std::int64_t mib = 1 << 20;
  auto first_pass = [&](ops::Workspace& ws) {
    ws.take({8 * mib}, DType::U8, "big");
    ws.take({3 * mib / 2}, DType::U8, "after");
    ws.take({3 * mib / 2}, DType::U8, "after2");
    ws.take({16}, DType::F32, "small");  // starts a block that later small tensors would share
    ws.take({16}, DType::F32, "small2");
    CHECK(ws.high_water_bytes() == static_cast<std::size_t>(11 * mib + 128));
  };
  ops::Workspace device(fake);
  first_pass(device);
  CHECK(device.capacity_bytes() == static_cast<std::size_t>(11 * mib + (64 << 10)));  // blocks fit their tensors
  device.reset();
  CHECK(device.capacity_bytes() == device.high_water_bytes());
  ops::Workspace host;
  first_pass(host);
  CHECK(host.capacity_bytes() == static_cast<std::size_t>(16 * mib));  // 8, then 8 for the rest
}

TEST_CASE("a workspace rewound to a mark hands the released memory out again and keeps its high-water mark") {
  ops::Workspace ws;
  const std::int64_t mib = 1 << 20;
  auto pass = [&](bool warm) {
    ws.reset();
    Tensor kept = ws.take({1000}, DType::F32, "kept");
    const ops::Workspace::Mark m = ws.mark();
    Tensor a = ws.take({2 * mib}, DType::U8, "a");
    void* const a_at = a.raw();
    const ops::Workspace::Mark inner = ws.mark();
    ws.take({mib}, DType::U8, "b");
    ws.rewind(inner);
    ws.rewind(m);
    CHECK(ws.used_bytes() == 4032);  // `kept` alone (4,000 bytes, aligned to 64)
    Tensor c = ws.take({2 * mib}, DType::U8, "c");
    if (warm) {  // a's memory again, after `kept` (a first pass gets another block)
      CHECK(c.raw() == a_at);
      CHECK(static_cast<char*>(c.raw()) >= static_cast<char*>(kept.raw()) + kept.size_bytes());
    }
    CHECK(ws.high_water_bytes() == static_cast<std::size_t>(4032 + 3 * mib));
  };
  pass(false);  // blocks added after the mark went back at the rewind; reset() sizes one block for the high water
  const int after_first = ws.n_allocations();
  pass(true);
  CHECK(ws.n_allocations() == after_first + 1);
  CHECK(ws.capacity_bytes() == ws.high_water_bytes());
  pass(true);
  CHECK(ws.n_allocations() == after_first + 1);  // warm: rewinds and takes allocate nothing
  ops::Workspace other;
  other.take({16}, DType::F32);
  ops::Workspace::Mark bad = other.mark();
  bad.used += 1 << 30;
  CHECK_THROWS_WITH_AS(ws.rewind(bad), doctest::Contains("is not one of this workspace's"), Error);
}
