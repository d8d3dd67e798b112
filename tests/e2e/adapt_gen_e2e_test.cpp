// adapt_gen end to end on the tiny model: results written as prompts finish, the same job run again
// skips finished prompts, greedy output is deterministic, output files land inside the output folder,
// texts do not depend on runtime.batch_size (results then come in finishing order), bad jobs fail
// with a clear message and exit code 2 before anything is generated, conversations continue across
// jobs as within one job (a rerun drops a turn saved without its result), a job stopped by SIGUSR1
// continues its prompts in flight from their saved progress to the texts of an uninterrupted run, and
// runtime.device = "cuda" without a usable GPU stops before anything is written, naming the key and
// the reason.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <nlohmann/json.hpp>

#include "core/file.h"
#include "core/strings.h"
#include "runtime_device_refusals.h"
#include "tests/support/test_support.h"

using namespace adapt;
using json = nlohmann::json;

namespace {

struct Run {
  int code;
  std::string out;
};

Run run(const std::string& bin, const std::string& args) {
  Run r;
  r.code = test::run_command((test::binary_dir() / "bin" / bin).string() + " " + args, &r.out);
  return r;
}

// Two conversations over three jobs: a (chat turns, then a turn that continues a2's cut reply, both
// writing a.c) and b (raw text, sampled).
const std::string kTurnA1 =
    "[[prompts]]\nid = \"a1\"\nconversation = \"a\"\nsystem = \"Be brief.\"\n"
    "user = \"Write a loop.\"\noutput = \"a.c\"\n";
const std::string kTurnB1 =
    "[[prompts]]\nid = \"b1\"\nconversation = \"b\"\ntext = \"int main() {\"\n"
    "temperature = 0.8\nseed = 3\n";
const std::string kTurnA2 = "[[prompts]]\nid = \"a2\"\nconversation = \"a\"\nuser = \"Now in C++.\"\n";
const std::string kTurnA3 = "[[prompts]]\nid = \"a3\"\nconversation = \"a\"\noutput = \"a.c\"\n";
const std::string kTurnB2 = "[[prompts]]\nid = \"b2\"\nconversation = \"b\"\ntext = \"\\n  return 0;\"\n";

// The demo's tiny model (inputs/models/tiny.toml) in dir/model, where the jobs' `path = "model"` finds it.
void make_tiny_model(const fs::path& dir) {
  REQUIRE(run("adapt_model", "make --recipe " + (test::source_dir() / "inputs/models/tiny.toml").string() + " --out " +
                                 (dir / "model").string())
              .code == 0);
}

std::vector<json> read_results(const fs::path& p) {
  std::vector<json> v;
  std::string text = file_read_text(p);
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t nl = text.find('\n', start);
    v.push_back(json::parse(text.substr(start, nl - start)));
    start = nl + 1;
  }
  return v;
}

// Records by id (the file is in finishing order).
std::map<std::string, json> by_id(const std::vector<json>& records) {
  std::map<std::string, json> m;
  for (const auto& r : records) m[r["id"].get<std::string>()] = r;
  return m;
}

// The output folders `got` and `want` hold the same `n` turns: each result's text and prompt tokens, and
// the files of conversations a and b.
void check_same_turns(const fs::path& got, const fs::path& want, std::size_t n) {
  auto g = by_id(read_results(got / "results.jsonl"));
  const auto w = by_id(read_results(want / "results.jsonl"));
  REQUIRE(g.size() == n);
  REQUIRE(w.size() == n);
  for (const auto& [id, x] : w) {
    CAPTURE(id);
    CHECK(g[id]["text"] == x["text"]);
    CHECK(g[id]["prompt_tokens"] == x["prompt_tokens"]);
  }
  for (const char* name : {"a.json", "b.json"})
    CHECK(file_read_text(got / "conversations" / name) == file_read_text(want / "conversations" / name));
}

// The output folder `got` holds results with the texts of `want`, id by id.
void check_same_texts(const fs::path& got, const std::vector<json>& want) {
  auto g = by_id(read_results(got / "results.jsonl"));
  REQUIRE(g.size() == want.size());
  for (const auto& [id, x] : by_id(want)) {
    CAPTURE(id);
    CHECK(g[id]["text"] == x["text"]);
  }
}

std::vector<std::string> ids_in_order(const std::vector<json>& records) {
  std::vector<std::string> ids;
  for (const auto& r : records) ids.push_back(r["id"].get<std::string>());
  return ids;
}

}  // namespace

TEST_CASE("a prompt file runs, resumes and is deterministic") {
  test::TempDir dir;
  make_tiny_model(dir.path());
  const std::string job =
      "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 12\n"
      "[[prompts]]\nid = \"a\"\nuser = \"Write a loop.\"\noutput = \"src/a.txt\"\n"
      "[[prompts]]\nid = \"b\"\ntext = \"int main() {\"\nmax_new_tokens = 5\n"
      "[[prompts]]\nid = \"c\"\ntext = \"def f(x):\"\ntemperature = 0.9\nseed = 4\n";
  test::write_bytes(dir / "job.toml", job);
  Run r = run("adapt_gen", "--input " + (dir / "job.toml").string());
  INFO(r.out);
  REQUIRE(r.code == 0);
  CHECK(r.out.find("[3/3]") != std::string::npos);
  auto res = by_id(read_results(dir / "out/results.jsonl"));
  REQUIRE(res.size() == 3);
  CHECK(res["a"]["completion_tokens"].get<int>() <= 12);
  CHECK(res["b"]["completion_tokens"].get<int>() <= 5);
  for (const auto& [id, x] : res) {
    CHECK(x.contains("time_to_first_token_s"));
    CHECK(x.contains("tokens_per_s"));
    CHECK(x["prompt_tokens"].get<int>() > 0);
  }
  CHECK(file_read_text(dir / "out/src/a.txt") == res["a"]["text"].get<std::string>());

  // Run again: nothing to do, the file is unchanged.
  const std::string before = file_read_text(dir / "out/results.jsonl");
  Run again = run("adapt_gen", "--input " + (dir / "job.toml").string());
  CHECK(again.code == 0);
  CHECK(again.out.find("0 to run") != std::string::npos);
  CHECK(file_read_text(dir / "out/results.jsonl") == before);

  // A fresh output folder gives the same greedy and seeded texts.
  Run fresh =
      run("adapt_gen", "--input " + (dir / "job.toml").string() + " --set output.dir=" + (dir / "out2").string());
  REQUIRE(fresh.code == 0);
  auto res2 = by_id(read_results(dir / "out2/results.jsonl"));
  for (const char* id : {"a", "b", "c"}) CHECK(res2[id]["text"] == res[id]["text"]);
}

