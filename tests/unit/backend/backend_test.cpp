// Backend on any machine: a CUDA build links and reports cuBLASLt and NCCL without needing a GPU; with
// no device visible, device requests fail with the reason instead of crashing.
#include <doctest/doctest.h>

#include "backend/backend.h"
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
