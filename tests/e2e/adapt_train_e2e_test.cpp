// adapt_train end to end on the tiny model: training lowers the loss; a run stopped and resumed gives
// the same losses and bit-identical adapter weights as an uninterrupted run (LoRA; LoRA with dropout,
// refused under another adapter.seed; LoRA with a bottleneck adapter together), and its checkpoint holds
// the LR schedule's state (the rates the metrics show); a signal writes a checkpoint and exits 75; bad jobs, diverging
// runs, a checkpoint of another base model or adapter kind, a corrupt checkpoint and a full disk each fail (or recover)
// as documented. The merged model (adapt_train --merge, adapt_model merge) scores like base + adapter, keeps the base's
// dtype and sharding, and is refused or cleaned up as documented. runtime.device = "cuda" without a usable GPU stops
// before anything is written, naming the key, CUDA's reason and the way back to the CPU (training on a GPU itself:
// tests/gpu/train_app_gpu_test.cpp). optim.offload with optim.overlap (the CPU AdamW during the next forward), without
// it, and no offload give byte-identical adapters and the same losses and gradient norms, on one process (LoRA and
// lora+bottleneck, micro-batches, recomputation, a resumed run) and, under mpiexec, at tp2 × dp2, dp2 and
// pp2, and at dp2 and pp2 × dp2 with ZeRO-1 (the units all-gathered as the forward reaches them).
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <cctype>
#include <cmath>
#include <fstream>

#include "checkpoint/checkpoint.h"
#include "core/file.h"
#include "core/strings.h"
#include "runtime_device_refusals.h"
#include "tests/support/test_support.h"

using namespace adapt;
using json = nlohmann::json;

namespace {

using test::bin;
using test::Run;
using test::run;

constexpr const char* kLora =
    "kind = \"lora\"\n[adapter.lora]\nr = 4\nalpha = 8.0\ntargets = [\"q\", \"v\", \"down\"]\n";
constexpr const char* kLoraBottleneck =
    "kind = \"lora+bottleneck\"\n[adapter.lora]\nr = 4\nalpha = 8.0\ntargets = [\"q\", \"v\", \"down\"]\n"
    "[adapter.bottleneck]\nsize = 8\nplacement = \"houlsby\"\nactivation = \"swish\"\n";

/// A short held-out text (within one 32-token row, so adapt_train's eval scores it as adapt_eval does),
/// as the job's eval_inputs; EOS is not appended, as adapt_eval does not.
constexpr const char* kEvalData = "eval_inputs = [\"eval.jsonl\"]\nadd_eos = false\n";

struct Job {
  test::TempDir dir;
  fs::path toml;
  explicit Job(const std::string& extra = "", const std::string& adapter = kLora,
               const std::string& data = "eval_documents = 1\n", const std::string& model_args = "") {
    REQUIRE(run(bin("adapt_model") + " make --preset tiny --out " + (dir / "model").string() + " " + model_args).code ==
            0);
    test::write_bytes(dir / "eval.jsonl", json({{"text", "int main() { return add(1, 2); }"}}).dump() + "\n");
    toml = dir / "train.toml";
    test::write_bytes(toml, "[model]\npath = \"model\"\n[adapter]\n" + adapter + "[data]\ninputs = [\"" +
                                (test::source_dir() / "inputs/corpus").string() +
                                "\"]\nglobs = [\"**/*.py\", \"**/*.cpp\"]\nseq_len = 32\n" + data +
                                "cache_dir = \"cache\"\n[optim]\nlr = 1e-2\nwarmup_steps = 2\n"
                                "[train]\nsteps = 10\nmicro_batch = 2\neval_every = 5\neval_batches = 2\n"
                                "[checkpoint]\nevery = 5\nkeep_last = 3\n[run]\ndir = \"run\"\n" +
                                extra);
  }
  Run train(const std::string& args = "") {
    return run(bin("adapt_train") + " --config " + toml.string() + " " + args);
  }
  std::vector<json> metrics(const char* kind) {
    std::vector<json> v;
    const std::string text = file_read_text(dir / "run/metrics.jsonl");
    std::size_t start = 0;
    while (start < text.size()) {
      const std::size_t nl = text.find('\n', start);
      json j = json::parse(text.substr(start, nl - start));
      if (j["kind"] == kind) v.push_back(j);
      start = nl + 1;
    }
    return v;
  }
};

/// adapt_eval on the job's eval.jsonl: the loss it prints, and the per-token log-probabilities.
struct Eval {
  double loss = 0;
  std::vector<double> logprobs;
};

Eval evaluate(const Job& job, const fs::path& model, const std::string& adapter = "") {
  const fs::path per_token = job.dir / "per_token.jsonl";
  Run r = run(bin("adapt_eval") + " --model " + model.string() + " --data " + (job.dir / "eval.jsonl").string() +
              (adapter.empty() ? "" : " --adapter " + adapter) + " --per-token --out " + per_token.string());
  INFO(r.out);
  REQUIRE(r.code == 0);
  Eval e;
  e.loss = std::stod(r.out.substr(r.out.find("loss ") + 5));
  const json rec = json::parse(file_read_text(per_token));
  for (const json& v : rec.at("logprobs"))
    if (!v.is_null()) e.logprobs.push_back(v.get<double>());
  return e;
}

/// Same loss and log-probabilities within `rel` (relative to max(1, |value|)).
void check_same_scores(const Eval& a, const Eval& b, double rel) {
  CHECK(std::fabs(a.loss - b.loss) <= rel * std::max(1.0, std::fabs(b.loss)));
  REQUIRE(a.logprobs.size() == b.logprobs.size());
  REQUIRE(a.logprobs.size() > 3);
  double worst = 0;
  for (std::size_t i = 0; i < a.logprobs.size(); ++i)
    worst = std::max(worst, std::fabs(a.logprobs[i] - b.logprobs[i]) / std::max(1.0, std::fabs(b.logprobs[i])));
  CHECK(worst <= rel);
}

/// The same training losses, bit for bit, step by step (metrics("train") of two runs).
void check_same_losses(const std::vector<json>& got, const std::vector<json>& want) {
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i) {
    CAPTURE(i);
    CHECK(got[i]["loss"].get<double>() == want[i]["loss"].get<double>());
  }
}

