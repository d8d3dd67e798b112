// The Llama model on cuda:0 against the CPU backend, on the demo's tiny model (adapt_model make
// --recipe inputs/models/tiny.toml): one training step (loss and every adapter gradient) with the
// real adapters (AdapterSet: LoRA on all seven projections, a bottleneck module) and with a LoRA +
// block test hook written here from ops calls; llama_forward logits; greedy generation of 32 tokens
// through the Generator (the same tokens with f32 weights); the elementwise ops, bias_add and softmax
// on device tensors. Tolerances: gpu_tolerances.h (f32 weights 1e-5, bf16 weights 1e-2 relative), and
// kBf16GradTol for adapter gradients with bf16 weights.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <memory>
#include <random>

#include "adapters/adapter_set.h"
#include "backend/backend.h"
#include "generate/generator.h"
#include "model/attention_compute.h"
#include "model/kv_cache.h"
#include "model/llama_device.h"
#include "model/llama_forward.h"
#include "model/llama_train.h"
#include "model/weight_stream.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/softmax.h"
#include "tests/gpu/gpu_tensors.h"
#include "tests/gpu/gpu_tolerances.h"
#include "tests/support/test_support.h"

using namespace adapt;

namespace {

struct TinyModel {
  test::TempDir dir{"adapt-model-gpu"};
  model::LlamaModel host;  // f32 weights (the stored bf16 values, widened)
  std::unique_ptr<tokenizer::Tokenizer> tok;
};

// The demo's tiny model (2 layers), or the same recipe with `layers` layers; made once per process.
const TinyModel& tiny(int layers = 2) {
  static std::map<int, std::unique_ptr<TinyModel>> made;
  std::unique_ptr<TinyModel>& m = made[layers];
  if (!m) {
    m = std::make_unique<TinyModel>();
    const std::string cmd = test::bin("adapt_model") + " make --recipe " +
                            (test::source_dir() / "inputs/models/tiny.toml").string() + " --layers " +
                            std::to_string(layers) + " --out " + (m->dir / "model").string();
    std::string log;
    REQUIRE_MESSAGE(test::run_command(cmd, &log) == 0, cmd, "\n", log);
    m->host = model::llama_model_load(m->dir / "model");
    m->tok = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(m->dir / "model"));
  }
  return *m;
}

// The tiny recipe with head_dim 64 (hidden 128, 4 query and 2 KV heads): a shape the bf16 tensor-core
// attention takes (kernels/attention.h). Made once per process.
const TinyModel& tiny_head64() {
  static std::unique_ptr<TinyModel> m;
  if (!m) {
    m = std::make_unique<TinyModel>();
    const std::string cmd = test::bin("adapt_model") + " make --recipe " +
                            (test::source_dir() / "inputs/models/tiny.toml").string() +
                            " --set shape.head_dim=64 --set shape.hidden_size=128 --out " + (m->dir / "model").string();
    std::string log;
    REQUIRE_MESSAGE(test::run_command(cmd, &log) == 0, cmd, "\n", log);
    m->host = model::llama_model_load(m->dir / "model");
    m->tok = std::make_unique<tokenizer::Tokenizer>(tokenizer::Tokenizer::from_file(m->dir / "model"));
  }
  return *m;
}

// Greedy requests for `texts` (with BOS), `n_new` tokens each.
std::vector<generate::GenerationRequest> greedy_requests(const TinyModel& t, std::initializer_list<const char*> texts,
                                                         std::int64_t n_new) {
  std::vector<generate::GenerationRequest> reqs;
  for (const char* text : texts) {
    generate::GenerationRequest r;
    tokenizer::EncodeOptions eo;
    eo.bos = true;
    for (auto id : t.tok->encode(text, eo)) r.prompt.push_back(static_cast<std::int32_t>(id));
    r.max_new_tokens = n_new;
    reqs.push_back(r);
  }
  return reqs;
}

Allocator& allocator_of(const Tensor& t) {
  return t.device().host_accessible() ? host_allocator() : backend::cuda_allocator(t.device().index);
}

Tensor random_host(const Shape& shape, std::uint64_t salt, float std, const char* name) {
  Tensor t = Tensor::empty(shape, DType::F32, host_allocator(), name);
  std::mt19937_64 rng(test::kSeed ^ (salt * 0x9e3779b97f4a7c15ull));
  std::normal_distribution<float> dist(0.0f, std);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = dist(rng);
  return t;
}

Tensor on(const Tensor& host, bool device) { return device ? test::to_device(host) : host.to_host(DType::F32); }
Tensor host_of(const Tensor& t) { return t.device().host_accessible() ? t : test::to_cpu(t); }

// Adapter gradients with bf16 weights: on the device every frozen GEMM rounds its input (activations
// forward, gradients backward) to bf16 (2^-9 relative), and an adapter gradient of the first layer is the
// end of a chain of them through the whole backward; the CPU keeps f32. Their errors compound to a few
// times the single rounding gpu_tolerance(BF16) allows (1.5-1.7% seen on LoRA's dA of this model).
constexpr double kBf16GradTol = 3e-2;

void check_close(const Tensor& got, const Tensor& want, double tol, const std::string& what) {
  const Tensor g = host_of(got), w = host_of(want);
  REQUIRE(g.numel() == w.numel());
  const test::Mismatch m = test::compare_relative(g.data<float>(), w.data<float>(), g.numel());
  CHECK_MESSAGE(m.rel <= tol, what, ": ", m.str());
}

// LoRA on every projection (y += s·(x·Aᵀ)·Bᵀ) and a block adapter out += s·f·Wᵀ + b at both sub-block
// ends, from ops calls only, so it runs on whichever device its parameters are on.
class OpsHook final : public model::AdapterHook {
 public:
  struct Lora {
    Tensor A, B, dA, dB;  // (r, in), (out, r)
  };
  struct Block {
    Tensor W, b, dW, db;  // (C, C), (C)
  };
  static constexpr float kScale = 0.5f;
  std::map<std::pair<int, int>, Lora> lora;
  std::map<std::pair<int, int>, Block> blocks;

