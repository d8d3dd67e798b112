// adapt_train and adapt_gen on several ranks (mpiexec, oversubscribed), on the tiny model:
// dp2 and dp4 (with and without ZeRO-1), and tp2, pp2, tp2×pp2, tp2×dp2 and tp2×pp2×dp2 give the single
// process's losses, eval losses and final adapter weights (and AdamW moments) within 1e-5 relative (weights:
// norm-wise, see worst_rel); a dp2 run stopped and resumed is bit-identical to an uninterrupted one, and a checkpoint
// written at dp2 resumes on one process (and the reverse), one written at tp2×pp2×dp2 at 1×1×1 and at tp2, with
// matching losses; metrics' comm_bytes is 0 on one process and the same at every step of a layout; a signal at one rank
// (dp2 and tp2×pp2) stops every rank with exit 75 after one checkpoint, and the job resumes; layouts
// that do not fit are refused with the values that work (printed once); adapt_gen's replicas share out the prompts and
// write the results of one process, each prompt once, and a rerun skips them all; adapt_gen at tp2, pp2, tp2×dp2 and
// tp2×pp2×dp2 (tp2 and pp2 also with a trained LoRA adapter) writes the tokens of one process,
// conversations continued over two jobs at dp2, tp2 and pp2×dp2 give one process's turns and files, and
// a signal at one rank of adapt_gen at tp2, pp2 or dp2 stops the job with exit 75 after saving the progress of
// the prompts in flight, which the rerun continues to the uninterrupted run's texts on that layout.
#include <doctest/doctest.h>

#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "checkpoint/checkpoint.h"
#include "core/file.h"
#include "tests/support/test_support.h"

using namespace adapt;
using json = nlohmann::json;

