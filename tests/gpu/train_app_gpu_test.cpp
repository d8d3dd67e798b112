// adapt_train on cuda:0 against the same binary on the CPU, on the tiny model (adapt_model make --preset
// tiny, as tests/e2e/adapt_train_e2e_test.cpp makes it) with a lora+bottleneck adapter, 3 steps:
//   * runtime.device = "cuda", weights_dtype = "f32": the CPU's losses within 1e-4 relative and its
//     exported adapter within 1e-4 (of each tensor's largest magnitude); the same after a run stopped at
//     step 2 and resumed on the GPU (checkpoint values back to the device);
//   * optim.offload = true with f32 device weights: the same within 1e-4 of the CPU run with offload;
//   * optim.offload = true with bf16 device weights (the default): the CPU's losses within the bf16
//     tolerance, every step finite, and an adapter that trained (AdamW's first steps move each element by
//     about ±lr whatever the gradient's size, so a bf16-rounded gradient near 0 may flip an element's
//     step: its values are not compared element by element);
//   * optim.offload with optim.overlap (the CPU AdamW during the next forward, gradients streamed per
//     layer, write-backs straight to the device) against optim.overlap = false: the same losses and
//     adapter bit for bit, f32 and bf16 device weights;
//   * 2 MPI ranks sharing cuda:0 (mpiexec) at tp2 and at pp2 (and 4 at tp2 x pp2), f32 weights: the one-GPU run's
//   losses within
//     1e-4 relative and its exported adapter (gathered over tp from the device) within 1e-4; the tp and
//     pp groups must use MPI (NCCL refuses two ranks on one GPU); the same at dp2 with parallel.zero1 =
//     false (the optimizer state on the GPU, the gradients averaged over a device dp communicator) and
//     at dp2 with ZeRO-1 (reduce-scatter, DeviceAdamW over each replica's chunks, all-gather, all on the
//     GPU); at dp2 with ZeRO-1 and offload, the overlapped
//     update (units all-gathered as the forward reaches them) as the synchronous one, bit for bit;
//   * with a GPU per rank (runtime.device = "cuda", at least 2 GPUs; 4 for tp2 x pp2): tp2, pp2 (also with one
//     micro-batch a step, where each stage's first exchange is grouped on one side only), dp2 with ZeRO-1 (on
//     the GPUs, and with optim.offload in host RAM) and tp2 x pp2 on NCCL groups, the one-GPU run's losses and
//     adapter within 1e-4 (skipped, saying why, with fewer GPUs);
//   * runtime.attention_dtype on a head_dim-64 model: bf16 on tensor cores ("auto") and f32 agree with each
//     other and the CPU within the bf16 tolerance;
//   * runtime.weights_device_layers = 0 and 1 (base weights streamed from host RAM), and at pp2: the
//     losses and adapter of the weights on the GPU, bit for bit; on the emulator cut to 64 MiB, a model
//     that does not fit trains streamed (an out-of-memory naming the setting without it);
//   * adapt_plan's per-GPU memory against the run's allocated peak (metrics.jsonl), within 10%, on an
//     8B-shaped model of 2 layers: plain, with recomputation and with optim.offload.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "adapters/adapter_files.h"
#include "adapters/adapter_set.h"
#include "backend/backend.h"
#include "core/file.h"
#include "model/llama_config.h"
#if ADAPT_HAVE_CUDA
#include "ops/cuda/gemm_cublaslt.h"
#endif
#include "tests/gpu/gpu_tolerances.h"
#include "tests/support/plan_memory_cases.h"
#include "tests/support/test_support.h"

using namespace adapt;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Device f32 against the CPU: the GEMMs and reductions sum in other orders (~1e-6 relative per step);
// 3 AdamW steps keep that well inside 1e-4.
constexpr double kTolTrainF32 = 1e-4;

/// The values of `key` in the records of kind `kind` of a metrics.jsonl, in order.
std::vector<double> metrics_values(const fs::path& metrics, const char* kind, const char* key) {
  std::vector<double> v;
  const std::string text = file_read_text(metrics);
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t nl = text.find('\n', start);
    const json j = json::parse(text.substr(start, nl - start));
    if (j["kind"] == kind) v.push_back(j[key].get<double>());
    start = nl + 1;
  }
  return v;
}

