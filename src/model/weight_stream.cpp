#include "model/weight_stream.h"

#include <fmt/format.h>

#include <utility>

#include "backend/backend.h"
#include "core/error.h"
#include "core/strings.h"

namespace adapt::model {

WeightStream::WeightStream(std::vector<LayerWeights> host_layers, int first_layer, int device,
                           std::unique_ptr<backend::OffloadCopier> copier)
    : host_(std::move(host_layers)), first_(first_layer), device_(device), copier_(std::move(copier)) {
  ADAPT_CHECK(!host_.empty() && copier_, "WeightStream: no layers to stream or no copier");
  const std::size_t n_slots = std::min<std::size_t>(host_.size(), 2);
  slots_.resize(n_slots);
  for (std::size_t s = 0; s < n_slots; ++s) {
    const std::array<const Tensor*, 16> from = std::as_const(host_.front()).tensors();
    const std::array<Tensor*, 16> to = slots_[s].weights.tensors();
    for (std::size_t i = 0; i < from.size(); ++i) {
      if (!from[i]->defined()) continue;
      *to[i] = Tensor::empty(from[i]->shape(), from[i]->dtype(), backend::cuda_allocator(device),
                             from[i]->name() + ".staging" + std::to_string(s));
    }
  }
}

WeightStream::~WeightStream() {
  if (copier_) copier_->synchronize();
}

const LayerWeights& WeightStream::host_layer(int layer) const {
  ADAPT_CHECK(streams(layer), "WeightStream: layer {} is not among the streamed layers [{}, {})", layer, first_,
              end_layer());
  return host_[static_cast<std::size_t>(layer - first_)];
}

std::uint64_t WeightStream::host_bytes() const {
  std::uint64_t n = 0;
  for (const LayerWeights& l : host_)
    for (const Tensor* t : l.tensors()) n += t->defined() ? t->size_bytes() : 0;
  return n;
}

std::uint64_t WeightStream::device_bytes() const {
  std::uint64_t n = 0;
  for (const Slot& s : slots_)
    for (const Tensor* t : s.weights.tensors()) n += t->defined() ? t->size_bytes() : 0;
  return n;
}

void WeightStream::load(int layer) {
  Slot& slot = slots_[slot_of(layer)];
  if (slot.layer == layer) return;
  // The slot's previous layer may still be read by the work queued so far: the copies wait for it.
  copier_->order_after(backend::cuda_compute_stream());
  const std::array<const Tensor*, 16> from = host_layer(layer).tensors();
  const std::array<Tensor*, 16> to = slot.weights.tensors();
  for (std::size_t i = 0; i < from.size(); ++i) {
    ADAPT_CHECK(from[i]->defined() == to[i]->defined() && (!to[i]->defined() || from[i]->shape() == to[i]->shape()),
                "WeightStream: layer {}'s tensor '{}' does not match the staging slot's", layer, from[i]->name());
    if (!from[i]->defined()) continue;
    copier_->to_device(to[i]->raw(), from[i]->raw(), from[i]->size_bytes());
    bytes_copied_ += from[i]->size_bytes();
  }
  slot.layer = layer;
}

const LayerWeights* WeightStream::begin_layer(int layer, int next) {
  const bool mine = streams(layer);
  if (mine) {
    load(layer);
    copier_->order_before(backend::cuda_compute_stream());  // the layer's kernels wait for its copy
  }
  // The next layer's copy overlaps this layer's compute (never into the slot this layer uses).
  if (next >= 0 && streams(next) && (!mine || slot_of(next) != slot_of(layer))) load(next);
  return mine ? &slots_[slot_of(layer)].weights : nullptr;
}

std::string streamed_weights_note(const LlamaModel& model) {
  const WeightStream* st = model.streamed.get();
  if (!st) return {};
  return fmt::format("; the weights of layers {}..{} stay in host RAM ({} pinned), copied to the GPU as the passes "
                     "reach them through 2 slots ({}) (runtime.weights_device_layers)",
                     st->first_layer(), st->end_layer() - 1, format_bytes(st->host_bytes()),
                     format_bytes(st->device_bytes()));
}

const LayerWeights& layer_weights(const LlamaModel& model, int l, int next) {
  if (model.streamed) {
    if (const LayerWeights* staged = model.streamed->begin_layer(l, next)) return *staged;
  }
  return model.weights.layers[static_cast<std::size_t>(l)];
}

}  // namespace adapt::model