/// "adapter weights ... (N parameters...)" of a --dry-run: N.
std::int64_t adapter_params(const std::string& dry_run) {
  const std::size_t at = dry_run.find("(", dry_run.find("adapter weights")) + 1;
  std::string digits;
  for (std::size_t i = at;
       i < dry_run.size() && (std::isdigit(static_cast<unsigned char>(dry_run[i])) || dry_run[i] == ','); ++i)
    if (dry_run[i] != ',') digits.push_back(dry_run[i]);
  REQUIRE(!digits.empty());
  return std::stoll(digits);
}

}  // namespace

TEST_CASE("training lowers the loss and a resumed run is bit-identical to an uninterrupted one") {
  Job straight;
  Run a = straight.train();
  INFO(a.out);
  REQUIRE(a.code == 0);
  auto losses = straight.metrics("train");
  REQUIRE(losses.size() == 10);
  CHECK(losses.back()["host_rss_peak"].get<std::int64_t>() > (std::int64_t{1} << 20));  // bytes, not KiB
  CHECK(a.out.find("step 10/10") != std::string::npos);
  CHECK(fs::exists(straight.dir / "run/adapter/adapter_model.safetensors"));
  CHECK(fs::exists(straight.dir / "run/adapter/adapter_config.json"));
  CHECK(straight.metrics("eval").size() == 3);  // before training (the base model), at 5 and at 10
  // The run folder given where its adapter is meant: the error points at the adapter inside.
  const std::string eval = bin("adapt_eval") + " --model " + (straight.dir / "model").string() + " --data " +
                           (straight.dir / "eval.jsonl").string();
  Run wrong = run(eval + " --adapter " + (straight.dir / "run").string());
  CHECK(wrong.code == 3);
  CHECK(wrong.out.find("its adapter is '" + (straight.dir / "run/adapter").string() + "'") != std::string::npos);
  // adapt_eval is one process: started as two ranks (an srun step's variables), it refuses.
  Run two =
      run("env SLURM_STEP_ID=0 SLURM_PROCID=0 SLURM_STEP_NUM_TASKS=2 SLURM_LOCALID=0 SLURM_NODEID=0 "
          "SLURM_STEP_NUM_NODES=1 SLURM_STEP_TASKS_PER_NODE=2 " +
          eval);
  CHECK(two.code == 2);
  CHECK(two.out.find("adapt_eval runs as one process") != std::string::npos);

  Job resumed;
  Run b1 = resumed.train("--set train.stop_after=5");  // the same job, stopped after 5 steps...
  REQUIRE(b1.code == 0);
  CHECK_FALSE(fs::exists(resumed.dir / "run/adapter"));
  // The checkpoint's LR schedule state: the rates of step 5 and step 6 as the metrics give them. No
  // dropout, so no dropout seed (the data order's state is data/seed, epoch, position).
  {
    const checkpoint::CheckpointState st =
        checkpoint::checkpoint_load(resumed.dir / "run/checkpoints" / checkpoint::checkpoint_file_name(5));
    CHECK(st.strings.at("sched/kind") == "cosine");
    CHECK(st.ints.at("sched/warmup_steps") == 2);
    CHECK(st.ints.at("sched/total_steps") == 10);
    CHECK(st.floats.at("sched/peak_lr") == 1e-2);
    CHECK(st.floats.at("sched/last_lr") == losses[4]["lr"].get<double>());
    CHECK(st.floats.at("sched/next_lr") == losses[5]["lr"].get<double>());
    CHECK(st.ints.count("rng/dropout_seed") == 0);
    CHECK(st.ints.count("data/position") == 1);
  }
  Run b2 = resumed.train();  // ...and run again: it resumes at step 5
  INFO(b2.out);
  REQUIRE(b2.code == 0);
  CHECK(b2.out.find("resuming from") != std::string::npos);
  check_same_losses(resumed.metrics("train"), losses);
  CHECK(file_read_text(resumed.dir / "run/adapter/adapter_model.safetensors") ==
        file_read_text(straight.dir / "run/adapter/adapter_model.safetensors"));

  // Run again with fewer steps than its checkpoint holds: nothing trains, the adapter is the same.
  const std::string adapter_before = file_read_text(straight.dir / "run/adapter/adapter_model.safetensors");
  Run again = straight.train("--set train.steps=5");
  INFO(again.out);
  CHECK(again.code == 0);
  CHECK(again.out.find("is at step 10, which already reaches train.steps = 5") != std::string::npos);
  CHECK(straight.metrics("train").size() == 10);
  CHECK(file_read_text(straight.dir / "run/adapter/adapter_model.safetensors") == adapter_before);
}

TEST_CASE("LoRA dropout: a resumed run draws the same masks, and resumes only with the checkpoint's adapter.seed") {
  const std::string lora_dropout = std::string(kLora) + "dropout = 0.1\n";
  Job straight("", lora_dropout), resumed("", lora_dropout);
  REQUIRE(straight.train().code == 0);
  REQUIRE(resumed.train("--set train.stop_after=5").code == 0);
  const checkpoint::CheckpointState st =
      checkpoint::checkpoint_load(resumed.dir / "run/checkpoints" / checkpoint::checkpoint_file_name(5));
  CHECK(st.ints.at("rng/dropout_seed") == 0);
  // Another seed would draw other masks from step 6 on: refused before anything is written.
  const std::string config_before = file_read_text(resumed.dir / "run/config.toml");
  Run other = resumed.train("--set adapter.seed=3");
  INFO(other.out);
  CHECK(other.code == 2);
  CHECK(other.out.find("drew its LoRA dropout masks with adapter.seed = 0, this job has adapter.seed = 3") !=
        std::string::npos);
  CHECK(file_read_text(resumed.dir / "run/config.toml") == config_before);
  Run b2 = resumed.train();
  INFO(b2.out);
  REQUIRE(b2.code == 0);
  REQUIRE(straight.metrics("train").size() == 10);
  check_same_losses(resumed.metrics("train"), straight.metrics("train"));
  CHECK(file_read_text(resumed.dir / "run/adapter/adapter_model.safetensors") ==
        file_read_text(straight.dir / "run/adapter/adapter_model.safetensors"));
}