  OpsHook(const model::LlamaConfig& c, bool device) {
    const std::int64_t C = c.hidden_size, F = c.intermediate_size, HD = c.n_heads * c.head_dim,
                       KD = c.n_kv_heads * c.head_dim, r = 4;
    std::uint64_t salt = 900;
    for (int l = 0; l < static_cast<int>(c.n_layers); ++l) {
      const std::pair<model::WeightKind, std::pair<std::int64_t, std::int64_t>> sites[] = {
          {model::WeightKind::Wq, {C, HD}},  {model::WeightKind::Wk, {C, KD}},   {model::WeightKind::Wv, {C, KD}},
          {model::WeightKind::Wo, {HD, C}},  {model::WeightKind::WGate, {C, F}}, {model::WeightKind::WUp, {C, F}},
          {model::WeightKind::WDown, {F, C}}};
      for (const auto& [kind, io] : sites) {
        Lora& p = lora[{l, static_cast<int>(kind)}];
        p.A = on(random_host({r, io.first}, ++salt, 0.1f, "lora_a"), device);
        p.B = on(random_host({io.second, r}, ++salt, 0.1f, "lora_b"), device);
        p.dA = on(Tensor::zeros({r, io.first}, DType::F32, "lora_a.grad"), device);
        p.dB = on(Tensor::zeros({io.second, r}, DType::F32, "lora_b.grad"), device);
      }
      for (int s = 0; s < 2; ++s) {
        Block& b = blocks[{l, s}];
        b.W = on(random_host({C, C}, ++salt, 0.05f, "block_w"), device);
        b.b = on(random_host({C}, ++salt, 0.05f, "block_b"), device);
        b.dW = on(Tensor::zeros({C, C}, DType::F32, "block_w.grad"), device);
        b.db = on(Tensor::zeros({C}, DType::F32, "block_b.grad"), device);
      }
    }
  }

  bool has_linear(const model::LinearSite& site) const override {
    return lora.count({site.layer, static_cast<int>(site.kind)}) > 0;
  }
  void linear_forward(const model::LinearSite& site, const Tensor& x, Tensor& y) override {
    Lora& p = lora.at({site.layer, static_cast<int>(site.kind)});
    Tensor u = Tensor::empty({x.dim(0), p.A.dim(0)}, DType::F32, allocator_of(x), "lora_u");
    ops::matmul(u, x, p.A);
    ops::matmul(y, u, p.B, {.alpha = kScale, .beta = 1.0f});
  }
  void linear_backward(const model::LinearSite& site, const Tensor& x, const Tensor& dy, Tensor& dx) override {
    Lora& p = lora.at({site.layer, static_cast<int>(site.kind)});
    Tensor u = Tensor::empty({x.dim(0), p.A.dim(0)}, DType::F32, allocator_of(x), "lora_u");
    Tensor du = Tensor::empty({x.dim(0), p.A.dim(0)}, DType::F32, allocator_of(x), "lora_du");
    ops::matmul(u, x, p.A);
    ops::matmul(p.dB, dy, u, {.transpose_a = true, .transpose_b = false, .alpha = kScale, .beta = 1.0f});
    ops::matmul(du, dy, p.B, {.transpose_b = false});
    ops::matmul(p.dA, du, x, {.transpose_a = true, .transpose_b = false, .alpha = kScale, .beta = 1.0f});
    ops::matmul(dx, du, p.A, {.transpose_b = false, .alpha = kScale, .beta = 1.0f});
  }
  bool has_block(int layer, model::BlockSite site) const override {
    return blocks.count({layer, static_cast<int>(site)}) > 0;
  }
  void block_forward(int layer, model::BlockSite site, const Tensor&, const Tensor& f, Tensor& out) override {
    Block& p = blocks.at({layer, static_cast<int>(site)});
    ops::matmul(out, f, p.W, {.alpha = kScale, .beta = 1.0f});
    ops::bias_add(out, p.b);
  }
  void block_backward(int layer, model::BlockSite site, const Tensor&, const Tensor& f, const Tensor& dout, Tensor&,
                      Tensor& df) override {
    Block& p = blocks.at({layer, static_cast<int>(site)});
    ops::matmul(p.dW, dout, f, {.transpose_a = true, .transpose_b = false, .alpha = kScale, .beta = 1.0f});
    ops::column_sum(p.db, dout, 1.0f);
    ops::matmul(df, dout, p.W, {.transpose_b = false, .alpha = kScale, .beta = 1.0f});
  }
};

// Two rows of 24 tokens: row 0 one document, row 1 two documents (positions restarting, segment ids)
// and padding; targets the next token within a document, −100 elsewhere.
model::TrainInputs train_inputs(std::int64_t V, bool packed) {
  const std::int64_t B = 2, T = 24;
  model::TrainInputs in{Tensor::empty({B, T}, DType::I32, host_allocator(), "ids"),
                        Tensor::empty({B, T}, DType::I32, host_allocator(), "targets"), Tensor(), Tensor()};
  Tensor pos = Tensor::empty({B, T}, DType::I32, host_allocator(), "positions");
  Tensor seg = Tensor::empty({B, T}, DType::I32, host_allocator(), "segment_ids");
  std::mt19937 rng(static_cast<std::uint32_t>(test::kSeed));
  for (std::int64_t b = 0; b < B; ++b) {
    std::int32_t p = 0;
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int32_t s = !packed || b == 0 ? 0 : (t < 10 ? 0 : (t < 21 ? 1 : -1));
      const std::int64_t i = b * T + t;
      if (t > 0 && s != seg.data<std::int32_t>()[i - 1]) p = 0;
      in.ids.data<std::int32_t>()[i] = s < 0 ? 0 : static_cast<std::int32_t>(rng() % V);
      pos.data<std::int32_t>()[i] = s < 0 ? 0 : p++;
      seg.data<std::int32_t>()[i] = s;
    }
    for (std::int64_t t = 0; t < T; ++t) {
      const std::int64_t i = b * T + t;
      const bool next_same = t + 1 < T && seg.data<std::int32_t>()[i] >= 0 &&
                             seg.data<std::int32_t>()[i + 1] == seg.data<std::int32_t>()[i];
      in.targets.data<std::int32_t>()[i] = next_same ? in.ids.data<std::int32_t>()[i + 1] : -100;
    }
  }
  if (packed) in.positions = pos, in.segment_ids = seg;
  return in;
}

std::string dtype_str(DType d) { return d == DType::BF16 ? "bf16 weights" : "f32 weights"; }

}  // namespace

