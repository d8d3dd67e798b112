// adapt_plan: how many GPUs, and how much memory, a model and a job need. Prints per-GPU memory
// (weights, adapter, gradients, optimizer state, activations with and without recomputation, KV
// cache) and host memory for every tp × pp × dp layout of the GPUs, the communication bytes and an
// estimated time per step, and recommends a layout and micro-batch for training and for generation.
// The formulas are in src/plan (README.md there); the usage text below is generated from kFlags.
#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/app_main.h"
#include "core/error.h"
#include "core/strings.h"
#include "model/llama_config.h"
#include "plan/plan_report.h"

using namespace adapt;
using namespace adapt::plan;

namespace {

struct Flag {
  const char* name;
  const char* value;  // nullptr: a switch
  const char* help;
};

const std::vector<Flag> kFlags = {
    {"--model", "DIR", "a Hugging Face model folder (its config.json is read)"},
    {"--preset", "NAME", "a model shape instead: {presets}"},
    {"--gpus", "N", "GPUs (ranks) of the job; every tp × pp × dp layout of them is planned"},
    {"--tp", "N", "plan only this tensor-parallel size (with --pp; dp = gpus / (tp·pp))"},
    {"--pp", "N", "plan only this pipeline size (default 1 when --tp is given; --pp alone plans tp = 1)"},
    {"--gpu", "NAME", "GPU preset: {gpus}"},
    {"--gpu-mem", "GB",
     "device memory per GPU in GiB (overrides the preset; required without --gpu, which then "
     "assumes --tflops 312 --hbm-tbps 2 --link pcie4 unless given)"},
    {"--host-mem", "GB", "host RAM per node in GiB (checked against offloaded state; per machine with --cpu)"},
    {"--seq", "S", "tokens per training sequence (data.seq_len); also the generation context unless --gen-context"},
    {"--micro-batch", "B", "sequences per replica per micro-step (adapt_train's train.micro_batch = B × dp)"},
    {"--grad-accum", "M", "micro-steps per optimizer step (train.grad_accum; the pipeline's micro-batches), default 1"},
    {"--adapter", "SPEC",
     "lora:r=16[,alpha=32][,targets=q+k+v+o+gate+up+down|all][,dropout=0.1] | "
     "bottleneck:64[,placement=pfeiffer|houlsby|parallel][,ln] | both joined by '/'"},
    {"--act-dtype", "bf16|f32",
     "activation precision of a GPU plan, default f32 (what the CUDA backend keeps; bf16 plans a bf16-activation "
     "pass); the CPU backend is always f32"},
    {"--kv-dtype", "f32|bf16",
     "KV-cache element type of the generation plan (adapt_gen's runtime.kv_cache_dtype), default bf16 on GPUs (its "
     "\"auto\" with bf16 weights), f32 on the CPU"},
    {"--recompute", nullptr, "activation recomputation (train.recompute = true); both settings are shown"},
    {"--no-shard-inputs", nullptr,
     "with --recompute and tp > 1: every tp rank keeps each layer's whole input (train.shard_saved_inputs = false)"},
    {"--bf16-saved-inputs", nullptr,
     "with --recompute: each layer's kept input in bf16, half the memory that grows with the layers "
     "(train.saved_inputs_dtype = \"bf16\")"},
    {"--no-zero1", nullptr, "replicate the optimizer state over dp (parallel.zero1 = false)"},
    {"--offload", nullptr,
     "optim.offload: the optimizer's f32 master, m and v in host RAM with a gradient copy filled bucket "
     "by bucket (pinned on GPUs)"},
    {"--weights-device-layers", "N",
     "keep only the first N decoder layers' weights of each stage on the GPU and stream the others from "
     "pinned host RAM (runtime.weights_device_layers of adapt_train and adapt_gen), for weights that do not "
     "fit; default: all on the GPU. When nothing fits, the plan names the largest N that would"},
    {"--host-gbps", "GB/s",
     "host RAM to GPU bandwidth for streamed weights, GB/s (default: the preset's, 25 = PCIe 4 x16)"},
    {"--gen-batch", "B", "sequences in flight per replica when generating, default 1"},
    {"--gen-context", "S", "tokens per generated sequence (prompt + new), default --seq"},
    {"--prefill-chunk", "N",
     "prompt tokens per prefill forward (adapt_gen's runtime.prefill_chunk), default 512; 0: whole"},
    {"--link", "NAME", "GPU-to-GPU link inside a node: nvlink3 (300 GB/s), nvlink4 (450), pcie4 (25), pcie5 (50)"},
    {"--intra-gbps", "GB/s", "that link's bandwidth per direction, GB/s (overrides --link and the preset)"},
    {"--network", "NAME", "between nodes: none, edr (100 Gb/s), hdr (200), ndr (400) per NIC; default hdr"},
    {"--inter-gbit", "Gb/s", "the network's bandwidth per NIC and direction, Gb/s (overrides --network)"},
    {"--nics-per-node", "N", "NICs per node, default one per GPU (as DGX A100 / H100)"},
    {"--gpus-per-node", "N", "GPUs per node (overrides the preset, default 8)"},
    {"--tflops", "T", "dense bf16 TFLOP/s per GPU (overrides the preset)"},
    {"--hbm-tbps", "T", "memory bandwidth per GPU, TB/s (overrides the preset)"},
    {"--mfu", "F", "fraction of the peak FLOP/s the GEMMs reach, default 0.5"},
    {"--hbm-eff", "F", "fraction of the HBM bandwidth a streaming read reaches (decoding), default 0.8"},
    {"--latency-us", "US", "time of one collective beyond its bytes (decoding's small messages), default 20"},
    {"--usable", "F", "fraction of device memory a plan may fill (CUDA context, NCCL, fragmentation), default 0.9"},
    {"--cpu", nullptr,
     "plan adapt_train on the CPU backend instead (f32, one process per rank: what the tests measure)"},
    {"--json", nullptr, "print the plan as JSON"},
    {"--help", nullptr, "this text"},
};

std::string usage() {
  std::string s =
      "usage: adapt_plan (--model DIR | --preset NAME) --gpus N (--gpu NAME | --gpu-mem GB) --seq S --micro-batch B\n"
      "                  --adapter SPEC [options]\n\n"
      "Prints the memory each GPU needs for every tp × pp × dp layout of the GPUs (base weights, adapter,\n"
      "gradients, optimizer state, activations with and without recomputation; weights and KV cache for\n"
      "generation), host memory, the bytes each step communicates and an estimated step time, and recommends\n"
      "a layout and micro-batch for training and generation, with the longest training sequence that fits.\n"
      "Formulas and sources: src/plan/README.md.\n\n";
  std::vector<std::string> gpus;
  for (const GpuSpec& g : gpu_presets()) gpus.push_back(g.name);
  for (const Flag& f : kFlags) {
    const std::string head = f.value ? fmt::format("{} {}", f.name, f.value) : f.name;
    std::string help = f.help;
    for (const auto& [key, list] : {std::pair{std::string("{presets}"), join(model::llama_preset_names(), ", ")},
                                    std::pair{std::string("{gpus}"), join(gpus, ", ")}})
      if (const std::size_t at = help.find(key); at != std::string::npos) help.replace(at, key.size(), list);
    s += fmt::format("  {:<22} {}\n", head, help);
  }
  s += "\nexamples:\n"
       "  adapt_plan --preset llama-3.1-70b --gpus 8 --gpu a100-80gb-sxm --seq 4096 --micro-batch 1 --adapter "
       "lora:r=16\n"
       "  adapt_plan --preset llama-3.1-8b --gpus 1 --gpu rtx3080-10gb --seq 2048 --micro-batch 1 --adapter lora:r=16 "
       "--offload\n"
       "  adapt_plan --preset llama-3.1-405b --gpus 32 --gpu h100-sxm --network ndr --seq 4096 --micro-batch 1 \\\n"
       "             --grad-accum 8 --adapter lora:r=16\n"
       "\nexit codes: 0 success; 2 bad command line; 3 the model folder or its config.json is missing or malformed;\n"
       "70 internal error.\n";
  return s;
}

[[noreturn]] void usage_error(const std::string& msg) {
  ADAPT_THROW(ConfigError, "{}\nRun `adapt_plan --help` for usage.", msg);
}

struct Args {
  std::map<std::string, std::string> values;
  std::vector<std::string> switches;
  bool has(const std::string& f) const { return std::find(switches.begin(), switches.end(), f) != switches.end(); }
  std::optional<std::string> get(const std::string& f) const {
    auto it = values.find(f);
    return it == values.end() ? std::nullopt : std::optional(it->second);
  }
};

Args parse_args(int argc, char** argv) {
  std::vector<std::string> names;
  for (const Flag& f : kFlags) names.push_back(f.name);
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto it = std::find_if(kFlags.begin(), kFlags.end(), [&](const Flag& f) { return arg == f.name; });
    if (it == kFlags.end()) usage_error(fmt::format("unknown option '{}'{}", arg, did_you_mean(arg, names)));
    if (!it->value) {
      a.switches.push_back(arg);
      continue;
    }
    if (i + 1 >= argc) usage_error(fmt::format("{} needs a value ({})", arg, it->value));
    if (a.values.count(arg)) usage_error(fmt::format("{} is given twice", arg));
    a.values[arg] = argv[++i];
  }
  return a;
}

