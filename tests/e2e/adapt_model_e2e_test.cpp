// adapt_model end to end: make the tiny model, check it, then break it in every way the issue lists
// and check that each gives a clear message naming the file and the documented exit code (3).
#include <doctest/doctest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/file.h"
#include "tests/support/test_support.h"

using namespace adapt;
using json = nlohmann::json;

namespace {

std::string adapt_model() { return (test::binary_dir() / "bin" / "adapt_model").string(); }

struct Run {
  int code;
  std::string out;
};

Run run(const std::string& args) {
  Run r;
  r.code = test::run_command(adapt_model() + " " + args, &r.out);
  return r;
}

// Reads a safetensors header, lets `edit` change it, writes the file back with the same data.
void rewrite_header(const fs::path& p, const std::function<void(json&)>& edit) {
  std::string bytes = file_read_text(p);
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  json h = json::parse(bytes.substr(8, n));
  edit(h);
  std::string text = h.dump();
  while (text.size() % 8) text += ' ';
  std::uint64_t m = text.size();
  std::string out(reinterpret_cast<const char*>(&m), 8);
  out += text + bytes.substr(8 + n);
  test::write_bytes(p, out);
}

}  // namespace

TEST_CASE("make, check and dry runs of the real shapes") {
  test::TempDir dir;
  const std::string model = (dir / "tiny").string();
  Run made = run("make --preset tiny --out " + model + " --seed 5");
  INFO(made.out);
  REQUIRE(made.code == 0);
  CHECK(made.out.find("parameters") != std::string::npos);
  Run checked = run("check " + model);
  INFO(checked.out);
  CHECK(checked.code == 0);
  CHECK(checked.out.find("is a valid model folder") != std::string::npos);
  CHECK(checked.out.find("tokenizer.json") != std::string::npos);

  // The same seed gives the same bytes.
  const std::string model2 = (dir / "tiny2").string();
  REQUIRE(run("make --preset tiny --out " + model2 + " --seed 5").code == 0);
  CHECK(file_read_text(fs::path(model) / "model.safetensors") ==
        file_read_text(fs::path(model2) / "model.safetensors"));
  CHECK(file_read_text(fs::path(model) / "tokenizer.json") == file_read_text(fs::path(model2) / "tokenizer.json"));

  // Refuses to overwrite without --force; replaces with it.
  CHECK(run("make --preset tiny --out " + model).code == 3);
  CHECK(run("make --preset tiny --out " + model + " --force --tied").code == 0);
  CHECK(file_read_text(fs::path(model) / "config.json").find("\"tie_word_embeddings\": true") != std::string::npos);

  Run dry = run("make --preset llama-3.1-70b --layers 2 --dry-run");
  INFO(dry.out);
  CHECK(dry.code == 0);
  CHECK(dry.out.find("2 layers") != std::string::npos);
  Run dry8 = run("make --preset llama-3.1-8b --dry-run --tokenizer /nonexistent/tokenizer.model");
  CHECK(dry8.code == 3);
  CHECK(dry8.out.find("/nonexistent/tokenizer.model") != std::string::npos);

  Run presets = run("presets");
  CHECK(presets.out.find("8,030,261,248") != std::string::npos);
  CHECK(presets.out.find("70,553,706,496") != std::string::npos);
}

TEST_CASE("every recipe in inputs/models parses, and recipes build what they say") {
  int n = 0;
  for (const auto& e : fs::directory_iterator(test::source_dir() / "inputs/models")) {
    if (e.path().extension() != ".toml") continue;
    ++n;
    Run r = run("make --dry-run --recipe " + e.path().string());
    INFO(e.path().string(), "\n", r.out);
    CHECK(r.code == 0);
  }
  CHECK(n >= 3);
  Run gqa = run("make --dry-run --recipe " + (test::source_dir() / "inputs/models/tiny-gqa4-tied.toml").string());
  CHECK(gqa.out.find("\"num_key_value_heads\": 2") != std::string::npos);
  CHECK(gqa.out.find("\"tie_word_embeddings\": true") != std::string::npos);
  Run over = run("make --dry-run --recipe " + (test::source_dir() / "inputs/models/tiny.toml").string() +
                 " --set shape.n_kv_heads=1 --layers 3");
  CHECK(over.out.find("\"num_key_value_heads\": 1") != std::string::npos);
  CHECK(over.out.find("\"num_hidden_layers\": 3") != std::string::npos);
  // Bad recipes: unknown key with a suggestion and file:line, wrong type, bad value.
  test::TempDir dir;
  test::write_bytes(dir / "bad.toml", "preset = \"tiny\"\nlayerz = 3\n");
  Run bad = run("make --dry-run --recipe " + (dir / "bad.toml").string());
  CHECK(bad.code == 2);
  CHECK(bad.out.find("bad.toml:2") != std::string::npos);
  CHECK(bad.out.find("did you mean 'layers'") != std::string::npos);
  test::write_bytes(dir / "bad2.toml", "preset = \"tiny\"\n[shape]\nn_heads = \"four\"\n");
  Run bad2 = run("make --dry-run --recipe " + (dir / "bad2.toml").string());
  CHECK(bad2.code == 2);
  CHECK(bad2.out.find("shape.n_heads") != std::string::npos);
  Run bad3 = run("make --dry-run --recipe " + (test::source_dir() / "inputs/models/tiny.toml").string() +
                 " --set shape.n_kv_heads=3");
  CHECK(bad3.code == 2);
  Run help = run("--help");
  CHECK(help.out.find("shape.n_kv_heads") != std::string::npos);
  // after a command too (inputs/README.md tells users to run `adapt_model make --help`)
  for (const char* cmd : {"make --help", "make --out x -h", "check --help", "merge --help"}) {
    CAPTURE(cmd);
    Run sub = run(cmd);
    CHECK(sub.code == 0);
    CHECK(sub.out.find("make options:") != std::string::npos);
  }
}

