// ops::Workspace: aligned tensors from one block; after a pass has grown it, reset() merges the blocks
// and later passes of the same size allocate nothing.
#include <doctest/doctest.h>

#include <cstdint>

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