namespace {

using test::bin;
using test::Run;
using test::run;
/// `command` on `n` ranks (n = 1: a plain process, no launcher). One OpenMP thread per rank: ranks
/// oversubscribing the cores, each with a thread per core, run many times slower.
std::string on_ranks(int n, const std::string& command) {
  if (n == 1) return command;
  return std::string(ADAPT_MPIEXEC) + " -n " + std::to_string(n) + " " + ADAPT_MPIEXEC_FLAGS +
         " env OMP_NUM_THREADS=1 " + command;
}
/// The --set options of a layout.
std::string layout(int tp, int pp) {
  return " --set parallel.tp=" + std::to_string(tp) + " --set parallel.pp=" + std::to_string(pp) + " ";
}
std::size_t count(const std::string& text, const std::string& needle) {
  std::size_t n = 0;
  for (std::size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

/// The tiny model, the corpus, and a job writing to run.dir = "run" unless told otherwise.
struct Job {
  test::TempDir dir{"adapt-parallel"};
  fs::path toml;
  Job() {
    REQUIRE(run(bin("adapt_model") + " make --preset tiny --out " + (dir / "model").string()).code == 0);
    toml = dir / "train.toml";
    test::write_bytes(toml,
                      "[model]\npath = \"model\"\n[adapter]\nkind = \"lora\"\n[adapter.lora]\nr = 4\nalpha = 8.0\n"
                      "targets = [\"q\", \"v\", \"down\"]\n[data]\ninputs = [\"" +
                          (test::source_dir() / "inputs/corpus").string() +
                          "\"]\nglobs = [\"**/*.py\", \"**/*.cpp\"]\nseq_len = 32\neval_documents = 1\n"
                          "cache_dir = \"cache\"\n[optim]\nlr = 1e-2\nwarmup_steps = 2\nmax_grad_norm = 0.1\n"
                          "[train]\nsteps = 5\nmicro_batch = 4\ngrad_accum = 2\neval_every = 5\neval_batches = 2\n"
                          "[checkpoint]\nevery = 3\nkeep_last = 0\n[run]\ndir = \"run\"\n");
  }
  std::string train_cmd(const std::string& run_dir, const std::string& args) const {
    return bin("adapt_train") + " --config " + toml.string() + " --set run.dir=" + (dir / run_dir).string() + " " +
           args;
  }
  Run train(int ranks, const std::string& run_dir, const std::string& args = "") const {
    return run(on_ranks(ranks, train_cmd(run_dir, args)));
  }
  /// The train (or eval) records of a run, by step.
  std::map<std::int64_t, json> metrics(const std::string& run_dir, const char* kind = "train") const {
    std::map<std::int64_t, json> m;
    const std::string text = file_read_text(dir / run_dir / "metrics.jsonl");
    std::size_t start = 0;
    while (start < text.size()) {
      const std::size_t nl = text.find('\n', start);
      json j = json::parse(text.substr(start, nl - start));
      if (j["kind"] == kind) m[j["step"].get<std::int64_t>()] = j;
      start = nl + 1;
    }
    return m;
  }
  checkpoint::CheckpointState checkpoint(const std::string& run_dir, std::int64_t step) const {
    return checkpoint::checkpoint_load(dir / run_dir / "checkpoints" / checkpoint::checkpoint_file_name(step));
  }
};

/// ||a - b|| / ||b|| (Frobenius) of each tensor of `b`'s state under `prefix`; the worst. Norm-wise: an
/// element whose gradient is near zero gets an Adam step of about lr·g/(|g| + eps), which turns the
/// gradients' last-bit differences (another summation order over ranks) into larger relative changes
/// of that one element, while the tensor as a whole agrees to about 1e-6.
double worst_rel(const checkpoint::CheckpointState& a, const checkpoint::CheckpointState& b,
                 const std::string& prefix) {
  double worst = 0;
  std::size_t n = 0;
  for (const auto& [key, tb] : b.tensors) {
    if (key.rfind(prefix, 0) != 0) continue;
    ++n;
    REQUIRE(a.tensors.count(key) == 1);
    const Tensor& ta = a.tensors.at(key);
    REQUIRE(ta.shape() == tb.shape());
    double diff = 0, norm = 0;
    for (std::int64_t i = 0; i < tb.numel(); ++i) {
      const double x = ta.data<float>()[i], y = tb.data<float>()[i];
      diff += (x - y) * (x - y);
      norm += y * y;
    }
    worst = std::max(worst, norm > 0 ? std::sqrt(diff / norm) : std::sqrt(diff));
  }
  REQUIRE(n > 0);
  return worst;
}

bool bit_identical(const checkpoint::CheckpointState& a, const checkpoint::CheckpointState& b) {
  if (a.tensors.size() != b.tensors.size()) return false;
  for (const auto& [key, tb] : b.tensors) {
    if (a.tensors.count(key) == 0) return false;
    const Tensor& ta = a.tensors.at(key);
    if (!(ta.shape() == tb.shape()) || std::memcmp(ta.data<float>(), tb.data<float>(), tb.size_bytes()) != 0)
      return false;
  }
  return true;
}

/// Losses of `got` within `rel` of `want` at every step of `want` from `first` on.
void check_losses(const std::map<std::int64_t, json>& got, const std::map<std::int64_t, json>& want, double rel,
                  std::int64_t first = 1) {
  for (const auto& [step, w] : want) {
    if (step < first) continue;
    CAPTURE(step);
    REQUIRE(got.count(step) == 1);
    const double a = got.at(step)["loss"].get<double>(), b = w["loss"].get<double>();
    CHECK(std::fabs(a - b) <= rel * std::fabs(b));
    CHECK(got.at(step)["loss_tokens"] == w["loss_tokens"]);
  }
}

/// id -> text of every record of a results file's contents (JSON Lines).
std::map<std::string, std::string> texts_by_id(const std::string& jsonl) {
  std::map<std::string, std::string> m;
  for (std::size_t start = 0; start < jsonl.size();) {
    const std::size_t nl = jsonl.find('\n', start);
    const json j = json::parse(jsonl.substr(start, nl - start));
    m[j["id"].get<std::string>()] = j["text"].get<std::string>();
    start = nl + 1;
  }
  return m;
}

}  // namespace

TEST_CASE("dp2, dp4, tp2, pp2, tp2×pp2, tp2×dp2 and tp2×pp2×dp2 give the single process's losses and adapter") {
  Job job;
  // LoRA; and LoRA with dropout and a bottleneck adapter and weight decay (ZeRO-1 shards then cut through
  // tensors with and without decay) on the 2-rank layouts: a row's dropout mask is the same on any layout.
  for (const std::string& kind :
       {std::string(""), std::string("--set adapter.kind=lora+bottleneck --set adapter.bottleneck.size=8 "
                                     "--set optim.weight_decay=0.05 --set adapter.lora.dropout=0.1")}) {
    CAPTURE(kind);
    const std::string tag = kind.empty() ? "lora" : "both";
    Run one = job.train(1, tag + "1", kind);
    INFO(one.out);
    REQUIRE(one.code == 0);
    const auto want = job.metrics(tag + "1");
    REQUIRE(want.size() == 5);
    for (const auto& [step, w] : want) CHECK(w["comm_bytes"] == 0);  // one process: nothing to move
    const auto want_eval = job.metrics(tag + "1", "eval");
    REQUIRE(want_eval.size() == 2);
    const auto want_ckpt = job.checkpoint(tag + "1", 5);
    struct Layout {
      int tp, pp, dp;
      std::string args;
    };
    for (const Layout& l : std::vector<Layout>{{1, 1, 2, ""},
                                               {1, 1, 2, "--set parallel.zero1=false"},
                                               {1, 1, 4, ""},
                                               {2, 1, 1, ""},
                                               {1, 2, 1, ""},
                                               {2, 2, 1, ""},
                                               {2, 1, 2, ""},
                                               {2, 2, 2, ""}}) {
      const int ranks = l.tp * l.pp * l.dp;
      if (!kind.empty() && ranks > 2) continue;
      const std::string name =
          "tp" + std::to_string(l.tp) + " × pp" + std::to_string(l.pp) + " × dp" + std::to_string(l.dp);
      CAPTURE(name);
      CAPTURE(l.args);
      const std::string dir =
          tag + "-" + std::to_string(l.tp) + std::to_string(l.pp) + std::to_string(l.dp) + (l.args.empty() ? "" : "n");
      Run r = job.train(ranks, dir, kind + layout(l.tp, l.pp) + l.args);
      INFO(r.out);
      REQUIRE(r.code == 0);
      CHECK(r.out.find("layout " + name) != std::string::npos);
      CHECK(count(r.out, "step 5/5") == 1);  // rank 0 prints, the others stay quiet
      const auto got = job.metrics(dir);
      REQUIRE(got.size() == 5);
      check_losses(got, want, 1e-5);
      for (const auto& [step, w] : want) {
        CAPTURE(step);
        CHECK(got.at(step)["tokens"] == w["tokens"]);  // every replica's tokens, each counted once
        // Every step moves the same collectives over the same groups.
        CHECK(got.at(step)["comm_bytes"].get<std::int64_t>() > 0);
        CHECK(got.at(step)["comm_bytes"] == got.at(1)["comm_bytes"]);
        const double a = got.at(step)["grad_norm"].get<double>(), b = w["grad_norm"].get<double>();
        CHECK(std::fabs(a - b) <= 1e-5 * b);  // the whole adapter's norm, each element once
      }
      const auto got_eval = job.metrics(dir, "eval");
      for (const auto& [step, w] : want_eval) {
        CAPTURE(step);
        REQUIRE(got_eval.count(step) == 1);
        const double a = got_eval.at(step)["eval_loss"].get<double>(), b = w["eval_loss"].get<double>();
        CHECK(std::fabs(a - b) <= 1e-5 * b);
      }
      const auto ckpt = job.checkpoint(dir, 5);
      CHECK(ckpt.world_layout == name);
      CHECK(worst_rel(ckpt, want_ckpt, "adapter/") <= 1e-5);
      CHECK(worst_rel(ckpt, want_ckpt, "optim/m/") <= 1e-5);
      CHECK(worst_rel(ckpt, want_ckpt, "optim/v/") <= 1e-5);
      // The exported adapter holds whole tensors, as one process's.
      const std::string file =
          kind.empty() ? "adapter/adapter_model.safetensors" : "adapter/lora/adapter_model.safetensors";
      REQUIRE(fs::exists(job.dir / dir / file));
      CHECK(fs::file_size(job.dir / dir / file) == fs::file_size(job.dir / (tag + "1") / file));
    }
  }

  // Generation with the trained LoRA adapter: tp2 and pp2 write the tokens of one process.
  test::write_bytes(job.dir / "gen.toml",
                    "[model]\npath = \"model\"\nadapter = \"lora1/adapter\"\n[output]\ndir = \"out\"\n"
                    "[defaults]\nmax_new_tokens = 8\n[runtime]\nbatch_size = 2\n"
                    "[[prompts]]\nid = \"a\"\ntext = \"def f(x):\"\n[[prompts]]\nid = \"b\"\ntext = \"int main() {\"\n"
                    "[[prompts]]\nid = \"c\"\ntext = \"import os\"\n");
  auto gen = [&](int tp, int pp, const std::string& out) {
    Run g = run(on_ranks(tp * pp, bin("adapt_gen") + " --input " + (job.dir / "gen.toml").string() + layout(tp, pp) +
                                      "--set output.dir=" + (job.dir / out).string()));
    INFO(g.out);
    REQUIRE(g.code == 0);
    return file_read_text(job.dir / out / "results.jsonl");
  };
  const auto one = texts_by_id(gen(1, 1, "gen1"));
  CHECK(one.size() == 3);
  CHECK(texts_by_id(gen(2, 1, "gen-tp2")) == one);
  CHECK(texts_by_id(gen(1, 2, "gen-pp2")) == one);
}

TEST_CASE("dp2 resumes bit-exactly, and a checkpoint resumes on another layout") {
  Job job;
  const std::string six = "--set train.steps=6";
  Run straight = job.train(2, "a", six);
  INFO(straight.out);
  REQUIRE(straight.code == 0);
  const auto want = job.metrics("a");
  const auto want_ckpt = job.checkpoint("a", 6);

  // Same layout: stopped after 3 steps, resumed.
  REQUIRE(job.train(2, "b", six + " --set train.stop_after=3").code == 0);
  Run b = job.train(2, "b", six);
  INFO(b.out);
  REQUIRE(b.code == 0);
  CHECK(b.out.find("resuming from") != std::string::npos);
  const auto got_b = job.metrics("b");
  for (const auto& [step, w] : want) CHECK(got_b.at(step)["loss"].get<double>() == w["loss"].get<double>());
  CHECK(bit_identical(job.checkpoint("b", 6), want_ckpt));

  // Saved at dp2, resumed on one process; saved on one process, resumed at dp2; saved at tp2×pp2×dp2,
  // resumed on one process and at tp2 (each rank cuts its slices from the whole tensors).
  struct Grid {
    int tp, pp, dp;
    int ranks() const { return tp * pp * dp; }
    std::string str() const {
      return "tp" + std::to_string(tp) + " × pp" + std::to_string(pp) + " × dp" + std::to_string(dp);
    }
  };
  const std::vector<std::tuple<Grid, Grid, std::string>> resumes{{{1, 1, 2}, {1, 1, 1}, "c"},
                                                                 {{1, 1, 1}, {1, 1, 2}, "d"},
                                                                 {{2, 2, 2}, {1, 1, 1}, "e"},
                                                                 {{2, 2, 2}, {2, 1, 1}, "f"}};
  for (const auto& [first, second, dir] : resumes) {
    CAPTURE(dir);
    REQUIRE(job.train(first.ranks(), dir, six + layout(first.tp, first.pp) + "--set train.stop_after=3").code == 0);
    Run r = job.train(second.ranks(), dir, six + layout(second.tp, second.pp));
    INFO(r.out);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("the checkpoint was written at " + first.str() + "; continuing at " + second.str()) !=
          std::string::npos);
    check_losses(job.metrics(dir), want, 1e-5);
    CHECK(worst_rel(job.checkpoint(dir, 6), want_ckpt, "adapter/") <= 1e-5);
    CHECK(worst_rel(job.checkpoint(dir, 6), want_ckpt, "optim/v/") <= 1e-5);
  }
}

TEST_CASE("a signal at one rank stops every rank with exit 75 after a checkpoint; the job resumes") {
  struct Layout {
    int tp, pp, ranks;
  };
  for (const Layout& l : std::vector<Layout>{{1, 1, 2}, {2, 2, 4}}) {
    CAPTURE(l.tp);
    CAPTURE(l.pp);
    Job job;
    const std::string metrics = (job.dir / "run/metrics.jsonl").string();
    const std::string cmd = job.train_cmd("run",
                                          "--set train.steps=100000 --set checkpoint.every=0 "
                                          "--set train.eval_every=0" +
                                              layout(l.tp, l.pp));
    // Each rank reports its own exit code; the signal goes to one adapt_train process (not to mpiexec).
    // mpiexec is told not to end the job when the first rank exits non-zero
    // (orte_abort_on_non_zero_status = 0): otherwise it kills the ranks still on their way out and
    // their reports are lost. In that mode mpiexec's own status is not the ranks', so each rank's is
    // checked. The wrapper also ignores SIGTERM (adapt_train installs its own handler).
    const std::string script =
        "export OMPI_MCA_orte_abort_on_non_zero_status=0; " +
        on_ranks(l.ranks, "bash -c \"trap '' TERM; " + cmd + "; e=\\$?; echo rank-exit=\\$e; exit \\$e\"") +
        " & pid=$!; for i in $(seq 1200); do "
        "grep -q '\"train\"' " +
        metrics +
        " 2>/dev/null && break; sleep 0.05; done; "
        "target=$(pgrep -f '^" +
        bin("adapt_train") + " --config " + job.toml.string() +
        "' | tail -1); "
        "kill -USR1 $target; wait $pid; echo exit=$?";
    test::write_bytes(job.dir / "signal.sh", script);
    Run r = run("bash " + (job.dir / "signal.sh").string());
    INFO(r.out);
    CHECK(count(r.out, "rank-exit=75") == static_cast<std::size_t>(l.ranks));
    CHECK(count(r.out, "rank-exit=") == static_cast<std::size_t>(l.ranks));
    CHECK(count(r.out, "received SIGUSR1") == 1);
    CHECK(r.out.find("layout tp" + std::to_string(l.tp) + " × pp" + std::to_string(l.pp) + " × dp" +
                     std::to_string(l.ranks / (l.tp * l.pp))) != std::string::npos);
    REQUIRE(fs::exists(job.dir / "run/checkpoints/latest"));
    std::size_t n_ckpt = 0;
    for (const auto& e : fs::directory_iterator(job.dir / "run/checkpoints"))
      if (e.path().extension() == ".h5") ++n_ckpt;
    CHECK(n_ckpt == 1);
    const std::int64_t stopped_at = job.metrics("run").rbegin()->first;
    Run again =
        job.train(l.ranks, "run",
                  "--set train.steps=100000 --set train.stop_after=2 --set train.eval_every=0" + layout(l.tp, l.pp));
    INFO(again.out);
    CHECK(again.code == 0);
    CHECK(again.out.find("resuming from") != std::string::npos);
    CHECK(again.out.find("at step " + std::to_string(stopped_at)) != std::string::npos);
    CHECK(job.metrics("run").rbegin()->first == stopped_at + 2);
  }
}

TEST_CASE("layouts that do not fit are refused before any work, listing what works") {
  Job job;
  Run tp2 = job.train(3, "bad", "--set parallel.tp=2");
  INFO(tp2.out);
  CHECK(tp2.code == 2);
  CHECK(tp2.out.find("parallel.tp = 2 does not divide the world size 3") != std::string::npos);
  CHECK(tp2.out.find("Choose tp in {1}") != std::string::npos);
  CHECK(count(tp2.out, "Choose tp in") == 1);  // printed by rank 0 only
  Run heads = job.train(4, "bad", "--set parallel.tp=4 --dry-run");
  INFO(heads.out);
  CHECK(heads.code == 2);
  CHECK(heads.out.find("parallel.tp = 4 does not divide num_key_value_heads = 2") != std::string::npos);
  CHECK(heads.out.find("Choose tp in {1, 2}") != std::string::npos);
  CHECK(count(heads.out, "Choose tp in") == 1);
  Run batch = job.train(2, "bad", "--set train.micro_batch=3");
  INFO(batch.out);
  CHECK(batch.code == 2);
  CHECK(batch.out.find("train.micro_batch = 3") != std::string::npos);
  CHECK(!fs::exists(job.dir / "bad"));
  Run dry = job.train(2, "bad", "--dry-run");
  INFO(dry.out);
  CHECK(dry.code == 0);
  CHECK(dry.out.find("per rank of tp1 × pp1 × dp2: 2 dp replicas") != std::string::npos);
  CHECK(count(dry.out, "memory estimate") == 1);
  Run dry_tp = job.train(2, "bad", "--set parallel.tp=2 --dry-run");
  INFO(dry_tp.out);
  CHECK(dry_tp.code == 0);
  CHECK(dry_tp.out.find("per rank of tp2 × pp1 × dp1") != std::string::npos);
  CHECK(!fs::exists(job.dir / "bad"));
}

TEST_CASE("adapt_gen: dp replicas share out the prompts and write what one process writes") {
  Job job;
  std::string prompts =
      "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 6\n"
      "[runtime]\nbatch_size = 2\n";
  for (int i = 0; i < 7; ++i)
    prompts += "[[prompts]]\nid = \"p" + std::to_string(i) + "\"\ntext = \"def f" + std::to_string(i) + "(x):\"\n" +
               (i % 3 == 1 ? "temperature = 0.8\nseed = " + std::to_string(i) + "\n" : "");
  test::write_bytes(job.dir / "gen.toml", prompts);
  auto gen = [&](int ranks, const std::string& out) {
    return run(on_ranks(ranks, bin("adapt_gen") + " --input " + (job.dir / "gen.toml").string() +
                                   " --set output.dir=" + (job.dir / out).string()));
  };
  auto records = [&](const std::string& out) {
    std::map<std::string, std::string> m;
    std::size_t n = 0;
    const std::string text = file_read_text(job.dir / out / "results.jsonl");
    for (std::size_t start = 0; start < text.size();) {
      const std::size_t nl = text.find('\n', start);
      const json j = json::parse(text.substr(start, nl - start));
      m[j["id"].get<std::string>()] = j["text"].get<std::string>();
      ++n;
      start = nl + 1;
    }
    CHECK(n == m.size());  // each prompt once
    return m;
  };
  Run one = gen(1, "out1");
  INFO(one.out);
  REQUIRE(one.code == 0);
  Run two = gen(2, "out2");
  INFO(two.out);
  REQUIRE(two.code == 0);
  CHECK(two.out.find("2 data-parallel replicas share the 7 prompt(s)") != std::string::npos);
  CHECK(two.out.find("done: 7 prompt(s) finished") != std::string::npos);
  const auto a = records("out1"), b = records("out2");
  CHECK(a.size() == 7);
  CHECK(a == b);
  for (const auto& e : fs::directory_iterator(job.dir / "out2"))
    CHECK(e.path().filename().string().find(".dp-") == std::string::npos);  // parts merged and removed
  Run again = gen(2, "out2");
  INFO(again.out);
  CHECK(again.code == 0);
  CHECK(again.out.find("done: 0 prompt(s) finished") != std::string::npos);
  CHECK(records("out2") == a);
  // tp2, pp2, tp2 × dp2 and tp2 × pp2 × dp2: the tp and pp ranks of a replica produce one process's
  // tokens; one of them writes.
  const std::vector<std::tuple<int, int, int>> layouts{{2, 1, 2}, {1, 2, 2}, {2, 1, 4}, {2, 2, 8}};  // tp, pp, ranks
  for (const auto& [tp, pp, ranks] : layouts) {
    const std::string out = "out-" + std::to_string(tp) + std::to_string(pp) + std::to_string(ranks);
    CAPTURE(out);
    Run t = run(on_ranks(ranks, bin("adapt_gen") + " --input " + (job.dir / "gen.toml").string() + layout(tp, pp) +
                                    "--set output.dir=" + (job.dir / out).string()));
    INFO(t.out);
    REQUIRE(t.code == 0);
    CHECK(t.out.find("done: 7 prompt(s) finished") != std::string::npos);
    CHECK(records(out) == a);
  }

  // An interrupted 3-replica run left part files: one process merges them first and runs only the
  // rest; a record cut by the crash runs again.
  const std::string text = file_read_text(job.dir / "out2/results.jsonl");
  std::vector<std::string> lines;
  for (std::size_t start = 0; start < text.size();) {
    const std::size_t nl = text.find('\n', start);
    lines.push_back(text.substr(start, nl - start + 1));
    start = nl + 1;
  }
  REQUIRE(lines.size() == 7);
  test::write_bytes(job.dir / "out2/results.jsonl", lines[0] + lines[1]);
  test::write_bytes(job.dir / "out2/results.dp-0-of-3.jsonl", lines[2] + lines[3]);
  test::write_bytes(job.dir / "out2/results.dp-2-of-3.jsonl", lines[1] + lines[4] + lines[5].substr(0, 10));
  Run resumed = gen(1, "out2");
  INFO(resumed.out);
  CHECK(resumed.code == 0);
  CHECK(resumed.out.find("merged 3 record(s)") != std::string::npos);
  CHECK(resumed.out.find("done: 2 prompt(s) finished") != std::string::npos);
  CHECK(records("out2") == a);
  CHECK(!fs::exists(job.dir / "out2/results.dp-0-of-3.jsonl"));
}

TEST_CASE("adapt_gen: conversations at dp2, tp2 and pp2×dp2 give one process's turns and conversation files") {
  Job job;
  // Three conversations: a first turn, then two more in a later job, beside prompts without one. The
  // turns of a conversation stay on the replica of its first prompt's position (c0: 0, c1: 1, c2: 3,
  // so at dp2 both replicas hold conversations), in file order.
  const std::string head =
      "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 6\n"
      "[runtime]\nbatch_size = 2\n";
  auto turn = [](const std::string& id, int c, const std::string& what) {
    return "[[prompts]]\nid = \"" + id + "\"\nconversation = \"c" + std::to_string(c) + "\"\n" + what + "\n";
  };
  auto plain = [](int i) {
    return "[[prompts]]\nid = \"p" + std::to_string(i) + "\"\ntext = \"def g" + std::to_string(i) + "(x):\"\n";
  };
  const std::string first = head + turn("c0-1", 0, "user = \"Write f0.\"") +
                            turn("c1-1", 1,
                                 "user = \"Write f1.\"\n"
                                 "temperature = 0.8\nseed = 5") +
                            plain(0) + turn("c2-1", 2, "text = \"int f2() {\"") + plain(1) + plain(2);
  const std::string second = head + turn("c0-2", 0, "user = \"And g0.\"") + turn("c1-2", 1, "user = \"And g1.\"") +
                             turn("c0-3", 0, "text = \"// end\"") + turn("c2-2", 2, "text = \"\\n  return 0;\"") +
                             turn("c1-3", 1, "text = \"// end\"") + turn("c2-3", 2, "user = \"Explain.\"");
  test::write_bytes(job.dir / "first.toml", first);
  test::write_bytes(job.dir / "second.toml", second);
  // Both jobs; returns the second's output.
  auto gen = [&](int ranks, int tp, int pp, const std::string& out, const std::string& extra = "") {
    Run r;
    for (const char* file : {"first.toml", "second.toml"}) {
      r = run(on_ranks(ranks, bin("adapt_gen") + " --input " + (job.dir / file).string() + layout(tp, pp) +
                                  "--set output.dir=" + (job.dir / out).string() + extra));
      INFO(r.out);
      REQUIRE(r.code == 0);
    }
    return r.out;
  };
  auto texts = [&](const std::string& out) { return texts_by_id(file_read_text(job.dir / out / "results.jsonl")); };
  gen(1, 1, 1, "one");
  const auto a = texts("one");
  CHECK(a.size() == 12);
  const std::vector<std::tuple<int, int, int>> layouts{{1, 1, 2}, {2, 1, 2}, {1, 2, 4}};  // tp, pp, ranks
  for (const auto& [tp, pp, ranks] : layouts) {
    const std::string out = "out-" + std::to_string(tp) + std::to_string(pp) + std::to_string(ranks);
    CAPTURE(out);
    gen(ranks, tp, pp, out);
    CHECK(texts(out) == a);
    for (int i = 0; i < 3; ++i) {
      const std::string name = "conversations/c" + std::to_string(i) + ".json";
      CHECK(file_read_text(job.dir / out / name) == file_read_text(job.dir / "one" / name));
    }
  }
  // output.conversation_kv: the later turns load their conversation's KV cache (with tp or pp > 1 every
  // rank its own part) and give the same turns.
  for (const auto& [tp, pp, ranks] : std::vector<std::tuple<int, int, int>>{{1, 1, 1}, {2, 1, 2}, {1, 2, 4}}) {
    const std::string out = "kv-" + std::to_string(tp) + std::to_string(pp) + std::to_string(ranks);
    CAPTURE(out);
    const std::string log = gen(ranks, tp, pp, out, " --set output.conversation_kv=true");
    CHECK(log.find("prompt 'c2-3': loaded the KV cache of ") != std::string::npos);
    CHECK(log.find("warning") == std::string::npos);
    CHECK(texts(out) == a);
    for (int i = 0; i < 3; ++i) {
      const std::string name = "conversations/c" + std::to_string(i) + ".json";
      CHECK(file_read_text(job.dir / out / name) == file_read_text(job.dir / "one" / name));
    }
    const fs::path conv = job.dir / out / "conversations";
    if (tp == 1 && pp == 1) {
      CHECK(fs::exists(conv / "c2.kv"));
    } else {
      for (int t = 0; t < tp; ++t)
        for (int p = 0; p < pp; ++p)
          CHECK(fs::exists(conv / ("c2.tp" + std::to_string(t) + "of" + std::to_string(tp) + ".pp" + std::to_string(p) +
                                   "of" + std::to_string(pp) + ".kv")));
    }
  }
}

TEST_CASE("adapt_gen: a signal at one rank of tp2, pp2 or dp2 stops the job with exit 75; the rerun continues") {
  Job job;
  // A model that generates for seconds (wider, deeper, a longer context); prefill_chunk = 1 makes the
  // continued prompt bit for bit the uninterrupted run's on the same layout.
  REQUIRE(run(bin("adapt_model") + " make --recipe " + (test::source_dir() / "inputs/models/tiny.toml").string() +
              " --set shape.max_position_embeddings=4096 --set shape.hidden_size=256 --set shape.intermediate_size=768"
              " --set shape.head_dim=64 --layers 4 --out " +
              (job.dir / "model-long").string())
              .code == 0);
  test::write_bytes(job.dir / "long.toml",
                    "[model]\npath = \"model-long\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 2000\n"
                    "[runtime]\nbatch_size = 2\nprefill_chunk = 1\nprogress_every = 16\n"
                    "[[prompts]]\nid = \"long\"\ntext = \"int main() {\"\n"
                    "[[prompts]]\nid = \"sampled\"\ntext = \"def f(x):\"\ntemperature = 0.8\nseed = 7\n");
  const std::string gen = bin("adapt_gen") + " --input " + (job.dir / "long.toml").string();
  // tp2 and pp2: the replica's ranks agree after each step, so both stop. dp2: the signalled replica
  // saves its prompt and stops, the other finishes its own; the job as a whole exits 75.
  const std::vector<std::tuple<std::string, int, int>> layouts{{"tp2", 2, 1}, {"pp2", 1, 2}, {"dp2", 1, 1}};
  for (const auto& [name, tp, pp] : layouts) {
    CAPTURE(name);
    const std::string cmd = gen + layout(tp, pp);
    const fs::path out = job.dir / ("out-" + name), ref = job.dir / ("ref-" + name);
    Run uninterrupted = run(on_ranks(2, cmd + "--set output.dir=" + ref.string()));
    INFO(uninterrupted.out);
    REQUIRE(uninterrupted.code == 0);
    // The signal goes to one adapt_gen process once the first progress has been saved: with tp2 and pp2
    // to world rank 1 (not the rank that writes), with dp2 to rank 0, the replica that has the long
    // prompt (rank 1's share, the sampled prompt, may be done by then). As for adapt_train above,
    // mpiexec keeps the ranks' own exit codes.
    const std::string saved = (out / "progress/long.json").string();
    const std::string target_rank = name == "dp2" ? "0" : "1";
    const std::string script =
        "export OMPI_MCA_orte_abort_on_non_zero_status=0; " +
        on_ranks(2, "bash -c \"trap '' TERM; " + cmd + "--set output.dir=" + out.string() +
                        "; e=\\$?; echo rank-exit=\\$e; exit \\$e\"") +
        " & pid=$!; for i in $(seq 2000); do [ -s " + saved +
        " ] && break; sleep 0.01; done; "
        "target=$(for p in $(pgrep -f '^" +
        gen + "'); do grep -qz '^OMPI_COMM_WORLD_RANK=" + target_rank +
        "$' /proc/$p/environ && echo $p; done | head -1); kill -USR1 $target; wait $pid; echo exit=$?";
    test::write_bytes(job.dir / "signal.sh", script);
    Run r = run("bash " + (job.dir / "signal.sh").string());
    INFO(r.out);
    CHECK(count(r.out, "rank-exit=75") == 2);
    CHECK(count(r.out, "received SIGUSR1") == 1);
    REQUIRE(!fs::is_empty(out / "progress"));
    Run again = run(on_ranks(2, cmd + "--set output.dir=" + out.string()));
    INFO(again.out);
    CHECK(again.code == 0);
    CHECK(again.out.find("': continuing after") != std::string::npos);
    CHECK(texts_by_id(file_read_text(out / "results.jsonl")) == texts_by_id(file_read_text(ref / "results.jsonl")));
    CHECK(fs::is_empty(out / "progress"));
  }
}
