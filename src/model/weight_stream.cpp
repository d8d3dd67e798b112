#include "model/weight_stream.h"

#include <fmt/format.h>

#include <memory>
#include <string>
#include <utility>

#include "backend/backend.h"
#include "core/error.h"
#include "core/strings.h"

namespace adapt::model {

namespace {

constexpr std::size_t kAlign = 256;  // each tensor of a packed layer starts at a multiple (cuBLASLt wants 16)

// Where each defined tensor of `layer` starts in one buffer holding them all, and the buffer's size.
std::pair<std::array<std::size_t, 16>, std::size_t> packed_offsets(const LayerWeights& layer) {
  std::array<std::size_t, 16> at{};
  std::size_t n = 0;
  const std::array<const Tensor*, 16> ts = layer.tensors();
  for (std::size_t i = 0; i < ts.size(); ++i) {
    if (!ts[i]->defined()) continue;
    at[i] = n;
    n += (ts[i]->size_bytes() + kAlign - 1) / kAlign * kAlign;
  }
  return {at, n};
}

// One buffer of `bytes` from `alloc` and views of it shaped as `like`'s tensors, at `at`.
LayerWeights packed_views(const LayerWeights& like, const std::array<std::size_t, 16>& at, std::size_t bytes,
                          Allocator& alloc, const std::string& suffix, Tensor& buffer) {
  buffer = Tensor::empty({static_cast<std::int64_t>(bytes)}, DType::U8, alloc, "layer_weights" + suffix);
  const auto owner = std::make_shared<Tensor>(buffer);
  LayerWeights out;
  const std::array<const Tensor*, 16> from = like.tensors();
  const std::array<Tensor*, 16> to = out.tensors();
  for (std::size_t i = 0; i < from.size(); ++i) {
    if (!from[i]->defined()) continue;
    *to[i] = Tensor::wrap(static_cast<char*>(buffer.raw()) + at[i], from[i]->shape(), from[i]->dtype(), buffer.device(),
                          owner, from[i]->name() + suffix);
  }
  return out;
}

}  // namespace

WeightStream::WeightStream(std::vector<LayerWeights> layers, int first_layer, int device,
                           std::unique_ptr<backend::OffloadCopier> copier)
    : first_(first_layer), device_(device), copier_(std::move(copier)) {
  ADAPT_CHECK(!layers.empty() && copier_, "WeightStream: no layers to stream or no copier");
  const std::array<const Tensor*, 16> first = std::as_const(layers.front()).tensors();
  for (std::size_t l = 1; l < layers.size(); ++l) {
    const std::array<const Tensor*, 16> ts = std::as_const(layers[l]).tensors();
    for (std::size_t i = 0; i < ts.size(); ++i)
      ADAPT_CHECK(
          ts[i]->defined() == first[i]->defined() &&
              (!ts[i]->defined() || (ts[i]->shape() == first[i]->shape() && ts[i]->dtype() == first[i]->dtype())),
          "WeightStream: layer {}'s tensor '{}' differs from layer {}'s in shape or type", first_ + l, ts[i]->name(),
          first_);
  }
  const auto [at, bytes] = packed_offsets(layers.front());
  layer_bytes_ = bytes;
  // Each layer in one pinned buffer, so that staging it is one copy.
  for (LayerWeights& layer : layers) {
    Tensor buffer;
    host_.push_back(packed_views(layer, at, layer_bytes_, copier_->host_allocator(), ".host", buffer));
    const std::array<const Tensor*, 16> from = std::as_const(layer).tensors();
    const std::array<Tensor*, 16> to = host_.back().tensors();
    for (std::size_t i = 0; i < from.size(); ++i)
      if (from[i]->defined()) to[i]->copy_from(*from[i]);
    host_buffers_.push_back(buffer);
    layer = LayerWeights{};  // the caller's copy can go now
  }
  const std::size_t n_slots = std::min<std::size_t>(host_.size(), 2);
  slots_.resize(n_slots);
  for (std::size_t s = 0; s < n_slots; ++s)
    slots_[s].weights = packed_views(host_.front(), at, layer_bytes_, backend::cuda_allocator(device),
                                     ".staging" + std::to_string(s), slots_[s].buffer);
}

WeightStream::~WeightStream() {
  if (copier_) copier_->synchronize();
}

const LayerWeights& WeightStream::host_layer(int layer) const {
  ADAPT_CHECK(streams(layer), "WeightStream: layer {} is not among the streamed layers [{}, {})", layer, first_,
              end_layer());
  return host_[static_cast<std::size_t>(layer - first_)];
}

std::uint64_t WeightStream::host_bytes() const { return static_cast<std::uint64_t>(layer_bytes_) * host_.size(); }

std::uint64_t WeightStream::device_bytes() const { return static_cast<std::uint64_t>(layer_bytes_) * slots_.size(); }

void WeightStream::load(int layer) {
  Slot& slot = slots_[slot_of(layer)];
  if (slot.layer == layer) return;
  // The slot's previous layer may still be read by the work queued so far: the copy waits for it.
  copier_->order_after(backend::cuda_compute_stream());
  copier_->to_device(slot.buffer.raw(), host_buffers_[static_cast<std::size_t>(layer - first_)].raw(), layer_bytes_);
  bytes_copied_ += layer_bytes_;
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
  return fmt::format(
      "; the weights of layers {}..{} stay in host RAM ({} pinned), copied to the GPU as the passes "
      "reach them through 2 slots ({}) (runtime.weights_device_layers)",
      st->first_layer(), st->end_layer() - 1, format_bytes(st->host_bytes()), format_bytes(st->device_bytes()));
}

const LayerWeights& layer_weights(const LlamaModel& model, int l, int next) {
  if (model.streamed) {
    if (const LayerWeights* staged = model.streamed->begin_layer(l, next)) return *staged;
  }
  return model.weights.layers[static_cast<std::size_t>(l)];
}

}  // namespace adapt::model