struct Job {
  test::TempDir dir{"adapt-train-gpu"};
  fs::path toml;
  /// The tiny model made by adapt_model make with `model_flags` (its preset, or a recipe with overrides).
  explicit Job(const std::string& model_flags = "--preset tiny") {
    std::string log;
    const std::string make = test::bin("adapt_model") + " make " + model_flags + " --out " + (dir / "model").string();
    REQUIRE_MESSAGE(test::run_command(make, &log) == 0, make, "\n", log);
    toml = dir / "train.toml";
    test::write_bytes(toml,
                      "[model]\npath = \"model\"\n[adapter]\nkind = \"lora+bottleneck\"\n[adapter.lora]\nr = 4\n"
                      "alpha = 8.0\ntargets = [\"q\", \"k\", \"v\", \"o\", \"gate\", \"up\", \"down\"]\n"
                      "[adapter.bottleneck]\nsize = 8\nplacement = \"houlsby\"\n[data]\ninputs = [\"" +
                          (test::source_dir() / "inputs/corpus").string() +
                          "\"]\nglobs = [\"**/*.py\", \"**/*.cpp\"]\nseq_len = 32\neval_documents = 1\n"
                          "cache_dir = \"cache\"\n[optim]\nlr = 1e-2\nwarmup_steps = 1\n"
                          "[train]\nsteps = 3\nmicro_batch = 2\ngrad_accum = 2\neval_every = 0\neval_batches = 2\n"
                          "[checkpoint]\nevery = 0\n");
  }
  /// adapt_train into run folder `name` (on `ranks` MPI ranks through mpiexec when more than one); its
  /// output.
  std::string train(const std::string& name, const std::string& sets, int ranks = 1) {
    std::string out;
    // One OpenMP thread per rank: ranks sharing the cores, each with a thread per core, run many times slower.
    const std::string launcher = ranks == 1 ? std::string()
                                            : std::string(ADAPT_MPIEXEC) + " -n " + std::to_string(ranks) + " " +
                                                  ADAPT_MPIEXEC_FLAGS + " env OMP_NUM_THREADS=1 ";
    const std::string cmd = launcher + test::bin("adapt_train") + " --config " + toml.string() +
                            " --set run.dir=" + (dir / name).string() + " " + sets;
    const int rc = test::run_command(cmd, &out);
    INFO(cmd, "\n", out);
    REQUIRE(rc == 0);
    return out;
  }
  std::vector<double> losses(const std::string& name, const char* kind = "train", const char* key = "loss") {
    return metrics_values(dir / name / "metrics.jsonl", kind, key);
  }
  adapters::AdapterSet adapter(const std::string& name) {
    return adapters::adapter_load(dir / name / "adapter", model::llama_config_load(dir / "model"));
  }
};

void check_losses(const std::vector<double>& got, const std::vector<double>& want, double tol) {
  REQUIRE(got.size() == want.size());
  REQUIRE(!want.empty());
  for (std::size_t i = 0; i < want.size(); ++i) {
    CAPTURE(i);
    CAPTURE(got[i]);
    CAPTURE(want[i]);
    REQUIRE(std::isfinite(got[i]));
    CHECK(std::abs(got[i] - want[i]) <= tol * std::abs(want[i]));
  }
}

/// Every tensor of `got` against `want`, relative to the tensor's largest magnitude in `want`.
void check_adapter(const adapters::AdapterSet& got, const adapters::AdapterSet& want, double tol) {
  const auto g = got.parameters(), w = want.parameters();
  REQUIRE(g.size() == w.size());
  for (std::size_t i = 0; i < w.size(); ++i) {
    CAPTURE(w[i].name);
    REQUIRE(g[i].name == w[i].name);
    REQUIRE(g[i].value.numel() == w[i].value.numel());
    const test::Mismatch m =
        test::compare_relative(g[i].value.data<float>(), w[i].value.data<float>(), w[i].value.numel());
    INFO(m.str());
    CHECK(m.rel <= tol);
  }
}

}  // namespace

