// AdapterSet's side of overlapping the optimizer with the GPU (optim.overlap): gradients handed over
// layer by layer as the step's last backward completes each layer (after that layer's tp reduction),
// and a per-layer gate that the next forward passes before it first reads a layer's parameters. The set
// knows nothing of the optimizer: the trainer installs the receiver and the gate.
#include <algorithm>

#include "adapters/adapter_set.h"

namespace adapt::adapters {

using model::BlockSite;
using model::WeightKind;

std::pair<std::size_t, std::size_t> AdapterSet::layer_params(int layer) const {
  // parameters() order: per layer, the LoRA sites (A, B each), then the bottleneck modules' tensors.
  std::size_t at = 0;
  for (const int l : layers_) {
    if (l > layer) break;
    std::size_t n = 0;
    for (const WeightKind kind : kLoraTargetKinds) n += lora(l, kind) != nullptr ? 2 : 0;
    for (const BlockSite site : {BlockSite::Attention, BlockSite::Mlp})
      if (const BottleneckAdapter* ad = bottleneck(l, site)) n += ad->ln_before() ? 6 : 4;
    if (l == layer) return {at, at + n};
    at += n;
  }
  return {at, at};
}

void AdapterSet::set_gradient_stream(LayerParamsFn on_layer) { on_layer_grads_ = std::move(on_layer); }

void AdapterSet::arm_gradient_stream() {
  streamed_.resize(static_cast<std::size_t>(model_.n_layers), 0);
  stream_armed_ = true;
}

void AdapterSet::layer_backward_done(int layer) {
  if (!stream_armed_ || layer < 0 || layer >= model_.n_layers) return;
  const auto [first, end] = layer_params(layer);
  if (first == end || streamed_[static_cast<std::size_t>(layer)]) return;
  streamed_[static_cast<std::size_t>(layer)] = 1;
  tp_reduce_layer_gradients(layer);
  if (on_layer_grads_) on_layer_grads_(layer, first, end);
}

void AdapterSet::end_gradient_stream() {
  stream_armed_ = false;
  streamed_.resize(static_cast<std::size_t>(model_.n_layers), 0);
  for (auto it = layers_.rbegin(); it != layers_.rend(); ++it) {
    const int layer = *it;
    if (streamed_[static_cast<std::size_t>(layer)]) continue;
    const auto [first, end] = layer_params(layer);
    if (first == end) continue;
    tp_reduce_layer_gradients(layer);
    if (on_layer_grads_) on_layer_grads_(layer, first, end);
  }
  std::fill(streamed_.begin(), streamed_.end(), 0);
}

void AdapterSet::set_forward_gate(LayerParamsFn gate) {
  forward_gate_ = std::move(gate);
  if (!forward_gate_) gate_armed_ = false;
}

void AdapterSet::arm_forward_gate() {
  if (!forward_gate_) return;
  gated_.assign(static_cast<std::size_t>(model_.n_layers), 1);
  gate_armed_ = true;
}

void AdapterSet::disarm_forward_gate() {
  gate_armed_ = false;
  gated_.clear();
}

void AdapterSet::forward_gate_slow(int layer) {
  if (layer < 0 || layer >= static_cast<int>(gated_.size()) || !gated_[static_cast<std::size_t>(layer)]) return;
  gated_[static_cast<std::size_t>(layer)] = 0;
  const auto [first, end] = layer_params(layer);
  if (first != end) forward_gate_(layer, first, end);
}

}  // namespace adapt::adapters