TEST_CASE("training step on cuda:0 with a LoRA + block hook from ops calls: loss and every gradient match the CPU") {
  const model::LlamaModel& cpu = tiny().host;
  for (const DType wd : {DType::F32, DType::BF16}) {
    for (const bool packed : {false, true}) {
      CAPTURE(dtype_str(wd));
      CAPTURE(packed);
      const double tol = test::gpu_tolerance(wd);
      const double gtol = wd == DType::BF16 ? kBf16GradTol : tol;
      const model::LlamaModel gpu = model::llama_model_to_device(cpu, 0, wd);
      CHECK(model::model_device(gpu).str() == "cuda:0");
      const model::TrainInputs in = train_inputs(cpu.config.vocab_size, packed);
      OpsHook hc(cpu.config, /*device=*/false), hg(cpu.config, /*device=*/true);
      Tensor logits_c = Tensor::zeros({2, 24, cpu.config.vocab_size}, DType::F32, "logits_cpu");
      Tensor logits_g = Tensor::zeros({2, 24, cpu.config.vocab_size}, DType::F32, "logits_gpu");
      Tensor demb_c = Tensor::zeros({2, 24, cpu.config.hidden_size}, DType::F32, "d_embedded_cpu");
      Tensor demb_g = Tensor::zeros({2, 24, cpu.config.hidden_size}, DType::F32, "d_embedded_gpu");
      const model::TrainResult rc = model::llama_train_step(cpu, in, &hc, {.logits = &logits_c, .d_embedded = &demb_c});
      model::TrainWorkspace ws(model::model_allocator(gpu));
      const model::TrainResult rg =
          model::llama_train_step(gpu, in, &hg, {.logits = &logits_g, .d_embedded = &demb_g}, &ws);
      backend::synchronize(0);
      REQUIRE(rg.n_loss_tokens == rc.n_loss_tokens);
      CHECK(std::fabs(rg.loss_sum - rc.loss_sum) <= tol * std::fabs(rc.loss_sum));
      check_close(logits_g, logits_c, tol, "logits");
      check_close(demb_g, demb_c, tol, "d_embedded");
      for (auto& [key, p] : hc.lora) {
        const auto& g = hg.lora.at(key);
        const std::string site = "layer " + std::to_string(key.first) + " site " + std::to_string(key.second);
        check_close(g.dA, p.dA, gtol, "lora dA " + site);
        check_close(g.dB, p.dB, gtol, "lora dB " + site);
      }
      for (auto& [key, p] : hc.blocks) {
        const auto& g = hg.blocks.at(key);
        const std::string site = "layer " + std::to_string(key.first) + " block " + std::to_string(key.second);
        check_close(g.dW, p.dW, gtol, "block dW " + site);
        check_close(g.db, p.db, gtol, "block db " + site);
      }
    }
  }
}

TEST_CASE("training step on cuda:0 with AdapterSet (LoRA on all projections, bottleneck): loss and gradients") {
  const model::LlamaModel& cpu = tiny().host;
  for (const adapters::AdapterKind kind : {adapters::AdapterKind::Lora, adapters::AdapterKind::Bottleneck}) {
    for (const DType wd : {DType::F32, DType::BF16}) {
      CAPTURE(static_cast<int>(kind));
      CAPTURE(dtype_str(wd));
      const double tol = test::gpu_tolerance(wd);
      const double gtol = wd == DType::BF16 ? kBf16GradTol : tol;
      adapters::AdapterConfig cfg;
      cfg.kind = kind;
      cfg.lora.r = 8;
      cfg.lora.targets = adapters::lora_target_names();
      cfg.bottleneck.size = 16;
      // ReLU's gradient jumps at 0: with bf16 GEMM inputs on the device a pre-activation near zero can change
      // sign and switch its unit's whole row of the down projection's gradient on or off. The bf16 case uses
      // swish, whose gradient is continuous, so the comparison measures rounding, not that switch.
      if (wd == DType::BF16) cfg.bottleneck.activation = adapters::BnActivation::Swish;
      adapters::AdapterSet set_c(cpu.config, cfg), set_g(cpu.config, cfg);
      // Non-zero values everywhere (the initialisation zeroes LoRA B and the bottleneck up projection,
      // whose partners would then get no gradient), the same in both sets.
      std::uint64_t salt = 1;
      const std::vector<adapters::AdapterParam> pc = set_c.parameters(), pg = set_g.parameters();
      REQUIRE(pc.size() == pg.size());
      for (std::size_t i = 0; i < pc.size(); ++i) {
        const Tensor r = random_host(pc[i].value.shape(), ++salt, 0.05f, "init");
        Tensor vc = pc[i].value, vg = pg[i].value;
        vc.copy_from(r);
        vg.copy_from(r);
      }
      set_g.to_device(0);
      const model::LlamaModel gpu = model::llama_model_to_device(cpu, 0, wd);
      const model::TrainInputs in = train_inputs(cpu.config.vocab_size, /*packed=*/false);
      const model::TrainResult rc = model::llama_train_step(cpu, in, &set_c);
      const model::TrainResult rg = model::llama_train_step(gpu, in, &set_g);
      set_g.gradients_to_host();
      CHECK(std::fabs(rg.loss_sum - rc.loss_sum) <= tol * std::fabs(rc.loss_sum));
      const std::vector<adapters::AdapterParam> gc = set_c.parameters(), gg = set_g.host_parameters();
      REQUIRE(gc.size() == gg.size());
      for (std::size_t i = 0; i < gc.size(); ++i) check_close(gg[i].grad, gc[i].grad, gtol, gc[i].name + ".grad");
    }
  }
}

TEST_CASE("llama_forward on cuda:0: logits of a whole sequence and of decode steps with the KV cache") {
  const model::LlamaModel& cpu = tiny().host;
  const std::int64_t V = cpu.config.vocab_size;
  for (const DType wd : {DType::F32, DType::BF16}) {
    CAPTURE(dtype_str(wd));
    const double tol = test::gpu_tolerance(wd);
    const model::LlamaModel gpu = model::llama_model_to_device(cpu, 0, wd);
    const model::TrainInputs in = train_inputs(V, /*packed=*/false);
    check_close(model::llama_forward(gpu, in.ids), model::llama_forward(cpu, in.ids), tol, "full logits");
    // Prefill 24 tokens of 2 rows, then 8 decode steps feeding the CPU's argmax to both.
    model::KvCache kc(cpu.config, 2, 40), kg(cpu.config, 2, 40, 1, model::model_allocator(gpu));
    Tensor lc = model::llama_forward(cpu, in.ids, &kc, {.last_position_only = true});
    Tensor lg = model::llama_forward(gpu, in.ids, &kg, {.last_position_only = true});
    check_close(lg, lc, tol, "prefill last-position logits");
    Tensor step = Tensor::empty({2, 1}, DType::I32, host_allocator(), "step_ids");
    for (int s = 0; s < 8; ++s) {
      for (std::int64_t b = 0; b < 2; ++b) {
        const float* row = lc.data<float>() + b * V;
        step.data<std::int32_t>()[b] = static_cast<std::int32_t>(std::max_element(row, row + V) - row);
      }
      lc = model::llama_forward(cpu, step, &kc, {.last_position_only = true});
      lg = model::llama_forward(gpu, step, &kg, {.last_position_only = true});
      check_close(lg, lc, tol, "decode step " + std::to_string(s));
    }
  }
}