TEST_CASE("adapt_train on cuda:0 with f32 weights: the CPU's losses and adapter, straight and resumed") {
  Job job;
  job.train("cpu", "");
  const std::vector<double> cpu = job.losses("cpu");
  REQUIRE(cpu.size() == 3);
  CHECK(cpu.back() < cpu.front());

  const std::string out = job.train("gpu", "--set runtime.device=cuda --set runtime.weights_dtype=f32");
  CHECK_MESSAGE(out.find("f32 weights on cuda:0") != std::string::npos, out);
  check_losses(job.losses("gpu"), cpu, kTolTrainF32);
  check_losses(job.losses("gpu", "eval", "eval_loss"), job.losses("cpu", "eval", "eval_loss"), kTolTrainF32);
  check_adapter(job.adapter("gpu"), job.adapter("cpu"), kTolTrainF32);

  // Stopped after 2 steps (a checkpoint) and run again: the checkpoint's values go back to the GPU.
  job.train("resumed", "--set runtime.device=cuda:0 --set runtime.weights_dtype=f32 --set train.stop_after=2");
  const std::string again = job.train("resumed", "--set runtime.device=cuda:0 --set runtime.weights_dtype=f32");
  CHECK_MESSAGE(again.find("resuming from") != std::string::npos, again);
  check_losses(job.losses("resumed"), cpu, kTolTrainF32);
  check_adapter(job.adapter("resumed"), job.adapter("cpu"), kTolTrainF32);
}

TEST_CASE("adapt_train on cuda:0 with optim.offload: f32 weights as the CPU, bf16 weights within bf16 tolerance") {
  Job job;
  job.train("cpu", "--set optim.offload=true");
  const std::vector<double> cpu = job.losses("cpu");
  REQUIRE(cpu.size() == 3);

  job.train("f32", "--set optim.offload=true --set runtime.device=cuda --set runtime.weights_dtype=f32");
  check_losses(job.losses("f32"), cpu, kTolTrainF32);
  check_adapter(job.adapter("f32"), job.adapter("cpu"), kTolTrainF32);

  const std::string out = job.train("bf16", "--set optim.offload=true --set runtime.device=cuda");
  CHECK_MESSAGE(out.find("bf16 weights on cuda:0") != std::string::npos, out);
  check_losses(job.losses("bf16"), cpu, test::kTolBf16);
  // It trained: the LoRA B factors left their initial zeros.
  double b_max = 0;
  for (const adapters::AdapterParam& p : job.adapter("bf16").parameters()) {
    if (p.name.find(".lora_b") == std::string::npos) continue;
    for (std::int64_t i = 0; i < p.value.numel(); ++i) {
      REQUIRE(std::isfinite(p.value.data<float>()[i]));
      b_max = std::max(b_max, static_cast<double>(std::abs(p.value.data<float>()[i])));
    }
  }
  CHECK(b_max > 0.0);
}

TEST_CASE("adapt_train on cuda:0 with optim.offload: overlapped and synchronous updates agree bit for bit") {
  Job job;
  for (const char* weights : {"f32", "bf16"}) {
    CAPTURE(weights);
    const std::string sets =
        std::string("--set optim.offload=true --set runtime.device=cuda:0 --set runtime.weights_dtype=") + weights +
        " --set optim.overlap=";
    const std::string sync = std::string("sync_") + weights, overlap = std::string("overlap_") + weights;
    job.train(sync, sets + "false");
    const std::string out = job.train(overlap, sets + "true");
    CHECK_MESSAGE(out.find("overlapping the next step's forward") != std::string::npos, out);
    const std::vector<double> want = job.losses(sync), got = job.losses(overlap);
    REQUIRE(want.size() == 3);
    REQUIRE(got.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) CHECK(got[i] == want[i]);
    check_adapter(job.adapter(overlap), job.adapter(sync), 0.0);
  }
}

