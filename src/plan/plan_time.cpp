// GPU and network presets, layouts, FLOPs and the step-time estimate.
#include <algorithm>
#include <cmath>

#include "adapters/adapter_config_check.h"
#include "comm/process_grid.h"
#include "core/error.h"
#include "core/strings.h"
#include "model/tensor_parallel.h"
#include "parallel/llama_sharding.h"
#include "plan/plan.h"

namespace adapt::plan {

// Sources (src/plan/README.md lists them): NVIDIA A100 datasheet (312 TFLOP/s dense bf16, 2,039 GB/s
// for the 80 GB SXM, 1,555 GB/s for the 40 GB, NVLink 3: 600 GB/s total = 300 GB/s per direction),
// NVIDIA H100 / H200 datasheets (989 TFLOP/s dense bf16 SXM, 3.35 / 4.8 TB/s, NVLink 4: 900 GB/s
// total = 450 per direction), NVIDIA Ampere GA102 whitepaper (RTX 3080: 59.5 TFLOP/s dense fp16/bf16
// with fp32 accumulation, 760 GB/s, 10 GB), PCIe 4.0 / 5.0 x16: 32 / 64 GB/s raw per direction,
// ~25 / ~50 GB/s effective.
std::vector<GpuSpec> gpu_presets() {
  return {
      {"a100-80gb-sxm", 80, 312, 2.039, 300, "NVLink 3", 8, "NVIDIA A100 datasheet (SXM4 80GB)"},
      {"a100-40gb-sxm", 40, 312, 1.555, 300, "NVLink 3", 8, "NVIDIA A100 datasheet (SXM4 40GB)"},
      {"a100-80gb-pcie", 80, 312, 1.935, 25, "PCIe 4 x16", 8, "NVIDIA A100 datasheet (PCIe 80GB)"},
      {"h100-sxm", 80, 989, 3.35, 450, "NVLink 4", 8, "NVIDIA H100 datasheet (SXM5)", 50},
      {"h200-sxm", 140, 989, 4.8, 450, "NVLink 4", 8, "NVIDIA H200 datasheet (SXM)", 50},
      {"h100-pcie", 80, 756, 2.0, 50, "PCIe 5 x16", 8, "NVIDIA H100 datasheet (PCIe)", 50},
      {"rtx3080-10gb", 10, 59.5, 0.76, 25, "PCIe 4 x16", 4, "NVIDIA Ampere GA102 whitepaper (GeForce RTX 3080)"},
  };
}

std::vector<NetworkSpec> network_presets() {
  return {{"none", 0, "a single node"},
          {"edr", 100, "InfiniBand EDR 4x: 100 Gb/s per port"},
          {"hdr", 200, "InfiniBand HDR 4x: 200 Gb/s per port (NVIDIA ConnectX-6)"},
          {"ndr", 400, "InfiniBand NDR 4x: 400 Gb/s per port (NVIDIA ConnectX-7)"}};
}

namespace {
template <typename T>
std::vector<std::string> names_of(const std::vector<T>& v) {
  std::vector<std::string> n;
  for (const auto& x : v) n.push_back(x.name);
  return n;
}
}  // namespace

GpuSpec gpu_preset(const std::string& name, const std::string& flag) {
  for (const GpuSpec& g : gpu_presets())
    if (g.name == name) return g;
  const auto names = names_of(gpu_presets());
  std::vector<std::string> like;  // "a100": the presets of that GPU
  for (const std::string& n : names)
    if (!name.empty() && n.find(name) != std::string::npos) like.push_back(n);
  ADAPT_THROW(ConfigError,
              "{} {}: unknown GPU{}; choose one of {} (or give --gpu-mem, --tflops, --hbm-tbps and --link)", flag, name,
              like.empty() ? did_you_mean(name, names) : fmt::format(" (the presets of it: {})", join(like, ", ")),
              join(names, ", "));
}

NetworkSpec network_preset(const std::string& name, const std::string& flag) {
  for (const NetworkSpec& n : network_presets())
    if (n.name == name) return n;
  const auto names = names_of(network_presets());
  ADAPT_THROW(ConfigError, "{} {}: unknown network{}; choose one of {} (or give --inter-gbit Gb/s per NIC)", flag, name,
              did_you_mean(name, names), join(names, ", "));
}

std::vector<std::string> link_preset_names() { return {"nvlink3", "nvlink4", "pcie4", "pcie5"}; }

double link_preset_gbps(const std::string& name, const std::string& flag) {
  if (name == "nvlink3") return 300;
  if (name == "nvlink4") return 450;
  if (name == "pcie4") return 25;
  if (name == "pcie5") return 50;
  ADAPT_THROW(ConfigError, "{} {}: unknown link{}; choose one of {} (or give --intra-gbps GB/s per direction)", flag,
              name, did_you_mean(name, link_preset_names()), join(link_preset_names(), ", "));
}

double Cluster::inter_gbps_per_gpu() const {
  return network.gbit_per_nic * nics_per_node / 8.0 / std::max(gpu.gpus_per_node, 1);
}

std::vector<Layout> valid_layouts(const model::LlamaConfig& m, int gpus) {
  ADAPT_REQUIRE(gpus >= 1, ConfigError, "--gpus {}: must be at least 1", gpus);
  const comm::GridModelLimits lim{.n_heads = m.n_heads, .n_kv_heads = m.n_kv_heads, .n_layers = m.n_layers};
  std::vector<Layout> out;
  for (const int tp : comm::ProcessGrid::valid_tp_sizes(gpus, lim))
    for (const int pp : comm::ProcessGrid::valid_pp_sizes(gpus, tp, lim)) out.push_back({tp, pp, gpus / (tp * pp)});
  return out;
}

namespace {

/// Matmul parameters of one decoder layer on one tp rank (q, k, v, o, gate, up, down).
double layer_matmul_params(const model::LlamaConfig& m) {
  return static_cast<double>(parallel::layer_matmul_params(model::llama_dims(m)));
}

/// Adapter FLOPs per token and layer: forward, and backward (input and weight gradients).
std::pair<double, double> adapter_flops(const model::LlamaConfig& m, const adapters::AdapterConfig& a) {
  double fwd = 0;
  if (adapters::kind_has_lora(a.kind))
    for (const std::string& t : a.lora.targets) {
      const auto [in, out] = adapters::lora_site_dims(adapters::lora_target_kind(t), m);
      fwd += 2.0 * static_cast<double>(a.lora.r * (in + out));
    }
  if (adapters::kind_has_bottleneck(a.kind)) {
    const double w = static_cast<double>(adapters::bottleneck_size(a.bottleneck, m.hidden_size));
    fwd += 4.0 * w * static_cast<double>(m.hidden_size) *
           (a.bottleneck.placement == adapters::BnPlacement::Houlsby ? 2 : 1);
  }
  return {fwd, 2 * fwd};
}

/// The fraction of the decoder layers that carry adapters.
double adapter_layer_share(const model::LlamaConfig& m, const adapters::AdapterConfig& a) {
  return static_cast<double>(adapters::adapter_layers(a, m).size()) /
         static_cast<double>(std::max<std::int64_t>(m.n_layers, 1));
}

/// Per token: forward of `layers` decoder layers, their backward (input gradients of the frozen
/// matmuls, attention `attn_backward` times its forward, adapters), and the head (last stage).
struct StageFlops {
  double forward = 0, backward = 0, head = 0;
};
StageFlops stage_flops(const model::LlamaConfig& m, const adapters::AdapterConfig& a, std::int64_t seq, double layers,
                       double adapter_layer_share, double attn_backward) {
  const double attn = 2.0 * static_cast<double>(m.n_heads * m.head_dim) * static_cast<double>(seq);  // causal
  const auto [ad_f, ad_b] = adapter_flops(m, a);
  StageFlops s;
  s.forward = layers * (2 * layer_matmul_params(m) + attn + ad_f * adapter_layer_share);
  s.backward = layers * (2 * layer_matmul_params(m) + attn_backward * attn + ad_b * adapter_layer_share);
  s.head = 4.0 * static_cast<double>(m.vocab_size * m.hidden_size);  // lm_head forward + input gradient
  return s;
}

}  // namespace

std::optional<GpuSpec> gpu_preset_of_device(const std::string& device_name) {
  const auto has = [&](const char* part) { return device_name.find(part) != std::string::npos; };
  const char* name = nullptr;
  if (has("H200")) name = "h200-sxm";
  else if (has("H100")) name = has("PCIe") ? "h100-pcie" : "h100-sxm";
  else if (has("A100")) name = has("PCIe") ? "a100-80gb-pcie" : has("40GB") ? "a100-40gb-sxm" : "a100-80gb-sxm";
  else if (has("RTX 3080")) name = "rtx3080-10gb";
  if (name == nullptr) return std::nullopt;
  return gpu_preset(name);
}

double train_model_flops_per_token(const model::LlamaConfig& m, const adapters::AdapterConfig& a, std::int64_t seq) {
  // Model work: attention's backward as twice its forward (its two products' gradients), the convention
  // of MFU, whatever the kernels recompute.
  const StageFlops s = stage_flops(m, a, seq, static_cast<double>(m.n_layers), adapter_layer_share(m, a), 2.0);
  return s.forward + s.backward + s.head;
}

StepTime train_step_time(const model::LlamaConfig& m, const adapters::AdapterConfig& a, const Layout& lay,
                         const TrainJob& job, const Cluster& cl) {
  StepTime st;
  const double share = adapter_layer_share(m, a);
  const double tokens = static_cast<double>(job.micro_batch * job.seq * job.grad_accum);
  const TrainMemory mem = train_memory(m, a, lay, job, Backend::Gpu);
  double worst = 0, worst_hbm = 0;
  for (int p = 0; p < lay.pp; ++p) {
    const double layers =
        static_cast<double>(parallel::stage_layers(model::llama_dims(m), lay.pp, p, parallel::kTrainSplit).count);
    const bool last = p == lay.pp - 1;
    // Executed work: the attention backward recomputes the scores (QKᵀ), then forms dV, dP, dQ and dK:
    // five products against the forward's two.
    const StageFlops s = stage_flops(m, a, job.seq, layers, share, 2.5);
    // Forward passes per micro-batch: 1, +1 with recomputation.
    const double passes = 1 + (job.recompute ? 1 : 0);
    const double f = tokens * (s.forward * passes + s.backward + (last ? s.head : 0)) / lay.tp;
    // HBM: the rank's weights once per forward and once in the backward, per micro-batch, plus the
    // activations written and read once.
    const double hbm = static_cast<double>(job.grad_accum) * (static_cast<double>(mem.weights) * (passes + 1) +
                                                              2.0 * static_cast<double>(mem.activations.total()));
    worst = std::max(worst, f);
    worst_hbm = std::max(worst_hbm, hbm);
  }
  st.flops = worst;
  st.hbm_s = worst_hbm / (cl.gpu.hbm_tbps * 1e12 * cl.hbm_efficiency);
  st.compute_s = std::max(worst / (cl.gpu.bf16_tflops * 1e12 * cl.mfu), st.hbm_s);
  const CommBytes cb = train_comm_bytes(m, a, lay, job, Backend::Gpu);
  const int per_node = std::max(cl.gpu.gpus_per_node, 1);
  st.tp_inside_node = lay.tp <= per_node;
  st.pp_inside_node = lay.tp * lay.pp <= per_node;
  st.dp_inside_node = lay.world() <= per_node;
  const double inter = cl.inter_gbps_per_gpu() * 1e9, intra = cl.gpu.intra_gbps * 1e9;
  auto link_time = [&](double bytes, bool inside) {
    if (bytes <= 0) return 0.0;
    const double bw = inside ? intra : inter;
    return bw > 0 ? bytes / bw : INFINITY;
  };
  st.tp_s = link_time(cb.tp_wire_rank, st.tp_inside_node);
  st.pp_s = link_time(cb.pp_wire_rank, st.pp_inside_node);
  st.dp_s = link_time(cb.dp_wire_rank, st.dp_inside_node);
  // Streamed weights cross the host link once per forward and once per backward of each micro-batch
  // (a recomputed forward uses the layer staged for its backward), overlapping compute.
  std::uint64_t streamed = 0;
  for (int p = 0; p < lay.pp; ++p)
    streamed = std::max(streamed, streamed_weights(m, lay, p, parallel::kTrainSplit, job.weights_device_layers,
                                                   Precision::of(Backend::Gpu).weight)
                                      .host);
  st.stream_s = static_cast<double>(job.grad_accum) * 2.0 * static_cast<double>(streamed) / (cl.gpu.host_gbps * 1e9);
  const double M = static_cast<double>(job.grad_accum);
  st.bubble = (M + lay.pp - 1) / M;
  // A stage's tp all-reduces sit between its GEMMs: on the pipeline's critical path, like its compute.
  st.step_s = (std::max(st.compute_s, st.stream_s) + st.tp_s) * st.bubble + st.pp_s + st.dp_s;
  st.tokens_per_s = tokens * lay.dp / st.step_s;
  return st;
}

DecodeTime decode_step_time(const model::LlamaConfig& m, const Layout& lay, const GenJob& job, const Cluster& cl) {
  const adapters::AdapterConfig none{
      .kind = adapters::AdapterKind::Lora, .layers = {}, .last_n = {}, .lora = {.targets = {}}};
  const GenMemory g = gen_memory(m, none, lay, job, Backend::Gpu);
  // Each stage reads its weights and KV cache once per step; the stages run one after the other.
  const double read_s = static_cast<double>(g.step_read) / (cl.gpu.hbm_tbps * 1e12 * cl.hbm_efficiency);
  const double layers = static_cast<double>(m.n_layers);
  const double hidden = static_cast<double>(job.batch * m.hidden_size) *
                        Precision::of(Backend::Gpu, job.act_bytes).activation;  // one step's hidden states
  // Two all-reduces per layer (attention and MLP outputs), each sending 2 (tp − 1) / tp of its bytes.
  const double tp_collectives = lay.tp > 1 ? 2.0 * layers : 0;
  const double tp_bytes = tp_collectives * 2.0 * (lay.tp - 1) / lay.tp * hidden;
  const double tp_bw = (lay.tp <= cl.gpu.gpus_per_node ? cl.gpu.intra_gbps : cl.inter_gbps_per_gpu()) * 1e9;
  const double pp_bw = (lay.tp * lay.pp <= cl.gpu.gpus_per_node ? cl.gpu.intra_gbps : cl.inter_gbps_per_gpu()) * 1e9;
  DecodeTime d;
  // Streamed weights cross the host link every step, stage after stage, while the layers before compute.
  d.stream_s = static_cast<double>(g.streamed.host) * lay.pp / (cl.gpu.host_gbps * 1e9);
  d.step_s = std::max(read_s, d.stream_s) + (tp_bytes > 0 ? tp_bytes / tp_bw : 0) +
             tp_collectives * cl.collective_latency_s + (lay.pp - 1) * (cl.collective_latency_s + hidden / pp_bw);
  d.tokens_per_s = static_cast<double>(job.batch * lay.dp) / d.step_s;
  return d;
}

}  // namespace adapt::plan
