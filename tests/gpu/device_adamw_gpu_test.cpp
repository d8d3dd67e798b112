// optim::DeviceAdamW on cuda:0 against the CPU optimizer: several steps with changing gradients and
// learning rates equal optim::AdamW bit for bit on x86-64 (weights and both moments; the kernel rounds
// every operation as the host loop does); the device Σ g² against optim::grad_global_norm (1e-12
// relative, both in double) and bit-identical on a second call; clipping against
// grad_clip_global_norm (1 ulp); state() / restore() round trip; the errors on device tensors.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"
#include "optim/adamw.h"
#include "optim/device_adamw.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::optim;

namespace {

const AdamWOptions kOpt{.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
// Sizes that are not multiples of the 256-thread blocks, one above 256 blocks of the norm kernel.
const std::vector<Shape> kShapes = {Shape{1}, Shape{1000}, Shape{37, 129}, Shape{100003}, Shape{3, 5, 7}};

std::vector<float> random_values(std::int64_t n, std::uint64_t salt, float stddev) {
  std::mt19937_64 rng(test::kSeed ^ (salt * 0x9e3779b97f4a7c15ULL));
  std::normal_distribution<float> nd(0.0f, stddev);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (float& x : v) x = nd(rng);
  return v;
}

Tensor host_tensor(const Shape& shape, const std::vector<float>& v, const std::string& name) {
  Tensor t = Tensor::zeros(shape, DType::F32, name);
  REQUIRE(static_cast<std::size_t>(t.numel()) == v.size());
  if (!v.empty()) std::memcpy(t.raw(), v.data(), v.size() * sizeof(float));
  return t;
}

Tensor device_tensor(const Shape& shape, const std::vector<float>& v, const std::string& name) {
  Tensor d = Tensor::empty(shape, DType::F32, backend::cuda_allocator(0), name);
  backend::copy(d, host_tensor(shape, v, name));
  return d;
}

void upload(Tensor& dst, const std::vector<float>& v) { backend::copy(dst, host_tensor(dst.shape(), v, dst.name())); }

std::vector<float> values(const Tensor& t) {
  Tensor h = Tensor::zeros(t.shape(), DType::F32, t.name());
  backend::copy(h, t);
  const float* p = h.data<float>();
  return std::vector<float>(p, p + h.numel());
}

/// Elements of `got` whose bits differ from `want` (on x86-64; elsewhere the host loop may contract
/// into FMAs, so more than 1e-6 relative apart).
std::int64_t n_different(const std::vector<float>& got, const float* want) {
  std::int64_t bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
#if defined(__x86_64__)
    bad += std::memcmp(&got[i], &want[i], sizeof(float)) != 0;
#else
    bad += std::fabs(got[i] - want[i]) > 1e-6f * std::fabs(want[i]) + 1e-12f;
#endif
  }
  return bad;
}

/// Distance in units in the last place between two finite floats.
std::int64_t ulp_distance(float a, float b) {
  auto ordered = [](float x) {
    std::int32_t i;
    std::memcpy(&i, &x, sizeof i);
    return i < 0 ? std::int64_t{INT32_MIN} - i : std::int64_t{i};
  };
  return std::llabs(ordered(a) - ordered(b));
}

/// Host (AdamW) and device (DeviceAdamW) copies of the same parameters, initial weights from `salt`.
struct Pair {
  std::vector<Tensor> host_w, host_g;
  std::vector<DeviceAdamWParam> dev;
};

Pair make_pair_of_params(std::uint64_t salt) {
  Pair p;
  for (std::size_t i = 0; i < kShapes.size(); ++i) {
    const std::string name = fmt::format("p{}", i);
    const std::vector<float> w = random_values(kShapes[i].numel(), salt + i, 1.0f);
    p.host_w.push_back(host_tensor(kShapes[i], w, name));
    p.host_g.push_back(Tensor::zeros(kShapes[i], DType::F32, name + ".grad"));
    p.dev.push_back({.name = name,
                     .value = device_tensor(kShapes[i], w, name),
                     .grad = device_tensor(kShapes[i], std::vector<float>(w.size(), 0.0f), name + ".grad"),
                     .decay = i % 2 == 0});
  }
  return p;
}

/// New gradients (stddev `scale`, one salt per tensor) into the host and the device tensors.
void set_grads(Pair& p, std::uint64_t salt, float scale) {
  for (std::size_t i = 0; i < p.dev.size(); ++i) {
    const std::vector<float> g = random_values(p.dev[i].grad.numel(), salt * 131 + i, scale);
    std::memcpy(p.host_g[i].raw(), g.data(), g.size() * sizeof(float));
    upload(p.dev[i].grad, g);
  }
}

}  // namespace