// runtime.weights_device_layers (model/weight_stream.h): the base weights of the layers past the first N
// in pinned host RAM, staged to the GPU layer by layer; the same kernels on the same values, so the losses
// and the adapter are those of every layer on the GPU, bit for bit: on one GPU with the overlapped offload
// (its own copy stream beside the weights'), and at pp2 on 2 ranks sharing the GPU (each stage streams its
// layer).
TEST_CASE(
    "adapt_train on cuda:0 with base weights in host RAM (runtime.weights_device_layers): the losses and "
    "adapter of the weights on the GPU, bit for bit") {
  Job job;
  const std::string base = "--set runtime.device=cuda:0 --set optim.offload=true";
  job.train("whole", base);
  const std::vector<double> whole = job.losses("whole");
  REQUIRE(whole.size() == 3);
  for (const int n : {0, 1}) {
    CAPTURE(n);
    const std::string name = "streamed" + std::to_string(n);
    const std::string out = job.train(name, base + " --set runtime.weights_device_layers=" + std::to_string(n));
    CHECK_MESSAGE(out.find("the weights of layers " + std::to_string(n) + "..1 stay in host RAM") != std::string::npos,
                  out);
    const std::vector<double> got = job.losses(name);
    REQUIRE(got.size() == whole.size());
    for (std::size_t i = 0; i < whole.size(); ++i) CHECK(got[i] == whole[i]);
    check_adapter(job.adapter(name), job.adapter("whole"), 0.0);
  }
  job.train("pp2", base + " --set parallel.pp=2", 2);
  const std::string out =
      job.train("pp2-streamed", base + " --set parallel.pp=2 --set runtime.weights_device_layers=0", 2);
  CHECK_MESSAGE(out.find("stay in host RAM") != std::string::npos, out);
  const std::vector<double> want = job.losses("pp2"), got = job.losses("pp2-streamed");
  REQUIRE(want.size() == 3);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(got[i] == want[i]);
  check_adapter(job.adapter("pp2-streamed"), job.adapter("pp2"), 0.0);
}

// runtime.attention_dtype (model/attention_compute.h): with head_dim 64 the default "auto" runs attention in
// bf16 on the tensor-core kernels, "f32" keeps the CPU's arithmetic; each run's log says which. The losses
// of the two, and of the CPU, agree within the bf16 tolerance, and differ (the bf16 path ran).
TEST_CASE("adapt_train on cuda:0 with runtime.attention_dtype: bf16 on tensor cores (head_dim 64) and f32") {
  Job job("--recipe " + (test::source_dir() / "inputs/models/tiny.toml").string() +
          " --set shape.head_dim=64 --set shape.hidden_size=128");
  job.train("cpu", "");
  const std::string bf16 = job.train("bf16", "--set runtime.device=cuda:0");
  CHECK_MESSAGE(bf16.find("attention in bf16 on tensor cores") != std::string::npos, bf16);
  const std::string f32 = job.train("f32", "--set runtime.device=cuda:0 --set runtime.attention_dtype=f32");
  CHECK_MESSAGE(f32.find("attention in f32") != std::string::npos, f32);
  const std::vector<double> cpu = job.losses("cpu"), got = job.losses("bf16"), want = job.losses("f32");
  REQUIRE(cpu.size() == 3);
  check_losses(got, want, test::kTolBf16);
  check_losses(got, cpu, test::kTolBf16);
  CHECK(got != want);
}