TEST_CASE("greedy generation of 32 tokens on cuda:0 (f32 weights) gives the CPU's tokens") {
  const TinyModel& t = tiny();
  const model::LlamaModel gpu = model::llama_model_to_device(t.host, 0, DType::F32);
  const std::vector<generate::GenerationRequest> reqs =
      greedy_requests(t, {"Once upon a time", "The quick brown fox jumps over the lazy dog and", "a"}, 32);
  auto run = [&](const model::LlamaModel& m) {
    generate::Generator gen(m, *t.tok);
    std::vector<std::vector<std::int32_t>> out(reqs.size());
    gen.run_batch(reqs, /*batch_size=*/2, [&](std::size_t i, generate::GenerationOutput&& o) { out[i] = o.tokens; });
    return out;
  };
  const auto want = run(t.host), got = run(gpu);
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    CAPTURE(i);
    CHECK(!want[i].empty());
    CHECK(got[i] == want[i]);
  }
}

// The KV cache of the last layers in pinned host RAM, staged to the GPU layer by layer on the copy
// stream (model/kv_cache.h): the copies are exact, so a 5-layer model with 0, 1 and 3 of its layers on
// the GPU generates the tokens of the cache kept whole on the GPU, and its prefill and decode logits
// agree with it and with the CPU's.
TEST_CASE("a KV cache spilled to pinned host RAM on cuda:0 gives the tokens of a cache kept on the GPU") {
  const TinyModel& t = tiny(5);
  const model::LlamaModel gpu = model::llama_model_to_device(t.host, 0, DType::F32);
  const std::int64_t V = t.host.config.vocab_size;
  const model::TrainInputs in = train_inputs(V, /*packed=*/false);
  model::KvCache kc(t.host.config, 2, 40), kg(t.host.config, 2, 40, 1, model::model_allocator(gpu));
  model::KvCache ks(t.host.config, 2, 40, 1, model::model_allocator(gpu), {.device_layers = 1});
  CHECK(ks.host_bytes() == model::KvCache::bytes_needed(t.host.config, 2, 40, 1, 4));
  Tensor lc = model::llama_forward(t.host, in.ids, &kc, {.last_position_only = true});
  Tensor lg = model::llama_forward(gpu, in.ids, &kg, {.last_position_only = true});
  Tensor ls = model::llama_forward(gpu, in.ids, &ks, {.last_position_only = true});
  check_close(ls, lg, 1e-6, "spilled prefill vs on the GPU");
  check_close(ls, lc, test::gpu_tolerance(DType::F32), "spilled prefill vs CPU");
  Tensor step = Tensor::empty({2, 1}, DType::I32, host_allocator(), "step_ids");
  for (int s = 0; s < 8; ++s) {
    for (std::int64_t b = 0; b < 2; ++b) {
      const float* row = lc.data<float>() + b * V;
      step.data<std::int32_t>()[b] = static_cast<std::int32_t>(std::max_element(row, row + V) - row);
    }
    lc = model::llama_forward(t.host, step, &kc, {.last_position_only = true});
    lg = model::llama_forward(gpu, step, &kg, {.last_position_only = true});
    ls = model::llama_forward(gpu, step, &ks, {.last_position_only = true});
    check_close(ls, lg, 1e-6, "spilled decode step " + std::to_string(s) + " vs on the GPU");
  }
  const std::vector<generate::GenerationRequest> reqs = greedy_requests(
      t, {"Once upon a time", "The quick brown fox jumps over the lazy dog and", "a", "int main() {"}, 24);
  auto run = [&](std::int64_t device_layers) {
    generate::Generator gen(gpu, *t.tok);
    gen.set_options({.prefill_chunk = 4, .kv_device_layers = device_layers});
    std::vector<std::vector<std::int32_t>> out(reqs.size());
    gen.run_batch(reqs, /*batch_size=*/2, [&](std::size_t i, generate::GenerationOutput&& o) { out[i] = o.tokens; });
    return out;
  };
  const auto want = run(-1);
  for (const std::int64_t device_layers : {0, 1, 3}) {
    CAPTURE(device_layers);
    const auto got = run(device_layers);
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      CAPTURE(i);
      CHECK(!want[i].empty());
      CHECK(got[i] == want[i]);
    }
  }
}

