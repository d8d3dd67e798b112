// LoRA and a bottleneck adapter in one AdapterSet (kind lora+bottleneck): each part starts exactly as
// it would alone (an exact no-op), the combined hook computes bit for bit what each single-kind set
// computes at its sites, gradients through a sub-block that uses both (a LoRA projection feeding a
// bottleneck adapter) match f64 finite differences, and the lora/ + bottleneck/ folder exports and
// loads back bit for bit, with each part usable alone.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_files.h"
#include "adapters/adapter_set.h"
#include "core/error.h"
#include "core/file.h"
#include "ops/matmul.h"
#include "tests/unit/adapters/adapters_ref.h"
#include "tests/unit/adapters/adapters_test_util.h"

using namespace adapt;
using namespace adapt::adapters;
using json = nlohmann::json;
using model::BlockSite;
using model::LinearSite;
using model::WeightKind;

namespace {

AdapterConfig both_cfg(BnPlacement placement = BnPlacement::Pfeiffer) {
  AdapterConfig c;
  c.kind = AdapterKind::LoraBottleneck;
  c.seed = 9;
  c.name = "code";
  c.lora.r = 3;
  c.lora.alpha = 6.0;
  c.lora.targets = {"q", "o", "down"};
  c.bottleneck.size = 5;
  c.bottleneck.placement = placement;
  c.bottleneck.activation = BnActivation::Gelu;
  c.bottleneck.scaling = 1.5;
  c.bottleneck.ln_before = true;
  c.layers = {0, 2};
  return c;
}

AdapterConfig only(AdapterConfig c, AdapterKind kind) {
  c.kind = kind;
  return c;
}

void randomize(AdapterSet& set, std::uint64_t stream) {
  for (AdapterParam& p : set.parameters()) test::fill_uniform(p.value, ++stream, -0.5, 0.5);
}

/// Copies every parameter of `from` that `to` also has (by name).
void copy_params(const AdapterSet& from, AdapterSet& to) {
  for (const AdapterParam& p : to.parameters()) {
    const Tensor* src = from.find_parameter(p.name);
    REQUIRE(src != nullptr);
    Tensor dst = p.value;
    dst.copy_from(*src);
  }
}

std::vector<std::string> names(const AdapterSet& set) {
  std::vector<std::string> n;
  for (const AdapterParam& p : set.parameters()) n.push_back(p.name);
  return n;
}

}  // namespace

TEST_CASE("lora+bottleneck holds both parts, each initialised as it would be alone: an exact no-op") {
  const model::LlamaConfig tiny = test::tiny_llama();
  const AdapterSet both(tiny, both_cfg(BnPlacement::Houlsby));
  const AdapterSet lora(tiny, only(both_cfg(BnPlacement::Houlsby), AdapterKind::Lora));
  const AdapterSet bn(tiny, only(both_cfg(BnPlacement::Houlsby), AdapterKind::Bottleneck));
  CHECK(adapter_kind_name(AdapterKind::LoraBottleneck) == "lora+bottleneck");
  CHECK(both.n_parameters() == lora.n_parameters() + bn.n_parameters());
  CHECK(both.n_lora_parameters() == lora.n_parameters());
  CHECK(both.n_bottleneck_parameters() == bn.n_parameters());
  CHECK(lora.n_bottleneck_parameters() == 0);
  CHECK(bn.n_lora_parameters() == 0);
  // Order: per layer, the LoRA sites, then the bottleneck modules.
  std::vector<std::string> expected;
  for (const int layer : {0, 2}) {
    const std::string p = "layers." + std::to_string(layer) + ".";
    for (const std::string& n : names(lora))
      if (n.rfind(p, 0) == 0) expected.push_back(n);
    for (const std::string& n : names(bn))
      if (n.rfind(p, 0) == 0) expected.push_back(n);
  }
  CHECK(names(both) == expected);
  for (const AdapterParam& p : both.parameters()) {
    CAPTURE(p.name);
    const Tensor* alone = lora.find_parameter(p.name);
    if (!alone) alone = bn.find_parameter(p.name);
    REQUIRE(alone != nullptr);
    CHECK(test::bit_equal(p.value, *alone));
  }

  // The hook answers both kinds of site, and adds exactly nothing at init.
  AdapterSet set(tiny, both_cfg(BnPlacement::Houlsby));
  CHECK(set.has_linear({0, WeightKind::Wq}));
  CHECK(set.has_linear({2, WeightKind::WDown}));
  CHECK_FALSE(set.has_linear({1, WeightKind::Wq}));
  CHECK_FALSE(set.has_linear({0, WeightKind::Wv}));
  CHECK(set.has_block(0, BlockSite::Attention));
  CHECK(set.has_block(2, BlockSite::Mlp));
  CHECK_FALSE(set.has_block(1, BlockSite::Mlp));
  const Tensor x = test::random_tensor({6, 16}, 11);
  Tensor y = test::random_tensor({6, 16}, 12);
  const Tensor y0 = test::clone(y);
  set.linear_forward({0, WeightKind::Wq}, x, y);
  CHECK(test::bit_equal(y, y0));
  const Tensor h = test::random_tensor({6, 16}, 13), f = test::random_tensor({6, 16}, 14);
  Tensor out = test::clone(y0);
  set.block_forward(2, BlockSite::Mlp, h, f, out);
  CHECK(test::bit_equal(out, y0));
}

