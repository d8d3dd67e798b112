// The [runtime] keys that adapt_train and adapt_gen share (device, weights_dtype, weights_device_layers,
// attention_dtype, cpu_matmul_dtype), declared once for both schemas. Each job's runtime struct has
// members of these names; `notes` adds what differs between the jobs (what a streamed layer costs, what
// attention reads).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "config/config_schema.h"
#include "dtype/dtype.h"
#include "generate/gen_config.h"  // gen_device_parse: both jobs take the same device forms
#include "model/attention_options.h"

namespace adapt::config {

/// The job-specific ends of the shared keys' descriptions.
struct DeviceRuntimeNotes {
  std::string weights;              // weights_dtype: which matrices the setting covers
  std::string streamed_layer_cost;  // weights_device_layers: how often a host layer crosses the link
  std::string attention_extra;      // attention_dtype: appended (may be empty)
};

/// Adds device, weights_dtype, weights_device_layers, attention_dtype and cpu_matmul_dtype to `rt`, a
/// schema of a struct with members of those names.
template <class Runtime>
void add_device_runtime_keys(Schema<Runtime>& rt, const DeviceRuntimeNotes& notes) {
  rt.field("device", &Runtime::device,
           "Where the model runs: \"cpu\"; \"cuda\", the GPU of the rank's local rank (local rank i takes "
           "visible device i; a rank that sees one GPU, e.g. srun --gpus-per-task=1, takes it); or \"cuda:N\", "
           "visible device N for every rank. Any parallel layout: each rank copies its tp shard / pp stage to "
           "its GPU (tp and pp groups use NCCL when every rank has its own GPU, else MPI through host memory); "
           "weights are read on the host, then copied once.")
      .check([](const std::string& s) { return generate::gen_device_parse(s).has_value(); },
             "must be \"cpu\", \"cuda\" or \"cuda:N\" (N = 0, 1, ...)");
  rt.enumeration("weights_dtype", &Runtime::weights_dtype, {{"bf16", DType::BF16}, {"f32", DType::F32}},
                 "Dtype of " + notes.weights +
                     " on a GPU. bf16 runs bf16 GEMMs (half the memory), f32 computes as the CPU does. Unused "
                     "with device = \"cpu\".");
  rt.field("weights_device_layers", &Runtime::weights_device_layers,
           "Of the decoder layers a rank holds (its pipeline stage's), how many keep their weights on the GPU; "
           "the weights of the others stay in pinned host RAM and are copied to the GPU layer by layer as a pass "
           "reaches them (the next layer while the current one computes; the same numbers as with every layer on "
           "the GPU). For a model whose weights do not fit beside the activations, e.g. Llama 3.1 8B on a 10 GB "
           "card (adapt_plan --weights-device-layers shows what fits and the cost): each such layer crosses the "
           "host link " +
               notes.streamed_layer_cost + ". -1 = every layer on the GPU. Unused with device = \"cpu\".")
      .at_least(std::int64_t{-1});
  std::vector<std::pair<std::string, model::AttentionDtype>> attention_names;
  for (const auto& [name, value] : model::kAttentionDtypeNames) attention_names.emplace_back(name, value);
  rt.enumeration("attention_dtype", &Runtime::attention_dtype, std::move(attention_names),
                 "What attention computes in: \"auto\" (on a GPU, bf16 on the tensor cores when weights_dtype = "
                 "\"bf16\" and head_dim is 64 or 128, as in Llama models; on the CPU, bf16 when cpu_matmul_dtype = "
                 "\"bf16\"; f32 otherwise), \"bf16\" (q, k, v and the probabilities rounded to bf16, on a GPU the "
                 "output too; the softmax and the sums in f32; on the CPU the bf16 dot-product instructions where it "
                 "has them, about 1.5x the f32 tiles on Zen 4), or \"f32\" (the reference; on a GPU one warp per "
                 "query row on CUDA cores). The activations stay f32 either way." +
                     (notes.attention_extra.empty() ? "" : " " + notes.attention_extra));
  rt.enumeration("cpu_matmul_dtype", &Runtime::cpu_matmul_dtype, {{"f32", DType::F32}, {"bf16", DType::BF16}},
                 "How the products by the base weights compute on the CPU: \"f32\" (the reference: bf16 weights "
                 "widened exactly, f32 arithmetic) or \"bf16\" (the weights kept in bf16, rounded at load from an f32 "
                 "checkpoint, half the memory; the activations and gradients they multiply rounded to bf16; f32 "
                 "sums: the arithmetic of the GPU's bf16 GEMMs). bf16 runs the CPU's bf16 dot-product instructions "
                 "(AVX512_BF16: AMD Zen 4, Intel Sapphire Rapids and later): twice the f32 product speed on Zen 4, "
                 "no gain on Xeons with two FMA units; a CPU without them computes the same products in f32, slower "
                 "than \"f32\". Adapters and norms stay f32 either way; attention follows it unless attention_dtype "
                 "says otherwise. Unused with a GPU device.");
}

}  // namespace adapt::config
