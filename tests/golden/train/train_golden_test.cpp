// Adapter training against independent implementations (tests/golden/data/train/, made by
// scripts/make_train_fixtures.py): on a tiny HF Llama saved by transformers,
//   * LoRA (every target; rsLoRA on a subset of targets and layers): loss and the gradient of every
//     LoRA tensor against HF peft + torch autograd, then 3 AdamW steps (forward and backward before
//     each) against torch.optim.AdamW;
//   * bottleneck adapters (Houlsby, Pfeiffer, parallel; relu, swish, gelu; with and without ln_before):
//     the same against a torch reference of adapt's semantics (SPEC-llama.md §6.3), the AdamW steps
//     with weight decay on the two weights only;
//   * adapt's committed PEFT and AdapterHub exports (interop/), read back by adapt, give the logits
//     that peft and AdapterHub's `adapters` computed with them; and adapt still writes those folders
//     byte for byte, both from the loaded weights and from the weights the export tool made.
//
// Relative error of a tensor: max |ours − reference| / max |reference| (the tensor's own scale, so a
// near-zero element is judged on the scale of the whole tensor, not amplified on its own).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "core/file.h"
#include "io/safetensors.h"
#include "model/llama_forward.h"
#include "model/llama_train.h"
#include "model/llama_weights.h"
#include "optim/adamw.h"
#include "tests/golden/train/interop_cases.h"
#include "tests/support/test_support.h"

using namespace adapt;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// f32 against f32 through 2 layers, attention, the loss and the backward: what is measured is a few
// 1e-7 (printed below); 1e-4 leaves room for another BLAS or summation order. A wrong term (a missing
// scaling, a swapped h/f, a wrong activation derivative) is off by 1e-2 or more.
constexpr double kLossRelTol = 1e-5;
constexpr double kGradRelTol = 1e-4;
// The weights after 3 AdamW steps (lr 0.01, eps 1e-3): the update m̂/(√v̂ + eps) amplifies a gradient's
// error by up to 1/eps, so each step may move a weight by lr·δg/eps ~ 1e-6 of the scale (measured: a few
// 1e-6 after 3 steps); a tensor decayed that should not be (or the reverse) is off by ~1e-3.
constexpr double kAdamRelTol = 1e-4;
// Logits with a loaded adapter against peft's / adapters' (f32, the same bound as llama_forward's golden).
constexpr double kLogitsRelTol = 1e-4;

fs::path train_dir() { return test::data_dir() / "train"; }

