// adapt_eval end to end: per-token log-probabilities agree with the reported loss; a random tiny
// model scores close to uniform (loss ~ ln V); bad data files name the line; --device cuda without a
// usable GPU, a bad --device or --weights-dtype stop before the model is read, naming the flag;
// --cpu-matmul-dtype bf16 scores within bf16 rounding of f32, with attention in bf16 by default and
// --attention-dtype choosing it on the CPU.
#include <doctest/doctest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "backend/backend.h"
#include "core/file.h"
#include "tests/support/test_support.h"

using namespace adapt;
using json = nlohmann::json;

namespace {
int run(const std::string& bin, const std::string& args, std::string* out) {
  return test::run_command((test::binary_dir() / "bin" / bin).string() + " " + args, out);
}
}  // namespace

TEST_CASE("loss, perplexity and per-token log-probabilities") {
  test::TempDir dir;
  std::string out;
  REQUIRE(run("adapt_model", "make --preset tiny --out " + (dir / "m").string(), &out) == 0);
  test::write_bytes(dir / "d.jsonl",
                    "{\"text\": \"for (int i = 0; i < n; ++i) sum += v[i];\"}\n\n"
                    "{\"text\": \"SELECT name FROM users WHERE id = 7;\", \"extra\": 1}\n");
  REQUIRE(run("adapt_eval",
              "--model " + (dir / "m").string() + " --data " + (dir / "d.jsonl").string() + " --per-token --out " +
                  (dir / "tok.jsonl").string(),
              &out) == 0);
  INFO(out);
  const auto pos = out.find("loss ");
  REQUIRE(pos != std::string::npos);
  const double loss = std::stod(out.substr(pos + 5));
  CHECK(std::abs(loss - std::log(1024.0)) < 0.3);  // random weights: close to uniform over 1024 tokens
  double sum = 0;
  int n = 0;
  const std::string recs = file_read_text(dir / "tok.jsonl");
  std::size_t start = 0, lines = 0;
  while (start < recs.size()) {
    const std::size_t nl = recs.find('\n', start);
    json r = json::parse(recs.substr(start, nl - start));
    start = nl + 1;
    ++lines;
    REQUIRE(r["tokens"].size() == r["logprobs"].size());
    CHECK(r["logprobs"][0].is_null());
    for (std::size_t i = 1; i < r["logprobs"].size(); ++i) {
      const double l = r["logprobs"][i].get<double>();
      CHECK(l < 0);
      sum -= l;
      ++n;
    }
  }
  CHECK(lines == 2);
  CHECK(sum / n == doctest::Approx(loss).epsilon(1e-5));

  test::write_bytes(dir / "bad.jsonl", "{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n");
  CHECK(run("adapt_eval", "--model " + (dir / "m").string() + " --data " + (dir / "bad.jsonl").string(), &out) == 3);
  CHECK(out.find("bad.jsonl:2") != std::string::npos);
  CHECK(run("adapt_eval", "--model " + (dir / "m").string(), &out) == 2);
  CHECK(run("adapt_eval", "--model " + (dir / "nope").string() + " --data " + (dir / "d.jsonl").string(), &out) == 3);
}

TEST_CASE("--device and --weights-dtype: refusals name the flag and the way back to the CPU") {
  test::TempDir dir;
  std::string out;
  REQUIRE(run("adapt_model", "make --preset tiny --out " + (dir / "m").string(), &out) == 0);
  test::write_bytes(dir / "d.jsonl", "{\"text\": \"int x = 1;\"}\n");
  const std::string base = "--model " + (dir / "m").string() + " --data " + (dir / "d.jsonl").string();
  auto refused = [&](const std::string& flags, int code, const std::vector<std::string>& needles) {
    const int rc = run("adapt_eval", base + " " + flags, &out);
    INFO(flags, "\n", out);
    CHECK(rc == code);
    for (const auto& n : needles) CHECK_MESSAGE(out.find(n) != std::string::npos, "missing: ", n);
  };
  if (backend::cuda_device_count() == 0) {
    const std::string reason = backend::cuda_unavailable_reason();
    refused("--device cuda", 6, {"--device cuda, but", reason, "pass --device cpu"});
    refused("--device cuda:0 --weights-dtype f32", 6, {"--device cuda:0, but", reason});
  } else {
    MESSAGE("a CUDA device is visible: the no-GPU refusal is not exercised here (gpu.gen_app runs on it)");
    refused("--device cuda:99", 2, {"--device cuda:99, but", "CUDA device(s)"});
  }
  refused("--device gpu", 2, {"--device gpu must be", "\"cpu\", \"cuda\" or \"cuda:N\""});
  refused("--device cuda --weights-dtype f16", 2, {"--weights-dtype f16", "bf16 or f32"});
  refused("--weights-dtype f32", 2, {"--weights-dtype", "--device cuda"});
  refused("--cpu-matmul-dtype f16", 2, {"--cpu-matmul-dtype f16", "f32 or bf16"});
  // The CPU, said explicitly, runs as before.
  CHECK(run("adapt_eval", base + " --device cpu", &out) == 0);
  CHECK(out.find("loss ") != std::string::npos);
}

// --cpu-matmul-dtype bf16: the log says so; the loss is the f32 one within bf16 rounding, not its bits.
TEST_CASE("--cpu-matmul-dtype bf16 and --attention-dtype on the CPU score within bf16 rounding of f32") {
  test::TempDir dir;
  std::string out;
  REQUIRE(run("adapt_model", "make --preset tiny --out " + (dir / "m").string(), &out) == 0);
  test::write_bytes(dir / "d.jsonl", "{\"text\": \"for (int i = 0; i < n; ++i) sum += v[i] * w[i];\"}\n");
  const std::string base = "--model " + (dir / "m").string() + " --data " + (dir / "d.jsonl").string();
  auto loss_of = [&](const std::string& flags) {
    REQUIRE(run("adapt_eval", base + flags, &out) == 0);
    const auto pos = out.find("loss ");
    REQUIRE(pos != std::string::npos);
    return std::stod(out.substr(pos + 5));
  };
  const double f32 = loss_of("");
  CHECK(out.find("attention in f32") != std::string::npos);
  const double bf16 = loss_of(" --cpu-matmul-dtype bf16");
  INFO(out);
  CHECK(out.find("CPU products by the base weights in bf16") != std::string::npos);
  CHECK(out.find("attention in bf16 products (f32 sums)") != std::string::npos);  // "auto" follows
  CHECK(bf16 == doctest::Approx(f32).epsilon(5e-3));
  // --attention-dtype on the CPU: f32 attention beside bf16 products, bf16 attention beside f32 products;
  // each a third score, each within bf16 rounding of f32.
  const double bf16_f32_attention = loss_of(" --cpu-matmul-dtype bf16 --attention-dtype f32");
  CHECK(out.find("attention in f32") != std::string::npos);
  const double f32_bf16_attention = loss_of(" --attention-dtype bf16");
  CHECK(out.find("attention in bf16 products (f32 sums)") != std::string::npos);
  CHECK(bf16_f32_attention != bf16);
  CHECK(f32_bf16_attention != f32);
  CHECK(bf16_f32_attention == doctest::Approx(f32).epsilon(5e-3));
  CHECK(f32_bf16_attention == doctest::Approx(f32).epsilon(5e-3));
}
