// Device placement without a device (llama_device.h): a host model reports the CPU and the host
// allocator; llama_model_to_device refuses bad dtypes, head_dims the device attention does not take and
// missing devices with messages that say what
// to do (a pipeline stage is placed like a whole model); tensor_to / copy_between on the host. (On a GPU:
// tests/gpu/model_gpu_test.cpp.)
#include <doctest/doctest.h>

#include "backend/backend.h"
#include "core/error.h"
#include "model/llama_device.h"
#include "model/llama_forward.h"

using namespace adapt;

namespace {
model::LlamaModel small_model() {
  model::LlamaModel m;
  m.config = model::llama_config_preset("tiny");
  m.config.n_layers = 1;
  m.inv_freq = model::rope_inv_freq(m.config);
  const std::int64_t C = m.config.hidden_size;
  m.weights.final_norm = Tensor::zeros({C}, DType::F32, "model.norm.weight");
  m.weights.layers.resize(1);
  m.weights.layers[0].attn_norm = Tensor::zeros({C}, DType::F32, "input_layernorm");
  return m;
}
}  // namespace

TEST_CASE("a host model lives on the CPU and allocates its activations there") {
  const model::LlamaModel m = small_model();
  CHECK(model::model_device(m).str() == "cpu");
  CHECK(&model::model_allocator(m) == &host_allocator());
}

TEST_CASE("llama_model_to_device refuses what it cannot place, saying why") {
  model::LlamaModel m = small_model();
  CHECK_THROWS_WITH_AS(model::llama_model_to_device(m, 0, DType::I32), doctest::Contains("f32 or bf16"), ShapeError);
  // A head_dim the device attention does not take fails at load time, before any device is touched.
  const std::int64_t head_dim = m.config.head_dim;
  for (const std::int64_t d : {std::int64_t{4}, std::int64_t{260}}) {
    m.config.head_dim = d;
    CHECK_THROWS_WITH_AS(model::llama_model_to_device(m, 0, DType::BF16),
                         doctest::Contains(("head_dim " + std::to_string(d) + " is not supported on the GPU").c_str()),
                         UnsupportedError);
  }
  m.config.head_dim = head_dim;
  if (backend::cuda_device_count() == 0) {
    // The reason the backend gives (no driver, a CPU-only build) is part of the message; a pipeline
    // stage is not refused for being one.
    const std::string reason = backend::cuda_unavailable_reason();
    CHECK_THROWS_WITH_AS(model::llama_model_to_device(m, 0, DType::BF16), doctest::Contains(reason.c_str()),
                         UnsupportedError);
    m.stage = {.rank = 0, .size = 2};
    CHECK_THROWS_WITH_AS(model::llama_model_to_device(m, 0, DType::BF16), doctest::Contains(reason.c_str()),
                         UnsupportedError);
    m.stage = {};
  }
  CHECK_THROWS_WITH_AS(model::llama_model_to_device(m, -1, DType::F32), doctest::Contains("cuda:-1"), UnsupportedError);
}

TEST_CASE("tensor_to and copy_between on the host copy contiguously and keep the values") {
  Tensor t = Tensor::zeros({3, 4}, DType::F32, "t");
  for (int i = 0; i < 12; ++i) t.data<float>()[i] = static_cast<float>(i);
  const Tensor same = model::tensor_to(t, Device{});
  CHECK(same.raw() == t.raw());  // already there: no copy
  const Tensor col = model::tensor_to(t.narrow(1, 1, 2), Device{});
  REQUIRE(col.is_contiguous());
  CHECK(col.data<float>()[0] == 1.0f);
  CHECK(col.data<float>()[3] == 6.0f);
  Tensor dst = Tensor::zeros({3, 4}, DType::F32, "dst");
  model::copy_between(dst, t);
  CHECK(dst.data<float>()[11] == 11.0f);
}

TEST_CASE("gpu_only_settings names the GPU-only [runtime] settings a CPU job was given, and only those") {
  CHECK(model::gpu_only_settings(-1).empty());
  CHECK(model::gpu_only_settings(0) == "runtime.weights_device_layers = 0");
  CHECK(model::gpu_only_settings(3) == "runtime.weights_device_layers = 3");
}