double rel_error(const Tensor& ours, const Tensor& ref) {
  REQUIRE(ours.shape() == ref.shape());
  const Tensor a = ours.to_host(DType::F32), b = ref.to_host(DType::F32);
  double diff = 0.0, scale = 0.0;
  for (std::int64_t i = 0; i < a.numel(); ++i) {
    diff = std::max(diff, std::fabs(static_cast<double>(a.data<float>()[i]) - b.data<float>()[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(b.data<float>()[i])));
  }
  return scale > 0.0 ? diff / scale : diff;
}

const model::LlamaModel& tiny_model() {
  static const model::LlamaModel m = model::llama_model_load(train_dir() / "model");
  return m;
}

std::vector<std::int64_t> as_layers(const json& j) {
  std::vector<std::int64_t> v;
  for (const auto& x : j) v.push_back(x.get<std::int64_t>());
  return v;
}

template <typename E>
E enum_named(const std::vector<std::pair<std::string, E>>& names, const std::string& name) {
  for (const auto& [n, e] : names)
    if (n == name) return e;
  FAIL("unknown name '", name, "' in the fixture's config");
  return names.front().second;
}

// The adapter a fixture describes (its metadata "config", written by make_train_fixtures.py).
adapters::AdapterConfig config_of(const json& c) {
  adapters::AdapterConfig cfg;
  cfg.layers = as_layers(c.at("layers"));
  if (c.at("kind") == "lora") {
    cfg.kind = adapters::AdapterKind::Lora;
    cfg.lora.r = c.at("r").get<std::int64_t>();
    cfg.lora.alpha = c.at("alpha").get<double>();
    cfg.lora.use_rslora = c.at("use_rslora").get<bool>();
    cfg.lora.targets = c.at("targets").get<std::vector<std::string>>();
  } else {
    cfg.kind = adapters::AdapterKind::Bottleneck;
    cfg.bottleneck.size = c.at("size").get<std::int64_t>();
    cfg.bottleneck.placement = enum_named(adapters::bn_placement_names(), c.at("placement").get<std::string>());
    cfg.bottleneck.activation = enum_named(adapters::bn_activation_names(), c.at("activation").get<std::string>());
    cfg.bottleneck.scaling = c.at("scaling").get<double>();
    cfg.bottleneck.ln_before = c.at("ln_before").get<bool>();
  }
  return cfg;
}

// Every tensor named "<prefix><adapt parameter name>" in the fixture, checked to be exactly the set's
// parameters (no more, no fewer).
void require_same_names(const adapters::AdapterSet& set, const io::SafetensorsFile& f, const std::string& prefix) {
  std::vector<std::string> ours, theirs;
  for (const adapters::AdapterParam& p : set.parameters()) ours.push_back(prefix + p.name);
  for (const io::TensorInfo& t : f.tensors())
    if (t.name.rfind(prefix, 0) == 0) theirs.push_back(t.name);
  std::sort(ours.begin(), ours.end());
  std::sort(theirs.begin(), theirs.end());
  CHECK_MESSAGE(ours == theirs, "the adapter's parameters differ from the fixture's ", prefix, "* tensors");
}

// One training fixture: init → loss and gradients → 3 AdamW steps, each compared with the reference.
void check_training_case(const std::string& file) {
  const fs::path path = train_dir() / file;
  REQUIRE_MESSAGE(fs::exists(path), path.string(), " is missing; run scripts/make_train_fixtures.py");
  const io::SafetensorsFile f(path);
  const json config = json::parse(f.metadata().at("config"));
  const json adamw = json::parse(f.metadata().at("adamw"));
  const std::vector<double> losses = json::parse(f.metadata().at("losses")).get<std::vector<double>>();
  const model::LlamaModel& m = tiny_model();
  const io::SafetensorsFile batch(train_dir() / "batch.safetensors");
  const model::TrainInputs inputs{.ids = batch.read("input_ids", DType::I32),
                                  .targets = batch.read("targets", DType::I32)};

  adapters::AdapterSet set(m.config, config_of(config));
  require_same_names(set, f, "init.");
  require_same_names(set, f, "grad.");
  for (adapters::AdapterParam& p : set.parameters()) p.value.copy_from(f.read("init." + p.name, DType::F32));
  set.set_training(true);

  model::TrainResult r = model::llama_train_step(m, inputs, &set);
  const double loss_err = std::fabs(r.loss() - losses[0]) / losses[0];
  double grad_err = 0.0;
  std::string worst;
  for (const adapters::AdapterParam& p : set.parameters()) {
    const double e = rel_error(p.grad, f.read("grad." + p.name, DType::F32));
    CAPTURE(p.name);
    CHECK(e <= kGradRelTol);
    if (e >= grad_err) grad_err = e, worst = p.name;
  }
  CHECK(loss_err <= kLossRelTol);

  const auto betas = adamw.at("betas").get<std::vector<double>>();
  optim::AdamW opt({.beta1 = betas.at(0),
                    .beta2 = betas.at(1),
                    .eps = adamw.at("eps").get<double>(),
                    .weight_decay = adamw.at("weight_decay").get<double>()});
  for (const adapters::AdapterParam& p : set.parameters()) opt.add(p.name, p.value, p.grad, p.decay);
  const int steps = adamw.at("steps").get<int>();
  REQUIRE(losses.size() == static_cast<std::size_t>(steps) + 1);
  double step_loss_err = 0.0;
  for (int step = 1; step <= steps; ++step) {
    opt.step(adamw.at("lr").get<double>());
    set.zero_grad();
    r = model::llama_train_step(m, inputs, &set, {.backward = step < steps});
    const double e =
        std::fabs(r.loss() - losses[static_cast<std::size_t>(step)]) / losses[static_cast<std::size_t>(step)];
    CAPTURE(step);
    CHECK(e <= kLossRelTol);
    step_loss_err = std::max(step_loss_err, e);
  }
  require_same_names(set, f, "adamw" + std::to_string(steps) + ".");
  double adam_err = 0.0;
  for (const adapters::AdapterParam& p : set.parameters()) {
    const double e = rel_error(p.value, f.read("adamw" + std::to_string(steps) + "." + p.name, DType::F32));
    CAPTURE(p.name);
    CHECK(e <= kAdamRelTol);
    adam_err = std::max(adam_err, e);
  }
  std::printf(
      "%-32s loss %.6f (rel err %.1e, tol %.0e); grads: max rel err %.1e (%s; tol %.0e); after %d AdamW "
      "steps: losses max rel err %.1e, weights max rel err %.1e (tol %.0e)\n",
      file.c_str(), losses[0], loss_err, kLossRelTol, grad_err, worst.c_str(), kGradRelTol, steps, step_loss_err,
      adam_err, kAdamRelTol);
}

// Every file of the committed folder equals the one in `written`, byte for byte, and there are no others.
void check_same_folder(const fs::path& committed, const fs::path& written) {
  std::vector<std::string> a, b;
  for (const auto& e : fs::directory_iterator(committed)) a.push_back(e.path().filename().string());
  for (const auto& e : fs::directory_iterator(written)) b.push_back(e.path().filename().string());
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  CHECK(a == b);
  for (const std::string& name : a) {
    CAPTURE(name);
    if (fs::exists(written / name))
      CHECK_MESSAGE(file_read_text(committed / name) == file_read_text(written / name), "adapt now writes ",
                    (committed / name).string(), " differently; regenerate with scripts/make_train_fixtures.py");
  }
}

}  // namespace