TEST_CASE("lora+bottleneck computes at each site bit for bit what the single-kind set computes") {
  const model::LlamaConfig tiny = test::tiny_llama();
  AdapterSet both(tiny, both_cfg());
  AdapterSet lora(tiny, only(both_cfg(), AdapterKind::Lora));
  AdapterSet bn(tiny, only(both_cfg(), AdapterKind::Bottleneck));
  randomize(both, 100);
  copy_params(both, lora);
  copy_params(both, bn);
  for (AdapterSet* s : {&both, &lora, &bn}) s->zero_grad();

  const std::int64_t N = 7;
  for (const LinearSite site :
       {LinearSite{0, WeightKind::Wq}, LinearSite{2, WeightKind::Wo}, LinearSite{2, WeightKind::WDown}}) {
    CAPTURE(site.layer);
    const LoraAdapter& ad = *lora.lora(site.layer, site.kind);
    const Tensor x = test::random_tensor({N, ad.in()}, 200 + site.layer);
    const Tensor dy = test::random_tensor({N, ad.out()}, 300 + site.layer);
    Tensor y1 = Tensor::zeros({N, ad.out()}, DType::F32), y2 = Tensor::zeros({N, ad.out()}, DType::F32);
    both.linear_forward(site, x, y1);
    lora.linear_forward(site, x, y2);
    CHECK(test::bit_equal(y1, y2));
    Tensor dx1 = Tensor::zeros({N, ad.in()}, DType::F32), dx2 = Tensor::zeros({N, ad.in()}, DType::F32);
    both.linear_backward(site, x, dy, dx1);
    lora.linear_backward(site, x, dy, dx2);
    CHECK(test::bit_equal(dx1, dx2));
  }
  for (const int layer : {0, 2}) {
    const Tensor h = test::random_tensor({N, 16}, 400 + layer), f = test::random_tensor({N, 16}, 500 + layer);
    const Tensor dout = test::random_tensor({N, 16}, 600 + layer);
    Tensor o1 = test::clone(h), o2 = test::clone(h);
    both.block_forward(layer, BlockSite::Mlp, h, f, o1);
    bn.block_forward(layer, BlockSite::Mlp, h, f, o2);
    CHECK(test::bit_equal(o1, o2));
    CHECK_FALSE(test::bit_equal(o1, h));  // the adapter did add something
    Tensor dh1 = test::clone(dout), df1 = test::clone(dout), dh2 = test::clone(dout), df2 = test::clone(dout);
    both.block_backward(layer, BlockSite::Mlp, h, f, dout, dh1, df1);
    bn.block_backward(layer, BlockSite::Mlp, h, f, dout, dh2, df2);
    CHECK(test::bit_equal(dh1, dh2));
    CHECK(test::bit_equal(df1, df2));
  }
  // Every gradient of the combined set is the single-kind set's.
  for (const AdapterParam& p : both.parameters()) {
    CAPTURE(p.name);
    const AdapterSet& alone = lora.find_parameter(p.name) ? lora : bn;
    bool found = false;
    for (const AdapterParam& q : alone.parameters())
      if (q.name == p.name) {
        found = true;
        CHECK(test::bit_equal(p.grad, q.grad));
      }
    CHECK(found);
  }
}

