// adapt_train end to end on the tiny model: training lowers the loss; a run stopped and resumed gives
// the same losses and bit-identical adapter weights as an uninterrupted run; a signal writes a
// checkpoint and exits 75; bad jobs, diverging runs, a checkpoint of another base model, a corrupt
// checkpoint and a full disk each fail (or recover) as documented.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/file.h"
#include "tests/support/test_support.h"

using namespace adapt;
using json = nlohmann::json;

namespace {

struct Run {
  int code;
  std::string out;
};

Run run(const std::string& cmd) {
  Run r;
  r.code = test::run_command(cmd, &r.out);
  return r;
}
std::string bin(const char* name) { return (test::binary_dir() / "bin" / name).string(); }

struct Job {
  test::TempDir dir;
  fs::path toml;
  explicit Job(const std::string& extra = "", const std::string& adapter = "kind = \"lora\"\n[adapter.lora]\nr = 4\n"
                                                                           "alpha = 8.0\ntargets = [\"q\", \"v\", \"down\"]\n") {
    REQUIRE(run(bin("adapt_model") + " make --preset tiny --out " + (dir / "model").string()).code == 0);
    toml = dir / "train.toml";
    test::write_bytes(toml, "[model]\npath = \"model\"\n[adapter]\n" + adapter +
                                "[data]\ninputs = [\"" + (test::source_dir() / "inputs/corpus").string() +
                                "\"]\nglobs = [\"**/*.py\", \"**/*.cpp\"]\nseq_len = 32\neval_documents = 1\n"
                                "cache_dir = \"cache\"\n[optim]\nlr = 1e-2\nwarmup_steps = 2\n"
                                "[train]\nsteps = 10\nmicro_batch = 2\neval_every = 5\neval_batches = 2\n"
                                "[checkpoint]\nevery = 5\nkeep_last = 3\n[run]\ndir = \"run\"\n" + extra);
  }
  Run train(const std::string& args = "") { return run(bin("adapt_train") + " --config " + toml.string() + " " + args); }
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

}  // namespace

TEST_CASE("training lowers the loss and a resumed run is bit-identical to an uninterrupted one") {
  Job straight;
  Run a = straight.train();
  INFO(a.out);
  REQUIRE(a.code == 0);
  auto losses = straight.metrics("train");
  REQUIRE(losses.size() == 10);
  CHECK(a.out.find("step 10/10") != std::string::npos);
  CHECK(fs::exists(straight.dir / "run/adapter/adapter_model.safetensors"));
  CHECK(fs::exists(straight.dir / "run/adapter/adapter_config.json"));
  CHECK(straight.metrics("eval").size() == 3);  // before training (the base model), at 5 and at 10

  Job resumed;
  Run b1 = resumed.train("--set train.stop_after=5");  // the same job, stopped after 5 steps...
  REQUIRE(b1.code == 0);
  CHECK_FALSE(fs::exists(resumed.dir / "run/adapter"));
  Run b2 = resumed.train();                            // ...and run again: it resumes at step 5
  INFO(b2.out);
  REQUIRE(b2.code == 0);
  CHECK(b2.out.find("resuming from") != std::string::npos);
  auto resumed_losses = resumed.metrics("train");
  REQUIRE(resumed_losses.size() == 10);
  for (int i = 0; i < 10; ++i) {
    CAPTURE(i);
    CHECK(resumed_losses[i]["loss"].get<double>() == losses[i]["loss"].get<double>());
  }
  CHECK(file_read_text(resumed.dir / "run/adapter/adapter_model.safetensors") ==
        file_read_text(straight.dir / "run/adapter/adapter_model.safetensors"));
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
  const std::string eval = bin("adapt_eval") + " --model " + (job.dir / "model").string() + " --data " +
                           (job.dir / "eval.jsonl").string();
  Run base = run(eval), adapted = run(eval + " --adapter " + (job.dir / "run/adapter").string());
  INFO(base.out, adapted.out);
  REQUIRE(base.code == 0);
  REQUIRE(adapted.code == 0);
  const double base_loss = std::stod(base.out.substr(base.out.find("loss ") + 5));
  const double adapted_loss = std::stod(adapted.out.substr(adapted.out.find("loss ") + 5));
  CHECK(adapted_loss < base_loss);
  test::write_bytes(job.dir / "gen.toml", "[model]\npath = \"model\"\nadapter = \"run/adapter\"\n[output]\ndir = \"gen\"\n"
                                          "[defaults]\nmax_new_tokens = 8\n[[prompts]]\nid = \"a\"\ntext = \"def \"\n");
  Run gen = run(bin("adapt_gen") + " --input " + (job.dir / "gen.toml").string());
  INFO(gen.out);
  CHECK(gen.code == 0);
  CHECK(gen.out.find("adapter") != std::string::npos);
}

TEST_CASE("SIGUSR1 writes a checkpoint at the next step and exits 75; the rerun resumes") {
  Job job("", "kind = \"bottleneck\"\n[adapter.bottleneck]\nsize = 16\nplacement = \"houlsby\"\n");
  const std::string metrics = (job.dir / "run/metrics.jsonl").string();
  Run r = run("bash -c '" + bin("adapt_train") + " --config " + job.toml.string() +
              " --set train.steps=100000 --set checkpoint.every=0 & pid=$!; for i in $(seq 600); do "
              "[ -s " + metrics + " ] && break; sleep 0.05; done; kill -USR1 $pid; wait $pid; echo exit=$?'");
  INFO(r.out);
  CHECK(r.out.find("exit=75") != std::string::npos);
  CHECK(r.out.find("received signal") != std::string::npos);
  CHECK(fs::exists(job.dir / "run/checkpoints/latest"));
  Run again = job.train("--set train.steps=3 --set checkpoint.every=0");
  INFO(again.out);
  CHECK(again.out.find("resuming from") != std::string::npos);
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
  Run dry = job.train("--dry-run");
  expect(dry, 0, "memory estimate");
  CHECK_FALSE(fs::exists(job.dir / "run/checkpoints"));

  // Train 5 steps, then: a diverging learning rate stops with exit 1 and leaves the checkpoint alone.
  REQUIRE(job.train("--set train.stop_after=5").code == 0);
  const std::string ckpt = file_read_text(job.dir / "run/checkpoints/latest");
  Run diverged = job.train("--set optim.lr=1e30 --set optim.max_grad_norm=0");
  expect(diverged, 1, "diverged");
  CHECK(file_read_text(job.dir / "run/checkpoints/latest") == ckpt);

  // A checkpoint written for another base model is refused, naming both fingerprints.
  REQUIRE(run(bin("adapt_model") + " make --preset tiny --seed 9 --force --out " + (job.dir / "model").string()).code == 0);
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
