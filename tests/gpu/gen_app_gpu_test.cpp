// adapt_gen and adapt_eval on cuda:0 against the same binaries on the CPU, on the demo's tiny model
// (adapt_model make --recipe inputs/models/tiny.toml) with and without a lora+bottleneck adapter (random
// non-zero parameters, exported as adapt_train would): runtime.device = "cuda" with f32 device weights
// gives the CPU's greedy texts token for token (the GEMMs sum in another order, ~1e-6 relative on the
// logits, so only a near-tie could flip a token: none does on these prompts); bf16 weights finish
// every prompt, and with runtime.weights_device_layers = 0 and 1 (base weights streamed from host RAM)
// the bf16 run's texts; adapt_eval --device cuda --weights-dtype f32 gives the CPU's loss within 1e-5. Two MPI
// ranks (mpiexec) at tp2 with f32 weights and the adapter give the one-GPU run's greedy texts: sharing
// cuda:0, their tp group on MPI (NCCL refuses two ranks on one GPU); with a GPU per rank (2 GPUs or more;
// said and skipped otherwise), on NCCL. A generation on the device stopped by SIGUSR1 (exit 75) and run
// again continues its prompts to the uninterrupted run's texts. A conversation's next turn with
// output.conversation_kv (the cache on the device, whole or partly in pinned host RAM) gives the texts of
// prefilling the whole conversation.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "adapters/adapter_files.h"
#include "adapters/adapter_set.h"
#include "backend/backend.h"
#include "core/file.h"
#include "model/llama_config.h"
#include "tests/support/test_support.h"

using namespace adapt;
using json = nlohmann::json;

namespace {

std::map<std::string, json> results_by_id(const fs::path& p) {
  std::map<std::string, json> m;
  const std::string text = file_read_text(p);
  std::size_t start = 0;
  while (start < text.size()) {
    const std::size_t nl = text.find('\n', start);
    const json r = json::parse(text.substr(start, nl - start));
    m[r["id"].get<std::string>()] = r;
    start = nl + 1;
  }
  return m;
}

/// Every prompt of `want` has the same greedy text, token count and finish reason in `got`.
void check_same_results(const std::map<std::string, json>& got, const std::map<std::string, json>& want) {
  REQUIRE(got.size() == want.size());
  for (const auto& [id, w] : want) {
    CAPTURE(id);
    const json& g = got.at(id);
    CHECK(g["text"] == w["text"]);
    CHECK(g["completion_tokens"] == w["completion_tokens"]);
    CHECK(g["finish_reason"] == w["finish_reason"]);
  }
}

int run(const std::string& bin, const std::string& args, std::string* out) {
  return test::run_command(test::bin(bin.c_str()) + " " + args, out);
}

/// `bin` on `ranks` MPI ranks through mpiexec, one OpenMP thread each (ranks sharing the cores).
int run_on_ranks(int ranks, const std::string& bin, const std::string& args, std::string* out) {
  return test::run_command(std::string(ADAPT_MPIEXEC) + " -n " + std::to_string(ranks) + " " + ADAPT_MPIEXEC_FLAGS +
                               " env OMP_NUM_THREADS=1 " + test::bin(bin.c_str()) + " " + args,
                           out);
}

// The tiny model and a lora+bottleneck adapter on all seven projections and both sub-blocks, every
// parameter drawn from N(0, 0.05²) so the adapter changes the logits.
struct Fixture {
  test::TempDir dir{"adapt-gen-gpu"};
  Fixture() {
    std::string log;
    const std::string cmd = "make --recipe " + (test::source_dir() / "inputs/models/tiny.toml").string() + " --out " +
                            (dir / "model").string();
    REQUIRE_MESSAGE(run("adapt_model", cmd, &log) == 0, cmd, "\n", log);
    adapters::AdapterConfig ac;
    ac.kind = adapters::AdapterKind::LoraBottleneck;
    ac.lora.r = 4;
    ac.bottleneck.size = 16;
    ac.lora.targets = {"q", "k", "v", "o", "gate", "up", "down"};
    adapters::AdapterSet set(model::llama_config_load(dir / "model"), ac);
    std::mt19937_64 rng(test::kSeed);
    std::normal_distribution<float> dist(0.0f, 0.05f);
    for (const adapters::AdapterParam& p : set.parameters()) {
      Tensor v = p.value;
      for (std::int64_t i = 0; i < v.numel(); ++i) v.data<float>()[i] = dist(rng);
    }
    adapters::adapter_export(set, dir / "adapter");
  }
};

}  // namespace

