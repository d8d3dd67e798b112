#include "tests/unit/checkpoint/checkpoint_samples.h"

#include <cstring>
#include <limits>
#include <vector>

namespace adapt::test {

using checkpoint::CheckpointState;

std::uint64_t bits_of(double v) {
  std::uint64_t b;
  std::memcpy(&b, &v, 8);
  return b;
}
std::uint32_t bits_of(float v) {
  std::uint32_t b;
  std::memcpy(&b, &v, 4);
  return b;
}

namespace {

double from_bits64(std::uint64_t b) {
  double v;
  std::memcpy(&v, &b, 8);
  return v;
}
float from_bits32(std::uint32_t b) {
  float v;
  std::memcpy(&v, &b, 4);
  return v;
}

/// Small deterministic generator (no std:: distribution, so values are the same everywhere).
struct Lcg {
  std::uint64_t s;
  std::uint32_t next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return static_cast<std::uint32_t>(s >> 33);
  }
};

Tensor f32_tensor(const Shape& shape, Lcg& rng, const std::vector<std::uint32_t>& special) {
  Tensor t = Tensor::empty(shape, DType::F32);
  auto* p = t.data<float>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    p[i] = i < static_cast<std::int64_t>(special.size()) ? from_bits32(special[static_cast<std::size_t>(i)])
                                                         : (static_cast<float>(rng.next() % 20001) - 10000.f) / 997.f;
  }
  return t;
}

template <typename T>
Tensor u16_tensor(const Shape& shape, Lcg& rng, const std::vector<std::uint16_t>& special) {
  Tensor t = Tensor::empty(shape, dtype_of<T>());
  auto* p = t.data<T>();
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    p[i].bits = i < static_cast<std::int64_t>(special.size()) ? special[static_cast<std::size_t>(i)]
                                                              : static_cast<std::uint16_t>(rng.next());
  }
  return t;
}

std::string long_config_toml() {
  std::string s = "# resolved config (long on purpose: above HDF5's 64 KiB compact attribute limit)\n";
  for (int i = 0; s.size() < 100 * 1024; ++i)
    s += "[train.section_" + std::to_string(i) + "]\nlr = 0.0003\nname = \"r\u00e9sum\u00e9 \u2713\"\n";
  return s;
}

}  // namespace

CheckpointState sample_checkpoint_state(std::int64_t step) {
  Lcg rng{0x5eed2026};
  CheckpointState s;
  s.step = step;
  s.base_model_fingerprint = "sha256:3fa1c0ffee";
  s.world_layout = "tp=2 pp=1 dp=4";
  s.config_toml = long_config_toml();
  s.created_by = "adapt test (checkpoint_samples.cpp)";

  s.tensors["adapters/layers.0.attn.q.lora_a"] = f32_tensor(
      {4, 8}, rng,
      {0x00000000u, 0x80000000u /* -0 */, 0x3f800000u, 0x00000001u /* smallest subnormal */, 0x7f7fffffu /* max */,
       0x7f800000u /* inf */, 0xff800000u /* -inf */, 0x7fc12345u /* quiet NaN, payload */,
       0x7f800001u /* signalling NaN */, 0xffc00000u /* negative NaN */});
  s.tensors["adapters/layers.0.attn.q.lora_b"] =
      u16_tensor<bf16>({8, 4}, rng, {0x0000, 0x8000, 0x3f80, 0x0001, 0x7f7f, 0x7f80, 0xff80, 0x7fc1, 0x7f81, 0xffc0});
  s.tensors["adapters/layers.1.ffn.bottleneck.down"] =
      u16_tensor<f16>({3, 5}, rng, {0x0000, 0x8000, 0x3c00, 0x0001, 0x7bff, 0x7c00, 0xfc00, 0x7e01, 0x7c01, 0x03ff});
  {
    Tensor t = Tensor::empty({5}, DType::I32);
    const std::int32_t v[] = {0, -1, std::numeric_limits<std::int32_t>::min(), std::numeric_limits<std::int32_t>::max(),
                              123456};
    std::memcpy(t.raw(), v, sizeof v);
    s.tensors["optim/step_counts"] = t;
  }
  {
    Tensor t = Tensor::empty({2, 3}, DType::I64);
    const std::int64_t v[] = {0,
                              -1,
                              std::numeric_limits<std::int64_t>::min(),
                              std::numeric_limits<std::int64_t>::max(),
                              1ll << 40,
                              -(1ll << 53) - 1};
    std::memcpy(t.raw(), v, sizeof v);
    s.tensors["data/shard_positions"] = t;
  }
  {
    Tensor t = Tensor::empty({2500}, DType::U8);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.data<std::uint8_t>()[i] = static_cast<std::uint8_t>(i * 7 + 3);
    s.tensors["rng/cpu_generator"] = t;
  }
  {
    Tensor t = Tensor::empty(Shape{}, DType::F32);
    t.data<float>()[0] = 3.25f;
    s.tensors["train/loss_scale"] = t;  // rank 0: an HDF5 scalar dataspace
  }
  s.tensors["train/empty_rows"] = Tensor::empty({0, 4}, DType::F32);
  {
    // A column view (strided): saved as a contiguous copy.
    Tensor full = f32_tensor({6, 10}, rng, {});
    s.tensors["optim/v/adapters/layers.0.attn.q.lora_a"] = full.narrow(1, 2, 5);
  }
  {
    Tensor t = Tensor::empty({1200, 1024}, DType::F32);  // 4.7 MiB: two 4 MiB-target chunks
    for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i % 1000) * 0.25f;
    s.tensors[kArangeTensor] = t;
  }
  {
    Tensor t = Tensor::empty({2, 3, 4}, DType::BF16);
    for (std::int64_t i = 0; i < t.numel(); ++i) t.data<bf16>()[i].bits = f32_to_bf16(static_cast<float>(i) - 11.5f);
    s.tensors["optim/m/adapters/layers.0.attn.q.lora_b"] = t;
  }

  s.strings["rng/python_state"] = "\u00e9tat \u2713 \U0001F680 [1, 2, 3]";
  s.strings["data/shuffle_order"] = "";
  s.strings["sched/kind"] = "cosine";
  s.ints["data/epoch"] = 3;
  s.ints["data/position"] = std::numeric_limits<std::int64_t>::max();
  s.ints["sched/min_int"] = std::numeric_limits<std::int64_t>::min();
  s.ints["top_level"] = -1;  // no group: an attribute of the root group
  s.floats["sched/lr"] = 3e-4;
  s.floats["sched/neg_zero"] = -0.0;
  s.floats["sched/subnormal"] = 5e-324;
  s.floats["sched/inf"] = std::numeric_limits<double>::infinity();
  s.floats["sched/nan_payload"] = from_bits64(0x7ff8000000000123ull);
  s.floats["sched/max"] = std::numeric_limits<double>::max();
  return s;
}

CheckpointState small_checkpoint_state(std::int64_t step, std::uint32_t seed, std::int64_t n_per_tensor) {
  Lcg rng{seed};
  CheckpointState s;
  s.step = step;
  s.base_model_fingerprint = "fp-small";
  s.world_layout = "tp=1 pp=1 dp=1";
  s.config_toml = "[train]\nsteps = 1000\n";
  s.tensors["adapters/a"] = f32_tensor({n_per_tensor}, rng, {});
  s.tensors["adapters/b"] = f32_tensor({n_per_tensor}, rng, {});
  s.ints["data/position"] = step * 10;
  s.strings["rng/state"] = "seed " + std::to_string(seed);
  return s;
}

}  // namespace adapt::test