// What the streaming is for: weights that do not fit the GPU. On the emulator with its device memory cut to
// 64 MiB (CUDA_EMU_DEVICE_MIB), a model of 8 layers (hidden 512, FFN 2048: 60 MiB of bf16 weights) fails to
// load with every layer on the GPU, with an out-of-memory that names runtime.weights_device_layers, and
// trains with weights_device_layers = 0, to the losses of the same job on a GPU with room for every layer.
TEST_CASE("adapt_train: weights that do not fit the GPU train streamed from host RAM (the emulator cut to 64 MiB)") {
#if !ADAPT_CUDA_EMU
  MESSAGE(
      "not run: it needs the emulated GPU (ADAPT_CUDA=EMU), whose memory CUDA_EMU_DEVICE_MIB can cut below "
      "the model's; a real GPU holds this model whole");
  return;
#endif
  test::TempDir dir("adapt-train-gpu-stream");
  std::string log;
  const std::string make = test::bin("adapt_model") + " make --recipe " +
                           (test::source_dir() / "inputs/models/tiny.toml").string() + " --out " +
                           (dir / "model").string() +
                           " --layers 8 --set shape.hidden_size=512 --set shape.intermediate_size=2048 "
                           "--set shape.n_heads=8 --set shape.n_kv_heads=2 --set shape.head_dim=64";
  REQUIRE_MESSAGE(test::run_command(make, &log) == 0, make, "\n", log);
  const fs::path toml = dir / "train.toml";
  test::write_bytes(toml,
                    "[model]\npath = \"model\"\n[adapter]\nkind = \"lora\"\n[adapter.lora]\nr = 4\n[data]\n"
                    "inputs = [\"" +
                        (test::source_dir() / "inputs/corpus").string() +
                        "\"]\nglobs = [\"**/*.py\"]\nseq_len = 16\neval_documents = 1\ncache_dir = \"cache\"\n"
                        "[optim]\nlr = 1e-2\nwarmup_steps = 1\noffload = true\n[train]\nsteps = 2\n"
                        "micro_batch = 1\ngrad_accum = 1\nrecompute = true\neval_every = 0\neval_batches = 1\n"
                        "[checkpoint]\nevery = 0\n[runtime]\ndevice = \"cuda:0\"\n");
  auto train = [&](const std::string& name, const std::string& env, const std::string& sets, std::string* out) {
    return test::run_command(env + " " + test::bin("adapt_train") + " --config " + toml.string() +
                                 " --set run.dir=" + (dir / name).string() + " " + sets,
                             out);
  };
  const std::string cut = "env CUDA_EMU_DEVICE_MIB=64", stream = "--set runtime.weights_device_layers=0";
  std::string out;
  CHECK(train("whole-cut", cut, "", &out) == 4);  // CUDA failure
  CHECK_MESSAGE(out.find("out of memory on cuda:0") != std::string::npos, out);
  CHECK_MESSAGE(
      out.find("while copying the base weights to cuda:0: runtime.weights_device_layers = N") != std::string::npos,
      out);
  REQUIRE_MESSAGE(train("stream-cut", cut, stream, &out) == 0, out);
  CHECK_MESSAGE(out.find("the weights of layers 0..7 stay in host RAM") != std::string::npos, out);
  REQUIRE_MESSAGE(train("whole", "env", "", &out) == 0, out);
  const std::vector<double> want = metrics_values(dir / "whole" / "metrics.jsonl", "train", "loss"),
                            got = metrics_values(dir / "stream-cut" / "metrics.jsonl", "train", "loss");
  REQUIRE(want.size() == 2);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(got[i] == want[i]);
}