// Base weights of the last layers in pinned host RAM, staged to the GPU layer by layer
// (llama_model_to_device's device_layers, model/weight_stream.h): the copies are exact and the same
// kernels run, so a 5-layer model with 0, 2 and 3 of its layers on the GPU gives the logits, the decode
// steps, the training step's loss and adapter gradients (with and without recomputation) and the greedy
// tokens of the model kept whole on the GPU, bit for bit. With 3 or 5 streamed layers and 2 slots, every
// pass copies layers again (a stale slot would show as wrong numbers).
TEST_CASE("base weights streamed from pinned host RAM on cuda:0 give the numbers of weights kept on the GPU") {
  const TinyModel& t = tiny(5);
  const std::int64_t V = t.host.config.vocab_size;
  const model::TrainInputs in = train_inputs(V, /*packed=*/false);
  const model::LlamaModel whole = model::llama_model_to_device(t.host, 0, DType::BF16);
  CHECK(!whole.streamed);
  adapters::AdapterConfig acfg;
  acfg.kind = adapters::AdapterKind::LoraBottleneck;
  acfg.lora.r = 4;
  acfg.lora.targets = adapters::lora_target_names();
  acfg.bottleneck.size = 8;
  acfg.bottleneck.activation = adapters::BnActivation::Swish;
  // One training step with adapters whose every value is non-zero (the same in every run): loss and
  // the gradients.
  auto train = [&](const model::LlamaModel& m, bool recompute) {
    adapters::AdapterSet set(t.host.config, acfg);
    std::uint64_t salt = 7;
    for (const adapters::AdapterParam& p : set.parameters()) {
      Tensor v = p.value;
      v.copy_from(random_host(v.shape(), ++salt, 0.05f, "init"));
    }
    set.to_device(0);
    const model::TrainResult r = model::llama_train_step(m, in, &set, {.recompute = recompute});
    set.gradients_to_host();
    Tensor loss = Tensor::zeros({1}, DType::F32, "loss_sum");
    loss.data<float>()[0] = static_cast<float>(r.loss_sum);
    std::vector<Tensor> grads{loss};
    for (const adapters::AdapterParam& p : set.host_parameters()) grads.push_back(p.grad.to_host(DType::F32));
    return grads;
  };
  auto decode = [&](const model::LlamaModel& m) {
    std::vector<Tensor> out;
    model::KvCache kv(t.host.config, 2, 40, 1, model::model_allocator(m));
    out.push_back(model::llama_forward(m, in.ids, &kv, {.last_position_only = true}));
    Tensor step = Tensor::empty({2, 1}, DType::I32, host_allocator(), "step_ids");
    for (int s = 0; s < 6; ++s) {
      for (std::int64_t b = 0; b < 2; ++b) {
        const float* row = out.back().data<float>() + b * V;
        step.data<std::int32_t>()[b] = static_cast<std::int32_t>(std::max_element(row, row + V) - row);
      }
      out.push_back(model::llama_forward(m, step, &kv, {.last_position_only = true}));
    }
    return out;
  };
  const std::vector<generate::GenerationRequest> reqs =
      greedy_requests(t, {"Once upon a time", "The quick brown fox jumps over the lazy dog and", "a"}, 16);
  auto generate = [&](const model::LlamaModel& m) {
    generate::Generator gen(m, *t.tok);
    std::vector<std::vector<std::int32_t>> out(reqs.size());
    gen.run_batch(reqs, /*batch_size=*/2, [&](std::size_t i, generate::GenerationOutput&& o) { out[i] = o.tokens; });
    return out;
  };
  const Tensor want_logits = model::llama_forward(whole, in.ids);
  const std::vector<Tensor> want_train = train(whole, false), want_train_rc = train(whole, true);
  const std::vector<Tensor> want_decode = decode(whole);
  const auto want_tokens = generate(whole);
  for (const std::int64_t device_layers : {0, 2, 3}) {
    CAPTURE(device_layers);
    const model::LlamaModel m = model::llama_model_to_device(t.host, 0, DType::BF16, device_layers);
    REQUIRE(m.streamed);
    CHECK(m.streamed->first_layer() == device_layers);
    CHECK(m.streamed->end_layer() == 5);
    CHECK(model::model_device(m) == whole.weights.final_norm.device());
    // The streamed layers' weights are in host memory; the slots hold two layers on the device.
    CHECK(m.weights.layers[4].wq.device().host_accessible());
    CHECK(m.streamed->host_bytes() == static_cast<std::uint64_t>(5 - device_layers) * m.streamed->device_bytes() /
                                          std::min<std::uint64_t>(2, static_cast<std::uint64_t>(5 - device_layers)));
    check_close(model::llama_forward(m, in.ids), want_logits, 0.0, "logits");
    const std::uint64_t copied = m.streamed->bytes_copied();
    CHECK(copied >= m.streamed->host_bytes());  // each streamed layer at least once
    for (const bool rc : {false, true}) {
      CAPTURE(rc);
      const std::vector<Tensor> got = train(m, rc), &want = rc ? want_train_rc : want_train;
      REQUIRE(got.size() == want.size());
      for (std::size_t i = 0; i < got.size(); ++i)
        check_close(got[i], want[i], 0.0, "train tensor " + std::to_string(i));
    }
    const std::vector<Tensor> got_decode = decode(m);
    for (std::size_t i = 0; i < got_decode.size(); ++i)
      check_close(got_decode[i], want_decode[i], 0.0, "decode step " + std::to_string(i));
    if (device_layers < 3) CHECK(m.streamed->bytes_copied() > copied + m.streamed->host_bytes());
    CHECK(generate(m) == want_tokens);
  }
  CHECK_THROWS_AS(model::llama_model_to_device(t.host, 0, DType::BF16, -2), ConfigError);
}

// Prefix sharing on a GPU (GenerateOptions::share_prefixes): the shared positions are copied between
// rows of the device cache, or between the host copies of spilled layers; the tokens are those of the
// same run without sharing, with the cache whole or partly in pinned host RAM.
TEST_CASE("prompts that start alike share their KV cache on cuda:0, whole or spilled: the tokens without sharing") {
  const TinyModel& t = tiny(5);
  const model::LlamaModel gpu = model::llama_model_to_device(t.host, 0, DType::F32);
  const std::vector<generate::GenerationRequest> reqs =
      greedy_requests(t,
                      {"The quick brown fox jumps over the lazy dog and then it runs into the woods, where",
                       "The quick brown fox jumps over the lazy dog and then it runs into the woods, where",
                       "The quick brown fox jumps over the lazy dog and then it sleeps", "a",
                       "The quick brown fox jumps over the lazy dog and then it runs home"},
                      16);
  auto run = [&](std::int64_t device_layers, bool share) {
    generate::Generator gen(gpu, *t.tok);
    gen.set_options({.prefill_chunk = 8, .kv_device_layers = device_layers, .share_prefixes = share});
    std::vector<std::vector<std::int32_t>> out(reqs.size());
    std::vector<std::int64_t> cached(reqs.size());
    gen.run_batch(reqs, /*batch_size=*/2, [&](std::size_t i, generate::GenerationOutput&& o) {
      out[i] = o.tokens;
      cached[i] = o.cached_prompt_tokens;
    });
    return std::pair(out, cached);
  };
  const auto [want, none] = run(-1, false);
  for (const std::int64_t device_layers : {-1, 0, 2}) {
    CAPTURE(device_layers);
    const auto [got, cached] = run(device_layers, true);
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      CAPTURE(i);
      CHECK(!want[i].empty());
      CHECK(got[i] == want[i]);
      CHECK(none[i] == 0);
    }
    CHECK(cached[1] == std::ssize(reqs[1].prompt) - 1);  // the first prompt again, from the other row
    CHECK(cached[2] > 10);
    CHECK(cached[4] > 10);
  }
}