// runtime.cpu_matmul_dtype = "bf16": the log says how the products run; the losses follow the f32 run's
// within bf16 rounding (the same data and initialisation), but are not its bits.
TEST_CASE("runtime.cpu_matmul_dtype = bf16: the same run within bf16 rounding of the f32 losses") {
  Job f32, bf16;
  Run a = f32.train("--set train.steps=3");
  Run b = bf16.train("--set train.steps=3 --set runtime.cpu_matmul_dtype=bf16");
  INFO(b.out);
  REQUIRE(a.code == 0);
  REQUIRE(b.code == 0);
  CHECK(b.out.find("CPU products by the base weights in bf16") != std::string::npos);
  CHECK(a.out.find("CPU products by the base weights in bf16") == std::string::npos);
  const auto la = f32.metrics("train"), lb = bf16.metrics("train");
  REQUIRE(la.size() == 3);
  REQUIRE(lb.size() == 3);
  bool all_same = true;
  for (std::size_t i = 0; i < la.size(); ++i) {
    CAPTURE(i);
    const double x = la[i]["loss"].get<double>(), y = lb[i]["loss"].get<double>();
    CHECK(y == doctest::Approx(x).epsilon(5e-3));
    all_same = all_same && x == y;
  }
  CHECK_FALSE(all_same);
  // --dry-run counts the base weights at 2 bytes, not 4.
  Run d32 = f32.train("--dry-run"), d16 = bf16.train("--dry-run --set runtime.cpu_matmul_dtype=bf16");
  REQUIRE(d32.code == 0);
  REQUIRE(d16.code == 0);
  CHECK(d32.out.find("(one process, CPU, f32)") != std::string::npos);
  CHECK(d16.out.find("(one process, CPU, bf16 weights, f32 activations)") != std::string::npos);
  auto weights_kib = [](const std::string& out) {
    const std::size_t at = out.find("base weights (frozen)");
    REQUIRE(at != std::string::npos);
    return std::stod(out.substr(out.find_first_of("0123456789", at)));
  };
  CHECK(weights_kib(d16.out) == doctest::Approx(weights_kib(d32.out) / 2).epsilon(1e-3));
}

// Each step's model TFLOP/s (metrics.jsonl) is the FLOPs of a token, counted here from the model's
// config.json, times its tokens/s; MFU is that over runtime.peak_tflops, and absent without a peak on the CPU.
TEST_CASE("metrics: model TFLOP/s from the job's FLOPs per token, MFU against runtime.peak_tflops") {
  Job job;
  Run a = job.train("--set train.steps=2 --set runtime.peak_tflops=0.5");
  INFO(a.out);
  REQUIRE(a.code == 0);
  const json c = json::parse(file_read_text(job.dir / "model/config.json"));
  const double C = c["hidden_size"], F = c["intermediate_size"], L = c["num_hidden_layers"], V = c["vocab_size"];
  const double H = c["num_attention_heads"], Hkv = c["num_key_value_heads"];
  const double D = c.contains("head_dim") ? c["head_dim"].get<double>() : C / H;
  const double T = 32, r = 4;                                         // seq_len, LoRA rank (on q, v and down)
  const double matmul = 2 * C * H * D + 2 * C * Hkv * D + 3 * C * F;  // q, o; k, v; gate, up, down
  const double attention = 2 * H * D * T;  // scores and values, causal: half of T keys on average, twice
  const double lora = 2 * r * ((C + H * D) + (C + Hkv * D) + (F + C));
  const double per_token = L * ((2 * matmul + attention + lora) + (2 * matmul + 2 * attention + 2 * lora)) + 4 * V * C;
  const auto steps = job.metrics("train");
  REQUIRE(steps.size() == 2);
  for (const json& m : steps) {
    const double tflops = m["model_tflops"], tps = m["tokens_per_s"];
    CHECK(tflops == doctest::Approx(per_token * tps / 1e12).epsilon(1e-9));
    CHECK(m["mfu"].get<double>() == doctest::Approx(tflops / 0.5).epsilon(1e-9));
  }
  CHECK(a.out.find("MFU against 0.5 TFLOP/s per rank (runtime.peak_tflops)") != std::string::npos);
  CHECK(a.out.find("% ") != std::string::npos);

  Job no_peak;
  Run b = no_peak.train("--set train.steps=1");
  INFO(b.out);
  REQUIRE(b.code == 0);
  CHECK(b.out.find("no MFU: give runtime.peak_tflops") != std::string::npos);
  const auto one = no_peak.metrics("train");
  REQUIRE(one.size() == 1);
  CHECK(one[0]["model_tflops"].get<double>() > 0);
  CHECK_FALSE(one[0].contains("mfu"));
  CHECK(no_peak.train("--set runtime.peak_tflops=-1").code == 2);
}

TEST_CASE("a batch without loss tokens does not update the adapter (AdamW would move it still)") {
  // One document whose prompt fills the first rows: under loss_on_completions_only they carry no loss.
  Job job("", kLora, "loss_on_completions_only = true\n");
  std::string prompt;
  for (int i = 0; i < 40; ++i) prompt += "int f" + std::to_string(i) + "(int x) { return x; }\n";
  test::write_bytes(job.dir / "pc.jsonl", json({{"prompt", prompt}, {"completion", "int g();"}}).dump() + "\n");
  const std::string data = " --set 'data.inputs=[\"" + (job.dir / "pc.jsonl").string() +
                           "\"]' --set 'data.globs=[]' --set train.micro_batch=1 --set train.steps=2 --set "
                           "optim.weight_decay=0.1 --set optim.warmup_steps=0 --set train.eval_every=0";
  Run r = job.train(data);
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("step 1: no token of the batch carries a loss") != std::string::npos);
  const auto steps = job.metrics("train");
  REQUIRE(steps.size() == 2);
  for (const json& m : steps) {
    CHECK(m["skipped"] == true);
    CHECK(m["loss_tokens"] == 0);
    CHECK(m["grad_norm"] == 0.0);
  }
  // The adapter is its initial one: the same as with another lr and weight decay, which would move it
  // otherwise (the decay alone shrinks LoRA's A).
  const std::string trained = file_read_text(job.dir / "run/adapter/adapter_model.safetensors");
  Run other = job.train(
      data + " --set optim.lr=0.1 --set optim.weight_decay=0.5 --set run.dir=" + (job.dir / "run_other").string());
  INFO(other.out);
  REQUIRE(other.code == 0);
  CHECK(trained == file_read_text(job.dir / "run_other/adapter/adapter_model.safetensors"));
}