TEST_CASE(
    "adapt_train at tp2, pp2, dp2 (2 ranks) and tp2 x pp2 (4 ranks) sharing cuda:0: the one-GPU run's losses "
    "and adapter") {
  Job job;
  const std::string f32 = "--set runtime.device=cuda:0 --set runtime.weights_dtype=f32";
  job.train("one", f32);
  const std::vector<double> one = job.losses("one");
  REQUIRE(one.size() == 3);
  for (const char* layout : {"--set parallel.tp=2", "--set parallel.pp=2"}) {
    CAPTURE(layout);
    const std::string name = std::string(layout).find("tp") != std::string::npos ? "tp2" : "pp2";
    const std::string out = job.train(name, f32 + " " + layout, 2);
    // Two ranks on one GPU: NCCL refuses them, MPI stages the device buffers through host memory.
    const std::string axis = name.substr(0, 2);
    CHECK_MESSAGE(out.find(axis + " communicator on the GPUs: mpi") != std::string::npos, out);
    CHECK_MESSAGE(out.find("share GPU") != std::string::npos, out);
    check_losses(job.losses(name), one, kTolTrainF32);
    check_losses(job.losses(name, "eval", "eval_loss"), job.losses("one", "eval", "eval_loss"), kTolTrainF32);
    check_adapter(job.adapter(name), job.adapter("one"), kTolTrainF32);
  }
  // tp2 x pp2 on 4 ranks: both groups staged through MPI.
  {
    const std::string out = job.train("tp2pp2", f32 + " --set parallel.tp=2 --set parallel.pp=2", 4);
    CHECK_MESSAGE(out.find("tp communicator on the GPUs: mpi") != std::string::npos, out);
    CHECK_MESSAGE(out.find("pp communicator on the GPUs: mpi") != std::string::npos, out);
    check_losses(job.losses("tp2pp2"), one, kTolTrainF32);
    check_adapter(job.adapter("tp2pp2"), job.adapter("one"), kTolTrainF32);
  }
  // dp2: each replica runs one of the micro-step's two sequences. The replicas keep AdamW's state on the
  // GPU and reduce over a device dp group (MPI staging here): without ZeRO-1 they average their
  // gradients; with it they reduce-scatter them, each updates its chunks, and the chunks are all-gathered.
  for (const bool zero1 : {false, true}) {
    CAPTURE(zero1);
    const std::string name = zero1 ? "dp2-zero1" : "dp2";
    const std::string out = job.train(name, f32 + " --set parallel.zero1=" + (zero1 ? "true" : "false"), 2);
    CHECK_MESSAGE(out.find("dp communicator on the GPUs: mpi") != std::string::npos, out);
    CHECK_MESSAGE((out.find("gradients averaged over the 2 dp replicas on the GPUs") != std::string::npos) == !zero1,
                  out);
    CHECK_MESSAGE((out.find("ZeRO-1 over the 2 dp replicas on the GPUs") != std::string::npos) == zero1, out);
    CHECK_MESSAGE(out.find("optimizer state in host RAM") == std::string::npos, out);
    check_losses(job.losses(name), one, kTolTrainF32);
    check_losses(job.losses(name, "eval", "eval_loss"), job.losses("one", "eval", "eval_loss"), kTolTrainF32);
    check_adapter(job.adapter(name), job.adapter("one"), kTolTrainF32);
  }
}

TEST_CASE(
    "adapt_train with a GPU per rank (NCCL groups): tp2, pp2 (also with one micro-batch a step), dp2 with "
    "ZeRO-1 (with and without offload), tp2 x pp2 equal the one-GPU run") {
  // runtime.device = "cuda": each rank takes the GPU of its local rank, so every group has a GPU per
  // member and its communicator is NCCL (MPI staging only in a build without NCCL).
  const int gpus = backend::cuda_device_count();
  if (gpus < 2) {
    MESSAGE("not run: this machine has " << gpus << " GPU(s); a GPU per rank needs at least 2 (4 for tp2 x pp2)");
    return;
  }
  Job job;
  const std::string f32 = "--set runtime.device=cuda --set runtime.weights_dtype=f32";
  job.train("one", f32);
  REQUIRE(job.losses("one").size() == 3);
  // One micro-batch a step: each pipeline stage's first exchange is grouped on one side only (1F1B).
  const std::string one_micro_batch = " --set train.micro_batch=4 --set train.grad_accum=1";
  job.train("one-micro-batch", f32 + one_micro_batch);
  const std::string kind = ADAPT_HAVE_NCCL ? "nccl" : "mpi";
  struct Layout {
    std::string name;
    std::string sets;
    int ranks;
    std::vector<const char*> axes;  // the groups of more than one rank
    std::string reference = "one";  // the one-GPU run of the same job
  };
  const Layout layouts[] = {
      {"tp2", " --set parallel.tp=2", 2, {"tp"}},
      {"pp2", " --set parallel.pp=2", 2, {"pp"}},
      {"pp2-one-micro-batch", " --set parallel.pp=2" + one_micro_batch, 2, {"pp"}, "one-micro-batch"},
      {"dp2-zero1", " --set parallel.zero1=true", 2, {"dp"}},
      // The optimizer state in host RAM: the dp group reduces host buffers (MPI) whatever the GPUs.
      {"dp2-zero1-offload", " --set parallel.zero1=true --set optim.offload=true", 2, {}},
      {"tp2pp2", " --set parallel.tp=2 --set parallel.pp=2", 4, {"tp", "pp"}},
  };
  for (const Layout& l : layouts) {
    CAPTURE(l.name);
    if (l.ranks > gpus) {
      MESSAGE("not run: " << l.name << " needs " << l.ranks << " GPUs, this machine has " << gpus);
      continue;
    }
    const std::string out = job.train(l.name, f32 + l.sets, l.ranks);
    for (const char* axis : l.axes) {
      CHECK_MESSAGE(out.find(std::string(axis) + " communicator on the GPUs: " + kind) != std::string::npos, out);
    }
    CHECK_MESSAGE(out.find("share GPU") == std::string::npos, out);
    check_losses(job.losses(l.name), job.losses(l.reference), kTolTrainF32);
    check_losses(job.losses(l.name, "eval", "eval_loss"), job.losses(l.reference, "eval", "eval_loss"), kTolTrainF32);
    check_adapter(job.adapter(l.name), job.adapter(l.reference), kTolTrainF32);
  }
}

