#include "model/llama_device.h"

#include <fmt/format.h>

#include <utility>

#include "backend/backend.h"
#include "backend/caching_allocator.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "core/timer.h"
#include "model/attention_compute.h"
#include "model/weight_stream.h"

namespace adapt::model {

namespace {

// A weight on the host in the type the device holds it in: matrices in `matrix_dtype`, vectors (norms,
// biases) in f32; `w` itself when it already is.
Tensor host_in_device_type(const Tensor& w, DType matrix_dtype) {
  const DType dtype = w.rank() == 2 ? matrix_dtype : DType::F32;
  return w.dtype() == dtype && w.is_contiguous() && w.device().host_accessible() ? w : w.to_host(dtype);
}

// The device copy of one weight, in host_in_device_type's type.
Tensor weight_to(const Tensor& w, Device device, DType matrix_dtype) {
  if (!w.defined()) return Tensor{};
  const Tensor host = host_in_device_type(w, matrix_dtype);
  Tensor d = Tensor::empty(host.shape(), host.dtype(), backend::cuda_allocator(device.index), w.name());
  backend::copy(d, host);
  return d;
}

}  // namespace

LlamaModel llama_model_to_device(LlamaModel host, int device, DType weight_dtype, std::int64_t device_layers) {
  ADAPT_REQUIRE(weight_dtype == DType::F32 || weight_dtype == DType::BF16, ShapeError,
                "llama_model_to_device: weight dtype {} is not supported on the device; choose f32 or bf16",
                dtype_name(weight_dtype));
  // The device attention's limit (kernels/attention_plan.h), checked here so that such a model fails at
  // load time rather than at its first attention call.
  const std::int64_t D = host.config.head_dim;
  ADAPT_REQUIRE(D > 0 && D <= 256 && D % 8 == 0, UnsupportedError,
                "llama_model_to_device: the model's head_dim {} is not supported on the GPU (its attention takes a "
                "multiple of 8 up to 256; Llama models use 64 or 128); run this model on the CPU "
                "(runtime.device = \"cpu\")",
                D);
  ADAPT_REQUIRE(device_layers >= -1, ConfigError,
                "llama_model_to_device: weights_device_layers = {} must be -1 (every layer on the GPU) or a number "
                "of layers >= 0",
                device_layers);
  const int n_devices = backend::cuda_device_count();
  ADAPT_REQUIRE(device >= 0 && device < n_devices, UnsupportedError,
                "llama_model_to_device: cuda:{} requested but {} CUDA device(s) are visible{}", device, n_devices,
                n_devices == 0 ? " (" + backend::cuda_unavailable_reason() + ")" : std::string());
  const Device dev{DeviceKind::Cuda, device};
  try {
    LlamaModel m;
    m.config = host.config;
    m.inv_freq = host.inv_freq;
    m.dir = host.dir;
    m.tp = host.tp;
    m.stage = host.stage;
    LlamaWeights& w = host.weights;
    m.weights.embedding = weight_to(w.embedding, dev, weight_dtype);
    m.weights.final_norm = weight_to(w.final_norm, dev, weight_dtype);
    const bool tied = w.lm_head.defined() && w.embedding.defined() && w.lm_head.raw() == w.embedding.raw();
    m.weights.lm_head = tied ? m.weights.embedding : weight_to(w.lm_head, dev, weight_dtype);
    // The held layers past the first device_layers stay in pinned host RAM, in their device types.
    const parallel::Range held = stage_layer_range(m.config, m.stage);
    const std::int64_t on_device = device_layers < 0 ? held.count : std::min(device_layers, held.count);
    const int first_streamed = static_cast<int>(held.begin + on_device);
    std::unique_ptr<backend::OffloadCopier> copier;
    std::vector<LayerWeights> streamed;
    if (on_device < held.count) copier = backend::offload_copier_cuda(device);
    for (std::size_t i = 0; i < w.layers.size(); ++i) {
      LayerWeights& l = w.layers[i];
      const bool stream = static_cast<int>(i) >= first_streamed && static_cast<std::int64_t>(i) < held.end();
      LayerWeights d;
      const std::array<const Tensor*, 16> from = std::as_const(l).tensors();
      const std::array<Tensor*, 16> to = d.tensors();
      for (std::size_t t = 0; t < from.size(); ++t) {
        if (!stream) {
          *to[t] = weight_to(*from[t], dev, weight_dtype);
        } else if (from[t]->defined()) {  // WeightStream packs it into pinned memory
          *to[t] = host_in_device_type(*from[t], weight_dtype);
        }
      }
      l = LayerWeights{};  // the host copy goes now unless the caller kept the model (WeightStream packs `d`)
      if (stream) streamed.push_back(d);
      m.weights.layers.push_back(stream ? LayerWeights{} : std::move(d));
    }
    if (!streamed.empty()) {
      m.streamed = std::make_shared<WeightStream>(std::move(streamed), first_streamed, device, std::move(copier));
      for (int l = first_streamed; l < m.streamed->end_layer(); ++l)  // the pinned copies
        m.weights.layers[static_cast<std::size_t>(l)] = m.streamed->host_layer(l);
    }
    return m;
  } catch (const backend::OutOfMemoryError& e) {
    ADAPT_THROW(backend::OutOfMemoryError,
                "{}\nThis happened while copying the base weights to cuda:{}: runtime.weights_device_layers = N "
                "keeps only N layers' weights on the GPU and streams the others from host RAM (adapt_plan "
                "--weights-device-layers finds the largest N that fits)",
                e.what(), device);
  }
}

std::string gpu_only_settings(std::int64_t weights_device_layers) {
  if (weights_device_layers < 0) return "";
  return fmt::format("runtime.weights_device_layers = {}", weights_device_layers);
}

LlamaModel llama_model_place(LlamaModel model, const ModelPlacement& p, int world_rank, int world_size) {
  if (p.device) {
    Timer copy;
    // Frees the host copy layer by layer.
    model = llama_model_to_device(std::move(model), *p.device, p.weights_dtype, p.weights_device_layers);
    model.attention_dtype = resolve_attention_dtype(model, p.attention_dtype);
    const std::string what =
        fmt::format("{} weights on cuda:{} ({}): {} in {:.2f} s{}; {}", dtype_name(p.weights_dtype), *p.device,
                    backend::cuda_device_name(*p.device), format_bytes(backend::cuda_memory_stats(*p.device).allocated),
                    copy.seconds(), streamed_weights_note(model), attention_note(model, p.kv_dtype));
    if (world_size > 1) log::info_all("{}", what);
    else log::info0("{}", what);
    if (p.cpu_matmul_dtype != DType::F32 && world_rank == 0)
      log::warn(
          "runtime.cpu_matmul_dtype = \"bf16\": used only with runtime.device = \"cpu\"; ignored on the GPU, "
          "where runtime.weights_dtype = \"bf16\" runs bf16 GEMMs");
  } else {
    model.attention_dtype = resolve_attention_dtype(model, p.attention_dtype);
    log::info0("{}", attention_note(model, p.kv_dtype));
    if (const std::string unused = gpu_only_settings(p.weights_device_layers); !unused.empty() && world_rank == 0)
      log::warn("{}: used only with a model on a GPU; ignored with runtime.device = \"cpu\"", unused);
  }
  return model;
}

Device model_device(const LlamaModel& model) {
  if (model.streamed) return Device{DeviceKind::Cuda, model.streamed->device()};  // its layers in host RAM aside
  const LlamaWeights& w = model.weights;
  if (w.final_norm.defined()) return w.final_norm.device();
  for (const LayerWeights& l : w.layers)  // a pipeline stage holds only its own layers
    if (l.attn_norm.defined()) return l.attn_norm.device();
  if (w.embedding.defined()) return w.embedding.device();
  return Device{};
}

Allocator& model_allocator(const LlamaModel& model) {
  const Device d = model_device(model);
  return d.host_accessible() ? host_allocator() : backend::cuda_allocator(d.index);
}

Tensor tensor_to(const Tensor& t, Device device) {
  if (t.device() == device && t.is_contiguous()) return t;
  if (device.host_accessible()) {
    if (t.device().host_accessible()) return t.to_host(t.dtype());
    Tensor h = Tensor::empty(t.shape(), t.dtype(), host_allocator(), t.name());
    backend::copy(h, t);
    return h;
  }
  const Tensor src = t.is_contiguous() ? t : t.to_host(t.dtype());
  Tensor d = Tensor::empty(t.shape(), t.dtype(), backend::cuda_allocator(device.index), t.name());
  backend::copy(d, src);
  return d;
}

void copy_between(Tensor& dst, const Tensor& src) {
  if (dst.device().host_accessible() && src.device().host_accessible()) {
    dst.copy_from(src);
    return;
  }
  backend::copy(dst, src);
}

}  // namespace adapt::model