TEST_CASE("gpu.device_adamw steps equal optim::AdamW bit for bit") {
  Pair p = make_pair_of_params(10);
  AdamW ref(kOpt);
  for (std::size_t i = 0; i < p.dev.size(); ++i) ref.add(p.dev[i].name, p.host_w[i], p.host_g[i], p.dev[i].decay);
  DeviceAdamW dev(p.dev, kOpt);
  CHECK(dev.device() == Device{DeviceKind::Cuda, 0});
  for (int step = 1; step <= 5; ++step) {
    CAPTURE(step);
    set_grads(p, 100 + step, 0.01f * static_cast<float>(step));
    const double lr = 2e-3 / step;
    ref.step(lr);
    dev.step(lr);
    CHECK(dev.n_steps() == ref.n_steps());
    const std::map<std::string, Tensor> st = dev.state();
    REQUIRE(st.size() == 3 * p.dev.size());
    for (const AdamWSlot& s : ref.slots()) {
      CAPTURE(s.name);
      CHECK(n_different(values(st.at("adapter/" + s.name)), s.master.data<float>()) == 0);
      CHECK(n_different(values(st.at("optim/m/" + s.name)), s.m.data<float>()) == 0);
      CHECK(n_different(values(st.at("optim/v/" + s.name)), s.v.data<float>()) == 0);
      CHECK(st.at("adapter/" + s.name).device().host_accessible());
      CHECK(st.at("optim/m/" + s.name).shape() == s.master.shape());
    }
    // The parameters themselves (the model's tensors) hold the update.
    for (std::size_t i = 0; i < p.dev.size(); ++i)
      CHECK(n_different(values(p.dev[i].value), p.host_w[i].data<float>()) == 0);
  }
}

TEST_CASE("gpu.device_adamw norm equals grad_global_norm; clipping equals grad_clip_global_norm") {
  Pair p = make_pair_of_params(20);
  DeviceAdamW dev(p.dev, kOpt);
  set_grads(p, 7, 0.5f);
  const double want = grad_global_norm(p.host_g);
  const double ss = dev.sum_squares();
  CHECK(std::fabs(std::sqrt(ss) - want) <= 1e-12 * want);
  const double again = dev.sum_squares();
  CHECK(std::memcmp(&ss, &again, sizeof ss) == 0);  // deterministic
  // A subset, in any order: what a tp caller sums for the split parameters.
  const std::size_t subset[] = {3, 0};
  const Tensor sub[] = {p.host_g[3], p.host_g[0]};
  const double want_sub = grad_global_norm(sub);
  CHECK(std::fabs(std::sqrt(dev.sum_squares(subset)) - want_sub) <= 1e-12 * want_sub);
  CHECK(dev.sum_squares(std::span<const std::size_t>{}) == 0.0);
  const std::size_t twice[] = {1, 1};
  CHECK_THROWS_AS(dev.sum_squares(twice), InternalError);

  SUBCASE("no clipping below max_norm: the gradients are unchanged") {
    std::vector<std::vector<float>> before;
    for (const auto& q : p.dev) before.push_back(values(q.grad));
    const double norm = dev.clip_global_norm(want * 10);
    CHECK(std::fabs(norm - want) <= 1e-12 * want);
    for (std::size_t i = 0; i < p.dev.size(); ++i) CHECK(n_different(values(p.dev[i].grad), before[i].data()) == 0);
  }
  SUBCASE("clipping to a tenth of the norm") {
    const double max_norm = want / 10;
    const double host_norm = grad_clip_global_norm(p.host_g, max_norm);
    const double norm = dev.clip_global_norm(max_norm);
    CHECK(std::fabs(norm - host_norm) <= 1e-12 * host_norm);
    std::int64_t worst = 0, n_exact = 0, n = 0;
    for (std::size_t i = 0; i < p.dev.size(); ++i) {
      const std::vector<float> got = values(p.dev[i].grad);
      const float* w = p.host_g[i].data<float>();
      for (std::size_t j = 0; j < got.size(); ++j, ++n) {
        worst = std::max(worst, ulp_distance(got[j], w[j]));
        n_exact += std::memcmp(&got[j], &w[j], sizeof(float)) == 0;
      }
    }
    INFO(n_exact, " of ", n, " clipped gradients equal bit for bit");
    CHECK(worst <= 1);
    CHECK(std::sqrt(dev.sum_squares()) <= max_norm * (1 + 1e-6));
  }
  CHECK_THROWS_AS(dev.clip_global_norm(0.0), ConfigError);
}