TEST_CASE("the model's eos_token_id (generation_config.json, else config.json) ends replies, as in HF generate") {
  test::TempDir dir;
  make_tiny_model(dir.path());
  // A greedy reply's tokens, from its conversation file.
  test::write_bytes(dir / "job.toml",
                    "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\n"
                    "max_new_tokens = 12\nstop = [\"<|eot_id|>\"]\n[[prompts]]\nid = \"x\"\n"
                    "conversation = \"x\"\ntext = \"int main() {\"\n");
  Run r = run("adapt_gen", "--input " + (dir / "job.toml").string());
  INFO(r.out);
  REQUIRE(r.code == 0);
  // A special token as a stop string never matches the decoded text: said.
  CHECK(r.out.find("stop string \"<|eot_id|>\" is a special token") != std::string::npos);
  const json conv = json::parse(file_read_text(dir / "out/conversations/x.json"));
  const auto tokens = conv["tokens"].get<std::vector<std::int32_t>>();
  const auto reply_start = conv["turns"][0]["reply_start"].get<std::size_t>();
  REQUIRE(tokens.size() >= reply_start + 4);
  REQUIRE(by_id(read_results(dir / "out/results.jsonl"))["x"]["finish_reason"] == "length");
  const std::int32_t end = tokens[reply_start + 3];  // an ordinary token, made an end token below
  const auto first =
      static_cast<int>(std::find(tokens.begin() + reply_start, tokens.end(), end) - tokens.begin() - reply_start);
  json gen = json::parse(file_read_text(dir / "model/generation_config.json"));
  gen["eos_token_id"] = {end};
  test::write_bytes(dir / "model/generation_config.json", gen.dump());
  for (const char* out : {"out_gen", "out_cfg"}) {
    CAPTURE(out);
    if (std::string(out) == "out_cfg") {  // without generation_config.json, config.json's
      fs::remove(dir / "model/generation_config.json");
      json cfg = json::parse(file_read_text(dir / "model/config.json"));
      cfg["eos_token_id"] = end;
      test::write_bytes(dir / "model/config.json", cfg.dump());
    }
    Run e = run("adapt_gen", "--input " + (dir / "job.toml").string() + " --set output.dir=" + (dir / out).string());
    INFO(e.out);
    REQUIRE(e.code == 0);
    auto res = by_id(read_results(dir / out / "results.jsonl"));
    CHECK(res["x"]["finish_reason"] == "eos");
    CHECK(res["x"]["completion_tokens"].get<int>() == first + 1);
  }
  // An eos_token_id that is not a token id is refused, naming the file.
  test::write_bytes(dir / "model/generation_config.json", "{\"eos_token_id\": \"</s>\"}");
  Run bad =
      run("adapt_gen", "--input " + (dir / "job.toml").string() + " --set output.dir=" + (dir / "out_bad").string());
  CHECK(bad.code == 3);
  CHECK(bad.out.find("generation_config.json': eos_token_id must be a token id") != std::string::npos);
}

TEST_CASE("one job at a time on a results file; an output folder that cannot be written fails before loading") {
  test::TempDir dir;
  make_tiny_model(dir.path());
  test::write_bytes(dir / "job.toml",
                    "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\n"
                    "max_new_tokens = 2\n[[prompts]]\nid = \"a\"\ntext = \"int\"\n");
  fs::create_directories(dir / "out");
  const std::string held = "bash -c 'exec 9>" + (dir / "out/.results.jsonl.lock").string() + " && flock -x 9 && " +
                           (test::binary_dir() / "bin/adapt_gen").string() + " --input " + (dir / "job.toml").string() +
                           "'";
  std::string out;
  CHECK(test::run_command(held, &out) == 3);
  CHECK(out.find("is in use by another job") != std::string::npos);
  CHECK(out.find("loaded ") == std::string::npos);
  // Another share (--shard) has its own results file and lock.
  std::string other;
  CHECK(test::run_command("bash -c 'exec 9>" + (dir / "out/.results.jsonl.lock").string() + " && flock -x 9 && " +
                              (test::binary_dir() / "bin/adapt_gen").string() + " --input " +
                              (dir / "job.toml").string() + " --shard 1/2'",
                          &other) == 0);
  test::write_bytes(dir / "file", "x");
  Run bad =
      run("adapt_gen", "--input " + (dir / "job.toml").string() + " --set output.dir=" + (dir / "file/out").string());
  CHECK(bad.code == 3);
  CHECK(bad.out.find("output.dir '") != std::string::npos);
  CHECK(bad.out.find("loaded ") == std::string::npos);
}