// runtime.kv_cache_dtype = "bf16" on a GPU: the cache holds half the bytes, kept whole or spilled to
// pinned host RAM it gives the same logits (the staging copies move bf16 elements), and they agree with
// the CPU's bf16 cache (each side rounds its own keys and values, hence the bf16 tolerance).
TEST_CASE("a bf16 KV cache on cuda:0, whole or spilled, gives the logits of the CPU's bf16 cache") {
  const TinyModel& t = tiny(5);
  const model::LlamaConfig& cfg = t.host.config;
  const model::LlamaModel gpu = model::llama_model_to_device(t.host, 0, DType::F32);
  const model::TrainInputs in = train_inputs(cfg.vocab_size, /*packed=*/false);
  model::KvCache kc(cfg, 2, 40, 1, host_allocator(), {.dtype = DType::BF16});
  model::KvCache kg(cfg, 2, 40, 1, model::model_allocator(gpu), {.dtype = DType::BF16});
  model::KvCache ks(cfg, 2, 40, 1, model::model_allocator(gpu), {.device_layers = 1, .dtype = DType::BF16});
  CHECK(kg.size_bytes() * 2 == model::KvCache::bytes_needed(cfg, 2, 40));
  CHECK(ks.host_bytes() == model::KvCache::bytes_needed(cfg, 2, 40, 1, 4, DType::BF16));
  const double tol = test::gpu_tolerance(DType::BF16);
  Tensor lc = model::llama_forward(t.host, in.ids, &kc, {.last_position_only = true});
  Tensor lg = model::llama_forward(gpu, in.ids, &kg, {.last_position_only = true});
  Tensor ls = model::llama_forward(gpu, in.ids, &ks, {.last_position_only = true});
  check_close(lg, lc, tol, "bf16-cache prefill vs CPU");
  check_close(ls, lg, 1e-6, "spilled bf16-cache prefill vs on the GPU");
  Tensor step = Tensor::empty({2, 1}, DType::I32, host_allocator(), "step_ids");
  for (int s = 0; s < 8; ++s) {
    for (std::int64_t b = 0; b < 2; ++b) {
      const float* row = lc.data<float>() + b * cfg.vocab_size;
      step.data<std::int32_t>()[b] = static_cast<std::int32_t>(std::max_element(row, row + cfg.vocab_size) - row);
    }
    lc = model::llama_forward(t.host, step, &kc, {.last_position_only = true});
    lg = model::llama_forward(gpu, step, &kg, {.last_position_only = true});
    ls = model::llama_forward(gpu, step, &ks, {.last_position_only = true});
    check_close(lg, lc, tol, "bf16-cache decode step " + std::to_string(s) + " vs CPU");
    check_close(ls, lg, 1e-6, "spilled bf16-cache decode step " + std::to_string(s) + " vs on the GPU");
  }
}

TEST_CASE("elementwise ops, bias_add and softmax on cuda:0 match the CPU") {
  const std::int64_t N = 301, C = 77;
  const Tensor a = random_host({N, C}, 1, 1.0f, "a"), b = random_host({N, C}, 2, 1.0f, "b");
  const Tensor bias = random_host({C}, 3, 1.0f, "bias");
  auto both = [&](auto&& f) {  // f(tensors on host or device) → result
    const Tensor want = f(false);
    const Tensor got = f(true);
    return std::pair{got, want};
  };
  auto check = [&](const std::pair<Tensor, Tensor>& r, double tol, const char* what) {
    check_close(r.first, r.second, tol, what);
  };
  // One op per line:
  // clang-format off
  check(both([&](bool d) { Tensor o = on(a, d); ops::add(o, o, on(b, d)); return host_of(o); }), 0, "add");
  check(both([&](bool d) { Tensor o = on(a, d); ops::axpy(o, on(b, d), -0.3f); return host_of(o); }), 0, "axpy");
  check(both([&](bool d) { Tensor o = on(a, d); ops::scale(o, 1.7f); return host_of(o); }), 0, "scale");
  check(both([&](bool d) { Tensor o = on(a, d); ops::fill(o, 2.5f); return host_of(o); }), 0, "fill");
  check(both([&](bool d) { Tensor o = on(a, d); ops::copy(o, on(b, d)); return host_of(o); }), 0, "copy");
  check(both([&](bool d) { Tensor o = on(bias, d); ops::column_sum(o, on(a, d), 0.7f); return host_of(o); }),
        test::kTolF32, "column_sum");
  check(both([&](bool d) { Tensor o = on(a, d); ops::bias_add(o, on(bias, d)); return host_of(o); }), 0, "bias_add");
  check(both([&](bool d) { Tensor o = on(a, d); ops::softmax_forward(o, on(b, d)); return host_of(o); }),
        test::kTolF32, "softmax");
  check(both([&](bool d) { Tensor o = on(a, d); ops::log_softmax_forward(o, on(b, d)); return host_of(o); }),
        test::kTolF32, "log_softmax");
  // clang-format on
  const Tensor x4 = random_host({3, 11, 2, 16}, 4, 1.0f, "k");
  check(both([&](bool d) {
          Tensor o = on(Tensor::zeros({3, 2, 11, 16}, DType::F32, "k_all"), d);
          ops::to_heads_major(o, on(x4, d));
          Tensor back = on(Tensor::zeros({3, 11, 2, 16}, DType::F32, "k_back"), d);
          ops::from_heads_major(back, o);
          return host_of(back);
        }),
        0, "heads-major round trip");
  const std::vector<std::int64_t> rows{2, 0, 1}, pos{5, 0, 20};
  check(both([&](bool d) {
          Tensor cache = on(random_host({4, 2, 40, 16}, 5, 1.0f, "cache"), d);
          ops::kv_cache_write(cache, on(x4, d), rows, pos);
          return host_of(cache);
        }),
        0, "kv_cache_write");
  // More sequences than one launch carries (64): rows in reverse order, positions 0..5.
  const Tensor x70 = random_host({70, 2, 2, 16}, 6, 1.0f, "k70");
  std::vector<std::int64_t> rows70(70), pos70(70);
  for (std::size_t b = 0; b < 70; ++b) {
    rows70[b] = 79 - static_cast<std::int64_t>(b);
    pos70[b] = static_cast<std::int64_t>(b % 6);
  }
  check(both([&](bool d) {
          Tensor cache = on(random_host({80, 2, 8, 16}, 7, 1.0f, "cache80"), d);
          ops::kv_cache_write(cache, on(x70, d), rows70, pos70);
          return host_of(cache);
        }),
        0, "kv_cache_write, 70 sequences");
}