TEST_CASE("gpu.device_adamw state() and restore() round trip") {
  Pair a = make_pair_of_params(30);
  DeviceAdamW opt_a(a.dev, kOpt);
  for (int step = 1; step <= 3; ++step) {
    set_grads(a, 200 + step, 0.02f);
    opt_a.step(1e-3);
  }
  const std::map<std::string, Tensor> st = opt_a.state();
  // Different starting weights: restore() must overwrite weights and moments.
  Pair b = make_pair_of_params(40);
  DeviceAdamW opt_b(b.dev, kOpt);
  opt_b.restore([&](const std::string& key) -> const Tensor& { return st.at(key); });
  opt_b.set_n_steps(opt_a.n_steps());
  const std::map<std::string, Tensor> st_b = opt_b.state();
  REQUIRE(st_b.size() == st.size());
  for (const auto& [key, t] : st) {
    CAPTURE(key);
    CHECK(n_different(values(st_b.at(key)), t.data<float>()) == 0);
  }
  // The next step from the restored state equals the original's.
  set_grads(a, 300, 0.02f);
  set_grads(b, 300, 0.02f);
  opt_a.step(5e-4);
  opt_b.step(5e-4);
  const std::map<std::string, Tensor> after_a = opt_a.state(), after_b = opt_b.state();
  for (const auto& [key, t] : after_a) {
    CAPTURE(key);
    CHECK(std::memcmp(values(after_b.at(key)).data(), t.data<float>(), t.size_bytes()) == 0);
  }
  // A tensor of the wrong shape is refused, naming the key.
  const Tensor wrong = Tensor::zeros(Shape{2}, DType::F32, "wrong");
  CHECK_THROWS_WITH_AS(
      opt_b.restore([&](const std::string& key) -> const Tensor& { return key == "optim/m/p1" ? wrong : st.at(key); }),
      doctest::Contains("optim/m/p1"), ShapeError);
}

TEST_CASE("gpu.device_adamw refuses what it cannot update") {
  const Tensor d = device_tensor(Shape{4}, {1, 2, 3, 4}, "w");
  const Tensor g = device_tensor(Shape{4}, {0, 0, 0, 0}, "g");
  const Tensor h = Tensor::zeros(Shape{4}, DType::F32, "host");
  Tensor b16 = Tensor::empty(Shape{4}, DType::BF16, backend::cuda_allocator(0), "w16");
  const Tensor g5 = device_tensor(Shape{5}, {0, 0, 0, 0, 0}, "g5");
  CHECK_THROWS_WITH_AS(DeviceAdamW({{.name = "a", .value = d, .grad = h}}, kOpt), doctest::Contains("lives on cpu"),
                       UnsupportedError);
  CHECK_THROWS_WITH_AS(DeviceAdamW({{.name = "a", .value = b16, .grad = g}}, kOpt), doctest::Contains("bf16"),
                       ShapeError);
  CHECK_THROWS_AS(DeviceAdamW({{.name = "a", .value = d, .grad = g5}}, kOpt), ShapeError);
  CHECK_THROWS_AS(DeviceAdamW({{.name = "a", .value = d, .grad = g}, {.name = "a", .value = d, .grad = g}}, kOpt),
                  InternalError);
  DeviceAdamW empty({}, kOpt);
  empty.step(1e-3);
  CHECK(empty.sum_squares() == 0.0);
  CHECK(empty.state().empty());
}