TEST_CASE("adapt_gen on cuda:0: the CPU's greedy texts with f32 device weights, with and without an adapter") {
  Fixture f;
  const fs::path dir = f.dir.path();
  std::string job =
      "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 24\n"
      "[runtime]\nbatch_size = 3\n";
  const char* texts[] = {"int main() {", "def f(x):", "for (int i = 0; i < n; ++i)", "SELECT name FROM",
                         "#include <vector>\n"};
  for (int i = 0; i < 5; ++i)
    job += "[[prompts]]\nid = \"p" + std::to_string(i) + "\"\ntext = " + json(texts[i]).dump() + "\n";
  job += "[[prompts]]\nid = \"chat\"\nuser = \"Write a loop.\"\nmax_new_tokens = 40\n";
  test::write_bytes(dir / "job.toml", job);
  const std::string input = "--input " + (dir / "job.toml").string();

  for (const bool with_adapter : {false, true}) {
    CAPTURE(with_adapter);
    const std::string adapter = with_adapter ? " --set model.adapter=" + (dir / "adapter").string() : "";
    const std::string tag = with_adapter ? "-adapter" : "";
    std::string out;
    const std::string cpu_dir = (dir / ("cpu" + tag)).string();
    REQUIRE_MESSAGE(run("adapt_gen", input + adapter + " --set output.dir=" + cpu_dir, &out) == 0, out);
    const auto cpu = results_by_id(dir / ("cpu" + tag) / "results.jsonl");
    REQUIRE(cpu.size() == 6);

    REQUIRE_MESSAGE(run("adapt_gen",
                        input + adapter + " --set runtime.device=cuda --set runtime.weights_dtype=f32" +
                            " --set output.dir=" + (dir / ("f32" + tag)).string(),
                        &out) == 0,
                    out);
    CHECK_MESSAGE(out.find("f32 weights on cuda:0") != std::string::npos, out);
    check_same_results(results_by_id(dir / ("f32" + tag) / "results.jsonl"), cpu);

    // bf16 device weights (the default): bf16 GEMMs, so texts may differ; every prompt finishes.
    REQUIRE_MESSAGE(
        run("adapt_gen",
            input + adapter + " --set runtime.device=cuda:0 --set output.dir=" + (dir / ("bf16" + tag)).string(),
            &out) == 0,
        out);
    CHECK_MESSAGE(out.find("bf16 weights on cuda:0") != std::string::npos, out);
    const auto bf16 = results_by_id(dir / ("bf16" + tag) / "results.jsonl");
    REQUIRE(bf16.size() == cpu.size());
    for (const auto& [id, r] : bf16) {
      CAPTURE(id);
      CHECK(r["completion_tokens"].get<int>() > 0);
      CHECK(r["completion_tokens"].get<int>() <= (id == "chat" ? 40 : 24));
    }
    // The base weights of the layers past the first N in host RAM (runtime.weights_device_layers): the
    // same kernels on the same values, the same texts.
    for (const char* n : {"0", "1"}) {
      CAPTURE(n);
      const fs::path streamed = dir / ("streamed" + std::string(n) + tag);
      REQUIRE_MESSAGE(run("adapt_gen",
                          input + adapter + " --set runtime.device=cuda:0 --set output.dir=" + streamed.string() +
                              " --set runtime.weights_device_layers=" + n,
                          &out) == 0,
                      out);
      CHECK_MESSAGE(out.find("stay in host RAM") != std::string::npos, out);
      check_same_results(results_by_id(streamed / "results.jsonl"), bf16);
    }
  }
}