// Attention in bf16 (LlamaModel::attention_dtype, runtime.attention_dtype): with head_dim 64 the passes
// hand the tensor-core kernels bf16 copies of q, k and v (and, in the backward, of the output and its
// gradient) and widen what they return. Each result is compared with the same bf16-weight model on the
// device computing attention in f32, and with the CPU: within the bf16 tolerance (one rounding of q, k,
// v and the output, f32 softmax), and never bit-identical to the f32 attention, which shows the bf16
// path ran.
TEST_CASE("attention in bf16 on cuda:0 (head_dim 64, tensor cores): training step, logits and a bf16 KV cache") {
  const TinyModel& t = tiny_head64();
  const model::LlamaModel& cpu = t.host;
  REQUIRE(cpu.config.head_dim == 64);
  const std::int64_t V = cpu.config.vocab_size;
  const model::LlamaModel f32_attn = model::llama_model_to_device(cpu, 0, DType::BF16);
  model::LlamaModel bf16_attn = f32_attn;
  bf16_attn.attention_dtype = model::resolve_attention_dtype(bf16_attn, model::AttentionDtype::Auto);

  SUBCASE("which dtype each setting resolves to") {
    CHECK(f32_attn.attention_dtype == DType::F32);  // llama_model_to_device leaves f32: the apps choose
    CHECK(bf16_attn.attention_dtype == DType::BF16);
    CHECK(model::resolve_attention_dtype(f32_attn, model::AttentionDtype::F32) == DType::F32);
    // The host: as asked, and "auto" as ops::cpu_matmul_dtype() (f32 here).
    CHECK(model::resolve_attention_dtype(cpu, model::AttentionDtype::BF16) == DType::BF16);
    CHECK(model::resolve_attention_dtype(cpu, model::AttentionDtype::Auto) == DType::F32);
    const model::LlamaModel f32_weights = model::llama_model_to_device(cpu, 0, DType::F32);
    CHECK(model::resolve_attention_dtype(f32_weights, model::AttentionDtype::Auto) == DType::F32);
    CHECK(model::resolve_attention_dtype(f32_weights, model::AttentionDtype::BF16) == DType::BF16);
    // head_dim 16: no tensor-core kernel, so Auto keeps f32; BF16 is still honoured (the generic kernel).
    const model::LlamaModel d16 = model::llama_model_to_device(tiny().host, 0, DType::BF16);
    CHECK(model::resolve_attention_dtype(d16, model::AttentionDtype::Auto) == DType::F32);
    CHECK(model::resolve_attention_dtype(d16, model::AttentionDtype::BF16) == DType::BF16);
    model::LlamaModel d16_bf16 = d16;
    d16_bf16.attention_dtype = DType::BF16;
    CHECK(model::attention_note(bf16_attn) == "attention in bf16 on tensor cores");
    CHECK(model::attention_note(f32_attn).starts_with("attention in f32 (untiled on a GPU"));
    CHECK(
        model::attention_note(d16_bf16).starts_with("attention in bf16 on CUDA cores (the tensor-core kernels "
                                                    "take head_dim 64 or 128, not 16)"));
    // Over a KV cache: bf16 attention over a bf16 cache only.
    CHECK(model::attention_dtype_over_cache(bf16_attn, DType::BF16) == DType::BF16);
    CHECK(model::attention_dtype_over_cache(bf16_attn, DType::F32) == DType::F32);
    CHECK(model::attention_note(bf16_attn, DType::BF16) == "attention in bf16 on tensor cores");
    CHECK(model::attention_note(bf16_attn, DType::F32).starts_with("attention in f32 over the f32 KV cache"));
    CHECK(model::attention_note(f32_attn, DType::F32).starts_with("attention in f32 (untiled on a GPU"));
  }

  SUBCASE("training step with a LoRA + block hook, plain and packed rows") {
    for (const bool packed : {false, true}) {
      CAPTURE(packed);
      const model::TrainInputs in = train_inputs(V, packed);
      OpsHook hc(cpu.config, false), hf(cpu.config, true), hb(cpu.config, true);
      const Shape lshape{2, 24, V}, dshape{2, 24, cpu.config.hidden_size};
      Tensor lc = Tensor::zeros(lshape, DType::F32, "logits_cpu"), lf = Tensor::zeros(lshape, DType::F32, "logits_f32"),
             lb = Tensor::zeros(lshape, DType::F32, "logits_bf16");
      Tensor dc = Tensor::zeros(dshape, DType::F32, "demb_cpu"), df = Tensor::zeros(dshape, DType::F32, "demb_f32"),
             db = Tensor::zeros(dshape, DType::F32, "demb_bf16");
      const model::TrainResult rc = model::llama_train_step(cpu, in, &hc, {.logits = &lc, .d_embedded = &dc});
      const model::TrainResult rf = model::llama_train_step(f32_attn, in, &hf, {.logits = &lf, .d_embedded = &df});
      const model::TrainResult rb = model::llama_train_step(bf16_attn, in, &hb, {.logits = &lb, .d_embedded = &db});
      backend::synchronize(0);
      const double tol = test::gpu_tolerance(DType::BF16);
      CHECK(std::fabs(rb.loss_sum - rf.loss_sum) <= tol * std::fabs(rf.loss_sum));
      CHECK(std::fabs(rb.loss_sum - rc.loss_sum) <= tol * std::fabs(rc.loss_sum));
      check_close(lb, lf, tol, "logits vs f32 attention");
      check_close(lb, lc, tol, "logits vs CPU");
      check_close(db, df, kBf16GradTol, "d_embedded vs f32 attention");
      check_close(db, dc, kBf16GradTol, "d_embedded vs CPU");
      CHECK_MESSAGE(test::compare_relative(lb.data<float>(), lf.data<float>(), lb.numel()).max_abs > 0,
                    "bf16 attention gave f32 attention's logits bit for bit: did it run?");
      for (auto& [key, p] : hc.lora) {
        const std::string site = "layer " + std::to_string(key.first) + " site " + std::to_string(key.second);
        check_close(hb.lora.at(key).dA, hf.lora.at(key).dA, kBf16GradTol, "lora dA vs f32 attention " + site);
        check_close(hb.lora.at(key).dB, hf.lora.at(key).dB, kBf16GradTol, "lora dB vs f32 attention " + site);
        check_close(hb.lora.at(key).dA, p.dA, kBf16GradTol, "lora dA vs CPU " + site);
        check_close(hb.lora.at(key).dB, p.dB, kBf16GradTol, "lora dB vs CPU " + site);
      }
      for (auto& [key, p] : hc.blocks) {
        const std::string site = "layer " + std::to_string(key.first) + " block " + std::to_string(key.second);
        check_close(hb.blocks.at(key).dW, hf.blocks.at(key).dW, kBf16GradTol, "block dW vs f32 attention " + site);
        check_close(hb.blocks.at(key).dW, p.dW, kBf16GradTol, "block dW vs CPU " + site);
      }
    }
  }

  SUBCASE("logits without a cache, and a prefill and decode steps over a bf16 KV cache") {
    const model::TrainInputs in = train_inputs(V, /*packed=*/false);
    const double tol = test::gpu_tolerance(DType::BF16);
    const Tensor full_b = model::llama_forward(bf16_attn, in.ids), full_f = model::llama_forward(f32_attn, in.ids);
    check_close(full_b, full_f, tol, "full logits vs f32 attention");
    check_close(full_b, model::llama_forward(cpu, in.ids), tol, "full logits vs CPU");
    CHECK(test::compare_relative(full_b.data<float>(), full_f.data<float>(), full_b.numel()).max_abs > 0);
    // Prefill in two pieces (the second attends over the cached first), then decode steps feeding the
    // f32-attention run's argmax to both.
    model::KvCache kb(cpu.config, 2, 40, 1, model::model_allocator(bf16_attn), {.dtype = DType::BF16});
    model::KvCache kf(cpu.config, 2, 40, 1, model::model_allocator(f32_attn), {.dtype = DType::BF16});
    const Tensor head = in.ids.narrow(1, 0, 16).to_host(DType::I32), rest = in.ids.narrow(1, 16, 8).to_host(DType::I32);
    model::llama_forward(bf16_attn, head, &kb, {.last_position_only = true});
    model::llama_forward(f32_attn, head, &kf, {.last_position_only = true});
    Tensor lb = model::llama_forward(bf16_attn, rest, &kb, {.last_position_only = true});
    Tensor lf = model::llama_forward(f32_attn, rest, &kf, {.last_position_only = true});
    check_close(lb, lf, tol, "prefill over the cache vs f32 attention");
    CHECK(test::compare_relative(lb.data<float>(), lf.data<float>(), lb.numel()).max_abs > 0);
    Tensor step = Tensor::empty({2, 1}, DType::I32, host_allocator(), "step_ids");
    for (int s = 0; s < 6; ++s) {
      for (std::int64_t b = 0; b < 2; ++b) {
        const float* row = lf.data<float>() + b * V;
        step.data<std::int32_t>()[b] = static_cast<std::int32_t>(std::max_element(row, row + V) - row);
      }
      lb = model::llama_forward(bf16_attn, step, &kb, {.last_position_only = true});
      lf = model::llama_forward(f32_attn, step, &kf, {.last_position_only = true});
      check_close(lb, lf, tol, "decode step " + std::to_string(s) + " vs f32 attention");
    }
  }
}