TEST_CASE("runtime.batch_size: the same texts as one at a time, results in finishing order") {
  test::TempDir dir;
  make_tiny_model(dir.path());
  // Prompts of different lengths; greedy and seeded sampling; lengths to generate from 3 to 40, so
  // rows free up at different steps and take the next prompt while the others decode.
  const std::string job =
      "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 24\n"
      "[[prompts]]\nid = \"long\"\nuser = \"Write a function that parses a CSV line into fields.\"\n"
      "max_new_tokens = 40\noutput = \"long.txt\"\n"
      "[[prompts]]\nid = \"short\"\ntext = \"int main() {\"\nmax_new_tokens = 3\n"
      "[[prompts]]\nid = \"sampled\"\ntext = \"def f(x):\"\ntemperature = 0.9\nseed = 4\n"
      "[[prompts]]\nid = \"one-token\"\ntext = \"x\"\nmax_new_tokens = 8\n"
      "[[prompts]]\nid = \"penalty\"\ntext = \"for (int i = 0; i < n; ++i)\"\nrepetition_penalty = 1.3\n"
      "[[prompts]]\nid = \"nucleus\"\nuser = \"Sort a list.\"\ntemperature = 0.7\ntop_p = 0.9\nseed = 11\n";
  test::write_bytes(dir / "job.toml", job);
  const std::string input = "--input " + (dir / "job.toml").string();
  Run one = run("adapt_gen", input + " --set runtime.batch_size=1 --set output.dir=" + (dir / "b1").string());
  INFO(one.out);
  REQUIRE(one.code == 0);
  CHECK(one.out.find("1 prompt(s) in flight") != std::string::npos);
  const auto res1 = read_results(dir / "b1/results.jsonl");
  CHECK(ids_in_order(res1) == std::vector<std::string>{"long", "short", "sampled", "one-token", "penalty", "nucleus"});

  for (const int batch : {3, 8}) {
    CAPTURE(batch);
    const fs::path out = dir / ("b" + std::to_string(batch));
    Run r = run("adapt_gen",
                input + " --set runtime.batch_size=" + std::to_string(batch) + " --set output.dir=" + out.string());
    INFO(r.out);
    REQUIRE(r.code == 0);
    CHECK(r.out.find(std::to_string(std::min(batch, 6)) + " prompt(s) in flight") != std::string::npos);
    CHECK(r.out.find("[6/6]") != std::string::npos);
    const auto res = read_results(out / "results.jsonl");
    REQUIRE(res.size() == 6);
    // Written as they finish: "short" (3 tokens) is done before "long" (up to 40), which started first.
    const auto order = ids_in_order(res);
    CHECK(std::find(order.begin(), order.end(), "short") < std::find(order.begin(), order.end(), "long"));
    auto a = by_id(res1), b = by_id(res);
    for (const auto& [id, x] : a) {
      CAPTURE(id);
      CHECK(b[id]["text"] == x["text"]);
      CHECK(b[id]["completion_tokens"] == x["completion_tokens"]);
      CHECK(b[id]["finish_reason"] == x["finish_reason"]);
    }
    CHECK(file_read_text(out / "long.txt") == a["long"]["text"].get<std::string>());
  }
  // A batch size out of range is a config error naming the key.
  Run bad = run("adapt_gen", input + " --set runtime.batch_size=0 --set output.dir=" + (dir / "b0").string());
  CHECK(bad.code == 2);
  CHECK(bad.out.find("runtime.batch_size") != std::string::npos);

  // runtime.kv_cache_dtype = "bf16": the log says so, every prompt finishes; batched or one at a time,
  // the texts agree (the cache's rounding does not depend on the batch).
  Run k1 = run("adapt_gen", input + " --set runtime.kv_cache_dtype=bf16 --set runtime.batch_size=1 --set output.dir=" +
                                (dir / "kv1").string());
  Run k3 = run("adapt_gen", input + " --set runtime.kv_cache_dtype=bf16 --set runtime.batch_size=3 --set output.dir=" +
                                (dir / "kv3").string());
  INFO(k3.out);
  REQUIRE(k1.code == 0);
  REQUIRE(k3.code == 0);
  CHECK(k3.out.find(" in bf16") != std::string::npos);
  const auto kv1 = read_results(dir / "kv1/results.jsonl");
  REQUIRE(kv1.size() == 6);
  check_same_texts(dir / "kv3", kv1);
  // On the CPU kv_cache_dtype = "auto" (the default) is f32 while attention computes in f32, and the
  // GPU-only settings are ignored with a warning that names them: the texts of the first run (batch 1,
  // the defaults).
  Run cpu = run("adapt_gen", input +
                                 " --set runtime.batch_size=1 --set runtime.kv_cache_dtype=auto "
                                 "--set runtime.weights_device_layers=1 --set output.dir=" +
                                 (dir / "gpu-keys").string());
  INFO(cpu.out);
  REQUIRE(cpu.code == 0);
  CHECK(cpu.out.find(" in f32") != std::string::npos);
  CHECK(cpu.out.find("runtime.weights_device_layers = 1: used only with a model on a GPU; ignored with "
                     "runtime.device = \"cpu\"") != std::string::npos);
  REQUIRE(res1.size() == 6);
  check_same_texts(dir / "gpu-keys", res1);
  // attention_dtype = "bf16" holds on the CPU too (bf16 products), and "auto" then keeps a bf16 cache,
  // which stores the values those products take.
  Run bf16 =
      run("adapt_gen", input + " --set runtime.attention_dtype=bf16 --set output.dir=" + (dir / "attn-bf16").string());
  INFO(bf16.out);
  REQUIRE(bf16.code == 0);
  CHECK(bf16.out.find("iB in bf16") != std::string::npos);  // the KV cache line: "KV cache ... = 62.50 KiB in bf16"
  CHECK(bf16.out.find("attention in bf16 products (f32 sums)") != std::string::npos);
  CHECK(read_results(dir / "attn-bf16/results.jsonl").size() == 6);
  // Over an f32 cache a generation attends in f32 whatever attention_dtype says: the defaults' texts.
  Run f32_cache = run("adapt_gen", input +
                                       " --set runtime.batch_size=1 --set runtime.attention_dtype=bf16 "
                                       "--set runtime.kv_cache_dtype=f32 --set output.dir=" +
                                       (dir / "attn-bf16-f32-cache").string());
  INFO(f32_cache.out);
  REQUIRE(f32_cache.code == 0);
  CHECK(f32_cache.out.find("attention in f32 over the f32 KV cache") != std::string::npos);
  check_same_texts(dir / "attn-bf16-f32-cache", res1);
  Run f16 = run("adapt_gen", input + " --set runtime.kv_cache_dtype=f16 --set output.dir=" + (dir / "kv16").string());
  CHECK(f16.code == 2);
  CHECK(f16.out.find("runtime.kv_cache_dtype") != std::string::npos);
}