TEST_CASE("adapt_gen on cuda:0: SIGUSR1 saves the progress, exit 75; the rerun continues to the uninterrupted texts") {
  test::TempDir dir{"adapt-gen-gpu-signal"};
  std::string out;
  // The tiny model made wider, deeper and with a longer context, so that generating takes long enough
  // to send the signal in the middle.
  REQUIRE_MESSAGE(run("adapt_model",
                      "make --recipe " + (test::source_dir() / "inputs/models/tiny.toml").string() +
                          " --set shape.max_position_embeddings=4096 --set shape.hidden_size=256"
                          " --set shape.intermediate_size=768 --set shape.head_dim=64 --layers 4 --out " +
                          (dir / "model").string(),
                      &out) == 0,
                  out);
  // prefill_chunk = 1: the continued prompt's prefill is the same one-token forwards as the decode steps
  // it replaces, so the continuation is bit for bit the uninterrupted run's on the device too.
  test::write_bytes(dir / "job.toml",
                    "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 1500\n"
                    "[runtime]\nbatch_size = 2\nprefill_chunk = 1\nprogress_every = 16\ndevice = \"cuda:0\"\n"
                    "weights_dtype = \"f32\"\n"
                    "[[prompts]]\nid = \"long\"\ntext = \"int main() {\"\n"
                    "[[prompts]]\nid = \"sampled\"\ntext = \"def f(x):\"\ntemperature = 0.8\nseed = 7\n");
  const std::string input = "--input " + (dir / "job.toml").string();
  REQUIRE_MESSAGE(run("adapt_gen", input + " --set output.dir=" + (dir / "ref").string(), &out) == 0, out);
  const auto want = results_by_id(dir / "ref/results.jsonl");
  REQUIRE(want.size() == 2);

  const fs::path saved = dir / "out/progress/long.json";
  const std::string gen = test::bin("adapt_gen") + " " + input;
  test::run_command("bash -c '" + gen + " & pid=$!; for i in $(seq 6000); do [ -s " + saved.string() +
                        " ] && break; sleep 0.01; done; kill -USR1 $pid; wait $pid; echo exit=$?'",
                    &out);
  INFO(out);
  REQUIRE(out.find("exit=75") != std::string::npos);
  CHECK(out.find("received SIGUSR1") != std::string::npos);
  REQUIRE(fs::exists(saved));

  REQUIRE_MESSAGE(run("adapt_gen", input, &out) == 0, out);
  CHECK_MESSAGE(out.find("prompt 'long': continuing after") != std::string::npos, out);
  check_same_results(results_by_id(dir / "out/results.jsonl"), want);
  CHECK(!fs::exists(saved));
}

TEST_CASE("adapt_gen on cuda:0 with output.conversation_kv: the next turn loads the device cache, same texts") {
  const Fixture f;
  const std::string turns[2] = {
      "[[prompts]]\nid = \"a1\"\nconversation = \"a\"\nuser = \"Write a loop.\"\n"
      "[[prompts]]\nid = \"b1\"\nconversation = \"b\"\ntext = \"int main() {\"\ntemperature = 0.8\nseed = 3\n",
      "[[prompts]]\nid = \"a2\"\nconversation = \"a\"\nuser = \"Now in C++.\"\n"
      "[[prompts]]\nid = \"b2\"\nconversation = \"b\"\ntext = \"\\n  return 0;\"\n"};
  // kv_device_layers = 1 of 2: the second layer's cache lives in pinned host RAM and is staged.
  for (const int device_layers : {-1, 1}) {
    CAPTURE(device_layers);
    std::map<std::string, json> texts[2];
    for (const bool keep : {false, true}) {
      const fs::path out = f.dir / ("conv-" + std::to_string(device_layers) + (keep ? "-kept" : "-plain"));
      for (int t = 0; t < 2; ++t) {
        const fs::path job = f.dir / ("conv" + std::to_string(t) + ".toml");
        test::write_bytes(job,
                          "[model]\npath = \"model\"\nadapter = \"adapter\"\n[output]\ndir = \"out\"\n"
                          "[defaults]\nmax_new_tokens = 8\n[runtime]\ndevice = \"cuda:0\"\nweights_dtype = \"f32\"\n"
                          "batch_size = 2\nkv_device_layers = " +
                              std::to_string(device_layers) + "\n" + turns[t]);
        std::string log;
        REQUIRE_MESSAGE(run("adapt_gen",
                            "--input " + job.string() + " --set output.dir=" + out.string() +
                                " --set output.conversation_kv=" + (keep ? "true" : "false"),
                            &log) == 0,
                        log);
        if (keep && t == 1) {
          CHECK_MESSAGE(log.find("prompt 'a2': loaded the KV cache of ") != std::string::npos, log);
          CHECK_MESSAGE(log.find("prompt 'b2': loaded the KV cache of ") != std::string::npos, log);
          CHECK_MESSAGE(log.find("warning") == std::string::npos, log);
        }
      }
      texts[keep ? 1 : 0] = results_by_id(out / "results.jsonl");
    }
    check_same_results(texts[1], texts[0]);
  }
}

