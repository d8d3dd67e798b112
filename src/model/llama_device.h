// Placing a Llama model on one CUDA device: the weights are copied once (matrices in f32 or bf16,
// norms and biases in f32), and the passes (llama_forward, llama_train_step, the generator) then run
// every op on the device with activations in f32, taking their workspaces from the device's caching
// allocator. Per-call inputs (token ids, targets, positions, segment ids) stay host tensors; the passes
// copy them to the device. A tensor-parallel shard or a pipeline stage is placed like a whole model
// (each rank moves what it holds, on its own GPU or on a GPU it shares with other ranks); the passes'
// collectives then take device buffers (comm/comm_kind.h picks NCCL or MPI with host staging).
#pragma once

#include <optional>
#include <string>

#include "model/attention_options.h"
#include "model/llama_weights.h"
#include "tensor/tensor.h"

namespace adapt::model {

/// A copy of `host` (a whole model, or what one tp rank / pipeline stage holds of it: the weights it
/// has, its TensorParallel and PipelineStage) on cuda:`device`. Embedding, projections and lm_head in
/// `weight_dtype` (F32 or BF16; bf16 weights make linear() cast its input to bf16 and run bf16 × bf16 →
/// f32 GEMMs); norms, biases and the RoPE frequencies stay f32. A tied lm_head shares the embedding's
/// device copy. The tp communicator (and the pp one passed to the passes) must then accept device
/// buffers: an NcclCommunicator on that device, or an MpiCommunicator (staged). UnsupportedError when
/// the build has no CUDA or the device does not exist (with the reason); ShapeError when weight_dtype
/// is neither F32 nor BF16.
/// device_layers (runtime.weights_device_layers; −1: all): of the decoder layers `host` holds, only the
/// first device_layers go to the device; the weights of the rest stay in pinned host RAM (in the same
/// types) and are staged to the device layer by layer as the passes reach them (weight_stream.h,
/// LlamaModel::streamed). The passes compute the same numbers either way.
/// `host` is taken by value and released layer by layer as it is copied: pass std::move(model) to let
/// each layer's host tensors go once they are on the device or packed into pinned memory (host RAM then
/// never holds the streamed layers twice); a copy of a model shares its tensors and keeps them.
LlamaModel llama_model_to_device(LlamaModel host, int device, DType weight_dtype, std::int64_t device_layers = -1);

/// The [runtime] settings that only a model on a GPU uses, when set to anything but their defaults, as
/// "runtime.key = value" (today runtime.weights_device_layers); "" otherwise. For the warning of a job
/// that runs on the CPU with them set.
std::string gpu_only_settings(std::int64_t weights_device_layers);

/// The [runtime] settings of adapt_train and adapt_gen that place a loaded model.
struct ModelPlacement {
  std::optional<int> device;                // cuda:N, or the host
  DType weights_dtype = DType::BF16;        // runtime.weights_dtype (on a GPU)
  std::int64_t weights_device_layers = -1;  // runtime.weights_device_layers (on a GPU)
  AttentionDtype attention_dtype = AttentionDtype::Auto;
  DType cpu_matmul_dtype = DType::F32;  // runtime.cpu_matmul_dtype (on the host)
  std::optional<DType> kv_dtype;        // generation: the KV cache's, for the attention line
};

/// `model` placed as `p` says, with its attention type resolved: on a GPU, llama_model_to_device and
/// a line saying where its weights went (from every rank when world_size > 1); on the host, a line on
/// attention. Rank 0 warns of the settings that the placement ignores (cpu_matmul_dtype on a GPU,
/// weights_device_layers on the host).
LlamaModel llama_model_place(LlamaModel model, const ModelPlacement& p, int world_rank, int world_size);

/// Where the model's weights live: Device{Cpu} for a host model, cuda:N after llama_model_to_device.
Device model_device(const LlamaModel& model);

/// The allocator for activations of `model`: host_allocator() for a host model, the device's caching
/// allocator otherwise (an ops::Workspace constructed from it keeps activations next to the weights).
Allocator& model_allocator(const LlamaModel& model);

/// `t` on `device` (a contiguous copy; `t` itself when it is already there). Host → device copies are
/// synchronous.
Tensor tensor_to(const Tensor& t, Device device);

/// dst = src across any two devices (same shape and dtype, contiguous): Tensor::copy_from on the host,
/// backend::copy (synchronous) when either side is on a CUDA device.
void copy_between(Tensor& dst, const Tensor& src);

}  // namespace adapt::model
