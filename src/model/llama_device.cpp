#include "model/llama_device.h"

#include "backend/backend.h"
#include "core/error.h"

namespace adapt::model {

namespace {

// The device copy of one weight: matrices in `matrix_dtype`, vectors (norms, biases) in f32.
Tensor weight_to(const Tensor& w, Device device, DType matrix_dtype) {
  if (!w.defined()) return Tensor{};
  const DType dtype = w.rank() == 2 ? matrix_dtype : DType::F32;
  const Tensor host = w.dtype() == dtype && w.is_contiguous() && w.device().host_accessible() ? w : w.to_host(dtype);
  Tensor d = Tensor::empty(host.shape(), dtype, backend::cuda_allocator(device.index), w.name());
  backend::copy(d, host);
  return d;
}

}  // namespace

LlamaModel llama_model_to_device(const LlamaModel& host, int device, DType weight_dtype) {
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
  const int n_devices = backend::cuda_device_count();
  ADAPT_REQUIRE(device >= 0 && device < n_devices, UnsupportedError,
                "llama_model_to_device: cuda:{} requested but {} CUDA device(s) are visible{}", device, n_devices,
                n_devices == 0 ? " (" + backend::cuda_unavailable_reason() + ")" : std::string());
  const Device dev{DeviceKind::Cuda, device};
  LlamaModel m;
  m.config = host.config;
  m.inv_freq = host.inv_freq;
  m.dir = host.dir;
  m.tp = host.tp;
  m.stage = host.stage;
  const LlamaWeights& w = host.weights;
  m.weights.embedding = weight_to(w.embedding, dev, weight_dtype);
  m.weights.final_norm = weight_to(w.final_norm, dev, weight_dtype);
  const bool tied = w.lm_head.defined() && w.embedding.defined() && w.lm_head.raw() == w.embedding.raw();
  m.weights.lm_head = tied ? m.weights.embedding : weight_to(w.lm_head, dev, weight_dtype);
  for (const LayerWeights& l : w.layers) {
    LayerWeights d;
    for (auto [dst, src] : {std::pair{&d.attn_norm, &l.attn_norm}, {&d.wq, &l.wq}, {&d.wk, &l.wk}, {&d.wv, &l.wv},
                            {&d.wo, &l.wo}, {&d.ffn_norm, &l.ffn_norm}, {&d.w_gate, &l.w_gate}, {&d.w_up, &l.w_up},
                            {&d.w_down, &l.w_down}, {&d.bq, &l.bq}, {&d.bk, &l.bk}, {&d.bv, &l.bv}, {&d.bo, &l.bo},
                            {&d.b_gate, &l.b_gate}, {&d.b_up, &l.b_up}, {&d.b_down, &l.b_down}}) {
      *dst = weight_to(*src, dev, weight_dtype);
    }
    m.weights.layers.push_back(std::move(d));
  }
  return m;
}

Device model_device(const LlamaModel& model) {
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
