// optim::DeviceAdamW's refusals, which need no GPU: host tensors, other dtypes and shapes, a CUDA device
// that is not visible (tensors tagged cuda:99 over host memory that is never touched), and, in builds
// without CUDA, the UnsupportedError naming ADAPT_CUDA. The updates themselves: gpu.device_adamw.
#include <doctest/doctest.h>

#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "optim/device_adamw.h"

using namespace adapt;
using namespace adapt::optim;

namespace {

const AdamWOptions kOpt{.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};

/// A tensor that claims to live on cuda:99 (no GPU has that index), over host memory nobody reads.
Tensor tagged_cuda(float* storage, const Shape& shape, DType dtype = DType::F32) {
  return Tensor::wrap(storage, shape, dtype, Device{DeviceKind::Cuda, 99}, nullptr, "tagged");
}

}  // namespace

TEST_CASE("DeviceAdamW refuses host tensors, or every tensor in a build without CUDA") {
  const Tensor w = Tensor::zeros(Shape{4}, DType::F32, "w");
  const Tensor g = Tensor::zeros(Shape{4}, DType::F32, "g");
#if ADAPT_HAVE_CUDA
  CHECK_THROWS_WITH_AS(DeviceAdamW({{.name = "layers.0.q.lora_a", .value = w, .grad = g}}, kOpt),
                       doctest::Contains("'layers.0.q.lora_a' lives on cpu"), UnsupportedError);
  CHECK_THROWS_WITH_AS(DeviceAdamW({{.name = "a", .value = w, .grad = g}}, kOpt), doctest::Contains("OffloadAdamW"),
                       UnsupportedError);
#else
  CHECK_THROWS_WITH_AS(DeviceAdamW({{.name = "a", .value = w, .grad = g}}, kOpt), doctest::Contains("ADAPT_CUDA"),
                       UnsupportedError);
  CHECK_THROWS_WITH_AS(DeviceAdamW({}, kOpt), doctest::Contains("ADAPT_CUDA"), UnsupportedError);
#endif
}

TEST_CASE("DeviceAdamW refuses a CUDA device that is not visible, after checking dtypes and shapes") {
  std::vector<float> mem(16, 0.0f);
  const Tensor w = tagged_cuda(mem.data(), Shape{2, 2});
  const Tensor g = tagged_cuda(mem.data() + 4, Shape{2, 2});
#if ADAPT_HAVE_CUDA
  REQUIRE(backend::cuda_device_count() < 100);
  // The device check runs last, so the parameter errors are reported on any machine.
  CHECK_THROWS_WITH_AS(
      DeviceAdamW({{.name = "a", .value = tagged_cuda(mem.data(), Shape{2, 2}, DType::BF16), .grad = g}}, kOpt),
      doctest::Contains("bf16"), ShapeError);
  CHECK_THROWS_WITH_AS(DeviceAdamW({{.name = "a", .value = w, .grad = tagged_cuda(mem.data() + 8, Shape{4})}}, kOpt),
                       doctest::Contains("has weights (2, 2) but gradient (4,)"), ShapeError);
  CHECK_THROWS_AS(DeviceAdamW({{.name = "a", .value = w, .grad = g}, {.name = "a", .value = w, .grad = g}}, kOpt),
                  InternalError);
  const Tensor elsewhere = Tensor::wrap(mem.data() + 8, Shape{2, 2}, DType::F32, Device{DeviceKind::Cuda, 98}, nullptr);
  CHECK_THROWS_WITH_AS(
      DeviceAdamW({{.name = "a", .value = w, .grad = g}, {.name = "b", .value = elsewhere, .grad = g}}, kOpt),
      doctest::Contains("one GPU"), UnsupportedError);
  AdamWOptions bad = kOpt;
  bad.beta2 = 1.0;
  CHECK_THROWS_AS(DeviceAdamW({{.name = "a", .value = w, .grad = g}}, bad), ConfigError);
  // Valid parameters on a device that does not exist: refused before any allocation.
  CHECK_THROWS_WITH_AS(DeviceAdamW({{.name = "a", .value = w, .grad = g}}, kOpt), doctest::Contains("cuda:99"),
                       UnsupportedError);
#else
  CHECK_THROWS_WITH_AS(DeviceAdamW({{.name = "a", .value = w, .grad = g}}, kOpt), doctest::Contains("ADAPT_CUDA"),
                       UnsupportedError);
#endif
}

#if ADAPT_HAVE_CUDA
TEST_CASE("DeviceAdamW over no parameters touches no device") {
  DeviceAdamW opt({}, kOpt);
  opt.step(1e-3);
  CHECK(opt.n_steps() == 1);
  CHECK(opt.size() == 0);
  CHECK(opt.sum_squares() == 0.0);
  CHECK(opt.clip_global_norm(1.0) == 0.0);
  CHECK_THROWS_AS(opt.clip_global_norm(0.0), ConfigError);
  CHECK(opt.state().empty());
}
#endif