TEST_CASE("LoRA on every target: loss, gradients and 3 AdamW steps match peft + torch") {
  check_training_case("lora_lora.safetensors");
}

TEST_CASE("rsLoRA on a subset of targets and layers: loss, gradients and 3 AdamW steps match peft + torch") {
  check_training_case("lora_rslora.safetensors");
}

TEST_CASE("bottleneck adapters: loss, gradients and 3 AdamW steps match the torch reference") {
  for (const char* file : {"bn_houlsby_relu_ln.safetensors", "bn_pfeiffer_swish.safetensors",
                           "bn_parallel_gelu.safetensors", "bn_pfeiffer_gelu_ln.safetensors"}) {
    SUBCASE(file) { check_training_case(file); }
  }
}

TEST_CASE("adapt's PEFT and AdapterHub exports give peft's and adapters' logits, and are what adapt writes") {
  const model::LlamaModel& m = tiny_model();
  const fs::path path = train_dir() / "interop.safetensors";
  REQUIRE_MESSAGE(fs::exists(path), path.string(), " is missing; run scripts/make_train_fixtures.py");
  const io::SafetensorsFile f(path);
  const json libraries = json::parse(f.metadata().at("libraries"));
  const Tensor ids = f.read("input_ids", DType::I32);
  // The export tool computed its logits on these ids too.
  CHECK(rel_error(ids.to_host(DType::F32), test::train_golden::interop_ids(m.config.vocab_size).to_host(DType::F32)) ==
        0.0);
  const Tensor base = model::llama_forward(m, ids);
  const test::TempDir tmp("adapt-train-golden");
  std::uint64_t index = 0;
  for (const test::train_golden::InteropCase& c : test::train_golden::interop_cases()) {
    CAPTURE(c.name);
    const fs::path committed = train_dir() / "interop" / c.name;
    REQUIRE_MESSAGE(fs::exists(committed / "adapter_config.json"), committed.string(),
                    " is missing; run scripts/make_train_fixtures.py");
    REQUIRE_MESSAGE(f.find("logits." + c.name) != nullptr, "no ", c.library, " logits for ", c.name,
                    " in interop.safetensors: the fixtures were made without ", c.library,
                    "; run scripts/make_train_fixtures.py where it can be installed");
    adapters::AdapterSet loaded = adapters::adapter_load(committed, m.config);
    CHECK(loaded.kind() == c.config.kind);
    const Tensor logits = model::llama_forward(m, ids, nullptr, {.hook = &loaded});
    const Tensor ref = f.read("logits." + c.name, DType::F32);
    const double err = rel_error(logits, ref);
    const double moved = rel_error(base, ref);  // the adapter must matter for the comparison to mean anything
    CHECK(err <= kLogitsRelTol);
    CHECK(moved > 1e-2);
    std::printf("interop %-12s vs %s (%s): logits max rel err %.1e (tol %.0e); the adapter moves them by %.2f\n",
                c.name.c_str(), c.library.c_str(), libraries.value(c.library, std::string("?")).c_str(), err,
                kLogitsRelTol, moved);

    // Re-exporting the loaded weights, and exporting the tool's deterministic weights afresh, both give
    // the committed files.
    adapters::adapter_export(loaded, tmp / ("reexport_" + c.name),
                             {.base_model = test::train_golden::kInteropBaseModel});
    check_same_folder(committed, tmp / ("reexport_" + c.name));
    adapters::AdapterSet fresh(m.config, c.config);
    test::train_golden::interop_fill(fresh, index++);
    adapters::adapter_export(fresh, tmp / ("fresh_" + c.name), {.base_model = test::train_golden::kInteropBaseModel});
    check_same_folder(committed, tmp / ("fresh_" + c.name));
  }
}
