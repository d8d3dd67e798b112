// Base weights in host RAM, staged to the GPU layer by layer (runtime.weights_device_layers): a model on a
// CUDA device may keep the weights of its later decoder layers in pinned host memory instead of on the
// device, each layer's in one buffer. Before a pass computes such a layer, that buffer is copied, in one
// copy, into one of two staging slots on the device (layer i of the streamed ones into slot i mod 2) on a
// copy stream, and the layer the pass reaches next is copied while the current one computes, so the
// copies overlap compute as far as the host link keeps up. The compute stream waits for a layer's copy
// (the host does not), and a slot is overwritten only after the work queued on it. The weights are
// frozen: nothing goes back. As the KV cache's spilled layers (kv_cache.h); both use
// backend::OffloadCopier.
//
// What it buys: the device holds (device layers + 2) layers of weights instead of all of them, so a model
// whose weights exceed the GPU still trains and generates there (Llama 3.1 8B on a 10 GB card). What it
// costs: every streamed layer crosses the host link once per pass (a forward; a training step's
// forward and backward), which is hidden behind compute while a layer computes longer than its weights
// take to copy (a training step of a few thousand tokens; a decode step of many rows, not of one).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend/offload_copier.h"
#include "model/llama_weights.h"

namespace adapt::model {

class WeightStream {
 public:
  /// Streams layers [first_layer, first_layer + layers.size()): `layers` hold their weights in host memory,
  /// in the types the device computes with (the same shapes and types in every layer). Each layer is
  /// copied into one buffer of `copier`'s host allocator (pinned for CUDA), so that staging it is one
  /// copy; the staging slots (min(2, count)) are buffers of the same layout on cuda:`device`.
  WeightStream(std::vector<LayerWeights> layers, int first_layer, int device,
               std::unique_ptr<backend::OffloadCopier> copier);
  ~WeightStream();  // waits for the copies still queued
  WeightStream(const WeightStream&) = delete;
  WeightStream& operator=(const WeightStream&) = delete;

  int device() const { return device_; }  // the CUDA device the slots are on
  int first_layer() const { return first_; }
  int end_layer() const { return first_ + static_cast<int>(host_.size()); }
  bool streams(int layer) const { return layer >= first_ && layer < end_layer(); }
  /// Layer `layer`'s device copy, staged now when its slot holds another layer; null when `layer` is
  /// not streamed. `next` (−1: none), the layer the pass reaches after this one, is copied meanwhile
  /// when it is streamed and its slot is not the one `layer` uses.
  const LayerWeights* begin_layer(int layer, int next);
  /// A streamed layer's weights in host RAM (pinned): views of its buffer.
  const LayerWeights& host_layer(int layer) const;
  std::uint64_t host_bytes() const;                             // the streamed layers' buffers
  std::uint64_t device_bytes() const;                           // the staging slots'
  std::uint64_t bytes_copied() const { return bytes_copied_; }  // host → device so far

 private:
  struct Slot {
    Tensor buffer;         // on the device, laid out as a host layer's buffer
    LayerWeights weights;  // views of it
    int layer = -1;        // whose weights it holds (-1: none yet)
  };
  std::size_t slot_of(int layer) const { return static_cast<std::size_t>(layer - first_) % slots_.size(); }
  void load(int layer);

  std::vector<LayerWeights> host_;    // views of host_buffers_
  std::vector<Tensor> host_buffers_;  // one pinned buffer per layer
  std::size_t layer_bytes_ = 0;       // a layer's buffer
  int first_ = 0;
  int device_ = 0;
  std::vector<Slot> slots_;
  std::uint64_t bytes_copied_ = 0;
  std::unique_ptr<backend::OffloadCopier> copier_;
};

/// For the apps' log: "; the weights of layers A..B stay in host RAM (X pinned), copied to the GPU
/// through 2 slots (Y)", or "" when every layer's weights are on the device.
std::string streamed_weights_note(const LlamaModel& model);

/// Layer `l`'s weights where the passes compute with them: the model's own, or for a layer whose weights
/// stay in host RAM (LlamaModel::streamed) its device copy, staged by this call (WeightStream::begin_layer;
/// `next`: the layer the pass reaches after `l`, −1 for none). The reference is valid until the call for
/// another layer.
const LayerWeights& layer_weights(const LlamaModel& model, int l, int next = -1);

}  // namespace adapt::model
