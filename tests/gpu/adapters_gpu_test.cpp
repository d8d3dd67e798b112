// Adapters on CUDA tensors (AdapterSet::to_device) against the same set on the CPU, through the hook the
// model calls: LoRA (dropout > 0 in training mode, rsLoRA), every bottleneck placement (Houlsby, Pfeiffer,
// parallel) × activation (relu, swish, gelu) × ln_before, and lora+bottleneck. For each site the forward
// output, the input gradients and, at the end, every parameter gradient are compared (gpu_tolerances.h,
// f32: cuBLASLt without TF32 and the adapter kernels sum in other orders than the CPU), with row counts
// that are not multiples of 32 or 64. The dropout masks are compared bit for bit (the shared hash), and
// the device placement API (to_device / to_host / host mirrors / tp_gathered) is checked for exactness.
#include <doctest/doctest.h>

#include <fmt/format.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_math.h"
#include "adapters/adapter_rng.h"
#include "adapters/adapter_set.h"
#include "backend/backend.h"
#include "core/error.h"
#include "ops/elementwise.h"
#include "tests/gpu/gpu_tensors.h"
#include "tests/gpu/gpu_tolerances.h"
#include "tests/support/test_support.h"

using namespace adapt;
using namespace adapt::adapters;
using model::BlockSite;
using model::LinearSite;
using model::WeightKind;

