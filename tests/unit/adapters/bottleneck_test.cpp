// Bottleneck adapters through the adapter hook, for each placement (Houlsby, Pfeiffer, parallel),
// activation (relu, swish, exact gelu) and with/without the LayerNorm before the adapter: forward
// values and finite-difference gradients of every parameter and of h and f against the f64 reference
// of adapters_ref.h (SPEC-llama.md §6.3), and the exact no-op of the "mam_adapter" init.
#include <doctest/doctest.h>

#include <cmath>

#include "adapters/adapter_config_check.h"
#include "adapters/adapter_set.h"
#include "tests/unit/adapters/adapters_ref.h"
#include "tests/unit/adapters/adapters_test_util.h"

using namespace adapt;
using namespace adapt::adapters;
using model::BlockSite;
using test::BnRef;

namespace {

AdapterConfig bn_config(BnPlacement placement, BnActivation activation, bool ln_before) {
  AdapterConfig cfg;
  cfg.kind = AdapterKind::Bottleneck;
  cfg.seed = 5;
  cfg.bottleneck.size = 5;
  cfg.bottleneck.placement = placement;
  cfg.bottleneck.activation = activation;
  cfg.bottleneck.scaling = 1.5;
  cfg.bottleneck.ln_before = ln_before;
  return cfg;
}

void check_block(AdapterSet& set, int layer, BlockSite site, std::uint64_t stream) {
  BottleneckAdapter* ad = set.bottleneck(layer, site);
  REQUIRE(ad != nullptr);
  test::fill_uniform(ad->down_weight, stream + 1, -0.5, 0.5);
  test::fill_uniform(ad->down_bias, stream + 2, -0.3, 0.3);
  test::fill_uniform(ad->up_weight, stream + 3, -0.5, 0.5);
  test::fill_uniform(ad->up_bias, stream + 4, -0.3, 0.3);
  if (ad->ln_before()) {
    test::fill_uniform(ad->ln_weight, stream + 5, 0.5, 1.5);
    test::fill_uniform(ad->ln_bias, stream + 6, -0.3, 0.3);
  }
  const std::int64_t N = 4, C = ad->hidden();
  const Tensor h = test::random_tensor({N, C}, stream + 7);
  const Tensor f = test::random_tensor({N, C}, stream + 8);
  const Tensor dout = test::random_tensor({N, C}, stream + 9);
  BnRef ref{N,
            C,
            ad->width(),
            set.config().bottleneck.placement,
            ad->activation(),
            ad->scaling(),
            ad->ln_before(),
            test::to_f64(h),
            test::to_f64(f),
            ad->ln_before() ? test::to_f64(ad->ln_weight) : std::vector<double>{},
            ad->ln_before() ? test::to_f64(ad->ln_bias) : std::vector<double>{},
            test::to_f64(ad->down_weight),
            test::to_f64(ad->down_bias),
            test::to_f64(ad->up_weight),
            test::to_f64(ad->up_bias),
            test::to_f64(dout)};

  // Forward: out holds h + f, the hook adds s·A(z).
  Tensor out = Tensor::empty({N, C}, DType::F32);
  for (std::int64_t i = 0; i < N * C; ++i) out.data<float>()[i] = h.data<float>()[i] + f.data<float>()[i];
  REQUIRE(set.has_block(layer, site));
  set.block_forward(layer, site, h, f, out);
  CHECK(test::max_rel_diff(test::to_f64(out), ref.forward()) < 1e-5);

  // Backward: dh and df hold dout; the hook adds its shares.
  set.zero_grad();
  Tensor dh = test::clone(dout), df = test::clone(dout);
  set.block_backward(layer, site, h, f, dout, dh, df);
  auto loss = [&] { return ref.loss(); };
  test::check_grad("d down.weight", ad->grad_down_weight, test::numeric_grad(ref.Wd, loss));
  test::check_grad("d down.bias", ad->grad_down_bias, test::numeric_grad(ref.bd, loss));
  test::check_grad("d up.weight", ad->grad_up_weight, test::numeric_grad(ref.Wu, loss));
  test::check_grad("d up.bias", ad->grad_up_bias, test::numeric_grad(ref.bu, loss));
  if (ad->ln_before()) {
    test::check_grad("d ln.weight", ad->grad_ln_weight, test::numeric_grad(ref.ln_w, loss));
    test::check_grad("d ln.bias", ad->grad_ln_bias, test::numeric_grad(ref.ln_b, loss));
  }
  test::check_grad("dh", dh, test::numeric_grad(ref.h, loss));
  test::check_grad("df", df, test::numeric_grad(ref.f, loss));
}

}  // namespace

