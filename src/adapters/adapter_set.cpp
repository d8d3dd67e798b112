#include "adapters/adapter_set.h"

#include <fmt/format.h>

#include "adapters/adapter_check.h"
#include "adapters/adapter_config_check.h"
#include "adapters/adapter_math.h"
#include "adapters/adapter_rng.h"
#include "backend/backend.h"
#include "core/error.h"
#include "model/llama_weights.h"
#include "ops/elementwise.h"

namespace adapt::adapters {

using model::BlockSite;
using model::WeightKind;

namespace {

constexpr std::uint64_t kInitTag = 0x696e6974ULL;  // "init"

int block_index(BlockSite site) { return site == BlockSite::Attention ? 0 : 1; }

bool column_parallel(WeightKind kind) { return kind != WeightKind::Wo && kind != WeightKind::WDown; }

Tensor* base_weight(model::LayerWeights& w, WeightKind kind) {
  switch (kind) {
    case WeightKind::Wq: return &w.wq;
    case WeightKind::Wk: return &w.wk;
    case WeightKind::Wv: return &w.wv;
    case WeightKind::Wo: return &w.wo;
    case WeightKind::WGate: return &w.w_gate;
    case WeightKind::WUp: return &w.w_up;
    case WeightKind::WDown: return &w.w_down;
    default: break;
  }
  ADAPT_CHECK(false, "weight kind {} is not a LoRA target", static_cast<int>(kind));
  return nullptr;
}

}  // namespace

int lora_target_index(WeightKind kind) {
  for (int i = 0; i < 7; ++i)
    if (kLoraTargetKinds[i] == kind) return i;
  return -1;
}

AdapterSet::AdapterSet(const model::LlamaConfig& model, const AdapterConfig& config)
    : model_(model), config_(config), ws_(std::make_unique<ops::Workspace>()) {
  adapter_config_validate(config_, model_);
  layers_ = adapter_layers(config_, model_);
  const auto L = static_cast<std::size_t>(model_.n_layers);
  const auto seed = static_cast<std::uint64_t>(config_.seed);
  if (kind_has_lora(config_.kind)) {
    std::array<int, kNumTargets> none;
    none.fill(-1);
    lora_at_.assign(L, none);
    std::array<bool, kNumTargets> targeted{};
    for (const std::string& t : config_.lora.targets)
      targeted[static_cast<std::size_t>(lora_target_index(lora_target_kind(t)))] = true;
    const double s = lora_scaling(config_.lora);
    lora_.reserve(layers_.size() * config_.lora.targets.size());
    for (const int layer : layers_) {
      for (int t = 0; t < kNumTargets; ++t) {
        if (!targeted[static_cast<std::size_t>(t)]) continue;
        const auto [in, out] = lora_site_dims(kLoraTargetKinds[t], model_);
        lora_at_[static_cast<std::size_t>(layer)][static_cast<std::size_t>(t)] = static_cast<int>(lora_.size());
        lora_.emplace_back(in, out, config_.lora.r, s,
                           fmt::format("layers.{}.{}", layer, lora_target_name(kLoraTargetKinds[t])));
        lora_.back().init(config_.lora.init,
                          rng_key({kInitTag, seed, static_cast<std::uint64_t>(layer), static_cast<std::uint64_t>(t)}));
      }
    }
  }
  // Init keys differ from LoRA's (100 + site), so with both kinds each part starts exactly as it would alone.
  if (kind_has_bottleneck(config_.kind)) {
    const BottleneckConfig& bn = config_.bottleneck;
    const std::int64_t m = bottleneck_size(bn, model_.hidden_size);
    bn_at_.assign(L, {-1, -1});
    const bool attn = bn.placement == BnPlacement::Houlsby;
    for (const int layer : layers_) {
      for (int site = attn ? 0 : 1; site < 2; ++site) {
        bn_at_[static_cast<std::size_t>(layer)][static_cast<std::size_t>(site)] = static_cast<int>(bn_.size());
        bn_.emplace_back(model_.hidden_size, m, bn.activation, bn.scaling, bn.ln_before,
                         fmt::format("layers.{}.{}_adapter", layer, site == 0 ? "attn" : "mlp"));
        bn_.back().init(
            rng_key({kInitTag, seed, static_cast<std::uint64_t>(layer), 100u + static_cast<std::uint64_t>(site)}));
      }
    }
  }
}

// ---- sites ----------------------------------------------------------------------------------------

LoraAdapter* AdapterSet::lora(int layer, WeightKind kind) {
  return const_cast<LoraAdapter*>(static_cast<const AdapterSet*>(this)->lora(layer, kind));
}

const LoraAdapter* AdapterSet::lora(int layer, WeightKind kind) const {
  const int t = lora_target_index(kind);
  if (t < 0 || layer < 0 || layer >= static_cast<int>(lora_at_.size())) return nullptr;
  const int i = lora_at_[static_cast<std::size_t>(layer)][static_cast<std::size_t>(t)];
  return i < 0 ? nullptr : &lora_[static_cast<std::size_t>(i)];
}

BottleneckAdapter* AdapterSet::bottleneck(int layer, BlockSite site) {
  return const_cast<BottleneckAdapter*>(static_cast<const AdapterSet*>(this)->bottleneck(layer, site));
}

const BottleneckAdapter* AdapterSet::bottleneck(int layer, BlockSite site) const {
  if (layer < 0 || layer >= static_cast<int>(bn_at_.size())) return nullptr;
  const int i = bn_at_[static_cast<std::size_t>(layer)][static_cast<std::size_t>(block_index(site))];
  return i < 0 ? nullptr : &bn_[static_cast<std::size_t>(i)];
}

// ---- hook -----------------------------------------------------------------------------------------

bool AdapterSet::has_linear(const model::LinearSite& site) const {
  return !merged_ && lora(site.layer, site.kind) != nullptr;
}

LoraDropout AdapterSet::dropout_for(const model::LinearSite& site) const {
  if (!training_ || config_.lora.dropout <= 0.0) return {};
  LoraDropout d{.p = config_.lora.dropout,
                .stream = dropout_stream({.seed = config_.seed,
                                          .step = step_,
                                          .micro_batch = micro_batch_,
                                          .layer = site.layer,
                                          .site = static_cast<int>(site.kind)}),
                .row_offset = row_offset_};
  if (tp_.active() && !column_parallel(site.kind)) tp_dropout_columns(site, d);  // adapter_set_tp.cpp
  return d;
}

namespace {
// The LoRA adapter a linear hook call is for; InternalError when the model calls a site without one.
LoraAdapter& hooked_lora(AdapterSet& set, const model::LinearSite& site, const char* call) {
  LoraAdapter* ad = set.merged() ? nullptr : set.lora(site.layer, site.kind);
  ADAPT_CHECK(ad != nullptr, "{} called for layer {} kind {} which has no LoRA adapter{}", call, site.layer,
              static_cast<int>(site.kind), set.merged() ? " (the adapters are merged)" : "");
  return *ad;
}
}  // namespace

void AdapterSet::linear_forward(const model::LinearSite& site, const Tensor& x, Tensor& y) {
  const LoraAdapter& ad = hooked_lora(*this, site, "linear_forward");
  forward_gate(site.layer);  // the layer's updated parameters (adapter_set_overlap.cpp)
  ws_->reset();
  ad.forward(x, y, dropout_for(site), *ws_);
}

void AdapterSet::linear_backward(const model::LinearSite& site, const Tensor& x, const Tensor& dy, Tensor& dx) {
  LoraAdapter& ad = hooked_lora(*this, site, "linear_backward");
  ws_->reset();
  ad.backward(x, dy, dx, dropout_for(site), *ws_);
}

void AdapterSet::linear_backward_input(const model::LinearSite& site, const Tensor& x, const Tensor& dy, Tensor& dx) {
  const LoraAdapter& ad = hooked_lora(*this, site, "linear_backward_input");
  ws_->reset();
  ad.backward_input(x, dy, dx, dropout_for(site), *ws_);
}

void AdapterSet::linear_backward_weights(const model::LinearSite& site, const Tensor& x, const Tensor& dy) {
  LoraAdapter& ad = hooked_lora(*this, site, "linear_backward_weights");
  ws_->reset();
  ad.backward_weights(x, dy, dropout_for(site), *ws_);
}

bool AdapterSet::has_block(int layer, BlockSite site) const { return bottleneck(layer, site) != nullptr; }

Tensor AdapterSet::block_input(const Tensor& h, const Tensor& f) {
  switch (config_.bottleneck.placement) {
    case BnPlacement::Houlsby: return f;
    case BnPlacement::Parallel: return h;
    case BnPlacement::Pfeiffer: {
      Tensor z = ws_->take(h.shape(), DType::F32, "bottleneck.h_plus_f");
      ops::add(z, h, f);
      return z;
    }
  }
  return {};
}

void AdapterSet::block_forward(int layer, BlockSite site, const Tensor& h, const Tensor& f, Tensor& out) {
  const BottleneckAdapter* ad = bottleneck(layer, site);
  ADAPT_CHECK(ad != nullptr, "block_forward called for layer {} site {} which has no bottleneck adapter", layer,
              block_index(site));
  const std::int64_t N = matrix_rows("block_forward", h, "h");
  check_matrix("block_forward", h, N, model_.hidden_size, "h");
  check_matrix("block_forward", f, N, model_.hidden_size, "f");
  check_device("block_forward", h, device_, "h");
  check_device("block_forward", f, device_, "f");
  forward_gate(layer);  // the layer's updated parameters (adapter_set_overlap.cpp)
  ws_->reset();
  const Tensor z = block_input(h, f);
  ad->forward(z, out, *ws_);
}

void AdapterSet::block_backward(int layer, BlockSite site, const Tensor& h, const Tensor& f, const Tensor& dout,
                                Tensor& dh, Tensor& df) {
  BottleneckAdapter* ad = bottleneck(layer, site);
  ADAPT_CHECK(ad != nullptr, "block_backward called for layer {} site {} which has no bottleneck adapter", layer,
              block_index(site));
  const std::int64_t N = matrix_rows("block_backward", h, "h");
  const std::int64_t C = model_.hidden_size;
  check_matrix("block_backward", h, N, C, "h");
  check_matrix("block_backward", f, N, C, "f");
  check_matrix("block_backward", dh, N, C, "dh");
  check_matrix("block_backward", df, N, C, "df");
  ADAPT_CHECK(dh.raw() != df.raw(), "block_backward: dh and df must be distinct tensors");
  check_device("block_backward", h, device_, "h");
  check_device("block_backward", f, device_, "f");
  check_device("block_backward", dh, device_, "dh");
  check_device("block_backward", df, device_, "df");
  ws_->reset();
  const Tensor z = block_input(h, f);
  Tensor dz = ws_->take({N, C}, DType::F32, "bottleneck.dz");
  ad->backward(z, dout, dz, *ws_);
  const BnPlacement placement = config_.bottleneck.placement;
  if (placement != BnPlacement::Houlsby) ops::axpy(dh, dz, 1.0f);   // z reads h
  if (placement != BnPlacement::Parallel) ops::axpy(df, dz, 1.0f);  // z reads f
}

// ---- training -------------------------------------------------------------------------------------

void AdapterSet::set_training(bool training) {
  ADAPT_REQUIRE(!(training && merged_), UnsupportedError,
                "cannot train while the LoRA adapters are merged into the base weights; call unmerge() first");
  training_ = training;
}

void AdapterSet::set_step(std::int64_t step, std::int64_t micro_batch, std::int64_t row_offset) {
  step_ = step;
  micro_batch_ = micro_batch;
  row_offset_ = row_offset;
}

void AdapterSet::zero_grad() {
  for (AdapterParam& p : parameters()) ops::fill(p.grad, 0.0f);
  for (AdapterParam& p : host_mirror_) p.grad.zero();
}

// ---- device ---------------------------------------------------------------------------------------

void AdapterSet::to_device(int index) {
  Allocator& alloc = backend::cuda_allocator(index);  // UnsupportedError naming the device when there is none
  if (device_ == alloc.device()) return;
  if (!device_.host_accessible()) to_host();
  for (LoraAdapter& ad : lora_) ad.to_memory(alloc);
  for (BottleneckAdapter& ad : bn_) ad.to_memory(alloc);
  ws_ = std::make_unique<ops::Workspace>(alloc);
  device_ = alloc.device();
  host_mirror_.clear();
  for (const AdapterParam& p : parameters()) {
    AdapterParam m = p;
    m.value = Tensor::empty(p.value.shape(), DType::F32, host_allocator(), p.value.name());
    m.grad = Tensor::empty(p.grad.shape(), DType::F32, host_allocator(), p.grad.name());
    host_mirror_.push_back(std::move(m));
  }
  values_to_host();
  gradients_to_host();
}

void AdapterSet::to_host() {
  if (device_.host_accessible()) return;
  for (LoraAdapter& ad : lora_) ad.to_memory(host_allocator());
  for (BottleneckAdapter& ad : bn_) ad.to_memory(host_allocator());
  ws_ = std::make_unique<ops::Workspace>();
  device_ = Device{};
  host_mirror_.clear();
}

std::vector<AdapterParam> AdapterSet::host_parameters() const {
  return device_.host_accessible() ? parameters() : host_mirror_;
}

void AdapterSet::gradients_to_host() {
  if (device_.host_accessible()) return;
  const std::vector<AdapterParam> params = parameters();
  for (std::size_t i = 0; i < params.size(); ++i) backend::copy(host_mirror_[i].grad, params[i].grad);
}

void AdapterSet::values_from_host() {
  if (device_.host_accessible()) return;
  std::vector<AdapterParam> params = parameters();
  for (std::size_t i = 0; i < params.size(); ++i) backend::copy(params[i].value, host_mirror_[i].value);
}

void AdapterSet::values_to_host() {
  if (device_.host_accessible()) return;
  const std::vector<AdapterParam> params = parameters();
  for (std::size_t i = 0; i < params.size(); ++i) backend::copy(host_mirror_[i].value, params[i].value);
}

std::vector<AdapterParam> AdapterSet::parameters() const {
  std::vector<AdapterParam> params;
  for (const int layer : layers_) {
    for (int t = 0; t < kNumTargets; ++t) {
      const LoraAdapter* ad = lora(layer, kLoraTargetKinds[t]);
      if (!ad) continue;
      const bool col = column_parallel(kLoraTargetKinds[t]);
      params.push_back(
          {.name = ad->a.name(), .value = ad->a, .grad = ad->grad_a, .tp_shard_dim = col ? -1 : 1, .layer = layer});
      params.push_back(
          {.name = ad->b.name(), .value = ad->b, .grad = ad->grad_b, .tp_shard_dim = col ? 0 : -1, .layer = layer});
    }
    for (const BlockSite site : {BlockSite::Attention, BlockSite::Mlp}) {
      const BottleneckAdapter* ad = bottleneck(layer, site);
      if (!ad) continue;
      // Replicated over tp; no weight decay on biases and LayerNorm parameters.
      auto add = [&](const Tensor& value, const Tensor& grad, bool decay) {
        params.push_back({.name = value.name(), .value = value, .grad = grad, .decay = decay, .layer = layer});
      };
      if (ad->ln_before()) {
        add(ad->ln_weight, ad->grad_ln_weight, /*decay=*/false);
        add(ad->ln_bias, ad->grad_ln_bias, /*decay=*/false);
      }
      add(ad->down_weight, ad->grad_down_weight, /*decay=*/true);
      add(ad->down_bias, ad->grad_down_bias, /*decay=*/false);
      add(ad->up_weight, ad->grad_up_weight, /*decay=*/true);
      add(ad->up_bias, ad->grad_up_bias, /*decay=*/false);
    }
  }
  return params;
}

const Tensor* AdapterSet::find_parameter(std::string_view name) const {
  auto find_in = [&](const Tensor& t) { return t.defined() && t.name() == name; };
  for (const LoraAdapter& ad : lora_) {
    if (find_in(ad.a)) return &ad.a;
    if (find_in(ad.b)) return &ad.b;
  }
  for (const BottleneckAdapter& ad : bn_) {
    for (const Tensor* t : {&ad.ln_weight, &ad.ln_bias, &ad.down_weight, &ad.down_bias, &ad.up_weight, &ad.up_bias})
      if (find_in(*t)) return t;
  }
  return nullptr;
}

std::int64_t AdapterSet::n_parameters() const {
  std::int64_t n = 0;
  for (const AdapterParam& p : parameters()) n += p.value.numel();
  return n;
}

std::int64_t AdapterSet::n_lora_parameters() const {
  std::int64_t n = 0;
  for (const LoraAdapter& ad : lora_) n += ad.a.numel() + ad.b.numel();
  return n;
}

std::int64_t AdapterSet::n_bottleneck_parameters() const { return n_parameters() - n_lora_parameters(); }

// ---- merge ----------------------------------------------------------------------------------------

void AdapterSet::merge_all(model::LlamaModel& model, double sign) {
  ADAPT_REQUIRE(kind_has_lora(config_.kind), UnsupportedError,
                "bottleneck adapters cannot be merged into the base weights (they are nonlinear); run them through "
                "the adapter hook instead");
  ADAPT_REQUIRE(static_cast<std::int64_t>(model.weights.layers.size()) == model_.n_layers &&
                    model.config.hidden_size == model_.hidden_size,
                ShapeError,
                "LoRA merge: the model has {} layers and hidden_size {}, the adapters were built for {} and {} (hint: "
                "maybe wrong base model?)",
                model.weights.layers.size(), model.config.hidden_size, model_.n_layers, model_.hidden_size);
  // Check every weight before touching any, so a failure leaves the model as it was.
  for (const int layer : layers_)
    for (int t = 0; t < kNumTargets; ++t) {
      const LoraAdapter* ad = lora(layer, kLoraTargetKinds[t]);
      if (!ad) continue;
      const Tensor& w = *base_weight(model.weights.layers[static_cast<std::size_t>(layer)], kLoraTargetKinds[t]);
      ADAPT_REQUIRE(w.dtype() == DType::F32, UnsupportedError,
                    "LoRA merge needs f32 base weights, but '{}' is {} (the model was loaded with "
                    "WeightStorage::AsStored); load it with WeightStorage::F32 or run the adapters unmerged",
                    w.name(), dtype_name(w.dtype()));
      ADAPT_REQUIRE(w.shape() == Shape({ad->out(), ad->in()}), ShapeError,
                    "LoRA merge: base weight '{}' has shape {} but the adapter '{}' expects ({}, {}) (hint: maybe "
                    "wrong base model?)",
                    w.name(), w.shape().str(), ad->a.name(), ad->out(), ad->in());
    }
  for (const int layer : layers_)
    for (int t = 0; t < kNumTargets; ++t)
      if (const LoraAdapter* ad = lora(layer, kLoraTargetKinds[t]))
        ad->merge_into(*base_weight(model.weights.layers[static_cast<std::size_t>(layer)], kLoraTargetKinds[t]), sign);
}

void AdapterSet::merge(model::LlamaModel& model) {
  ADAPT_REQUIRE(!merged_, UnsupportedError, "the LoRA adapters are already merged into the base weights");
  ADAPT_REQUIRE(!training_, UnsupportedError,
                "cannot merge LoRA adapters in training mode: gradients would stop flowing; call set_training(false)");
  merge_all(model, +1.0);
  merged_ = true;
}

void AdapterSet::unmerge(model::LlamaModel& model) {
  ADAPT_REQUIRE(merged_, UnsupportedError, "unmerge() without a preceding merge()");
  merge_all(model, -1.0);
  merged_ = false;
}

}  // namespace adapt::adapters