TEST_CASE(
    "lora+bottleneck: gradients through a LoRA projection feeding a bottleneck adapter match f64 finite differences") {
  // One sub-block: f = h·Woᵀ + s·(h·Aᵀ)·Bᵀ (LoRA on o_proj, in = out = C), then the bottleneck adapter
  // at its end: out = h + f + s_bn·A_bn(z). L = Σ w ⊙ out, with h feeding both.
  const model::LlamaConfig tiny = test::tiny_llama();
  for (const auto& [pname, placement] : bn_placement_names()) {
    CAPTURE(pname);
    AdapterSet set(tiny, both_cfg(placement));
    randomize(set, 700);
    set.zero_grad();
    const int layer = 2;
    const LinearSite site{layer, WeightKind::Wo};
    const BlockSite block = BlockSite::Mlp;
    LoraAdapter& lo = *set.lora(layer, WeightKind::Wo);
    BottleneckAdapter& bo = *set.bottleneck(layer, block);
    const std::int64_t N = 4, C = 16;
    const Tensor h = test::random_tensor({N, C}, 801);
    const Tensor W = test::random_tensor({C, C}, 802);
    const Tensor dout = test::random_tensor({N, C}, 803);

    // adapt: the frozen product, then the hook's two calls (forward), and their reverse (backward).
    Tensor f = Tensor::empty({N, C}, DType::F32);
    ops::matmul(f, h, W);
    set.linear_forward(site, h, f);
    Tensor out = Tensor::empty({N, C}, DType::F32);
    for (std::int64_t i = 0; i < N * C; ++i) out.data<float>()[i] = h.data<float>()[i] + f.data<float>()[i];
    set.block_forward(layer, block, h, f, out);
    Tensor dh = test::clone(dout), df = test::clone(dout);
    set.block_backward(layer, block, h, f, dout, dh, df);
    Tensor dx = Tensor::empty({N, C}, DType::F32);
    ops::matmul(dx, df, W, {.transpose_b = false});
    set.linear_backward(site, h, df, dx);
    for (std::int64_t i = 0; i < N * C; ++i) dh.data<float>()[i] += dx.data<float>()[i];

    test::LoraRef lref{N,
                       C,
                       C,
                       lo.rank(),
                       lo.scaling(),
                       test::to_f64(h),
                       test::to_f64(W),
                       test::to_f64(lo.a),
                       test::to_f64(lo.b),
                       std::vector<double>(static_cast<std::size_t>(N * C), 1.0),
                       std::vector<double>{}};
    test::BnRef bref{N,
                     C,
                     bo.width(),
                     placement,
                     bo.activation(),
                     bo.scaling(),
                     bo.ln_before(),
                     {},
                     {},
                     test::to_f64(bo.ln_weight),
                     test::to_f64(bo.ln_bias),
                     test::to_f64(bo.down_weight),
                     test::to_f64(bo.down_bias),
                     test::to_f64(bo.up_weight),
                     test::to_f64(bo.up_bias),
                     test::to_f64(dout)};
    std::vector<double> hv = test::to_f64(h);
    auto loss = [&] {
      lref.x = hv;
      bref.h = hv;
      bref.f = lref.forward();
      return bref.loss();
    };
    loss();
    CHECK(test::max_rel_diff(test::to_f64(out), bref.forward()) < 1e-5);
    test::check_grad("d lora_a", lo.grad_a, test::numeric_grad(lref.A, loss));
    test::check_grad("d lora_b", lo.grad_b, test::numeric_grad(lref.B, loss));
    test::check_grad("d down.weight", bo.grad_down_weight, test::numeric_grad(bref.Wd, loss));
    test::check_grad("d down.bias", bo.grad_down_bias, test::numeric_grad(bref.bd, loss));
    test::check_grad("d up.weight", bo.grad_up_weight, test::numeric_grad(bref.Wu, loss));
    test::check_grad("d up.bias", bo.grad_up_bias, test::numeric_grad(bref.bu, loss));
    test::check_grad("d ln.weight", bo.grad_ln_weight, test::numeric_grad(bref.ln_w, loss));
    test::check_grad("d ln.bias", bo.grad_ln_bias, test::numeric_grad(bref.ln_b, loss));
    test::check_grad("dh", dh, test::numeric_grad(hv, loss));
  }
}

TEST_CASE("lora+bottleneck exports lora/ (PEFT) and bottleneck/ (AdapterHub) and loads back bit for bit") {
  const model::LlamaConfig tiny = test::tiny_llama();
  AdapterSet set(tiny, both_cfg(BnPlacement::Houlsby));
  randomize(set, 900);
  test::TempDir dir;
  adapter_export(set, dir.path(), {.base_model = "tiny"});
  CHECK_FALSE(fs::exists(dir / "adapter_config.json"));
  CHECK(fs::exists(dir / "lora/adapter_model.safetensors"));
  CHECK(fs::exists(dir / "bottleneck/adapter.safetensors"));
  CHECK(json::parse(file_read_text(dir / "lora/adapter_config.json"))["peft_type"] == "LORA");
  CHECK(json::parse(file_read_text(dir / "bottleneck/adapter_config.json"))["name"] == "code");
  CHECK(adapter_format_detect(dir.path()) == AdapterFormat::LoraBottleneck);
  CHECK(adapter_format_detect(dir / "lora") == AdapterFormat::Peft);
  CHECK(adapter_format_detect(dir / "bottleneck") == AdapterFormat::AdapterHub);

  const AdapterSet back = adapter_load(dir.path(), tiny);
  CHECK(back.kind() == AdapterKind::LoraBottleneck);
  CHECK(back.layers() == std::vector<int>{0, 2});
  CHECK(back.config().name == "code");
  CHECK(back.config().lora.targets == std::vector<std::string>{"q", "o", "down"});
  CHECK(back.config().bottleneck.placement == BnPlacement::Houlsby);
  REQUIRE(names(back) == names(set));
  for (const AdapterParam& p : set.parameters()) {
    CAPTURE(p.name);
    CHECK(test::bit_equal(p.value, *back.find_parameter(p.name)));
  }
  // Each part alone is a plain single-kind folder.
  CHECK(adapter_load(dir / "lora", tiny).kind() == AdapterKind::Lora);
  CHECK(adapter_load(dir / "bottleneck", tiny).n_parameters() == set.n_bottleneck_parameters());

  // Exporting a single kind into the same folder removes the two parts, and the reverse.
  AdapterSet single(tiny, only(both_cfg(), AdapterKind::Lora));
  adapter_export(single, dir.path());
  CHECK_FALSE(fs::exists(dir / "lora"));
  CHECK_FALSE(fs::exists(dir / "bottleneck"));
  CHECK(adapter_format_detect(dir.path()) == AdapterFormat::Peft);
  adapter_export(set, dir.path());
  CHECK_FALSE(fs::exists(dir / "adapter_config.json"));
  CHECK_FALSE(fs::exists(dir / "adapter_model.safetensors"));
  CHECK(adapter_format_detect(dir.path()) == AdapterFormat::LoraBottleneck);
}

