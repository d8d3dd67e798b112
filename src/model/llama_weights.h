// The base weights of a Llama model in host memory, one struct per layer. The CPU backend computes in
// f32: by default every weight is widened to f32 once, at load; WeightStorage::AsStored keeps bf16
// matrices as bf16 (half the memory and the decode bandwidth) and widens them inside each product,
// with the same numbers (docs/NUMERICS.md measures both). Loaded from a HF model folder through
// io::ShardedSafetensors, checked against the weight-name table (weight_names.h).
#pragma once

#include <array>
#include <filesystem>
#include <memory>
#include <vector>

#include "dtype/dtype.h"
#include "model/llama_config.h"
#include "model/tensor_parallel.h"
#include "tensor/tensor.h"

namespace adapt::model {

class WeightStream;  // weight_stream.h

/// One decoder layer. Projections keep HF's nn.Linear layout (out, in); y = x · Wᵀ. Matrices are f32,
/// or bf16 with WeightStorage::AsStored or Bf16; norms and biases are always f32.
struct LayerWeights {
  Tensor attn_norm;  // (C)          input_layernorm
  Tensor wq;         // (H*D, C)     q_proj; head h = rows [h*D, (h+1)*D)
  Tensor wk;         // (Hkv*D, C)   k_proj
  Tensor wv;         // (Hkv*D, C)   v_proj
  Tensor wo;         // (C, H*D)     o_proj
  Tensor ffn_norm;   // (C)          post_attention_layernorm
  Tensor w_gate;     // (F, C)       gate_proj
  Tensor w_up;       // (F, C)       up_proj
  Tensor w_down;     // (C, F)       down_proj
  // Biases: defined only when config.attention_bias / config.mlp_bias (no released Llama has them).
  Tensor bq;      // (H*D)
  Tensor bk;      // (Hkv*D)
  Tensor bv;      // (Hkv*D)
  Tensor bo;      // (C)
  Tensor b_gate;  // (F)
  Tensor b_up;    // (F)
  Tensor b_down;  // (C)

  /// Every tensor of the layer, in the order above (undefined ones included).
  std::array<Tensor*, 16> tensors() {
    return {&attn_norm, &wq, &wk, &wv, &wo, &ffn_norm, &w_gate, &w_up,
            &w_down,    &bq, &bk, &bv, &bo, &b_gate,   &b_up,   &b_down};
  }
  std::array<const Tensor*, 16> tensors() const {
    return {&attn_norm, &wq, &wk, &wv, &wo, &ffn_norm, &w_gate, &w_up,
            &w_down,    &bq, &bk, &bv, &bo, &b_gate,   &b_up,   &b_down};
  }
};

struct LlamaWeights {
  Tensor embedding;                  // (V, C)  embed_tokens
  std::vector<LayerWeights> layers;  // L entries
  Tensor final_norm;                 // (C)     model.norm
  Tensor lm_head;                    // (V, C)  the same storage as `embedding` when tie_word_embeddings
};

/// A model ready to run: hyper-parameters, weights and the RoPE inverse frequencies (scaling applied).
struct LlamaModel {
  LlamaConfig config;
  LlamaWeights weights;
  std::vector<float> inv_freq;  // (D/2) from rope_inv_freq(config)
  std::filesystem::path dir;    // where it was loaded from (empty when built in memory)
  /// The tp group the weights are sharded over (tensor_parallel.h); one rank: the whole model.
  TensorParallel tp;
  /// The pipeline stage: which decoder layers are loaded (tensor_parallel.h); one stage: all of them.
  PipelineStage stage;
  /// A model on a CUDA device whose later layers keep their weights in host RAM (weight_stream.h;
  /// llama_model_to_device's device_layers): the passes reach those layers through layer_weights().
  /// Shared by copies of the model; null otherwise.
  std::shared_ptr<WeightStream> streamed;
  /// What the passes compute attention in (attention_compute.h): f32, or on a CUDA device bf16
  /// (resolve_attention_dtype; the apps set it from runtime.attention_dtype).
  DType attention_dtype = DType::F32;
};

enum class WeightStorage {
  F32,       // widen every weight to f32 at load: 4 bytes per parameter (the reference path)
  AsStored,  // keep bf16 matrices (embedding, projections, lm_head) in bf16, widened inside the GEMMs;
             // f32 checkpoints stay f32, f16 ones are widened to f32 (no f16 products on the CPU)
  Bf16,      // every matrix in bf16: as stored, or rounded to nearest even from f32 and f16 checkpoints
             // (for bf16 products, runtime.cpu_matmul_dtype = "bf16"); norms and biases f32
};

struct LlamaLoadOptions {
  WeightStorage storage = WeightStorage::F32;
  /// llama_model_load_tp with pp > 1: the pipeline stages balanced by work, the last one holding fewer
  /// layers for the head (ByWork, training), or evenly (generation).
  parallel::StageSplit stage_split = parallel::StageSplit::Even;
};

struct LlamaLoadStats {
  double seconds = 0.0;
  std::uint64_t bytes_read = 0;      // tensor bytes read from the files (checkpoint dtype)
  std::uint64_t bytes_resident = 0;  // bytes of the weights held in memory
  std::uint64_t bytes_share = 0;     // llama_model_load_tp: the stored bytes of the rank's slices
};

/// Loads DIR/config.json and every weight the config implies (in f32, or as `opts` says). Tensors
/// are checked against the weight-name table: a missing tensor or a wrong shape is an IoError /
/// ShapeError naming the file and tensor with a hint. Other tensors in the files are not read. With
/// tie_word_embeddings, lm_head shares the embedding (a stored lm_head.weight is ignored, as HF
/// does). `stats`, when given, receives the time and bytes.
LlamaModel llama_model_load(const std::filesystem::path& dir, const LlamaLoadOptions& opts = {},
                            LlamaLoadStats* stats = nullptr);

}  // namespace adapt::model