TEST_CASE("adapt_eval --device cuda --weights-dtype f32: the CPU's loss; streamed weights: the same loss") {
  Fixture f;
  const fs::path dir = f.dir.path();
  test::write_bytes(dir / "d.jsonl",
                    "{\"text\": \"for (int i = 0; i < n; ++i) sum += v[i];\"}\n"
                    "{\"text\": \"SELECT name FROM users WHERE id = 7;\"}\n");
  const std::string base = "--model " + (dir / "model").string() + " --data " + (dir / "d.jsonl").string();
  auto loss_of = [&](const std::string& flags) {
    std::string out;
    const int rc = run("adapt_eval", base + " " + flags, &out);
    INFO(flags, "\n", out);
    REQUIRE(rc == 0);
    const auto pos = out.find("loss ");
    REQUIRE(pos != std::string::npos);
    return std::stod(out.substr(pos + 5));
  };
  for (const std::string& adapter : {std::string{}, " --adapter " + (dir / "adapter").string()}) {
    CAPTURE(adapter);
    const double cpu = loss_of(adapter);
    const double gpu = loss_of(adapter + " --device cuda --weights-dtype f32");
    CHECK(std::abs(gpu - cpu) <= 1e-5 * std::abs(cpu));
    const double bf16 = loss_of(adapter + " --device cuda:0");
    CHECK(std::abs(bf16 - cpu) <= 1e-2 * std::abs(cpu));  // bf16 GEMM inputs: ~3 significant digits
    // Base weights streamed from host RAM: the same kernels on the same values.
    CHECK(loss_of(adapter + " --device cuda:0 --weights-device-layers 1") == bf16);
  }
  std::string out;
  CHECK(run("adapt_eval", base + " --weights-device-layers 1", &out) == 2);  // no GPU asked for
  CHECK_MESSAGE(out.find("pass --device cuda too") != std::string::npos, out);
  CHECK(run("adapt_eval", base + " --device cuda --weights-device-layers x", &out) == 2);
  CHECK_MESSAGE(out.find("--weights-device-layers x: give a number of layers >= 0") != std::string::npos, out);
  // The adapter changes the loss (so the runs above exercised it on the device).
  CHECK(loss_of("") != loss_of(" --adapter " + (dir / "adapter").string()));
}