TEST_CASE("one job at a time in a run folder; a folder that cannot be written fails before the weights load") {
  Job job;
  fs::create_directories(job.dir / "run");
  // Another job holds the run folder's lock (flock(1) here, with the holder line adapt writes).
  const std::string held = "bash -c 'exec 9>" + (job.dir / "run/.lock").string() +
                           " && flock -x 9 && echo \"host h1, pid 42\" >&9 && " + bin("adapt_train") + " --config " +
                           job.toml.string() + " --set train.steps=1'";
  Run r = run(held);
  INFO(r.out);
  CHECK(r.code == 3);
  CHECK(r.out.find("is in use by another job (host h1, pid 42)") != std::string::npos);
  CHECK(r.out.find("base model") == std::string::npos);
  // Released, the folder is the next job's.
  Run ok = job.train("--set train.steps=1");
  INFO(ok.out);
  CHECK(ok.code == 0);
  // A run.dir that cannot be made (a file is in the way): exit 3 naming it, before the weights load.
  test::write_bytes(job.dir / "file", "x");
  Run bad = job.train("--set train.steps=1 --set run.dir=" + (job.dir / "file/run").string());
  CHECK(bad.code == 3);
  CHECK(bad.out.find("run.dir '") != std::string::npos);
  CHECK(bad.out.find("base model") == std::string::npos);
}

TEST_CASE("training lowers the held-out loss") {
  Job job;
  Run r = job.train("--set train.steps=40 --set optim.lr=3e-2 --set train.eval_every=10 --set checkpoint.every=0");
  INFO(r.out);
  REQUIRE(r.code == 0);
  auto evals = job.metrics("eval");
  REQUIRE(evals.size() == 5);  // steps 0 (the base model), 10, 20, 30, 40
  CHECK(evals.back()["eval_loss"].get<double>() < evals.front()["eval_loss"].get<double>() - 0.01);

  // The exported adapter: adapt_eval scores training text better with it than without; adapt_gen runs with it.
  json rec = {{"text", file_read_text(test::source_dir() / "inputs/corpus/python/csv_summary.py")}};
  test::write_bytes(job.dir / "eval.jsonl", rec.dump() + "\n");
  const std::string eval =
      bin("adapt_eval") + " --model " + (job.dir / "model").string() + " --data " + (job.dir / "eval.jsonl").string();
  Run base = run(eval), adapted = run(eval + " --adapter " + (job.dir / "run/adapter").string());
  INFO(base.out, adapted.out);
  REQUIRE(base.code == 0);
  REQUIRE(adapted.code == 0);
  const double base_loss = std::stod(base.out.substr(base.out.find("loss ") + 5));
  const double adapted_loss = std::stod(adapted.out.substr(adapted.out.find("loss ") + 5));
  CHECK(adapted_loss < base_loss);
  test::write_bytes(job.dir / "gen.toml",
                    "[model]\npath = \"model\"\nadapter = \"run/adapter\"\n[output]\ndir = \"gen\"\n"
                    "[defaults]\nmax_new_tokens = 8\n[[prompts]]\nid = \"a\"\ntext = \"def \"\n");
  Run gen = run(bin("adapt_gen") + " --input " + (job.dir / "gen.toml").string());
  INFO(gen.out);
  CHECK(gen.code == 0);
  CHECK(gen.out.find("adapter") != std::string::npos);
}

TEST_CASE("SIGUSR1 writes a checkpoint at the next step and exits 75 (also during startup); the rerun resumes") {
  Job job("", "kind = \"bottleneck\"\n[adapter.bottleneck]\nsize = 16\nplacement = \"houlsby\"\n");
  const std::string metrics = (job.dir / "run/metrics.jsonl").string();
  Run r = run("bash -c '" + bin("adapt_train") + " --config " + job.toml.string() +
              " --set train.steps=100000 --set checkpoint.every=0 & pid=$!; for i in $(seq 600); do "
              "[ -s " +
              metrics + " ] && break; sleep 0.05; done; kill -USR1 $pid; wait $pid; echo exit=$?'");
  INFO(r.out);
  CHECK(r.out.find("exit=75") != std::string::npos);
  CHECK(r.out.find("received SIGUSR1") != std::string::npos);
  CHECK(fs::exists(job.dir / "run/checkpoints/latest"));
  Run again = job.train("--set train.steps=3 --set checkpoint.every=0");
  INFO(again.out);
  CHECK(again.out.find("resuming from") != std::string::npos);

  // A signal while the job is still starting (loading the model, tokenizing) stops it the same way at
  // the first step boundary, where it would kill the rank before the trainer's loop.
  // ~48 MB of text to tokenize first keeps it starting for a while after its first log line.
  {
    std::ofstream big(job.dir / "big.jsonl");
    const std::string record = json{{"text", std::string(12000, 'x') + " def f(x): return x\n"}}.dump() + "\n";
    for (int i = 0; i < 4000; ++i) big << record;
  }
  const fs::path log = job.dir / "early.log";
  Run early = run("bash -c '" + bin("adapt_train") + " --config " + job.toml.string() + " --set run.dir=" +
                  (job.dir / "run-early").string() + " --set data.inputs=[\\\"" + (job.dir / "big.jsonl").string() +
                  "\\\"] --set data.cache_dir=" + (job.dir / "cache-early").string() +
                  " --set train.steps=100000 --set checkpoint.every=0 > " + log.string() +
                  " 2>&1 & pid=$!; for i in $(seq 600); do [ -s " + log.string() +
                  " ] && break; sleep 0.005; done; kill -USR1 $pid; wait $pid; echo exit=$?'");
  INFO(early.out, file_read_text(log));
  CHECK(early.out.find("exit=75") != std::string::npos);
  CHECK(fs::exists(job.dir / "run-early/checkpoints/latest"));
}

