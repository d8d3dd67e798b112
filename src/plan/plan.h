// The planner's model of a job: for a Llama shape, an adapter, a layout of ranks (tp × pp × dp) and a
// training or generation job, the bytes each rank holds (weights, adapter, gradients, optimizer
// state, activations with and without recomputation, KV cache, host memory), the bytes the step's
// collectives move, and a step-time estimate from FLOPs, bytes and link bandwidths. Pure functions of
// their arguments: nothing is allocated, read or run (adapt_plan prints them; src/plan/README.md
// gives every formula and its source).
//
// Two backends are planned:
//   Cpu: what adapt_train does today, exactly: f32 weights (WeightStorage::F32), f32 activations
//        taken from the two workspaces of model::llama_train_step (64-byte aligned), logits in chunks
//        of 256 rows (all rows of a micro-batch with pp > 1), the trainer's and DpOptimizer's buffers;
//        tested against measured runs (tests/e2e/adapt_plan_e2e_test.cpp).
//   Gpu: the same tensors with bf16 weights and activations (f32 norm statistics, log-sum-exp and
//        adapter parameters, gradients and AdamW state); the CUDA training pass does not exist yet, so
//        this is the CPU pass's structure at GPU precisions, not a measurement.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "adapters/adapter_config.h"
#include "model/llama_config.h"
#include "parallel/llama_sharding.h"
#include "parallel/zero_partition.h"