// --attention-dtype (runtime.attention_dtype): the tiny model's head_dim 16 has no tensor-core kernel, so
// auto keeps f32 attention (the f32 run's loss exactly) and bf16 runs the generic kernel on bf16 copies
// (another loss, within bf16 rounding of the CPU's); each run's log says which. Bad values are refused.
TEST_CASE("adapt_eval --attention-dtype on cuda: auto, f32 and bf16; bad values") {
  Fixture f;
  const fs::path dir = f.dir.path();
  test::write_bytes(dir / "d.jsonl", "{\"text\": \"for (int i = 0; i < n; ++i) sum += v[i];\"}\n");
  const std::string base = "--model " + (dir / "model").string() + " --data " + (dir / "d.jsonl").string();
  auto loss_of = [&](const std::string& flags, const char* says) {
    std::string out;
    const int rc = run("adapt_eval", base + " " + flags, &out);
    INFO(flags, "\n", out);
    REQUIRE(rc == 0);
    CHECK(out.find(says) != std::string::npos);
    const auto pos = out.find("loss ");
    REQUIRE(pos != std::string::npos);
    return std::stod(out.substr(pos + 5));
  };
  const double cpu = loss_of("", "loss ");
  const double f32 = loss_of("--device cuda --attention-dtype f32", "attention in f32");
  CHECK(loss_of("--device cuda", "attention in f32") == f32);
  CHECK(loss_of("--device cuda --attention-dtype auto", "attention in f32") == f32);
  const double bf16 = loss_of("--device cuda --attention-dtype bf16", "attention in bf16");
  CHECK(bf16 != f32);
  CHECK(std::abs(bf16 - cpu) <= 1e-2 * std::abs(cpu));
  std::string out;
  CHECK(run("adapt_eval", base + " --device cuda --attention-dtype fp8", &out) == 2);
  CHECK_MESSAGE(out.find("--attention-dtype fp8 must be auto, bf16 or f32") != std::string::npos, out);
  // On the CPU it chooses the CPU's attention (tests/e2e/adapt_eval_e2e_test.cpp).
  CHECK(run("adapt_eval", base + " --attention-dtype bf16", &out) == 0);
  CHECK_MESSAGE(out.find("attention in bf16 products (f32 sums)") != std::string::npos, out);
}

TEST_CASE("adapt_gen at tp2 on 2 ranks, sharing cuda:0 and with a GPU per rank: the one-GPU run's greedy texts") {
  Fixture f;
  const fs::path dir = f.dir.path();
  std::string job =
      "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 24\n"
      "[runtime]\nbatch_size = 2\ndevice = \"cuda:0\"\nweights_dtype = \"f32\"\n";
  const char* texts[] = {"int main() {", "def f(x):", "SELECT name FROM"};
  for (int i = 0; i < 3; ++i)
    job += "[[prompts]]\nid = \"p" + std::to_string(i) + "\"\ntext = " + json(texts[i]).dump() + "\n";
  test::write_bytes(dir / "job.toml", job);
  const std::string input =
      "--input " + (dir / "job.toml").string() + " --set model.adapter=" + (dir / "adapter").string();
  std::string out;
  REQUIRE_MESSAGE(run("adapt_gen", input + " --set output.dir=" + (dir / "one").string(), &out) == 0, out);
  const auto one = results_by_id(dir / "one" / "results.jsonl");
  REQUIRE(one.size() == 3);
  // runtime.device = "cuda:0" on both ranks: NCCL refuses two ranks on one GPU, MPI stages the buffers.
  // runtime.device = "cuda": each rank on the GPU of its local rank, the tp group on NCCL (when built).
  for (const bool per_rank : {false, true}) {
    CAPTURE(per_rank);
    if (per_rank && backend::cuda_device_count() < 2) {
      MESSAGE("tp2 with a GPU per rank not run: this machine has " << backend::cuda_device_count() << " GPU(s)");
      continue;
    }
    const std::string name = per_rank ? "tp2-per-rank" : "tp2-shared";
    const std::string sets = " --set parallel.tp=2 --set output.dir=" + (dir / name).string() +
                             (per_rank ? " --set runtime.device=cuda" : "");
    REQUIRE_MESSAGE(run_on_ranks(2, "adapt_gen", input + sets, &out) == 0, out);
    const std::string kind = per_rank && ADAPT_HAVE_NCCL ? "nccl" : "mpi";
    CHECK_MESSAGE(out.find("tp communicator on the GPUs: " + kind) != std::string::npos, out);
    CHECK_MESSAGE((out.find("share GPU") != std::string::npos) == !per_rank, out);
    check_same_results(results_by_id(dir / name / "results.jsonl"), one);
  }
}