TEST_CASE("Meta's Llama 3 tokenizer can be copied into a model") {
  const fs::path meta = test::shared_dir() / "models/llama3/tokenizer.model";
  if (!fs::exists(meta)) {
    MESSAGE("skipped: " << meta.string() << " not found (Meta's tokenizer is test-only data beside the checkout)");
    return;
  }
  test::TempDir dir;
  Run made = run("make --preset tiny --out " + (dir / "m").string() + " --tokenizer " + meta.string());
  INFO(made.out);
  REQUIRE(made.code == 0);
  CHECK(made.out.find("128256") != std::string::npos);
  std::string cfg = file_read_text(dir / "m/config.json");
  CHECK(cfg.find("\"bos_token_id\": 128000") != std::string::npos);
  CHECK(cfg.find("\"vocab_size\": 128256") != std::string::npos);
}

TEST_CASE("bad model folders: a clear message naming the file, exit code 3") {
  test::TempDir dir;
  const fs::path model = dir / "m";
  REQUIRE(run("make --preset tiny --out " + model.string() + " --max-shard-size 60KB").code == 0);
  REQUIRE(fs::exists(model / "model.safetensors.index.json"));
  fs::path shard;
  for (const auto& e : fs::directory_iterator(model))
    if (e.path().filename().string().rfind("model-00002-of-", 0) == 0) shard = e.path();
  REQUIRE(fs::exists(shard));
  const std::string shard_name = shard.filename().string();
  const std::string good = file_read_text(shard);
  const std::string good_config = file_read_text(model / "config.json");
  const std::string good_index = file_read_text(model / "model.safetensors.index.json");

  auto expect_bad = [&](const char* what, const std::string& needle) {
    Run r = run("check " + model.string());
    INFO(what, "\n", r.out);
    CHECK(r.code == 3);
    CHECK(r.out.find(needle) != std::string::npos);
    test::write_bytes(shard, good);
    test::write_bytes(model / "config.json", good_config);
    test::write_bytes(model / "model.safetensors.index.json", good_index);
    REQUIRE(run("check " + model.string()).code == 0);
  };

  test::write_bytes(shard, good.substr(0, good.size() - 100));
  expect_bad("truncated shard", shard_name);

  {
    std::string b = good;
    std::uint64_t huge = b.size() * 4;
    std::memcpy(b.data(), &huge, 8);
    test::write_bytes(shard, b);
  }
  expect_bad("header length beyond the file", shard_name);

  {
    std::string b = good;
    std::uint64_t n = 0;
    std::memcpy(&n, b.data(), 8);
    for (std::size_t i = 8; i < 8 + n; ++i) b[i] = (i % 3) ? '{' : ':';
    test::write_bytes(shard, b);
  }
  expect_bad("garbage JSON", shard_name);

  rewrite_header(shard, [](json& h) {
    for (auto& [k, v] : h.items())
      if (k != "__metadata__") v["dtype"] = "Q4_K";
  });
  expect_bad("unknown dtype", "Q4_K");

  rewrite_header(shard, [](json& h) {
    std::vector<std::string> names;
    for (auto& [k, v] : h.items())
      if (k != "__metadata__") names.push_back(k);
    REQUIRE(names.size() >= 2);
    h[names[1]]["data_offsets"] = h[names[0]]["data_offsets"];
  });
  expect_bad("overlapping tensors", shard_name);

  {
    json idx = json::parse(good_index);
    for (auto& [k, v] : idx["weight_map"].items())
      if (v == shard_name) v = "model-00009-of-00009.safetensors";
    test::write_bytes(model / "model.safetensors.index.json", idx.dump());
  }
  expect_bad("index naming a missing shard", "model-00009-of-00009.safetensors");

  {
    json cfg = json::parse(good_config);
    cfg.erase("num_attention_heads");
    test::write_bytes(model / "config.json", cfg.dump());
  }
  expect_bad("config.json missing a field", "num_attention_heads");

  {
    json cfg = json::parse(good_config);
    cfg["hidden_size"] = "64";
    test::write_bytes(model / "config.json", cfg.dump());
  }
  expect_bad("config.json with a wrong type", "hidden_size");

  Run missing = run("check " + (dir / "nothing-here").string());
  CHECK(missing.code == 3);
  CHECK(run("check").code == 2);
  CHECK(run("make --preset tiny --out x --dtype q8").code == 2);
  Run typo = run("make --preset tiny --out x --seeed 3");
  CHECK(typo.code == 2);
  CHECK(typo.out.find("did you mean '--seed'") != std::string::npos);
}