// llama_model_to_device takes the host model by value: moved in, its tensors go as the copy proceeds, so
// host RAM does not hold the streamed layers twice (once as loaded, once pinned); a copy passed in keeps
// them. The host weights here come from a counting allocator, whose live bytes show what is still held,
// and which notes the device's allocated bytes at each release: a layer released once it is on the
// device, not all at the end, frees host memory while later layers are still to be copied.
TEST_CASE("llama_model_to_device releases a moved-in host model's weights; a copy keeps them") {
  class Counting final : public Allocator {
   public:
    void* allocate(std::size_t n) override {
      live += n;
      return host_allocator().allocate(n);
    }
    void deallocate(void* p, std::size_t n) override {
      live -= n;
      device_at_release.push_back(backend::cuda_memory_stats(0).allocated);
      host_allocator().deallocate(p, n);
    }
    Device device() const override { return host_allocator().device(); }
    std::size_t live = 0;
    std::vector<std::uint64_t> device_at_release;
  };
  Counting counting;
  const TinyModel& t = tiny(5);
  auto counted_copy = [&] {
    model::LlamaModel m = t.host;
    auto recopy = [&](Tensor& w) {
      if (!w.defined()) return;
      Tensor c = Tensor::empty(w.shape(), DType::BF16, counting, w.name());
      c.copy_from(w.to_host(DType::BF16));
      w = c;
    };
    recopy(m.weights.embedding);
    recopy(m.weights.final_norm);
    recopy(m.weights.lm_head);
    for (model::LayerWeights& l : m.weights.layers)
      for (Tensor* w : l.tensors()) recopy(*w);
    return m;
  };
  const Tensor want = model::llama_forward(model::llama_model_to_device(t.host, 0, DType::BF16, 2),
                                           train_inputs(t.host.config.vocab_size, false).ids);
  for (const std::int64_t device_layers : {-1, 0, 2}) {
    CAPTURE(device_layers);
    model::LlamaModel kept = counted_copy();
    const std::size_t held = counting.live;
    REQUIRE(held > 0);
    const model::LlamaModel from_copy = model::llama_model_to_device(kept, 0, DType::BF16, device_layers);
    CHECK(counting.live == held);  // `kept` still holds every tensor
    counting.device_at_release.clear();
    const model::LlamaModel from_moved = model::llama_model_to_device(std::move(kept), 0, DType::BF16, device_layers);
    CHECK(counting.live == 0);
    if (device_layers != 0) {  // some layers copied to the device: the first of them went before the last copy
      REQUIRE(!counting.device_at_release.empty());
      CHECK(counting.device_at_release.front() < backend::cuda_memory_stats(0).allocated);
    }
    // The moved-in model computes what the copied one does (and what the model kept elsewhere does).
    const Tensor got = model::llama_forward(from_moved, train_inputs(t.host.config.vocab_size, false).ids);
    check_close(got, model::llama_forward(from_copy, train_inputs(t.host.config.vocab_size, false).ids), 0.0,
                "moved vs copied");
    check_close(got, want, 0.0, "vs the host model's device copy");
  }
}
