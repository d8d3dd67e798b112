// AdapterSet's device placement API where no GPU is needed: on a host set host_parameters() is
// parameters() and the syncs do nothing; to_device without a device fails with the reason and leaves
// the set usable; the hook refuses tensors on another device than the parameters (a host buffer tagged
// as cuda:0 stands in for a device tensor: the check runs before any element is read).
#include <doctest/doctest.h>

#include <memory>
#include <vector>

#include "adapters/adapter_set.h"
#include "backend/backend.h"
#include "core/error.h"
#include "tests/unit/adapters/adapters_test_util.h"

using namespace adapt;
using namespace adapt::adapters;

namespace {

AdapterConfig both_kinds() {
  AdapterConfig c;
  c.kind = AdapterKind::LoraBottleneck;
  c.lora.r = 2;
  c.lora.targets = {"q", "down"};
  c.bottleneck.size = 4;
  c.layers = {1};
  return c;
}

/// A host buffer of `shape` labelled as living on cuda:0.
Tensor tagged_as_cuda(const Shape& shape, const char* name) {
  auto buf = std::make_shared<std::vector<float>>(static_cast<std::size_t>(shape.numel()), 0.0f);
  return Tensor::wrap(buf->data(), shape, DType::F32, Device{DeviceKind::Cuda, 0}, buf, name);
}

}  // namespace

TEST_CASE("AdapterSet device API on a host set: host_parameters() are parameters(), the syncs are no-ops") {
  AdapterSet set(test::tiny_llama(), both_kinds());
  CHECK(set.device() == Device{});
  const std::vector<AdapterParam> p = set.parameters(), h = set.host_parameters();
  REQUIRE(p.size() == h.size());
  for (std::size_t i = 0; i < p.size(); ++i) {
    CHECK(h[i].name == p[i].name);
    CHECK(h[i].value.raw() == p[i].value.raw());  // the same storage, no copies
    CHECK(h[i].grad.raw() == p[i].grad.raw());
  }
  set.gradients_to_host();
  set.values_from_host();
  set.values_to_host();
  set.to_host();
  CHECK(set.device() == Device{});
  if (backend::cuda_device_count() == 0) {
    // No device here: to_device says so and leaves the set on the host, usable.
    CHECK_THROWS_AS(set.to_device(0), UnsupportedError);
    CHECK(set.device() == Device{});
    CHECK(set.parameters()[0].value.device().host_accessible());
  }
}

TEST_CASE("the hook refuses tensors that are not on the adapters' device, naming the tensor and to_device") {
  const model::LlamaConfig tiny = test::tiny_llama();
  AdapterSet set(tiny, both_kinds());
  const model::LinearSite q{.layer = 1, .kind = model::WeightKind::Wq};
  const Tensor x = tagged_as_cuda({3, tiny.hidden_size}, "x_dev");
  Tensor y = Tensor::zeros({3, tiny.hidden_size}, DType::F32, "y_host");
  CHECK_THROWS_WITH_AS(set.linear_forward(q, x, y), doctest::Contains("'x_dev' is on cuda:0"), ShapeError);
  CHECK_THROWS_WITH_AS(set.linear_forward(q, x, y), doctest::Contains("to_device"), ShapeError);
  Tensor dx = Tensor::zeros({3, tiny.hidden_size}, DType::F32, "dx");
  CHECK_THROWS_AS(set.linear_backward(q, Tensor::zeros({3, tiny.hidden_size}, DType::F32, "x"), x, dx), ShapeError);
  const Tensor h = tagged_as_cuda({3, tiny.hidden_size}, "h_dev");
  const Tensor f = Tensor::zeros({3, tiny.hidden_size}, DType::F32, "f");
  Tensor out = Tensor::zeros({3, tiny.hidden_size}, DType::F32, "out");
  CHECK_THROWS_WITH_AS(set.block_forward(1, model::BlockSite::Mlp, h, f, out), doctest::Contains("'h_dev'"),
                       ShapeError);
  Tensor dh = Tensor::zeros({3, tiny.hidden_size}, DType::F32, "dh");
  Tensor df = Tensor::zeros({3, tiny.hidden_size}, DType::F32, "df");
  CHECK_THROWS_AS(set.block_backward(1, model::BlockSite::Mlp, h, f, out, dh, df), ShapeError);
}