// runtime.share_prefixes: chat prompts with one long system prompt take its positions from the row that
// holds them; results say how many (cached_prompt_tokens), the log too, and the texts are those of the
// same job with sharing off, where every count is 0.
TEST_CASE("runtime.share_prefixes: prompts with one preamble share it; the texts of prompts prefilled whole") {
  test::TempDir dir;
  make_tiny_model(dir.path());
  const std::string system =
      "You write C++17. The project: a command-line tool that reads a CSV file, groups the rows by the "
      "first column and prints the sum of the second column for every group, sorted by name.";
  std::string job = "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 10\n";
  for (const char* user : {"Write main().", "Write the CSV reader.", "Write the grouping.", "Write the tests."}) {
    job += "[[prompts]]\nid = \"" + std::string(user) + "\"\nsystem = \"" + system + "\"\nuser = \"" + user + "\"\n";
  }
  test::write_bytes(dir / "job.toml", job);
  const std::string input = "--input " + (dir / "job.toml").string();
  Run off = run("adapt_gen", input + " --set runtime.share_prefixes=false --set output.dir=" + (dir / "off").string());
  INFO(off.out);
  REQUIRE(off.code == 0);
  const auto whole = by_id(read_results(dir / "off/results.jsonl"));
  REQUIRE(whole.size() == 4);
  for (const auto& [id, x] : whole) CHECK(x["cached_prompt_tokens"].get<int>() == 0);
  for (const int batch : {1, 2}) {
    CAPTURE(batch);
    const fs::path out = dir / ("on" + std::to_string(batch));
    Run on = run("adapt_gen",
                 input + " --set runtime.batch_size=" + std::to_string(batch) + " --set output.dir=" + out.string());
    INFO(on.out);
    REQUIRE(on.code == 0);
    auto shared = by_id(read_results(out / "results.jsonl"));
    REQUIRE(shared.size() == 4);
    int n_cached = 0;
    for (const auto& [id, x] : whole) {
      CAPTURE(id);
      CHECK(shared[id]["text"] == x["text"]);
      CHECK(shared[id]["prompt_tokens"] == x["prompt_tokens"]);
      const int cached = shared[id]["cached_prompt_tokens"].get<int>();
      CHECK(cached < x["prompt_tokens"].get<int>());
      if (cached > 40) ++n_cached;  // the system prompt is ~50 tokens
    }
    CHECK(n_cached == 3);  // every prompt but the first
    CHECK(on.out.find(" cached) + ") != std::string::npos);
  }
}

TEST_CASE("bad jobs fail before generating, naming the problem, and so do their dry runs") {
  test::TempDir dir;
  REQUIRE(run("adapt_model", "make --preset tiny --out " + (dir / "model").string()).code == 0);
  // A dry run refuses each of them alike.
  auto bad = [&](const std::string& body, const std::string& needle, int code) {
    test::write_bytes(dir / "job.toml", body);
    for (const char* extra : {"", " --dry-run"}) {
      Run r = run("adapt_gen", "--input " + (dir / "job.toml").string() + extra);
      INFO(body, extra, "\n", r.out);
      CHECK(r.code == code);
      CHECK(r.out.find(needle) != std::string::npos);
      CHECK_FALSE(fs::exists(dir / "out/results.jsonl"));
    }
  };
  const std::string head = "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n";
  bad(head + "[[prompts]]\nid = \"a\"\nuser = \"x\"\ntemprature = 1.0\n", "did you mean 'temperature'", 2);
  bad("[output]\ndir = \"out\"\n[[prompts]]\nid = \"a\"\nuser = \"x\"\n", "path is required", 2);
  bad(head, "no [[prompts]]", 2);
  bad(head + "[[prompts]]\nid = \"a\"\nuser = \"x\"\nmax_new_tokens = 0\n", "max_new_tokens", 2);
  bad(head + "[[prompts]]\nid = \"a\"\nuser = \"x\"\noutput = \"../escape.txt\"\n", "inside output.dir", 2);
  bad("[model]\npath = \"nope\"\n[output]\ndir = \"out\"\n[[prompts]]\nid = \"a\"\nuser = \"x\"\n", "nope", 3);
  std::string long_text(3000, 'x');
  for (std::size_t i = 0; i < long_text.size(); i += 2) long_text[i] = ' ';
  bad(head + "[[prompts]]\nid = \"long\"\ntext = \"" + long_text + "\"\n",
      "prompts[0] ('long') has 1501 tokens, but the model's context is 512 tokens: shorten the prompt", 2);
  // A tokenizer with more tokens than the model has rows.
  const fs::path meta = test::shared_dir() / "models/llama3/tokenizer.model";
  if (fs::exists(meta)) {
    test::write_bytes(dir / "job.toml", "[model]\npath = \"model\"\ntokenizer = \"" + meta.string() +
                                            "\"\n[output]\ndir = \"out\"\n[[prompts]]\nid = \"a\"\nuser = \"x\"\n");
    Run r = run("adapt_gen", "--input " + (dir / "job.toml").string());
    CHECK(r.code == 2);
    CHECK(r.out.find("vocab_size") != std::string::npos);
  } else {
    MESSAGE("skipped the tokenizer/model mismatch case: " << meta.string() << " not found");
  }
}

