// AdamW, gradient clipping and LR schedules against torch.optim.AdamW, clip_grad_norm_ and HF
// transformers' schedules (fixtures by scripts/make_optim_fixtures.py).
#include <doctest/doctest.h>

#include <fmt/format.h>
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/file.h"
#include "optim/adamw.h"
#include "optim/lr_schedule.h"
#include "tests/support/test_support.h"

using namespace adapt;
using json = nlohmann::json;

namespace {
json fixture() { return json::parse(file_read_text(test::data_dir() / "optim/optim.json")); }

Tensor tensor_from(const json& values, const json& shape) {
  std::vector<std::int64_t> dims;
  for (const auto& d : shape) dims.push_back(d.get<std::int64_t>());
  Tensor t = Tensor::empty(Shape(dims), DType::F32);
  for (std::size_t i = 0; i < values.size(); ++i) t.data<float>()[i] = values[i].get<float>();
  return t;
}
}  // namespace

TEST_CASE("AdamW with weight decay, clipping and a warmup-cosine schedule follows torch step by step") {
  const json f = fixture()["adamw"];
  optim::AdamWOptions o;
  o.beta1 = f["betas"][0];
  o.beta2 = f["betas"][1];
  o.eps = f["eps"];
  o.weight_decay = f["weight_decay"];
  optim::AdamW opt(o);
  std::vector<Tensor> grads;
  for (std::size_t i = 0; i < f["shapes"].size(); ++i) {
    Tensor p = tensor_from(f["init"][i], f["shapes"][i]);
    grads.push_back(Tensor::zeros(p.shape(), DType::F32));
    opt.add(fmt::format("p{}", i), p, grads.back(), f["decay"][i].get<bool>());
  }
  optim::LrSchedule sched{optim::LrScheduleKind::Cosine, f["lr"], f["warmup_steps"], f["total_steps"], 0.0};
  double worst = 0;
  for (std::size_t step = 0; step < f["steps"].size(); ++step) {
    const json& s = f["steps"][step];
    for (std::size_t i = 0; i < grads.size(); ++i)
      for (std::size_t k = 0; k < s["grads"][i].size(); ++k) grads[i].data<float>()[k] = s["grads"][i][k].get<float>();
    const double lr = optim::lr_at(sched, static_cast<std::int64_t>(step));
    CHECK(lr == doctest::Approx(s["lr"].get<double>()).epsilon(1e-12));
    const double norm = optim::grad_clip_global_norm(grads, f["max_norm"]);
    CHECK(norm == doctest::Approx(s["grad_norm"].get<double>()).epsilon(1e-6));
    opt.step(lr);
    for (std::size_t i = 0; i < grads.size(); ++i) {
      const float* p = opt.slots()[i].master.data<float>();
      for (std::size_t k = 0; k < s["params"][i].size(); ++k) {
        const double want = s["params"][i][k].get<double>();
        const double err = std::abs(p[k] - want) / std::max(1e-3, std::abs(want));
        worst = std::max(worst, err);
      }
    }
  }
  MESSAGE("worst relative difference from torch over 6 steps: ", worst);
  CHECK(worst < 1e-6);
  CHECK(opt.n_steps() == 6);
}

TEST_CASE("learning-rate schedules equal transformers' get_*_schedule_with_warmup") {
  const json f = fixture()["schedules"];
  for (const auto& [name, values] : f["values"].items()) {
    CAPTURE(name);
    optim::LrSchedule s{optim::parse_lr_schedule(name), f["lr"], f["warmup_steps"], f["total_steps"], 0.0};
    for (std::size_t step = 0; step < values.size(); ++step) {
      CAPTURE(step);
      CHECK(optim::lr_at(s, static_cast<std::int64_t>(step)) ==
            doctest::Approx(values[step].get<double>()).epsilon(1e-12));
    }
  }
  CHECK_THROWS_WITH_AS(optim::parse_lr_schedule("cosin"), doctest::Contains("did you mean 'cosine'"), ConfigError);
}

TEST_CASE("min_lr_ratio floors the decay; clipping leaves small gradients alone") {
  optim::LrSchedule s{optim::LrScheduleKind::Linear, 1.0, 0, 10, 0.1};
  CHECK(optim::lr_at(s, 10) == doctest::Approx(0.1));
  CHECK(optim::lr_at(s, 0) == doctest::Approx(1.0));
  Tensor g = Tensor::zeros({3}, DType::F32);
  g.data<float>()[0] = 0.3f;
  std::vector<Tensor> gs = {g};
  CHECK(optim::grad_clip_global_norm(gs, 1.0) == doctest::Approx(0.3));
  CHECK(g.data<float>()[0] == 0.3f);
}