TEST_CASE("adapt_train at dp2 with ZeRO-1 and optim.offload on 2 ranks sharing cuda:0: overlapped as synchronous") {
  // The overlapped update all-gathers each unit of whole layers as the next forward reaches it and
  // copies it to the GPU from pinned memory; the synchronous one gathers everything after the update.
  Job job;
  const std::string sets =
      "--set runtime.device=cuda:0 --set runtime.weights_dtype=f32 --set parallel.zero1=true --set optim.offload=true";
  job.train("dp2-zero1-sync", sets + " --set optim.overlap=false", 2);
  const std::string out = job.train("dp2-zero1-overlap", sets + " --set optim.overlap=true", 2);
  CHECK_MESSAGE(out.find("overlapping the next step's forward; ZeRO-1 over 2 replicas") != std::string::npos, out);
  const std::vector<double> want = job.losses("dp2-zero1-sync"), got = job.losses("dp2-zero1-overlap");
  REQUIRE(want.size() == 3);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < want.size(); ++i) CHECK(got[i] == want[i]);
  check_adapter(job.adapter("dp2-zero1-overlap"), job.adapter("dp2-zero1-sync"), 0.0);
}

namespace {

// adapt_plan's per-GPU bytes (bf16 weights, the adapter, its gradients and AdamW state, the f32
// activations and workspaces) against the most the run's tensors held at once on the GPU
// (metrics.jsonl's device_allocated_peak: the caching allocator's peak, which leaves out the CUDA
// context and the libraries' own memory, as the plan does), for each job variant of kPlanMemoryCases:
// the model made by `adapt_model make MAKE_FLAGS`, LoRA r=16 on every projection, `seq` tokens x 1.
void check_plan_memory(const std::string& make_flags, std::int64_t seq, const std::string& what) {
  test::TempDir dir("adapt-plan-gpu");
  std::string log;
  const std::string make = test::bin("adapt_model") + " make " + make_flags + " --out " + (dir / "model").string();
  REQUIRE_MESSAGE(test::run_command(make, &log) == 0, make, "\n", log);
  const fs::path toml = dir / "train.toml";
  test::write_bytes(toml,
                    "[model]\npath = \"model\"\n[adapter]\nkind = \"lora\"\n[adapter.lora]\nr = 16\nalpha = 32.0\n"
                    "targets = [\"q\", \"k\", \"v\", \"o\", \"gate\", \"up\", \"down\"]\n[data]\ninputs = [\"" +
                        (test::source_dir() / "inputs/corpus").string() +
                        "\"]\nglobs = [\"**/*\"]\nseq_len = " + std::to_string(seq) +
                        "\ncross_document_attention = true\n"
                        "cache_dir = \"cache\"\n[optim]\nlr = 1e-4\n[train]\nsteps = 2\nmicro_batch = 1\n"
                        "eval_every = 0\n[checkpoint]\nevery = 0\nkeep_last = 1\n[runtime]\ndevice = \"cuda:0\"\n"
                        "weights_dtype = \"bf16\"\n");
  for (std::size_t i = 0; i < std::size(test::kPlanMemoryCases); ++i) {
    const test::PlanMemoryCase& c = test::kPlanMemoryCases[i];
    CAPTURE(c.name);
    const fs::path run_dir = dir / ("run-" + std::to_string(i));
    std::string out;
    const std::string cmd =
        test::bin("adapt_train") + " --config " + toml.string() + " --set run.dir=" + run_dir.string() + c.train_set;
    const int rc = test::run_command(cmd, &out);
    INFO(cmd, "\n", out);
    REQUIRE(rc == 0);
    const std::vector<double> peaks = metrics_values(run_dir / "metrics.jsonl", "train", "device_allocated_peak");
    REQUIRE(!peaks.empty());
    const double measured = *std::max_element(peaks.begin(), peaks.end());
    REQUIRE(measured > 0);
    std::string plan_out;
    const std::string plan = test::bin("adapt_plan") + " --json --model " + (dir / "model").string() +
                             " --gpus 1 --gpu-mem 80 --seq " + std::to_string(seq) +
                             " --micro-batch 1 --adapter lora:r=16,alpha=32,targets=all" + c.plan_flag;
    REQUIRE_MESSAGE(test::run_command(plan, &plan_out) == 0, plan, "\n", plan_out);
    const json p = json::parse(plan_out);
    const double predicted = p["layouts"][0]["memory"]["device_total"].get<double>();
#if ADAPT_HAVE_CUDA
    // The plan's cuBLASLt workspace is the one the GEMMs get.
    CHECK(p["layouts"][0]["memory"]["libraries"].get<std::uint64_t>() == ops::cuda::kGemmWorkspaceBytes);
#endif
    const double ratio = predicted / measured;
    MESSAGE(what << ", seq " << seq << " x 1, LoRA r=16 on every projection, bf16 weights, " << std::string(c.name)
                 << ": predicted " << predicted / 1048576.0 << " MiB, allocated peak " << measured / 1048576.0
                 << " MiB (ratio " << ratio << ")");
    CHECK(std::fabs(ratio - 1.0) <= 0.10);
  }
}

}  // namespace