TEST_CASE("--shard I/N: shares of the prompts that do not overlap, cover the file and give the same texts") {
  test::TempDir dir;
  make_tiny_model(dir.path());
  std::string job = "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 6\n";
  for (int i = 0; i < 5; ++i)
    job += "[[prompts]]\nid = \"p" + std::to_string(i) + "\"\ntext = \"int f" + std::to_string(i) + "(\"\n";
  test::write_bytes(dir / "job.toml", job);
  const std::string input = "--input " + (dir / "job.toml").string();
  Run whole = run("adapt_gen", input);
  INFO(whole.out);
  REQUIRE(whole.code == 0);
  const auto all = by_id(read_results(dir / "out/results.jsonl"));
  REQUIRE(all.size() == 5);

  std::map<std::string, json> joined;
  const std::vector<std::vector<std::string>> expected = {{"p0", "p3"}, {"p1", "p4"}, {"p2"}};
  for (int s = 0; s < 3; ++s) {
    CAPTURE(s);
    Run r = run("adapt_gen",
                input + " --set output.dir=" + (dir / "shards").string() + " --shard " + std::to_string(s) + "/3");
    INFO(r.out);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("share " + std::to_string(s) + " of 3") != std::string::npos);
    const auto part = read_results(dir / "shards" / ("results.shard-" + std::to_string(s) + "-of-3.jsonl"));
    std::vector<std::string> ids = ids_in_order(part);
    std::sort(ids.begin(), ids.end());
    CHECK(ids == expected[s]);
    for (const auto& x : part) {
      const std::string id = x["id"].get<std::string>();
      CHECK(joined.count(id) == 0);
      joined[id] = x;
    }
  }
  REQUIRE(joined.size() == all.size());
  for (const auto& [id, x] : all) CHECK(joined[id]["text"] == x["text"]);
  CHECK(!fs::exists(dir / "shards/results.jsonl"));

  // A share again: nothing left to do. Bad shares are usage errors.
  Run again = run("adapt_gen", input + " --set output.dir=" + (dir / "shards").string() + " --shard 1/3");
  CHECK(again.code == 0);
  CHECK(again.out.find("0 to run") != std::string::npos);
  for (const char* bad : {"3/3", "1", "-1/2", "0/0", "a/b", "1/2x"}) {
    CAPTURE(bad);
    Run r = run("adapt_gen", input + " --shard " + bad);
    CHECK(r.code == 2);
    CHECK(r.out.find("--shard") != std::string::npos);
  }
}

TEST_CASE("runtime.device: no usable GPU (tp/pp layouts too), a bad index or value stop before anything is written") {
  test::TempDir dir;
  make_tiny_model(dir.path());
  const std::string job =
      "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 4\n"
      "[[prompts]]\nid = \"a\"\ntext = \"int main() {\"\n";
  test::write_bytes(dir / "job.toml", job);
  const std::string input = "--input " + (dir / "job.toml").string();
  auto refused = [&](const std::string& sets, int code, const std::vector<std::string>& needles) {
    Run r = run("adapt_gen", input + " " + sets);
    INFO(sets, "\n", r.out);
    CHECK(r.code == code);
    for (const auto& n : needles) CHECK_MESSAGE(r.out.find(n) != std::string::npos, "missing: ", n);
    CHECK_FALSE(fs::exists(dir / "out"));  // nothing written, not even the output folder
  };
  test::check_runtime_device_refusals(refused, "gpu.gen_app");

  // --dry-run prints the resolved keys and the device; the CPU, said explicitly, runs as before.
  Run dry = run("adapt_gen", input + " --dry-run --set runtime.weights_dtype=f32");
  INFO(dry.out);
  CHECK(dry.code == 0);
  CHECK(dry.out.find("device = \"cpu\"") != std::string::npos);
  CHECK(dry.out.find("weights_dtype = \"f32\"") != std::string::npos);
  CHECK(dry.out.find("# device: cpu") != std::string::npos);
  // Its memory line: one KV-cache row of the prompt's tokens + max_new_tokens (4) positions, f32 keys and
  // values of every layer's KV heads, as config.json gives them.
  const std::string tokens_of = "# a: ";
  const std::size_t at = dry.out.find(tokens_of);
  REQUIRE(at != std::string::npos);
  const std::int64_t n_prompt = std::stoll(dry.out.substr(at + tokens_of.size()));
  const nlohmann::json cfg = nlohmann::json::parse(file_read_text(dir / "model/config.json"));
  const std::int64_t head_dim =
      cfg.value("head_dim", cfg["hidden_size"].get<std::int64_t>() / cfg["num_attention_heads"].get<std::int64_t>());
  const std::uint64_t kv =
      static_cast<std::uint64_t>(2 * cfg["num_hidden_layers"].get<std::int64_t>() *
                                 cfg["num_key_value_heads"].get<std::int64_t>() * head_dim * (n_prompt + 4) * 4);
  CHECK(dry.out.find(fmt::format("KV cache {} (1 row(s) × {} positions, f32)", format_bytes(kv), n_prompt + 4)) !=
        std::string::npos);
  // The adapter is read in a dry run too: a missing folder is an error naming it.
  Run no_adapter = run("adapt_gen", input + " --dry-run --set model.adapter=" + (dir / "no-adapter").string());
  CHECK(no_adapter.code == 3);
  CHECK(no_adapter.out.find("no-adapter") != std::string::npos);
  CHECK_FALSE(fs::exists(dir / "out"));
  Run cpu = run("adapt_gen", input + " --set runtime.device=cpu --set runtime.weights_dtype=f32");
  INFO(cpu.out);
  CHECK(cpu.code == 0);
  CHECK(read_results(dir / "out/results.jsonl").size() == 1);
}