TEST_CASE("bad jobs and broken runs") {
  Job job;
  auto expect = [](const Run& r, int code, const std::string& needle) {
    INFO(r.out);
    CHECK(r.code == code);
    CHECK(r.out.find(needle) != std::string::npos);
  };
  expect(job.train("--set train.stepz=3"), 2, "did you mean 'steps'");
  expect(job.train("--set optim.lr=abc"), 2, "optim.lr");
  expect(job.train("--set data.seq_len=100000"), 2, "seq_len");
  expect(job.train("--set adapter.lora.r=0"), 2, "adapter.lora.r");
  expect(job.train("--set adapter.lora.targets=[\\\"qq\\\"]"), 2, "qq");
  test::write_bytes(job.dir / "empty.jsonl", "\n\n");
  expect(job.train("--set data.inputs=[\\\"" + (job.dir / "empty.jsonl").string() + "\\\"] --set data.globs=[]"), 3,
         "no usable");
  // Launch mistakes: an srun step of 2 tasks whose processes did not join one MPI job (no PMIx: each
  // sees a world of 1), and a malformed launcher variable. Both exit 2 naming what to do or the variable.
  const std::string srun_env =
      "SLURM_STEP_ID=0 SLURM_PROCID=1 SLURM_STEP_NUM_TASKS=2 SLURM_LOCALID=1 "
      "SLURM_NODEID=0 SLURM_STEP_NUM_NODES=1 SLURM_STEP_TASKS_PER_NODE=2 ";
  expect(run("env " + srun_env + bin("adapt_train") + " --config " + job.toml.string() + " --dry-run"), 2,
         "srun --mpi=pmix");
  expect(run("env SLURM_STEP_ID=0 SLURM_PROCID=0 SLURM_STEP_NUM_TASKS=two " + bin("adapt_train") + " --config " +
             job.toml.string() + " --dry-run"),
         2, "SLURM_STEP_NUM_TASKS");
  Run dry = job.train("--dry-run");
  expect(dry, 0, "memory estimate");
  expect(dry, 0, "# data.inputs: ");
  CHECK(dry.out.find("warning") == std::string::npos);
  CHECK_FALSE(fs::exists(job.dir / "run/checkpoints"));
  // Missing data: the dry run finds the files; the run fails before it reads the weights.
  expect(job.train("--set data.inputs=[\\\"nope\\\"] --dry-run"), 3, "data.inputs[0]");
  Run no_data = job.train("--set data.inputs=[\\\"nope\\\"]");
  expect(no_data, 3, "data.inputs[0]");
  CHECK(no_data.out.find("base model") == std::string::npos);
  expect(job.train("--set data.seq_len=100000 --dry-run"), 2, "seq_len");
  expect(job.train("--set adapter.lora.r=640 --dry-run"), 0, "vLLM serves LoRA ranks up to 512 only");
  expect(job.train("--set optim.schedule=constant --set optim.min_lr_ratio=0.1 --dry-run"), 0,
         "optim.min_lr_ratio = 0.1 has no effect with optim.schedule = \"constant\"");
  // A warmup that outlasts the run is valid, but said.
  expect(job.train("--set train.steps=2 --dry-run"), 0,
         "# warning: optim.warmup_steps = 2 is not below train.steps = 2: the learning rate rises from 0 and never "
         "reaches optim.lr = 0.01");

  // Train 5 steps, then: a diverging learning rate stops with exit 1 and leaves the checkpoint alone;
  // the resumed run says which settings differ from the checkpoint's job.
  REQUIRE(job.train("--set train.stop_after=5").code == 0);
  const std::string ckpt = file_read_text(job.dir / "run/checkpoints/latest");
  Run diverged = job.train("--set optim.lr=1e30 --set optim.max_grad_norm=0");
  expect(diverged, 1, "diverged");
  CHECK(diverged.out.find("resuming with settings that differ from the checkpoint's job: optim.lr = 1e+30 (was "
                          "0.01); optim.max_grad_norm = 0.0 (was 1.0)") != std::string::npos);
  CHECK(file_read_text(job.dir / "run/checkpoints/latest") == ckpt);
  // Another adapter shape: refused, naming the setting, and the run folder's config.toml is left as it was.
  const std::string config_before = file_read_text(job.dir / "run/config.toml");
  expect(job.train("--set adapter.lora.r=8"), 3,
         "This job differs from the checkpoint's in: adapter.lora.r = 8 (was 4)");
  // Another scaling: the same shapes, another function of them; refused too.
  expect(job.train("--set adapter.lora.alpha=4.0"), 3, "was trained with another adapter.lora.alpha");
  CHECK(file_read_text(job.dir / "run/config.toml") == config_before);

  // Another schedule: allowed, and the log names the rate that changed.
  Run longer = job.train("--set train.steps=12 --set train.stop_after=1");
  expect(longer, 0,
         fmt::format("the learning rate of step 6 is {:.6g} under this job's [optim] and train.steps; the "
                     "checkpoint's run would have used",
                     0.01 * 0.5 * (1 + std::cos(M_PI * 3.0 / 10.0))));  // cosine at 5 - 2 of 12 - 2 steps

  // A checkpoint written for another base model is refused, naming both fingerprints.
  REQUIRE(run(bin("adapt_model") + " make --preset tiny --seed 9 --force --out " + (job.dir / "model").string()).code ==
          0);
  expect(job.train(), 3, "fingerprint");
}