namespace {

/// C = 72, F = 136, L = 2, H = 4, Hkv = 2 (D = 18): widths that are not multiples of 32.
model::LlamaConfig gpu_llama() {
  model::LlamaConfig c;
  c.hidden_size = 72;
  c.intermediate_size = 136;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.head_dim = 18;
  c.vocab_size = 64;
  return c;
}

constexpr std::int64_t kRowCounts[] = {37, 203};

/// A host f32 tensor of U(lo, hi) from `stream`.
Tensor random_host(const Shape& shape, std::uint64_t stream, const std::string& name, double lo = -1.0,
                   double hi = 1.0) {
  Tensor t = Tensor::empty(shape, DType::F32, host_allocator(), name);
  rng_fill_uniform(t, rng_key({test::kSeed, stream}), lo, hi);
  return t;
}

std::vector<float> values_of(const Tensor& t) {
  const Tensor h = t.device().host_accessible() ? t : test::to_cpu(t);
  const float* p = h.data<float>();
  return std::vector<float>(p, p + h.numel());
}

void check_close(const Tensor& got, const Tensor& want, const std::string& what) {
  const std::vector<float> g = values_of(got), w = values_of(want);
  REQUIRE(g.size() == w.size());
  const test::Mismatch m = test::compare_relative(g.data(), w.data(), static_cast<std::int64_t>(g.size()));
  INFO(what, " [", g.size(), " values]: ", m.str(), " (tolerance ", test::kTolF32, ", seed ", test::kSeed, ")");
  CHECK(m.rel <= test::kTolF32);
}

bool bit_equal(const Tensor& a, const Tensor& b) {
  const std::vector<float> x = values_of(a), y = values_of(b);
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

/// Random parameters (so every term of the backward is nonzero, the up projection included), the same
/// in both sets.
void randomize(AdapterSet& set, std::uint64_t stream) {
  for (AdapterParam& p : set.parameters()) rng_fill_uniform(p.value, rng_key({test::kSeed, ++stream}), -0.4, 0.4);
}

/// cpu: the set on the host; gpu: the same set (same config and values) on cuda:0.
struct SetPair {
  AdapterSet cpu, gpu;
  SetPair(const model::LlamaConfig& m, const AdapterConfig& c) : cpu(m, c), gpu(m, c) {
    randomize(cpu, 100);
    randomize(gpu, 100);
    gpu.to_device(0);
    for (AdapterSet* s : {&cpu, &gpu}) {
      s->set_training(true);
      s->set_step(/*step=*/5, /*micro_batch=*/2, /*row_offset=*/37);  // a dp replica's rows: masks offset
    }
  }
};

/// Every LoRA site of every layer: forward (y += ...) and backward (dx += ..., gradients) on both sets.
void run_lora_sites(SetPair& s, const model::LlamaConfig& m, std::int64_t N, std::uint64_t salt) {
  std::uint64_t stream = salt * 1000;
  for (const int layer : s.cpu.layers()) {
    for (const WeightKind kind : {WeightKind::Wq, WeightKind::Wk, WeightKind::Wv, WeightKind::Wo, WeightKind::WGate,
                                  WeightKind::WUp, WeightKind::WDown}) {
      const LinearSite site{.layer = layer, .kind = kind};
      if (!s.cpu.has_linear(site)) continue;
      REQUIRE(s.gpu.has_linear(site));
      const LoraAdapter* ad = s.cpu.lora(layer, kind);
      const std::string where = fmt::format("layer {} kind {} N {}", layer, static_cast<int>(kind), N);
      const Tensor x = random_host({N, ad->in()}, ++stream, "x");
      Tensor y = random_host({N, ad->out()}, ++stream, "y");
      Tensor dx = random_host({N, ad->in()}, ++stream, "dx");
      const Tensor dy = random_host({N, ad->out()}, ++stream, "dy");
      Tensor y_d = test::to_device(y), dx_d = test::to_device(dx);
      const Tensor x_d = test::to_device(x), dy_d = test::to_device(dy);
      s.cpu.linear_forward(site, x, y);
      s.gpu.linear_forward(site, x_d, y_d);
      check_close(y_d, y, "LoRA forward y, " + where);
      s.cpu.linear_backward(site, x, dy, dx);
      s.gpu.linear_backward(site, x_d, dy_d, dx_d);
      check_close(dx_d, dx, "LoRA backward dx, " + where);
    }
  }
  (void)m;
}

/// Every bottleneck site: forward (out = h + f + term) and backward (dh, df start as dout) on both sets.
void run_block_sites(SetPair& s, const model::LlamaConfig& m, std::int64_t N, std::uint64_t salt) {
  std::uint64_t stream = salt * 1000 + 500;
  const std::int64_t C = m.hidden_size;
  for (const int layer : s.cpu.layers()) {
    for (const BlockSite site : {BlockSite::Attention, BlockSite::Mlp}) {
      if (!s.cpu.has_block(layer, site)) continue;
      REQUIRE(s.gpu.has_block(layer, site));
      const std::string where = fmt::format("layer {} site {} N {}", layer, site == BlockSite::Mlp ? "mlp" : "attn", N);
      const Tensor h = random_host({N, C}, ++stream, "h");
      const Tensor f = random_host({N, C}, ++stream, "f");
      Tensor out = random_host({N, C}, ++stream, "out");
      const Tensor dout = random_host({N, C}, ++stream, "dout");
      Tensor dh = random_host({N, C}, ++stream, "dh");
      Tensor df = random_host({N, C}, ++stream, "df");
      const Tensor h_d = test::to_device(h), f_d = test::to_device(f), dout_d = test::to_device(dout);
      Tensor out_d = test::to_device(out), dh_d = test::to_device(dh), df_d = test::to_device(df);
      s.cpu.block_forward(layer, site, h, f, out);
      s.gpu.block_forward(layer, site, h_d, f_d, out_d);
      check_close(out_d, out, "bottleneck forward out, " + where);
      s.cpu.block_backward(layer, site, h, f, dout, dh, df);
      s.gpu.block_backward(layer, site, h_d, f_d, dout_d, dh_d, df_d);
      check_close(dh_d, dh, "bottleneck backward dh, " + where);
      check_close(df_d, df, "bottleneck backward df, " + where);
    }
  }
}

/// Every parameter gradient (read through the host mirrors) against the CPU set's.
void check_gradients(SetPair& s, const std::string& what) {
  s.gpu.gradients_to_host();
  const std::vector<AdapterParam> want = s.cpu.parameters(), got = s.gpu.host_parameters();
  REQUIRE(want.size() == got.size());
  for (std::size_t i = 0; i < want.size(); ++i) {
    REQUIRE(got[i].name == want[i].name);
    CHECK(got[i].grad.device().host_accessible());
    check_close(got[i].grad, want[i].grad, what + ": gradient of " + want[i].name);
  }
}

void run_case(const AdapterConfig& c, const std::string& what) {
  const model::LlamaConfig m = gpu_llama();
  SetPair s(m, c);
  std::uint64_t salt = 1;
  for (const std::int64_t N : kRowCounts) {
    if (kind_has_lora(c.kind)) run_lora_sites(s, m, N, ++salt);
    if (kind_has_bottleneck(c.kind)) run_block_sites(s, m, N, ++salt);
  }
  check_gradients(s, what);
}

AdapterConfig lora_cfg(bool rslora, double dropout) {
  AdapterConfig c;
  c.kind = AdapterKind::Lora;
  c.seed = 11;
  c.lora.r = 6;
  c.lora.alpha = 12.0;
  c.lora.use_rslora = rslora;
  c.lora.dropout = dropout;
  c.lora.targets = {"q", "k", "v", "o", "gate", "up", "down"};
  return c;
}

AdapterConfig bottleneck_cfg(BnPlacement placement, BnActivation act, bool ln_before) {
  AdapterConfig c;
  c.kind = AdapterKind::Bottleneck;
  c.seed = 12;
  c.name = "task";
  c.bottleneck.size = 20;
  c.bottleneck.placement = placement;
  c.bottleneck.activation = act;
  c.bottleneck.scaling = 0.75;
  c.bottleneck.ln_before = ln_before;
  return c;
}

}  // namespace

TEST_CASE("gpu.adapters: the LoRA dropout mask on the device is the CPU's, bit for bit") {
  for (const std::int64_t N : kRowCounts) {
    for (const std::int64_t width : {std::int64_t{0}, std::int64_t{3 * 53}}) {
      const std::int64_t in = 53;
      const LoraDropout d{.p = 0.3,
                          .stream = dropout_stream({.seed = 4, .step = 7, .micro_batch = 1, .layer = 2, .site = 3}),
                          .width = width,
                          .col_offset = width == 0 ? 0 : 53};
      const Tensor x = random_host({N, in}, 7000 + static_cast<std::uint64_t>(N), "x");
      Tensor want = Tensor::empty(x.shape(), DType::F32, host_allocator(), "x_dropped");
      detail::lora_dropout_apply(want, x, d);
      const Tensor x_d = test::to_device(x);
      Tensor got = test::to_device(want);
      ops::fill(got, 0.0f);
      detail::lora_dropout_apply(got, x_d, d);
      INFO("N ", N, " width ", width);
      CHECK(bit_equal(got, want));
      // Masked accumulation: dx += mask ⊙ g / (1 − p), dropped elements untouched.
      Tensor acc = random_host({N, in}, 8000 + static_cast<std::uint64_t>(N), "dx");
      Tensor acc_d = test::to_device(acc);
      detail::lora_dropout_accumulate(acc, x, d);
      detail::lora_dropout_accumulate(acc_d, x_d, d);
      CHECK(bit_equal(acc_d, acc));
      // And the mask is the one dropout_keep describes: some elements dropped, the rest scaled.
      const std::vector<float> xv = values_of(x), gv = values_of(got);
      std::int64_t dropped = 0, wrong = 0;
      const float keep_scale = static_cast<float>(1.0 / 0.7);
      for (std::int64_t i = 0; i < N * in; ++i) {
        const auto k = static_cast<std::size_t>(i);
        const bool keep = dropout_keep(d.stream, d.element(i, in), d.p);
        dropped += !keep;
        wrong += gv[k] != (keep ? xv[k] * keep_scale : 0.0f);
      }
      CHECK(wrong == 0);
      CHECK(dropped > 0);
      CHECK(dropped < N * in);
    }
  }
}

TEST_CASE("gpu.adapters: column sums (bias gradients, ops::column_sum) in double over many rows match the CPU") {
  for (const std::int64_t N : {std::int64_t{37}, std::int64_t{5003}}) {
    const Tensor x = random_host({N, 77}, 9000 + static_cast<std::uint64_t>(N), "x");
    Tensor want = random_host({77}, 9100, "sum");
    Tensor got = test::to_device(want);
    ops::column_sum(want, x, 0.5f);
    const Tensor x_d = test::to_device(x);
    ops::column_sum(got, x_d, 0.5f);
    check_close(got, want, fmt::format("column sum of ({}, 77)", N));
  }
}

TEST_CASE("gpu.adapters: LoRA on the device matches the CPU (dropout, rsLoRA)") {
  SUBCASE("no dropout") { run_case(lora_cfg(/*rslora=*/false, 0.0), "LoRA"); }
  SUBCASE("dropout 0.25") { run_case(lora_cfg(/*rslora=*/false, 0.25), "LoRA dropout"); }
  SUBCASE("rsLoRA with dropout 0.1") { run_case(lora_cfg(/*rslora=*/true, 0.1), "rsLoRA dropout"); }
}

TEST_CASE("gpu.adapters: bottleneck adapters on the device match the CPU (placement × activation × ln_before)") {
  for (const BnPlacement placement : {BnPlacement::Houlsby, BnPlacement::Pfeiffer, BnPlacement::Parallel})
    for (const BnActivation act : {BnActivation::Relu, BnActivation::Swish, BnActivation::Gelu})
      for (const bool ln : {false, true}) {
        const std::string what = fmt::format("bottleneck {} {}{}", bn_placement_name(placement),
                                             bn_activation_name(act), ln ? " ln_before" : "");
        INFO(what);
        run_case(bottleneck_cfg(placement, act, ln), what);
      }
}

TEST_CASE("gpu.adapters: lora+bottleneck on the device matches the CPU") {
  AdapterConfig c = bottleneck_cfg(BnPlacement::Pfeiffer, BnActivation::Gelu, /*ln_before=*/true);
  c.kind = AdapterKind::LoraBottleneck;
  c.lora = lora_cfg(/*rslora=*/false, 0.2).lora;
  c.lora.targets = {"q", "o", "down"};
  c.layers = {1};
  run_case(c, "lora+bottleneck");
}

TEST_CASE("gpu.adapters: to_device / to_host keep values bit for bit; host mirrors; device checks") {
  const model::LlamaConfig m = gpu_llama();
  AdapterConfig c = bottleneck_cfg(BnPlacement::Houlsby, BnActivation::Relu, /*ln_before=*/true);
  c.kind = AdapterKind::LoraBottleneck;
  c.lora = lora_cfg(/*rslora=*/false, 0.0).lora;
  AdapterSet host(m, c), set(m, c);
  randomize(host, 300);
  randomize(set, 300);
  set.to_device(0);
  CHECK(set.device() == backend::cuda_allocator(0).device());
  const std::vector<AdapterParam> p = set.parameters(), mirror = set.host_parameters(), want = host.parameters();
  REQUIRE(p.size() == want.size());
  for (std::size_t i = 0; i < p.size(); ++i) {
    CHECK_FALSE(p[i].value.device().host_accessible());
    CHECK(mirror[i].value.device().host_accessible());
    CHECK(bit_equal(p[i].value, want[i].value));
    CHECK(bit_equal(mirror[i].value, want[i].value));
  }
  // The optimizer writes the mirrors; values_from_host() brings them to the device.
  Tensor v = mirror[0].value;
  v.data<float>()[0] = 42.0f;
  set.values_from_host();
  CHECK(values_of(set.parameters()[0].value)[0] == 42.0f);
  // tp_gathered() of a device set is a host set with its values.
  const AdapterSet whole = set.tp_gathered();
  CHECK(whole.device() == Device{});
  CHECK(values_of(whole.parameters()[0].value)[0] == 42.0f);
  // The hook takes tensors on the set's device only.
  const LinearSite site{.layer = 0, .kind = WeightKind::Wq};
  const Tensor x = random_host({3, m.hidden_size}, 1, "x_on_host");
  Tensor y = random_host({3, m.hidden_size}, 2, "y_on_host");
  CHECK_THROWS_WITH_AS(set.linear_forward(site, x, y), doctest::Contains("to_device"), ShapeError);
  // zero_grad clears the device gradients.
  set.set_training(true);
  Tensor y_d = test::to_device(y), dx_d = test::to_device(x);
  set.linear_backward(site, test::to_device(x), y_d, dx_d);
  set.zero_grad();
  set.gradients_to_host();
  for (const AdapterParam& q : set.host_parameters())
    for (const float g : values_of(q.grad)) REQUIRE(g == 0.0f);
  // And back to the host, values kept.
  set.to_host();
  CHECK(set.device() == Device{});
  CHECK(set.parameters()[0].value.data<float>()[0] == 42.0f);
  for (std::size_t i = 1; i < want.size(); ++i) CHECK(bit_equal(set.parameters()[i].value, want[i].value));
}