TEST_CASE("lora+bottleneck folders: a missing part, an ambiguous folder and parts on different layers are refused") {
  const model::LlamaConfig tiny = test::tiny_llama();
  test::TempDir dir;
  adapter_export(AdapterSet(tiny, both_cfg()), dir.path());
  const std::string lora_cfg = file_read_text(dir / "lora/adapter_config.json");

  fs::remove(dir / "bottleneck/adapter_config.json");
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), tiny),
                       doctest::Contains("has lora/adapter_config.json but no bottleneck/adapter_config.json"),
                       IoError);
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), tiny), doctest::Contains((dir / "lora").c_str()), IoError);

  adapter_export(AdapterSet(tiny, both_cfg()), dir.path());
  file_write_atomic(dir / "adapter_config.json", lora_cfg);
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), tiny), doctest::Contains("ambiguous"), IoError);
  fs::remove(dir / "adapter_config.json");

  // The parts swapped: lora/ must be PEFT.
  test::TempDir swapped;
  fs::create_directories(swapped / "lora");
  fs::create_directories(swapped / "bottleneck");
  for (const char* f : {"adapter_config.json", "adapter.safetensors"})
    fs::copy_file(dir / "bottleneck" / f, swapped / "lora" / f);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    fs::copy_file(dir / "lora" / f, swapped / "bottleneck" / f);
  CHECK_THROWS_WITH_AS(adapter_load(swapped.path(), tiny), doctest::Contains("PEFT's format"), IoError);

  // A LoRA part made for other layers than the bottleneck part.
  AdapterConfig other = only(both_cfg(), AdapterKind::Lora);
  other.layers = {1};
  test::TempDir lone;
  adapter_export(AdapterSet(tiny, other), lone.path());
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    fs::copy_file(lone / f, dir / "lora" / f, fs::copy_options::overwrite_existing);
  CHECK_THROWS_WITH_AS(adapter_load(dir.path(), tiny), doctest::Contains("adapts layers [1]"), UnsupportedError);
}

TEST_CASE("lora+bottleneck configs validate both sections") {
  const model::LlamaConfig tiny = test::tiny_llama();
  AdapterConfig c = both_cfg();
  CHECK_NOTHROW(adapter_config_validate(c, tiny));
  c.lora.r = 0;
  CHECK_THROWS_WITH_AS(adapter_config_validate(c, tiny), doctest::Contains("adapter.lora.r"), ConfigError);
  c = both_cfg();
  c.bottleneck.size = 17;
  CHECK_THROWS_WITH_AS(adapter_config_validate(c, tiny), doctest::Contains("adapter.bottleneck.size = 17"),
                       ConfigError);
  c.bottleneck.reduction_factor = 2.0;
  CHECK_THROWS_WITH_AS(adapter_config_validate(c), doctest::Contains("exactly one of"), ConfigError);
  // A LoRA-only job ignores [adapter.bottleneck], a bottleneck-only job [adapter.lora].
  CHECK_NOTHROW(adapter_config_validate(only(c, AdapterKind::Lora), tiny));
  AdapterConfig b = both_cfg();
  b.lora.targets.clear();
  CHECK_NOTHROW(adapter_config_validate(only(b, AdapterKind::Bottleneck), tiny));
  CHECK_THROWS_WITH_AS(adapter_config_validate(b, tiny), doctest::Contains("adapter.lora.targets is empty"),
                       ConfigError);
}