TEST_CASE("conversations: turns over several jobs equal the same turns in one job; reruns; refusals") {
  test::TempDir dir;
  make_tiny_model(dir.path());
  const std::string head =
      "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 8\n"
      "[runtime]\nbatch_size = 3\n";
  const std::string &a1 = kTurnA1, &b1 = kTurnB1, &a2 = kTurnA2, &a3 = kTurnA3, &b2 = kTurnB2;
  const std::string solo = "[[prompts]]\nid = \"solo\"\nuser = \"Hi\"\n";
  auto job = [&](const std::string& name, const std::string& out, const std::string& prompts) {
    test::write_bytes(dir / name, head + prompts);
    return run("adapt_gen", "--input " + (dir / name).string() + " --set output.dir=" + (dir / out).string());
  };
  // One job with every turn (turns of a conversation run one after another), and the same turns as
  // three jobs on one output folder.
  Run one = job("one.toml", "one", a1 + b1 + solo + a2 + a3 + b2);
  INFO(one.out);
  REQUIRE(one.code == 0);
  CHECK(one.out.find("turn(s) that follow earlier turns of their conversation") != std::string::npos);
  auto res = by_id(read_results(dir / "one/results.jsonl"));
  REQUIRE(res.size() == 6);
  REQUIRE(res["a2"]["finish_reason"] == "length");  // so that a3 has a reply to continue
  CHECK(res["a1"]["conversation"] == "a");
  CHECK(!res["solo"].contains("conversation"));
  // a2's prompt is a1's prompt and reply, then the new message.
  CHECK(res["a2"]["prompt_tokens"].get<int>() >
        res["a1"]["prompt_tokens"].get<int>() + res["a1"]["completion_tokens"].get<int>());
  CHECK(res["a3"]["prompt_tokens"].get<int>() ==
        res["a2"]["prompt_tokens"].get<int>() + res["a2"]["completion_tokens"].get<int>());
  // The continue turn's output file holds the whole reply: a2's text, then a3's.
  CHECK(file_read_text(dir / "one/a.c") == res["a2"]["text"].get<std::string>() + res["a3"]["text"].get<std::string>());
  const json conv = json::parse(file_read_text(dir / "one/conversations/a.json"));
  REQUIRE(conv["turns"].size() == 3);
  CHECK(conv["turns"][2]["kind"] == "continue");
  CHECK(conv["tokens"].size() ==
        static_cast<std::size_t>(res["a3"]["prompt_tokens"].get<int>() + res["a3"]["completion_tokens"].get<int>()));

  for (const auto& [file, prompts] : std::vector<std::pair<std::string, std::string>>{
           {"j1.toml", a1 + b1 + solo}, {"j2.toml", a2 + b2}, {"j3.toml", a3}}) {
    Run r = job(file, "split", prompts);
    INFO(r.out);
    REQUIRE(r.code == 0);
  }
  check_same_turns(dir / "split", dir / "one", 6);
  CHECK(file_read_text(dir / "split/a.c") == file_read_text(dir / "one/a.c"));

  // --dry-run: a prompt in the results already is skipped; a new turn is the stored conversation and its
  // message; a later turn of the same job follows it, with up to its max_new_tokens (8) of reply; a turn
  // that cannot run, and the turns after it, make the dry run exit 2.
  const std::string a4 = "[[prompts]]\nid = \"a4\"\nconversation = \"a\"\nuser = \"And in Rust.\"\n";
  const std::string a5 = "[[prompts]]\nid = \"a5\"\nconversation = \"a\"\n";
  const std::string conv_file = (dir / "one/conversations/a.json").string();
  auto dry_run = [&](const std::string& name, const std::string& prompts) {
    test::write_bytes(dir / name, head + prompts);
    return run("adapt_gen",
               "--input " + (dir / name).string() + " --set output.dir=" + (dir / "one").string() + " --dry-run");
  };
  Run dry = dry_run("more.toml", a1 + a2 + a4 + a5);
  INFO(dry.out);
  CHECK(dry.code == 0);
  CHECK(dry.out.find("# a2: in " + (dir / "one/results.jsonl").string() + " already: skipped") != std::string::npos);
  const std::string said = "# a4: a turn of conversation 'a' (" + conv_file + ": 3 turn(s), " +
                           std::to_string(conv["tokens"].size()) + " tokens so far); ";
  const std::size_t at = dry.out.find(said);
  REQUIRE(at != std::string::npos);
  // The turn's prompt is the stored tokens and its new message, and the KV cache's estimate holds it.
  const long n_prompt = std::stol(dry.out.substr(at + said.size()));
  CHECK(n_prompt > static_cast<long>(conv["tokens"].size()));
  const std::string so_far = std::to_string(n_prompt + 8);
  CHECK(dry.out.find("# a5: a turn of conversation 'a' (" + conv_file + ": 4 turn(s), " + so_far + " tokens so far); " +
                     so_far + " prompt tokens, with up to 8 of this job's earlier replies") != std::string::npos);
  const std::size_t rows_at = dry.out.find(" row(s) × ");
  REQUIRE(rows_at != std::string::npos);
  CHECK(std::stol(dry.out.substr(rows_at + std::string(" row(s) × ").size())) > n_prompt + 8);
  Run dry_bad =
      dry_run("more_bad.toml", "[[prompts]]\nid = \"a4\"\nconversation = \"a\"\nsystem = \"S\"\nuser = \"U\"\n" + a5);
  INFO(dry_bad.out);
  CHECK(dry_bad.code == 2);
  CHECK(dry_bad.out.find("tokens so far); would not run: prompt 'a4' (conversation 'a'): system is only allowed on a "
                         "conversation's first turn") != std::string::npos);
  CHECK(dry_bad.out.find("would not run: an earlier turn of the conversation ('a4') could not run") !=
        std::string::npos);
  CHECK(dry_bad.out.find("2 prompt(s) would not run") != std::string::npos);

  // A run that stopped after saving a3's turn but before recording its result: the rerun drops the
  // saved turn and runs a3 again, to the same conversation.
  const std::string conv_a = file_read_text(dir / "one/conversations/a.json");
  std::string kept;
  for (const json& r : read_results(dir / "one/results.jsonl"))
    if (r["id"] != "a3") kept += r.dump() + "\n";
  test::write_bytes(dir / "one/results.jsonl", kept);
  Run again = job("one.toml", "one", a1 + b1 + solo + a2 + a3 + b2);
  INFO(again.out);
  REQUIRE(again.code == 0);
  CHECK(again.out.find("dropping turn 'a3'") != std::string::npos);
  CHECK(again.out.find("done: 1 prompt(s) finished") != std::string::npos);
  CHECK(file_read_text(dir / "one/conversations/a.json") == conv_a);

  // Refused before anything is generated (exit 2, results untouched): system after the first turn,
  // continuing a conversation that has no turns, a malformed name, neither user nor text outside a
  // conversation.
  const std::string before = file_read_text(dir / "split/results.jsonl");
  const std::vector<std::pair<std::string, std::string>> bad{
      {"[[prompts]]\nid = \"a4\"\nconversation = \"a\"\nsystem = \"S\"\nuser = \"U\"\n",
       "system is only allowed on a conversation's first turn"},
      {"[[prompts]]\nid = \"n1\"\nconversation = \"new\"\n", "the conversation has no turns yet"},
      {"[[prompts]]\nid = \"n2\"\nconversation = \"../x\"\nuser = \"U\"\n", "must be 1 to 128 letters"},
      {"[[prompts]]\nid = \"n3\"\n", "give user (chat-formatted) or text (raw)"},
      {a1 + "[[prompts]]\nid = \"a9\"\nconversation = \"a\"\nsystem = \"S\"\nuser = \"U\"\n",
       "is not the first turn of conversation 'a'"}};
  for (const auto& [prompts, message] : bad) {
    CAPTURE(prompts);
    Run r = job("bad.toml", "split", solo + prompts);
    INFO(r.out);
    CHECK(r.code == 2);
    CHECK(r.out.find(message) != std::string::npos);
  }
  CHECK(file_read_text(dir / "split/results.jsonl") == before);

  // A turn that no longer fits the context (512) is not run; the others are, and the job exits 2.
  std::string lines;
  for (int i = 0; i < 100; ++i) lines += "x = 1;\\n";  // 500 tokens
  Run full = job("full.toml", "full",
                 "[[prompts]]\nid = \"z1\"\nconversation = \"z\"\ntext = \"" + lines + "\"\n" +
                     "[[prompts]]\nid = \"z2\"\nconversation = \"z\"\ntext = \"y = 2; z = 3;\"\n" + solo);
  INFO(full.out);
  CHECK(full.code == 2);
  CHECK(full.out.find("which with this turn has") != std::string::npos);
  CHECK(full.out.find("1 prompt(s) could not run") != std::string::npos);
  auto done = by_id(read_results(dir / "full/results.jsonl"));
  CHECK(done.size() == 2);
  CHECK(done.count("z1") == 1);
  CHECK(done.count("solo") == 1);
}