TEST_CASE("a corrupt newest checkpoint falls back to the previous one; a full disk keeps the last good one") {
  Job job;
  REQUIRE(job.train("--set train.stop_after=10 --set train.steps=20").code == 0);  // checkpoints at 5 and 10
  const fs::path newest = job.dir / "run/checkpoints/step_00000010.h5";
  REQUIRE(fs::exists(newest));
  const std::string bytes = file_read_text(newest);
  test::write_bytes(newest, bytes.substr(0, bytes.size() / 2));
  Run r = job.train("--set train.stop_after=1 --set train.steps=20");
  INFO(r.out);
  CHECK(r.code == 0);
  CHECK(r.out.find("step_00000005.h5") != std::string::npos);
  CHECK(r.out.find("resuming from") != std::string::npos);

  const std::string latest = file_read_text(job.dir / "run/checkpoints/latest");
  Run full = run("bash -c 'trap \"\" XFSZ; ulimit -f 16; " + bin("adapt_train") + " --config " + job.toml.string() +
                 " --set train.stop_after=5 --set train.steps=20'");
  INFO(full.out);
  CHECK(full.code == 3);
  CHECK(file_read_text(job.dir / "run/checkpoints/latest") == latest);
  CHECK(job.train("--set train.stop_after=1 --set train.steps=20").code == 0);
}

TEST_CASE("lora+bottleneck: both train together, resume exactly, export lora/ and bottleneck/, and adapt_eval agrees") {
  Job straight("", kLoraBottleneck, kEvalData);
  // The memory estimate counts both parts.
  Run dry = straight.train("--dry-run"), dry_lora = straight.train("--dry-run --set adapter.kind=lora"),
      dry_bn = straight.train("--dry-run --set adapter.kind=bottleneck");
  INFO(dry.out);
  REQUIRE(dry.code == 0);
  const std::int64_t n_lora = adapter_params(dry_lora.out), n_bn = adapter_params(dry_bn.out);
  CHECK(adapter_params(dry.out) == n_lora + n_bn);
  CHECK(dry.out.find(": LoRA " + format_count(n_lora) + " + bottleneck " + format_count(n_bn) + ")") !=
        std::string::npos);
  CHECK(dry.out.find("kind = \"lora+bottleneck\"") != std::string::npos);  // the resolved job

  Run a = straight.train();
  INFO(a.out);
  REQUIRE(a.code == 0);
  CHECK(a.out.find("adapter lora+bottleneck: " + format_count(n_lora + n_bn) + " parameters") != std::string::npos);
  const auto losses = straight.metrics("train");
  REQUIRE(losses.size() == 10);
  const fs::path adapter = straight.dir / "run/adapter";
  CHECK_FALSE(fs::exists(adapter / "adapter_config.json"));
  for (const char* f : {"lora/adapter_config.json", "lora/adapter_model.safetensors", "bottleneck/adapter_config.json",
                        "bottleneck/adapter.safetensors"})
    CHECK(fs::exists(adapter / f));

  // 5 steps, then 5 more after a resume: the same losses and the same bits as 10 straight.
  Job resumed("", kLoraBottleneck, kEvalData);
  REQUIRE(resumed.train("--set train.stop_after=5").code == 0);
  Run b = resumed.train();
  INFO(b.out);
  REQUIRE(b.code == 0);
  CHECK(b.out.find("resuming from") != std::string::npos);
  check_same_losses(resumed.metrics("train"), losses);
  for (const char* f : {"lora/adapter_model.safetensors", "bottleneck/adapter.safetensors"})
    CHECK(file_read_text(resumed.dir / "run/adapter" / f) == file_read_text(adapter / f));

  // adapt_eval with the exported folder gives the eval loss adapt_train reported at the end; both parts
  // matter (each alone scores differently).
  const double reported = straight.metrics("eval").back()["eval_loss"].get<double>();
  const Eval both = evaluate(straight, straight.dir / "model", adapter.string());
  CHECK(std::fabs(both.loss - reported) <= 1e-5 * reported);
  const Eval lora_only = evaluate(straight, straight.dir / "model", (adapter / "lora").string());
  const Eval bn_only = evaluate(straight, straight.dir / "model", (adapter / "bottleneck").string());
  CHECK(std::fabs(lora_only.loss - both.loss) > 1e-4);
  CHECK(std::fabs(bn_only.loss - both.loss) > 1e-4);

  // adapt_gen takes the folder too.
  test::write_bytes(straight.dir / "gen.toml",
                    "[model]\npath = \"model\"\nadapter = \"run/adapter\"\n[output]\ndir = "
                    "\"gen\"\n[defaults]\nmax_new_tokens = 4\n[[prompts]]\nid = \"a\"\ntext = \"def \"\n");
  Run gen = run(bin("adapt_gen") + " --input " + (straight.dir / "gen.toml").string());
  INFO(gen.out);
  CHECK(gen.code == 0);

  // The checkpoints of this run are refused by a run of another kind, by name.
  Run other = resumed.train("--set adapter.kind=lora --set train.steps=12");
  INFO(other.out);
  CHECK(other.code == 3);
  CHECK(other.out.find("adapter.kind = \"lora+bottleneck\"") != std::string::npos);
}

TEST_CASE("adapt_train --merge writes base + LoRA as a model folder that scores like base + adapter") {
  // An f32 base in several shards: the merged model keeps both.
  Job job("", kLora, kEvalData, "--dtype f32 --max-shard-size 300KB");
  REQUIRE(fs::exists(job.dir / "model/model.safetensors.index.json"));
  // Bottleneck adapters cannot merge: refused before any training.
  for (const char* kind : {"bottleneck", "lora+bottleneck"}) {
    Run r = job.train(std::string("--merge --set adapter.kind=") + kind);
    INFO(r.out);
    CHECK(r.code == 2);
    CHECK(r.out.find("run.merge") != std::string::npos);
    CHECK_FALSE(fs::exists(job.dir / "run/checkpoints"));
  }
  Run r = job.train("--merge --set train.steps=4");
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("merged model") != std::string::npos);
  const fs::path merged = job.dir / "run/merged";
  Run check = run(bin("adapt_model") + " check " + merged.string());
  INFO(check.out);
  CHECK(check.code == 0);
  CHECK(check.out.find("dtype F32") != std::string::npos);
  for (const char* f : {"config.json", "generation_config.json", "tokenizer.json", "model.safetensors.index.json"})
    CHECK(file_read_text(merged / f) == file_read_text(job.dir / "model" / f));
  std::size_t shards = 0;
  for (const auto& e : fs::directory_iterator(job.dir / "model"))
    if (e.path().extension() == ".safetensors") {
      ++shards;
      CHECK(fs::exists(merged / e.path().filename()));
    }
  CHECK(shards > 1);

  const Eval adapted = evaluate(job, job.dir / "model", (job.dir / "run/adapter").string());
  const Eval base = evaluate(job, job.dir / "model");
  const Eval from_merged = evaluate(job, merged);
  check_same_scores(from_merged, adapted, 1e-5);
  CHECK(std::fabs(base.loss - adapted.loss) > 1e-4);  // the adapter changed the model

  // A rerun of the finished job replaces its own merged folder.
  Run again = job.train("--merge --set train.steps=4");
  INFO(again.out);
  CHECK(again.code == 0);
  check_same_scores(evaluate(job, merged), adapted, 1e-5);
}

