// Backend on any machine: a CUDA build links and reports cuBLASLt and NCCL without needing a GPU; with
// no device visible, device requests fail with the reason instead of crashing.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "backend/offload_copier.h"
#include "core/error.h"

using namespace adapt;

TEST_CASE("the linked CUDA libraries report their versions") {
  const std::string v = backend::cuda_library_versions();
  MESSAGE("linked: ", v);
#if ADAPT_CUDA_EMU
  CHECK(v.find("cuda_emu (") != std::string::npos);
  CHECK(v.find("cuBLASLt ") != std::string::npos);
#elif ADAPT_HAVE_CUDA
  CHECK(v.find("cuBLASLt ") != std::string::npos);
  CHECK(v.find("NCCL 2.") != std::string::npos);
  CHECK(v.find("CUDA runtime 1") != std::string::npos);
#else
  CHECK(v.find("without CUDA") != std::string::npos);
#endif
}

TEST_CASE("device requests without a device fail with the reason") {
  if (backend::cuda_device_count() > 0) {
    MESSAGE("a CUDA device is visible (", backend::cuda_device_name(0), "); the no-device path is not exercised");
    return;
  }
  CHECK_FALSE(backend::cuda_unavailable_reason().empty());
  CHECK_THROWS_AS(backend::cuda_allocator(0), UnsupportedError);
  CHECK_THROWS_AS(backend::pinned_host_allocator(), UnsupportedError);
  CHECK_THROWS_WITH_AS(backend::cuda_memory_stats(1), doctest::Contains("cuda:1"), UnsupportedError);
  CHECK_THROWS_AS(backend::cuda_empty_cache(0), UnsupportedError);
  CHECK_THROWS_AS(backend::pinned_memory_stats(), UnsupportedError);
  Tensor host = Tensor::zeros({4}, DType::F32);
  CHECK(backend::cuda_device_count() == 0);
  Tensor copy = Tensor::empty({4}, DType::F32);
  backend::copy(copy, host);  // host to host still works
  CHECK(copy.data<float>()[3] == 0.f);
}

// Rows at pitches (a KV cache row's heads): each row's n_bytes land at its pitch, the bytes between rows stay.
TEST_CASE("the host copier copies rows at pitches both ways and leaves the gaps") {
  auto copier = backend::offload_copier_host();
  std::vector<std::uint8_t> src(40), dst(40, 0xee), back(40, 0xdd);
  for (std::size_t i = 0; i < src.size(); ++i) src[i] = static_cast<std::uint8_t>(i);
  // 3 rows of 6 bytes from a pitch of 10 (starting at byte 2) to a pitch of 12 (starting at byte 1).
  copier->to_device_rows(dst.data() + 1, 12, src.data() + 2, 10, 6, 3);
  for (std::size_t i = 0; i < dst.size(); ++i) {
    CAPTURE(i);
    const std::size_t row = (i - 1) / 12, col = (i - 1) % 12;
    const bool copied = i >= 1 && row < 3 && col < 6;
    CHECK(dst[i] == (copied ? src[2 + row * 10 + col] : 0xee));
  }
  const backend::HostCopy rows{back.data() + 2, dst.data() + 1, 6, 3, 10, 12};
  copier->wait_host(copier->to_host({&rows, 1}, nullptr));
  for (std::size_t i = 0; i < back.size(); ++i) {
    CAPTURE(i);
    const std::size_t row = (i - 2) / 10, col = (i - 2) % 10;
    const bool copied = i >= 2 && row < 3 && col < 6;
    CHECK(back[i] == (copied ? src[i] : 0xdd));
  }
}