TEST_CASE("output.conversation_kv: later turns load the stored KV cache, prefill only their new tokens, same texts") {
  test::TempDir dir;
  make_tiny_model(dir.path());
  const std::string head =
      "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 8\n"
      "[runtime]\nbatch_size = 2\nprefill_chunk = 16\n";
  const std::string &a1 = kTurnA1, &b1 = kTurnB1, &a2 = kTurnA2, &a3 = kTurnA3, &b2 = kTurnB2;
  auto job = [&](const std::string& name, const std::string& out, const std::string& prompts, const std::string& set) {
    test::write_bytes(dir / name, head + prompts);
    return run("adapt_gen", "--input " + (dir / name).string() + " --set output.dir=" + (dir / out).string() + set);
  };
  const std::string kv = " --set output.conversation_kv=true";
  const std::vector<std::pair<std::string, std::string>> jobs{
      {"j1.toml", a1 + b1}, {"j2.toml", a2 + b2}, {"j3.toml", a3}};
  for (const auto& [file, prompts] : jobs) {
    Run plain = job(file, "plain", prompts, "");
    INFO(plain.out);
    REQUIRE(plain.code == 0);
    Run kept = job(file, "kept", prompts, kv);
    INFO(kept.out);
    REQUIRE(kept.code == 0);
    CHECK(plain.out.find("loaded the KV cache") == std::string::npos);
    CHECK(kept.out.find("warning") == std::string::npos);
    if (file != "j1.toml") {  // every later turn loads its conversation's cache: all but its new tokens
      for (const std::string& id :
           file == "j2.toml" ? std::vector<std::string>{"a2", "b2"} : std::vector<std::string>{"a3"})
        CHECK(kept.out.find("prompt '" + id + "': loaded the KV cache of ") != std::string::npos);
    }
  }
  check_same_turns(dir / "kept", dir / "plain", 5);
  CHECK(fs::exists(dir / "kept/conversations/a.kv"));
  CHECK(!fs::exists(dir / "plain/conversations/a.kv"));

  // A file that does not fit is not used, and the turn is prefilled whole, to the same text: damaged,
  // cut short, or kept in another element type.
  const std::string a4 = "[[prompts]]\nid = \"a4\"\nconversation = \"a\"\nuser = \"Add a test.\"\n";
  Run ref = job("j4.toml", "plain", a4, "");
  REQUIRE(ref.code == 0);
  const std::string a4_text = by_id(read_results(dir / "plain/results.jsonl"))["a4"]["text"].get<std::string>();
  const std::string stored = file_read_text(dir / "kept/conversations/a.kv");
  std::string flipped = stored;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x40);
  const std::vector<std::tuple<std::string, std::string, std::string>> cases{
      {flipped, "", "its checksum does not match"},
      {stored.substr(0, stored.size() - 100), "", "bytes where its header needs"},
      {stored, " --set runtime.kv_cache_dtype=bf16", "it holds a f32 cache, this job keeps bf16"}};
  for (const auto& [bytes, set, message] : cases) {
    CAPTURE(message);
    fs::remove_all(dir / "bad");
    fs::copy(dir / "kept", dir / "bad", fs::copy_options::recursive);
    test::write_bytes(dir / "bad/conversations/a.kv", bytes);
    Run r = job("j4.toml", "bad", a4, kv + set);
    INFO(r.out);
    REQUIRE(r.code == 0);
    CHECK(r.out.find("not using " + (dir / "bad/conversations/a.kv").string() + ": ") != std::string::npos);
    CHECK(r.out.find(message) != std::string::npos);
    if (set.empty()) CHECK(by_id(read_results(dir / "bad/results.jsonl"))["a4"]["text"] == a4_text);
  }

  // A full disk while keeping the cache (files limited to 16 KB; the cache needs ~70 KB): a warning,
  // the turn's result and conversation are saved, the previous .kv stays as it was.
  fs::remove_all(dir / "full");
  fs::copy(dir / "kept", dir / "full", fs::copy_options::recursive);
  test::write_bytes(dir / "j4.toml", head + a4);
  Run full;
  full.code = test::run_command(
      "bash -c 'trap \"\" XFSZ; ulimit -f 16; " + (test::binary_dir() / "bin" / "adapt_gen").string() + " --input " +
          (dir / "j4.toml").string() + " --set output.dir=" + (dir / "full").string() + kv + "'",
      &full.out);
  INFO(full.out);
  CHECK(full.code == 0);
  CHECK(full.out.find("prompt 'a4': could not keep the conversation's KV cache") != std::string::npos);
  CHECK(by_id(read_results(dir / "full/results.jsonl"))["a4"]["text"] == a4_text);
  CHECK(file_read_text(dir / "full/conversations/a.kv") == stored);
  CHECK(file_read_text(dir / "full/conversations/a.json") == file_read_text(dir / "plain/conversations/a.json"));
}