TEST_CASE("adapt_plan's memory per GPU is within 10% of adapt_train's allocated peak on cuda:0 (8B shape, 2 layers)") {
  // Llama-3.1-8B's shapes with 2 layers (1.5 G parameters, 3 GB in bf16), so that the model and the
  // activations dominate.
#if ADAPT_CUDA_EMU
  MESSAGE("not run on cuda_emu (ADAPT_CUDA=EMU): one step of an 8B-shaped layer takes hours on the emulated GEMM");
  return;
#endif
  check_plan_memory("--preset llama-3.1-8b --layers 2 --dtype bf16", 1024, "8B shape, 2 layers");
}

TEST_CASE("adapt_plan's memory per GPU is within 10% of adapt_train's allocated peak on cuda:0 (a small model)") {
  // A shape the emulator runs in seconds, with Llama's proportions (head_dim 64, so attention runs in bf16
  // on the tensor-core kernels as at full size) and long enough sequences that the activations, not the
  // weights, dominate the peak: the plan's model of the GPU pass (its workspaces, the bf16 copies of GEMM
  // and attention inputs) checked on the caching allocator the GPU uses.
  check_plan_memory("--recipe " + (test::source_dir() / "inputs/models/tiny.toml").string() +
                        " --layers 4 --set shape.hidden_size=256 --set shape.intermediate_size=896"
                        " --set shape.head_dim=64 --set shape.n_heads=4 --set shape.n_kv_heads=2"
                        " --set shape.max_position_embeddings=4096",
                    1024, "small model (hidden 256, 4 layers)");
}