TEST_CASE("adapt_model merge: bf16 stays bf16; refused outputs and adapters; a failed write leaves nothing") {
  Job job("", kLoraBottleneck, kEvalData);  // a bf16 base
  REQUIRE(job.train("--set train.steps=3").code == 0);
  const fs::path adapter = job.dir / "run/adapter";
  const std::string merge = bin("adapt_model") + " merge --model " + (job.dir / "model").string();
  auto nothing_left = [&](const char* name) {
    CHECK_FALSE(fs::exists(job.dir / name));
    CHECK_FALSE(fs::exists(job.dir / (std::string(".") + name + ".tmp")));
  };

  // The two-part folder: refused with the way out (merge lora/, apply bottleneck/ on top).
  Run both = run(merge + " --adapter " + adapter.string() + " --out " + (job.dir / "m").string());
  INFO(both.out);
  CHECK(both.code == 6);
  CHECK(both.out.find("--adapter " + (adapter / "lora").string()) != std::string::npos);
  nothing_left("m");
  Run bn = run(merge + " --adapter " + (adapter / "bottleneck").string() + " --out " + (job.dir / "m").string());
  INFO(bn.out);
  CHECK(bn.code == 6);
  CHECK(bn.out.find("nonlinear") != std::string::npos);
  nothing_left("m");

  Run ok = run(merge + " --adapter " + (adapter / "lora").string() + " --out " + (job.dir / "m").string());
  INFO(ok.out);
  REQUIRE(ok.code == 0);
  CHECK(ok.out.find("dtype BF16") != std::string::npos);
  Run check = run(bin("adapt_model") + " check " + (job.dir / "m").string());
  INFO(check.out);
  CHECK(check.code == 0);
  CHECK(check.out.find("dtype BF16") != std::string::npos);
  CHECK(check.out.find("note") == std::string::npos);  // torch_dtype and the stored dtype agree
  // The merged LoRA part with the bottleneck part on top computes what the base with both computes
  // (up to bf16 rounding of the merged weights).
  const Eval with_both = evaluate(job, job.dir / "model", adapter.string());
  const Eval stacked = evaluate(job, job.dir / "m", (adapter / "bottleneck").string());
  CHECK(std::fabs(stacked.loss - with_both.loss) <= 2e-2 * with_both.loss);

  // An existing --out: refused unless empty, and left as it was.
  fs::create_directories(job.dir / "busy");
  test::write_bytes(job.dir / "busy/notes.txt", "mine");
  Run busy = run(merge + " --adapter " + (adapter / "lora").string() + " --out " + (job.dir / "busy").string());
  INFO(busy.out);
  CHECK(busy.code == 3);
  CHECK(busy.out.find("not empty") != std::string::npos);
  CHECK(file_read_text(job.dir / "busy/notes.txt") == "mine");
  fs::create_directories(job.dir / "empty");
  CHECK(run(merge + " --adapter " + (adapter / "lora").string() + " --out " + (job.dir / "empty").string()).code == 0);
  CHECK(fs::exists(job.dir / "empty/model.safetensors"));

  // A write that fails half-way (file size limit): exit 3, no output folder, no temporary folder.
  Run full = run("bash -c 'trap \"\" XFSZ; ulimit -f 64; " + merge + " --adapter " + (adapter / "lora").string() +
                 " --out " + (job.dir / "cut").string() + "'");
  INFO(full.out);
  CHECK(full.code == 3);
  nothing_left("cut");

  // Usage errors.
  Run usage = run(merge + " --adapter " + (adapter / "lora").string());
  CHECK(usage.code == 2);
  CHECK(usage.out.find("--out") != std::string::npos);
}

TEST_CASE("runtime.device: a GPU that is not there stops the job before anything is written") {
  Job job;
  auto refused = [&](const std::string& args, int code, const std::vector<std::string>& needles) {
    Run r = job.train(args);
    INFO(args, "\n", r.out);
    CHECK(r.code == code);
    for (const auto& n : needles) CHECK_MESSAGE(r.out.find(n) != std::string::npos, "missing: ", n);
    CHECK_FALSE(fs::exists(job.dir / "run"));    // no run folder, config.toml, metrics or checkpoint
    CHECK_FALSE(fs::exists(job.dir / "cache"));  // not even the token cache
  };
  test::check_runtime_device_refusals(refused, "gpu.train_app");

  // The CPU, said explicitly, trains as before; --dry-run prints the keys and the device.
  Run dry = job.train("--dry-run --set runtime.weights_dtype=f32");
  INFO(dry.out);
  CHECK(dry.code == 0);
  CHECK(dry.out.find("device = \"cpu\"") != std::string::npos);
  CHECK(dry.out.find("weights_dtype = \"f32\"") != std::string::npos);
  CHECK(dry.out.find("# device: cpu") != std::string::npos);
  CHECK(dry.out.find("CPU, f32") != std::string::npos);
  Run cpu = job.train("--set runtime.device=cpu --set train.steps=2");
  INFO(cpu.out);
  CHECK(cpu.code == 0);
  CHECK(job.metrics("train").size() == 2);
}

namespace {

/// The train and eval records of the run in `run_dir`.
std::vector<json> run_metrics(const fs::path& run_dir) {
  std::vector<json> v;
  const std::string text = file_read_text(run_dir / "metrics.jsonl");
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t nl = text.find('\n', start);
    v.push_back(json::parse(text.substr(start, nl - start)));
    start = nl + 1;
  }
  return v;
}