TEST_CASE("bottleneck forward and gradients match f64 finite differences for every placement and activation") {
  std::uint64_t stream = 2000;
  for (const auto& [pname, placement] : bn_placement_names())
    for (const auto& [aname, activation] : bn_activation_names())
      for (const bool ln : {false, true}) {
        CAPTURE(pname);
        CAPTURE(aname);
        CAPTURE(ln);
        AdapterSet set(test::tiny_llama(), bn_config(placement, activation, ln));
        if (placement == BnPlacement::Houlsby) check_block(set, 0, BlockSite::Attention, stream += 20);
        check_block(set, 2, BlockSite::Mlp, stream += 20);
      }
}

TEST_CASE("bottleneck sites per placement, parameter names and the mam_adapter init") {
  AdapterConfig cfg = bn_config(BnPlacement::Houlsby, BnActivation::Swish, true);
  cfg.layers = {2, 0};
  AdapterSet set(test::tiny_llama(), cfg);
  CHECK(set.layers() == std::vector<int>{0, 2});
  CHECK(set.has_block(0, BlockSite::Attention));
  CHECK(set.has_block(2, BlockSite::Mlp));
  CHECK_FALSE(set.has_block(1, BlockSite::Mlp));
  CHECK_FALSE(set.has_linear({0, model::WeightKind::Wq}));
  std::vector<std::string> names;
  for (const AdapterParam& p : set.parameters())
    if (p.name.rfind("layers.0.", 0) == 0) names.push_back(p.name + (p.decay ? "" : " (no decay)"));
  CHECK(names == std::vector<std::string>{
                     "layers.0.attn_adapter.ln.weight (no decay)", "layers.0.attn_adapter.ln.bias (no decay)",
                     "layers.0.attn_adapter.down.weight", "layers.0.attn_adapter.down.bias (no decay)",
                     "layers.0.attn_adapter.up.weight", "layers.0.attn_adapter.up.bias (no decay)",
                     "layers.0.mlp_adapter.ln.weight (no decay)", "layers.0.mlp_adapter.ln.bias (no decay)",
                     "layers.0.mlp_adapter.down.weight", "layers.0.mlp_adapter.down.bias (no decay)",
                     "layers.0.mlp_adapter.up.weight", "layers.0.mlp_adapter.up.bias (no decay)"});
  for (const AdapterParam& p : set.parameters()) CHECK(p.tp_shard_dim == -1);  // replicated over tp
  const BottleneckAdapter& ad = *set.bottleneck(0, BlockSite::Mlp);
  CHECK(ad.down_weight.shape() == Shape{5, 16});
  CHECK(ad.up_weight.shape() == Shape{16, 5});
  for (const double v : test::to_f64(ad.up_weight)) CHECK(v == 0.0);
  for (const double v : test::to_f64(ad.up_bias)) CHECK(v == 0.0);
  for (const double v : test::to_f64(ad.down_bias)) CHECK(v == 0.0);
  for (const double v : test::to_f64(ad.ln_weight)) CHECK(v == 1.0);
  for (const double v : test::to_f64(ad.down_weight)) CHECK(std::fabs(v) <= 0.25);  // 1/√C

  for (const BnPlacement placement : {BnPlacement::Pfeiffer, BnPlacement::Parallel}) {
    const AdapterSet one(test::tiny_llama(), bn_config(placement, BnActivation::Relu, false));
    CHECK_FALSE(one.has_block(1, BlockSite::Attention));
    CHECK(one.has_block(1, BlockSite::Mlp));
    CHECK(one.parameters().size() == 3 * 4);
  }
  // Width from the reduction factor, as AdapterHub computes it.
  AdapterConfig rf = bn_config(BnPlacement::Parallel, BnActivation::Relu, false);
  rf.bottleneck.size.reset();
  rf.bottleneck.reduction_factor = 3.0;
  CHECK(AdapterSet(test::tiny_llama(), rf).bottleneck(0, BlockSite::Mlp)->width() == 5);
}

TEST_CASE("bottleneck init is an exact no-op: outputs bit-identical to the base path") {
  std::uint64_t stream = 3000;
  for (const auto& [pname, placement] : bn_placement_names())
    for (const bool ln : {false, true}) {
      CAPTURE(pname);
      AdapterSet set(test::tiny_llama(), bn_config(placement, BnActivation::Gelu, ln));
      for (const int layer : set.layers())
        for (const BlockSite site : {BlockSite::Attention, BlockSite::Mlp}) {
          if (!set.has_block(layer, site)) continue;
          const Tensor h = test::random_tensor({9, 16}, ++stream), f = test::random_tensor({9, 16}, ++stream);
          Tensor out = Tensor::empty({9, 16}, DType::F32);
          for (int i = 0; i < 9 * 16; ++i) out.data<float>()[i] = h.data<float>()[i] + f.data<float>()[i];
          const Tensor base = test::clone(out);
          set.block_forward(layer, site, h, f, out);
          CHECK(test::bit_equal(out, base));
        }
    }
}