// The integer value of `flag` (`fallback` when absent; required without one), at least `least`.
std::int64_t int_at_least(const Args& a, const std::string& flag, std::int64_t least,
                          std::optional<std::int64_t> fallback) {
  const auto v = a.get(flag);
  if (!v) {
    if (fallback) return *fallback;
    usage_error(fmt::format("{} is required", flag));
  }
  const std::optional<std::int64_t> n = parse_int(*v);
  if (!n || *n < least)
    usage_error(fmt::format("{} {}: must be {} integer", flag, *v, least > 0 ? "a positive" : "a non-negative"));
  return *n;
}
std::int64_t positive_int(const Args& a, const std::string& flag, std::optional<std::int64_t> fallback = {}) {
  return int_at_least(a, flag, 1, fallback);
}
std::int64_t nonnegative_int(const Args& a, const std::string& flag, std::int64_t fallback) {
  return int_at_least(a, flag, 0, fallback);
}

std::optional<double> positive_double(const Args& a, const std::string& flag) {
  const auto v = a.get(flag);
  if (!v) return std::nullopt;
  double x = 0;
  try {
    std::size_t used = 0;
    x = std::stod(*v, &used);
    if (used != v->size()) throw std::invalid_argument("trailing");
  } catch (const std::exception&) {
    usage_error(fmt::format("{} {}: must be a number", flag, *v));
  }
  if (!(x > 0)) usage_error(fmt::format("{} {}: must be positive", flag, *v));
  return x;
}