/// Runs `base` with each optimizer variant (no offload, offload without and with overlap) into its own
/// run folder and checks that they agree: the same loss, gradient norm and eval loss at every step, and
/// every file of the exported adapter the same bytes.
void check_overlap_variants(const std::string& base, const fs::path& dir, const std::string& tag) {
  struct Variant {
    const char* name;
    const char* args;
  };
  const Variant variants[] = {{"plain", " --set optim.offload=false"},
                              {"offload", " --set optim.offload=true --set optim.overlap=false"},
                              {"overlap", " --set optim.offload=true --set optim.overlap=true"}};
  std::vector<std::vector<json>> metrics;
  for (const Variant& v : variants) {
    const fs::path run_dir = dir / (tag + "_" + v.name);
    Run r = run(base + v.args + " --set run.dir=" + run_dir.string());
    INFO(v.name << ": " << r.out);
    REQUIRE(r.code == 0);
    CHECK((r.out.find("overlapping the next step's forward") != std::string::npos) ==
          (std::string(v.name) == "overlap"));
    metrics.push_back(run_metrics(run_dir));
  }
  for (std::size_t k = 1; k < metrics.size(); ++k) {
    const std::string name = variants[k].name;
    CAPTURE(name);
    REQUIRE(metrics[k].size() == metrics[0].size());
    for (std::size_t i = 0; i < metrics[0].size(); ++i) {
      CAPTURE(i);
      const json& a = metrics[k][i];
      const json& b = metrics[0][i];
      CHECK(a["kind"] == b["kind"]);
      for (const char* key : {"loss", "grad_norm", "eval_loss"})
        if (b.contains(key)) CHECK(a[key].get<double>() == b[key].get<double>());
      // The overlapped run reports how long each step waited for the previous step's CPU update.
      if (a["kind"] == "train") {
        CHECK(a.contains("optim_wait_s") == (name == "overlap"));
        if (a.contains("optim_wait_s")) CHECK(a["optim_wait_s"].get<double>() >= 0.0);
      }
    }
    std::size_t files = 0;  // every file of the export (lora+bottleneck: under lora/ and bottleneck/)
    const fs::path want_dir = dir / (tag + "_plain") / "adapter";
    for (const auto& e : fs::recursive_directory_iterator(want_dir)) {
      if (!e.is_regular_file()) continue;
      const fs::path rel = fs::relative(e.path(), want_dir);
      CAPTURE(rel.string());
      ++files;
      const fs::path other = dir / (tag + "_" + name) / "adapter" / rel;
      REQUIRE(fs::exists(other));
      CHECK(file_read_text(other) == file_read_text(e.path()));
    }
    CHECK(files >= 2);
  }
}

/// mpiexec with the test suite's flags (cmake/AdaptTest.cmake: oversubscribed, as root when root), one
/// OpenMP thread per rank; empty when there is no mpiexec on PATH.
std::string mpiexec_prefix(int n) {
  std::string path;
  if (test::run_command("command -v mpiexec", &path) != 0 || path.empty()) return "";
  while (!path.empty() && std::isspace(static_cast<unsigned char>(path.back()))) path.pop_back();
  return path + " -n " + std::to_string(n) + " --oversubscribe" + (geteuid() == 0 ? " --allow-run-as-root" : "") +
         " env OMP_NUM_THREADS=1 ";
}

}  // namespace

TEST_CASE("optim.overlap: the same losses and adapter bytes as the synchronous offload and as no offload") {
  SUBCASE("LoRA, two micro-batches, a resumed overlapped run") {
    Job job;
    const std::string base = bin("adapt_train") + " --config " + job.toml.string() +
                             " --set train.steps=6 --set train.grad_accum=2 --set checkpoint.every=3";
    check_overlap_variants(base, job.dir.path(), "lora");
    // Stopped after 3 steps (a checkpoint written while the update of step 3 may still run) and resumed.
    const std::string resumed = base + " --set optim.offload=true --set run.dir=" + (job.dir / "resumed").string();
    REQUIRE(run(resumed + " --set train.stop_after=3").code == 0);
    Run r = run(resumed);
    INFO(r.out);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("resuming from") != std::string::npos);
    CHECK(file_read_text(job.dir / "resumed/adapter/adapter_model.safetensors") ==
          file_read_text(job.dir / "lora_plain/adapter/adapter_model.safetensors"));
  }
  SUBCASE("lora+bottleneck with recomputation") {
    Job job("", kLoraBottleneck);
    check_overlap_variants(
        bin("adapt_train") + " --config " + job.toml.string() + " --set train.steps=5 --set train.recompute=true",
        job.dir.path(), "lb");
  }
}

TEST_CASE(
    "optim.overlap under mpiexec: tp2 x dp2, dp2 and pp2, with and without ZeRO-1, give the synchronous and "
    "the plain runs' bytes") {
  if (mpiexec_prefix(2).empty()) {
    MESSAGE("no mpiexec on PATH; skipped");
    return;
  }
  Job job;
  struct Layout {
    const char* tag;
    int ranks;
    const char* args;
  };
  // Under ZeRO-1 the overlapped update all-gathers each replica's chunks as the next forward reaches
  // their layers (pp2 x dp2: each stage's forward gathers for its own layers, finish() the rest).
  for (const Layout& l :
       {Layout{"tp2dp2", 4, " --set parallel.tp=2 --set parallel.zero1=false"},
        Layout{"dp2", 2, " --set parallel.zero1=false"}, Layout{"dp2_zero1", 2, " --set parallel.zero1=true"},
        Layout{"pp2", 2, " --set parallel.pp=2 --set train.grad_accum=2"},
        Layout{"pp2dp2_zero1", 4, " --set parallel.pp=2 --set train.grad_accum=2 --set parallel.zero1=true"}}) {
    CAPTURE(l.tag);
    check_overlap_variants(mpiexec_prefix(l.ranks) + bin("adapt_train") + " --config " + job.toml.string() +
                               " --set train.steps=4" + l.args,
                           job.dir.path(), l.tag);
  }
}