TEST_CASE(
    "SIGUSR1: prompts in flight save their progress, exit 75; the rerun continues them to the uninterrupted texts") {
  test::TempDir dir;
  // The tiny model made wider, deeper and with a longer context, so that a prompt of 3,000 tokens runs
  // for a second or more: time to send the signal while it is generating.
  REQUIRE(run("adapt_model", "make --recipe " + (test::source_dir() / "inputs/models/tiny.toml").string() +
                                 " --set shape.max_position_embeddings=4096 --set shape.hidden_size=256"
                                 " --set shape.intermediate_size=768 --set shape.head_dim=64 --layers 4 --out " +
                                 (dir / "model").string())
              .code == 0);
  // prefill_chunk = 1: a resumed prefill is the same one-token forwards as the decode steps it
  // replaces, so the continuation is bit for bit the uninterrupted run's.
  const std::string job =
      "[model]\npath = \"model\"\n[output]\ndir = \"out\"\n[defaults]\nmax_new_tokens = 3000\n"
      "[runtime]\nbatch_size = 2\nprefill_chunk = 1\nprogress_every = 16\n"
      "[[prompts]]\nid = \"long\"\ntext = \"int main() {\"\noutput = \"long.c\"\n"
      "[[prompts]]\nid = \"sampled\"\ntext = \"def f(x):\"\ntemperature = 0.8\nseed = 7\n"
      "[[prompts]]\nid = \"third\"\ntext = \"fn main() {\"\n";
  test::write_bytes(dir / "job.toml", job);
  const std::string gen =
      (test::binary_dir() / "bin" / "adapt_gen").string() + " --input " + (dir / "job.toml").string();
  Run ref = run("adapt_gen", "--input " + (dir / "job.toml").string() + " --set output.dir=" + (dir / "ref").string());
  REQUIRE(ref.code == 0);
  const auto want = by_id(read_results(dir / "ref/results.jsonl"));
  REQUIRE(want.at("long")["completion_tokens"].get<int>() == 3000);

  // Signal once the long prompt has saved progress.
  const fs::path saved = dir / "out/progress/long.json";
  Run stopped;
  stopped.code = test::run_command("bash -c '" + gen + " & pid=$!; for i in $(seq 1000); do [ -s " + saved.string() +
                                       " ] && break; sleep 0.01; done; kill -USR1 $pid; wait $pid; echo exit=$?'",
                                   &stopped.out);
  INFO(stopped.out);
  REQUIRE(stopped.out.find("exit=75") != std::string::npos);
  CHECK(stopped.out.find("received SIGUSR1") != std::string::npos);
  CHECK(stopped.out.find("] stopped: ") != std::string::npos);  // the summary line of a stopped job
  CHECK(stopped.out.find("] done: ") == std::string::npos);
  REQUIRE(fs::exists(saved));
  const json p = json::parse(file_read_text(saved));
  CHECK(p["id"] == "long");
  const auto n_saved = p["tokens"].size();
  CHECK(n_saved > 0);
  CHECK(n_saved < 3000);
  // The long prompt is not in the results yet (it may hold prompts that finished before the signal).
  if (fs::exists(dir / "out/results.jsonl")) CHECK(by_id(read_results(dir / "out/results.jsonl")).count("long") == 0);

  Run dry = run("adapt_gen", "--input " + (dir / "job.toml").string() + " --dry-run");
  CHECK(dry.code == 0);
  CHECK(dry.out.find("# long: 6 prompt tokens; progress saved after " + std::to_string(n_saved) + " token(s)") !=
        std::string::npos);

  Run again = run("adapt_gen", "--input " + (dir / "job.toml").string());
  INFO(again.out);
  REQUIRE(again.code == 0);
  CHECK(again.out.find("prompt 'long': continuing after " + std::to_string(n_saved)) != std::string::npos);
  const auto got = by_id(read_results(dir / "out/results.jsonl"));
  REQUIRE(got.size() == 3);
  for (const char* id : {"long", "sampled", "third"}) {
    CAPTURE(id);
    CHECK(got.at(id)["text"] == want.at(id)["text"]);
    CHECK(got.at(id)["completion_tokens"] == want.at(id)["completion_tokens"]);
  }
  CHECK(file_read_text(dir / "out/long.c") == want.at("long")["text"].get<std::string>());
  CHECK(!fs::exists(saved));  // removed once the result is recorded

  // Progress saved for another request (here: another temperature) is set aside; the prompt starts afresh.
  {
    test::write_bytes(saved, p.dump());
    Run other =
        run("adapt_gen", "--input " + (dir / "job.toml").string() + " --set output.dir=" + (dir / "out").string() +
                             " --set output.results=other.jsonl"
                             " --set prompts[0].temperature=0.5");
    INFO(other.out);
    CHECK(other.code == 0);
    CHECK(other.out.find("starts afresh") != std::string::npos);
    CHECK(fs::exists(dir / "out/progress/long.json.stale"));
    CHECK(!fs::exists(saved));
  }
  // A malformed progress file stops the job before anything is generated, naming the file.
  test::write_bytes(saved, "{\"id\": \"long\", \"tokens\": [1, 2");
  Run bad = run("adapt_gen", "--input " + (dir / "job.toml").string() + " --set output.results=bad.jsonl");
  INFO(bad.out);
  CHECK(bad.code == 3);
  CHECK(bad.out.find(saved.string()) != std::string::npos);
  CHECK(bad.out.find("delete it") != std::string::npos);
}