int run(int argc, char** argv) {
  const Args a = parse_args(argc, argv);
  if (a.has("--help") || argc == 1) {
    std::fputs(usage().c_str(), stdout);
    return 0;
  }
  PlanRequest req;
  const auto model_dir = a.get("--model"), preset = a.get("--preset");
  if (model_dir.has_value() == preset.has_value()) usage_error("give exactly one of --model DIR and --preset NAME");
  if (preset) {
    const std::vector<std::string> names = model::llama_preset_names();
    if (std::find(names.begin(), names.end(), *preset) == names.end())
      usage_error(fmt::format("--preset {}: unknown model preset{}; choose one of {}, or give --model DIR", *preset,
                              did_you_mean(*preset, names), join(names, ", ")));
    req.model = model::llama_config_preset(*preset);
    req.model_name = *preset;
  } else {
    req.model = model::llama_config_load(*model_dir);
    req.model_name = *model_dir;
  }
  req.gpus = static_cast<int>(positive_int(a, "--gpus"));
  req.backend = a.has("--cpu") ? Backend::Cpu : Backend::Gpu;
  const auto adapter = a.get("--adapter");
  if (!adapter) usage_error("--adapter is required (e.g. lora:r=16 or bottleneck:64)");
  req.adapter = parse_adapter_spec(*adapter);
  req.train.seq = positive_int(a, "--seq");
  req.train.micro_batch = positive_int(a, "--micro-batch");
  req.train.grad_accum = positive_int(a, "--grad-accum", 1);
  req.train.recompute = a.has("--recompute");
  req.train.zero1 = !a.has("--no-zero1");
  req.train.shard_saved_inputs = !a.has("--no-shard-inputs");
  req.train.bf16_saved_inputs = a.has("--bf16-saved-inputs");
  req.train.offload = a.has("--offload");
  if (const auto d = a.get("--act-dtype")) {
    if (*d != "bf16" && *d != "f32") usage_error(fmt::format("--act-dtype {}: choose bf16 or f32", *d));
    if (a.has("--cpu") && *d != "f32")
      usage_error("--act-dtype bf16 with --cpu: the CPU backend keeps f32 activations");
    req.train.act_bytes = req.gen.act_bytes = *d == "bf16" ? 2 : 4;
  }
  if (const auto d = a.get("--kv-dtype")) {
    if (*d != "bf16" && *d != "f32") usage_error(fmt::format("--kv-dtype {}: choose bf16 or f32", *d));
    req.gen.kv_bytes = *d == "bf16" ? 2 : 4;
  }
  req.gen.batch = positive_int(a, "--gen-batch", 1);
  req.gen.context = positive_int(a, "--gen-context", req.train.seq);
  req.gen.prefill_chunk = nonnegative_int(a, "--prefill-chunk", 512);
  for (const auto& [flag, n] : {std::pair{"--seq", req.train.seq}, std::pair{"--gen-context", req.gen.context}})
    if (n > req.model.max_position_embeddings)
      usage_error(fmt::format("{} {}: longer than the model's context, {} positions (max_position_embeddings of {})",
                              flag, n, req.model.max_position_embeddings, req.model_name));
  if (a.get("--weights-device-layers")) {
    if (a.has("--cpu")) usage_error("--weights-device-layers with --cpu: the CPU backend's weights are in host RAM");
    req.train.weights_device_layers = req.gen.weights_device_layers = nonnegative_int(a, "--weights-device-layers", 0);
  }
  if (a.get("--tp") || a.get("--pp")) {
    Layout l;
    l.tp = static_cast<int>(positive_int(a, "--tp", 1));
    l.pp = static_cast<int>(positive_int(a, "--pp", 1));
    if (req.gpus % (l.tp * l.pp) != 0)
      usage_error(fmt::format("--tp {} × --pp {} = {} does not divide --gpus {}", l.tp, l.pp, l.tp * l.pp, req.gpus));
    l.dp = req.gpus / (l.tp * l.pp);
    req.layout = l;
  }
  req.host_mem_gb = positive_double(a, "--host-mem");
  if (const auto u = positive_double(a, "--usable")) {
    if (*u > 1) usage_error(fmt::format("--usable {}: a fraction in (0, 1]", *u));
    req.usable = *u;
  }

  Cluster& cl = req.cluster;
  if (const auto g = a.get("--gpu")) {
    cl.gpu = gpu_preset(*g);
  } else {
    cl.gpu = {.name = "custom", .intra_name = "link", .source = "flags"};
    if (req.backend == Backend::Gpu) {
      if (!a.get("--gpu-mem")) usage_error("give --gpu NAME or --gpu-mem GB (device memory per GPU)");
      cl.gpu.bf16_tflops = 312, cl.gpu.hbm_tbps = 2.0, cl.gpu.intra_gbps = 25, cl.gpu.intra_name = "PCIe 4 x16";
    }
  }
  if (const auto v = positive_double(a, "--gpu-mem")) {
    if (a.get("--gpu") && *v != cl.gpu.mem_gb) cl.gpu.name += fmt::format(" at --gpu-mem {:g}", *v);
    cl.gpu.mem_gb = *v;
  }
  if (const auto v = positive_double(a, "--tflops")) cl.gpu.bf16_tflops = *v;
  if (const auto v = positive_double(a, "--hbm-tbps")) cl.gpu.hbm_tbps = *v;
  if (const auto l = a.get("--link")) cl.gpu.intra_gbps = link_preset_gbps(*l), cl.gpu.intra_name = *l;
  if (const auto v = positive_double(a, "--intra-gbps")) cl.gpu.intra_gbps = *v, cl.gpu.intra_name = "link";
  if (const auto v = positive_double(a, "--host-gbps")) cl.gpu.host_gbps = *v;
  if (a.get("--gpus-per-node")) cl.gpu.gpus_per_node = static_cast<int>(positive_int(a, "--gpus-per-node"));
  cl.network = network_preset(a.get("--network").value_or("hdr"));
  if (const auto v = positive_double(a, "--inter-gbit")) cl.network.gbit_per_nic = *v, cl.network.name = "custom";
  cl.nics_per_node = static_cast<int>(positive_int(a, "--nics-per-node", cl.gpu.gpus_per_node));
  if (const auto v = positive_double(a, "--mfu")) {
    if (*v > 1) usage_error(fmt::format("--mfu {}: a fraction in (0, 1]", *v));
    cl.mfu = *v;
  }
  if (const auto v = positive_double(a, "--hbm-eff")) {
    if (*v > 1) usage_error(fmt::format("--hbm-eff {}: a fraction in (0, 1]", *v));
    cl.hbm_efficiency = *v;
  }
  if (const auto v = positive_double(a, "--latency-us")) cl.collective_latency_s = *v * 1e-6;

  const PlanResult plan = make_plan(req);
  const std::string out = a.has("--json") ? plan_json(plan) : plan_text(plan);
  std::fputs(out.c_str(), stdout);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return app_main([&] { return run(argc, argv); });
}