namespace adapt::plan {

enum class Backend { Cpu, Gpu };

/// world = tp × pp × dp, tp innermost (comm::ProcessGrid's order).
struct Layout {
  int tp = 1;
  int pp = 1;
  int dp = 1;
  int world() const { return tp * pp * dp; }
  std::string str() const;  // "tp2 × pp1 × dp4"
  friend bool operator==(const Layout&, const Layout&) = default;
};

/// A training job as adapt_train runs it.
struct TrainJob {
  std::int64_t seq = 0;            // data.seq_len (T)
  std::int64_t micro_batch = 1;    // sequences per replica per micro-step (adapt_train: train.micro_batch / dp)
  std::int64_t grad_accum = 1;     // train.grad_accum (micro-batches per step; the pipeline's 1F1B count)
  bool recompute = false;          // train.recompute
  bool shard_saved_inputs = true;  // train.shard_saved_inputs (with recompute and tp > 1, where it pays:
                                   // model::saved_inputs_for)
  bool bf16_saved_inputs = false;  // train.saved_inputs_dtype = "bf16" (with recompute, where it pays)
  /// The dtype the layers' inputs are kept in, for a plan of `act_bytes` activations: bf16 when asked and
  /// the activations are wider (a plan of bf16 activations keeps them in bf16 anyway).
  DType saved_input_dtype(int act_bytes) const { return bf16_saved_inputs && act_bytes > 2 ? DType::BF16 : DType::F32; }
  bool zero1 = true;                        // parallel.zero1
  bool offload = false;                     // optim.offload: optimizer state in host RAM (optim::OffloadAdamW)
  int act_bytes = 0;                        // bytes per activation element; 0: the backend's (Precision::of)
  std::int64_t weights_device_layers = -1;  // runtime.weights_device_layers (Gpu): layers of a stage whose
                                            // weights stay on the GPU, the rest streamed from host RAM; -1: all
  int weight_bytes = 0;  // bytes per base-weight element (runtime.weights_dtype on a GPU); 0: the backend's
};

/// A generation job as adapt_gen runs it: `batch` sequences in flight, each of up to `context` tokens
/// (prompt + new tokens).
struct GenJob {
  std::int64_t batch = 1;
  std::int64_t context = 0;
  int act_bytes = 0;  // bytes per activation element; 0: the backend's (Precision::of)
  int kv_bytes = 0;   // bytes per KV-cache element (runtime.kv_cache_dtype); 0: the backend's (Precision::of)
  std::int64_t prefill_chunk = 512;         // prompt tokens per forward (adapt_gen's runtime.prefill_chunk; 0: whole)
  std::int64_t weights_device_layers = -1;  // as TrainJob's (adapt_gen's runtime.weights_device_layers)
  int weight_bytes = 0;                     // as TrainJob's (adapt_gen's runtime.weights_dtype on a GPU)
  std::int64_t prompt = 0;  // the longest prompt prefilled (adapt_gen --dry-run knows it); 0: up to the context
};

/// The workspace cuBLASLt's GEMMs get on each GPU (ops/cuda/gemm_cublaslt.h's kGemmWorkspaceBytes: one per
/// device and stream, and the passes run their GEMMs on one stream), from the device's caching allocator.
constexpr std::uint64_t kGemmWorkspaceBytes = std::uint64_t{32} << 20;

/// Bytes per element on a backend.
struct Precision {
  int weight = 4;      // base weights in memory
  int activation = 4;  // activations and their gradients
  int kv = 4;          // KV cache
  static Precision of(Backend b);
  /// The backend's, with the activation element size replaced when `act_bytes` > 0.
  static Precision of(Backend b, int act_bytes);
};

// ---- adapter ----------------------------------------------------------------------------------------

/// Parses --adapter: "lora:r=16[,alpha=32][,targets=q+k+v+o+gate+up+down|all][,dropout=0.1]",
/// "bottleneck:64[,placement=pfeiffer|houlsby|parallel][,ln]" or both joined by '/'
/// ("lora:r=16/bottleneck:64"). ConfigError naming --adapter and listing the accepted forms otherwise.
adapters::AdapterConfig parse_adapter_spec(const std::string& text);
/// "lora r=16 (q, v)", "bottleneck m=64 (pfeiffer)".
std::string adapter_spec_str(const adapters::AdapterConfig& a, const model::LlamaConfig& m);

/// Adapter parameters one tp rank holds (LoRA factors split as parallel::lora_shard splits them,
/// bottleneck modules whole; every pipeline stage holds the whole adapter, as adapt_train does).
std::int64_t adapter_params_on_rank(const model::LlamaConfig& m, const adapters::AdapterConfig& a, int tp, int tp_rank);
/// The whole adapter's parameters (tp = 1); equals adapters::AdapterSet::n_parameters().
std::int64_t adapter_params(const model::LlamaConfig& m, const adapters::AdapterConfig& a);
/// The ZeRO-1 layout of one tp rank's adapter over `dp` replicas, as adapt_train's DpOptimizer cuts it:
/// units of whole layers up to parallel::kDpBucketElems, each split over dp.
parallel::Zero1Layout adapter_zero1_layout(const model::LlamaConfig& m, const adapters::AdapterConfig& a, int tp,
                                           int tp_rank, int dp);
/// The number of LoRA sites (layers × targets).
std::int64_t lora_sites(const model::LlamaConfig& m, const adapters::AdapterConfig& a);

// ---- memory -----------------------------------------------------------------------------------------

/// The decoder layers of pipeline stage `pp_rank` (of `lay`, split as `split`) whose weights stay in
/// host RAM with runtime.weights_device_layers = device_layers (model/weight_stream.h; −1: none), on
/// one tp rank: their bytes in host RAM (matrices of `weight_bytes` per element, norms f32) and the
/// device bytes of the staging slots that replace them there (min(2, layers) layers).
struct StreamedWeights {
  std::int64_t layers = 0;
  std::uint64_t host = 0;
  std::uint64_t slots = 0;
};
StreamedWeights streamed_weights(const model::LlamaConfig& m, const Layout& lay, int pp_rank,
                                 parallel::StageSplit split, std::int64_t device_layers, int weight_bytes);

/// What llama_train_step's workspaces hold at their high-water marks, for one rank and one call
/// (model/llama_train.cpp: `saved` and `scratch`), plus the adapters' own temporaries.
struct ActivationBytes {
  std::uint64_t saved = 0;    // RoPE tables, each layer's input, the kept activations, the running gradient
  std::uint64_t scratch = 0;  // the largest set of one layer's temporaries, or the head's (logits chunk)
  std::uint64_t adapter = 0;  // adapters::AdapterSet's workspace (LoRA / bottleneck temporaries)
  std::uint64_t total() const { return saved + scratch + adapter; }
};

/// One rank's training memory. Device bytes are on the GPU (or the process, for Cpu); host bytes are
/// in host RAM besides the process (GPU plans: offloaded optimizer state, pinned staging).
struct TrainMemory {
  Layout layout;
  int tp_rank = 0, pp_rank = 0;     // the rank this is (the one needing most memory)
  std::int64_t base_params = 0;     // base weights held
  std::int64_t adapter_params = 0;  // adapter parameters held
  std::uint64_t weights = 0;
  std::uint64_t adapter = 0;            // adapter weights (working copy)
  std::uint64_t gradients = 0;          // adapter gradients (f32)
  std::uint64_t optimizer = 0;          // AdamW state of this rank's part (m, v; the f32 master where it is a
                                        // separate copy; offloaded on the CPU: master, m, v, gradient copy)
  std::uint64_t dp_buffers = 0;         // flat gradient / shard buffers of the dp and pp reductions
  std::uint64_t pipeline_buffers = 0;   // hidden states exchanged between stages (pp > 1)
  std::int64_t micro_in_flight = 1;     // micro-batches whose activations the rank keeps at once (1F1B, pp > 1)
  ActivationBytes activations;          // with the job's recompute setting (saved: for every micro-batch in flight)
  ActivationBytes activations_other;    // with the other setting (for the table)
  std::uint64_t checkpoint = 0;         // world rank 0 (0 elsewhere) while it writes a checkpoint: the HDF5 file image
                                        // (whole adapter, m, v f32) and, with ZeRO-1, the gathered moments
  std::uint64_t host_mirrors = 0;       // GPU: the adapter's host copies (values and gradients)
  std::uint64_t host_optimizer = 0;     // GPU with offload: AdamW's state in pinned host RAM (f32 master + m + v
                                        // of this rank's part); without offload it is `optimizer`, on the GPU
  std::uint64_t host_staging = 0;       // GPU: gradient copies and flat reduction vectors in host RAM
  StreamedWeights streamed;             // GPU: layers whose weights stay in host RAM (`weights` holds their slots)
  std::uint64_t libraries = 0;          // GPU: cuBLASLt's workspace (kGemmWorkspaceBytes)
  std::uint64_t operand_copies = 0;     // GPU, f32 activations: bf16 copies of GEMM and attention operands,
                                        // the most alive at once (freed after use, outside the workspaces)
  std::uint64_t attention_buffers = 0;  // CPU: attention's buffers kept per thread between calls
  std::uint64_t device_total() const;
  bool host_checkpoint = false;  // the checkpoint image is in host RAM (GPU plans), not in device_total
  std::uint64_t host_total() const {
    return host_mirrors + host_optimizer + host_staging + streamed.host + (host_checkpoint ? checkpoint : 0);
  }
};

/// Exact workspace high-water marks of llama_train_step for rank (tp_rank, pp_rank) of `layout`.
/// `backward`: a training call; `forward_only`: a pipeline stage's forward (backward = false).
/// `chunk_rows`: logits rows at a time (0: all; adapt_train passes 256 without pp, 0 with pp).
/// `shard_saved_inputs`, `bf16_saved_inputs`: model::TrainOptions::shard_saved_inputs and saved_input_dtype
/// = bf16 (as given: not only where they pay).
ActivationBytes train_activation_bytes(const model::LlamaConfig& m, const adapters::AdapterConfig& a,
                                       const Layout& layout, int tp_rank, int pp_rank, std::int64_t batch,
                                       std::int64_t seq, bool recompute, bool backward, std::int64_t chunk_rows,
                                       Backend backend, bool shard_saved_inputs = false,
                                       bool bf16_saved_inputs = false);

/// The training memory of the rank of `layout` that needs the most device memory.
TrainMemory train_memory(const model::LlamaConfig& m, const adapters::AdapterConfig& a, const Layout& layout,
                         const TrainJob& job, Backend backend);
/// Every rank of one replica (tp_rank, pp_rank), world rank order (the dp replicas hold the same; world
/// rank 0, which writes checkpoints, is the first).
std::vector<TrainMemory> train_memory_ranks(const model::LlamaConfig& m, const adapters::AdapterConfig& a,
                                            const Layout& layout, const TrainJob& job, Backend backend);

/// One rank's generation memory.
struct GenMemory {
  Layout layout;
  std::uint64_t weights = 0;   // on the device (with streamed weights: the slots, not the streamed layers)
  StreamedWeights streamed;    // the busiest stage's layers whose weights stay in host RAM
  std::uint64_t kv_cache = 0;  // the whole batch × context
  std::uint64_t kv_per_sequence = 0;
  std::uint64_t adapter = 0;
  // llama_forward's workspace at its largest call (a prefill piece of min(prefill_chunk, prompt) tokens
  // or a decode step of the batch), the adapters' workspace, and on the CPU the batch's logits.
  std::uint64_t activations = 0;
  std::uint64_t attention_buffers = 0;  // CPU: attention's packed keys and values, kept per thread
  std::uint64_t step_read = 0;          // what a decode step reads on one tp rank's GPUs, stage after stage: its
                                        // weights of every stage and the KV cache of every layer
  std::uint64_t libraries = 0;          // GPU: cuBLASLt's workspace (kGemmWorkspaceBytes)
  std::uint64_t operand_copies = 0;     // GPU, f32 activations: bf16 copies of a prefill piece's operands
  /// Everything but the KV cache: what the cache's room is left from.
  std::uint64_t beside_kv() const {
    return weights + adapter + activations + attention_buffers + libraries + operand_copies;
  }
  std::uint64_t device_total() const { return beside_kv() + kv_cache; }
};
GenMemory gen_memory(const model::LlamaConfig& m, const adapters::AdapterConfig& a, const Layout& layout,
                     const GenJob& job, Backend backend);

// ---- communication ------------------------------------------------------------------------------------

/// Bytes one training step moves, as comm::Communicator counts them (all_reduce and broadcast: the
/// buffer; all_gather: the output; reduce_scatter: the input; send and recv: the message, counted
/// at both ends), summed over every rank: the `comm_bytes` of adapt_train's metrics.jsonl. `wire` is
/// what ring collectives put on the links (all-reduce 2(p−1)/p of the buffer, all-gather and
/// reduce-scatter (p−1)/p, a message once), summed over every rank's sends.
struct CommBytes {
  std::int64_t tp_counted = 0, pp_counted = 0, dp_counted = 0;
  double tp_wire = 0, pp_wire = 0, dp_wire = 0;                 // summed over ranks
  double tp_wire_rank = 0, pp_wire_rank = 0, dp_wire_rank = 0;  // the busiest rank's sends
  std::int64_t counted() const { return tp_counted + pp_counted + dp_counted; }
  double wire() const { return tp_wire + pp_wire + dp_wire; }
};
CommBytes train_comm_bytes(const model::LlamaConfig& m, const adapters::AdapterConfig& a, const Layout& layout,
                           const TrainJob& job, Backend backend);

// ---- hardware and time ----------------------------------------------------------------------------

struct GpuSpec {
  std::string name;
  double mem_gb = 0;       // device memory, GiB (as nvidia-smi reports it: A100 80GB = 81920 MiB)
  double bf16_tflops = 0;  // dense bf16 peak
  double hbm_tbps = 0;     // memory bandwidth, TB/s
  double intra_gbps = 0;   // GPU-to-GPU inside a node, GB/s per direction (NVLink or PCIe)
  std::string intra_name;
  int gpus_per_node = 8;
  std::string source;     // where the numbers come from
  double host_gbps = 25;  // host RAM to the GPU, GB/s (PCIe 4 x16 ~25, PCIe 5 x16 ~50)
};
struct NetworkSpec {
  std::string name;
  double gbit_per_nic = 0;  // Gb/s per NIC, per direction
  std::string source;
};
std::vector<GpuSpec> gpu_presets();
std::vector<NetworkSpec> network_presets();
/// ConfigError naming `flag`, with a suggestion and the list, for unknown names.
GpuSpec gpu_preset(const std::string& name, const std::string& flag = "--gpu");
/// The preset of a GPU named as the driver names it (backend::cuda_device_name, e.g. "NVIDIA
/// A100-SXM4-80GB (sm_80, 79.3 GiB)", "NVIDIA H100 PCIe", "NVIDIA H200"); nullopt for other GPUs.
std::optional<GpuSpec> gpu_preset_of_device(const std::string& device_name);
NetworkSpec network_preset(const std::string& name, const std::string& flag = "--network");
/// Intra-node link presets: nvlink3 (A100), nvlink4 (H100/H200), pcie4, pcie5: GB/s per direction.
double link_preset_gbps(const std::string& name, const std::string& flag = "--link");
std::vector<std::string> link_preset_names();

struct Cluster {
  GpuSpec gpu;
  NetworkSpec network;
  int nics_per_node = 8;
  double mfu = 0.5;             // the fraction of peak FLOP/s the GEMMs are assumed to reach
  double hbm_efficiency = 0.8;  // the fraction of the datasheet HBM bandwidth a streaming read reaches
  /// What one collective or point-to-point transfer costs beyond its bytes (NCCL's latency for small
  /// messages, ~10–30 µs): it counts where messages are small, in decoding.
  double collective_latency_s = 20e-6;
  /// GB/s per GPU between nodes: NICs × Gb/s / 8 / GPUs per node.
  double inter_gbps_per_gpu() const;
};

struct StepTime {
  double flops = 0;                     // per rank per step (forward, backward, recomputation)
  double compute_s = 0;                 // flops / (peak × mfu), or the HBM time if larger
  double hbm_s = 0;                     // bytes read from HBM / bandwidth
  double tp_s = 0, pp_s = 0, dp_s = 0;  // communication of the busiest rank on its links
  double bubble = 1;                    // 1F1B: (M + pp − 1) / M
  double stream_s = 0;                  // host → device copies of streamed weights (runtime.weights_device_layers)
  double step_s = 0;                    // (max(compute, stream) + tp) × bubble + pp + dp, no overlap assumed
  double tokens_per_s = 0;              // the whole job's
  bool tp_inside_node = true, pp_inside_node = true, dp_inside_node = true;
};
/// The FLOPs one token of a training step needs, the numerator of MFU: the forward of every layer and
/// the head, the input gradients of the frozen matmuls and of attention, the adapters' forward and
/// gradients; no recomputation (a recomputed forward is not model work). Attention is counted causal
/// over sequences of `seq` tokens.
double train_model_flops_per_token(const model::LlamaConfig& m, const adapters::AdapterConfig& a, std::int64_t seq);
StepTime train_step_time(const model::LlamaConfig& m, const adapters::AdapterConfig& a, const Layout& layout,
                         const TrainJob& job, const Cluster& cluster);

/// The step time: the busiest stage's FLOPs (attention's backward 2.5 times its forward: it recomputes
/// the scores) at the assumed MFU, or its HBM traffic if longer, and its tp all-reduces, both on the
/// 1F1B critical path (× the bubble), then the pp transfers and the dp reduction.
/// Decoding: each step reads the rank's weights and KV cache once (memory bound, at hbm_efficiency)
/// plus two tp all-reduces of the batch's hidden states (f32) per layer and a transfer per stage
/// boundary, each with its collective_latency_s.
struct DecodeTime {
  double stream_s = 0;  // host → device copies of streamed weights, overlapping the reads
  double step_s = 0;
  double tokens_per_s = 0;  // all replicas
};
DecodeTime decode_step_time(const model::LlamaConfig& m, const Layout& layout, const GenJob& job,
                            const Cluster& cluster);

// ---- layouts ---------------------------------------------------------------------------------------

/// Every tp × pp × dp of `gpus` ranks the model allows (tp divides the heads and KV heads, pp <= L),
/// tp ascending then pp.
std::vector<Layout> valid_layouts(const model::LlamaConfig& m, int gpus);

}  // namespace adapt::plan
