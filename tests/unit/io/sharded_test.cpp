// ShardedSafetensors: model folders with and without an index, every index/shard inconsistency a
// broken download produces, and per-rank reads that touch only the rank's share.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "io/safetensors_writer.h"
#include "io/sharded.h"
#include "tests/support/test_support.h"
#include "tests/unit/io/io_test_util.h"

using namespace adapt;
using json = nlohmann::json;

namespace {

constexpr const char* kIndex = "model.safetensors.index.json";
constexpr const char* kShard1 = "model-00001-of-00003.safetensors";
constexpr const char* kShard2 = "model-00002-of-00003.safetensors";
constexpr const char* kShard3 = "model-00003-of-00003.safetensors";

Tensor iota(const Shape& s, DType d) {
  Tensor t = Tensor::empty(s, DType::F32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t.to_host(d);
}

/// a, b: F32 [8,4] (128 B each); c: BF16 [16,4] (128 B); d: F32 [4]. With a 200-byte limit the
/// split is [a], [b], [c, d].
std::vector<io::TensorSource> model_tensors() {
  return {io::tensor_source(iota(Shape{8, 4}, DType::F32), "a"), io::tensor_source(iota(Shape{8, 4}, DType::F32), "b"),
          io::tensor_source(iota(Shape{16, 4}, DType::BF16), "c"), io::tensor_source(iota(Shape{4}, DType::F32), "d")};
}

fs::path make_model(const test::TempDir& dir, const std::string& name = "model") {
  const fs::path p = dir / name;
  auto r = io::safetensors_write_sharded(p, model_tensors(), 200);
  REQUIRE(r.shards.size() == 3);
  return p;
}

json read_index(const fs::path& model) { return json::parse(file_read_text(model / kIndex)); }
void write_index(const fs::path& model, const json& j) { file_write_atomic(model / kIndex, j.dump(2)); }

std::string open_error(const fs::path& model) {
  try {
    io::ShardedSafetensors m(model);
  } catch (const IoError& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<wrong exception type> ") + e.what();
  }
  return "<no error>";
}

void check_rejected(const fs::path& model, std::string_view fragment) {
  const std::string msg = open_error(model);
  INFO("message: " << msg);
  CHECK(msg.find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("a valid sharded folder: names, infos, files, total size") {
  test::TempDir dir;
  const fs::path model = make_model(dir);
  io::ShardedSafetensors m(model);
  CHECK(m.dir() == model);
  CHECK(m.tensor_names() == std::vector<std::string>{"a", "b", "c", "d"});
  CHECK(m.files().size() == 3);
  CHECK(m.file_of("c").path().filename() == kShard3);
  CHECK(m.info("c").dtype == DType::BF16);
  CHECK(m.find("zz") == nullptr);
  CHECK(m.index_total_size() == 400u);
  CHECK(m.total_size_bytes() == 400u);
  CHECK(m.read("c", DType::F32).data<float>()[63] == 63.0f);
  CHECK_THROWS_WITH_AS(m.info("cc"), doctest::Contains("tensor 'cc' is not in model folder"), IoError);
  CHECK_THROWS_WITH_AS(m.info("cc"), doctest::Contains("did you mean 'c'"), IoError);
  CHECK(m.bytes_read() == 128);

  // The index wins over a stray model.safetensors; without the index, model.safetensors is used.
  io::safetensors_write(model / "model.safetensors", {io::tensor_source(iota(Shape{2}, DType::F32), "only")});
  CHECK(io::ShardedSafetensors(model).files().size() == 3);
  fs::remove(model / kIndex);
  io::ShardedSafetensors single(model);
  CHECK(single.tensor_names() == std::vector<std::string>{"only"});
  CHECK_FALSE(single.index_total_size().has_value());
}

TEST_CASE("four ranks each read only their share of rows and columns") {
  test::TempDir dir;
  const fs::path model = make_model(dir);
  for (int rank = 0; rank < 4; ++rank) {
    io::ShardedSafetensors m(model);                       // each rank opens the folder itself
    Tensor a = m.read_rows("a", rank * 2, 2, DType::F32);  // 2 of 8 rows of 16 B
    Tensor c = m.read_rows("c", rank * 4, 4, DType::F32);  // 4 of 16 rows of 8 B (bf16)
    Tensor b = m.read_cols("b", rank, 1, DType::BF16);     // 1 of 4 columns: 8 rows x 4 B
    CHECK(m.bytes_read() == 32 + 32 + 32);
    CHECK(a.data<float>()[0] == static_cast<float>(rank * 8));
    CHECK(c.data<float>()[0] == static_cast<float>(rank * 16));
    CHECK(bf16_to_f32(b.data<bf16>()[7].bits) == static_cast<float>(7 * 4 + rank));
    Tensor dst = Tensor::empty(Shape{8, 2}, DType::F32);
    m.read_cols_into("a", 2, dst);
    CHECK(dst.data<float>()[1] == 3.0f);
    CHECK(m.file_of("a").bytes_read() == 32 + 8 * 8);
  }
}

TEST_CASE("broken downloads are refused with the file to fix") {
  test::TempDir dir;
  SUBCASE("index names a missing shard") {
    const fs::path model = make_model(dir);
    fs::remove(model / kShard2);
    check_rejected(model, std::string("lists shard '") + kShard2 + "' for 1 tensors (e.g. 'b')");
    check_rejected(model, "does not exist. The download is incomplete");
  }
  SUBCASE("shard names outside the folder or with another extension") {
    const fs::path model = make_model(dir);
    fs::copy_file(model / kShard2, dir / "x.safetensors");  // exists, and must still be refused
    json j = read_index(model);
    j["weight_map"]["b"] = "../x.safetensors";
    write_index(model, j);
    check_rejected(model, "maps tensor 'b' to shard '../x.safetensors', which contains '..'");
    j["weight_map"]["b"] = (dir / "x.safetensors").string();
    write_index(model, j);
    check_rejected(model, "which is an absolute path");
    j["weight_map"]["b"] = "pytorch_model-00002.bin";
    write_index(model, j);
    check_rejected(model, "which does not end in .safetensors");
  }
  SUBCASE("a tensor listed in the index is absent from its shard") {
    const fs::path model = make_model(dir);
    json j = read_index(model);
    j["weight_map"]["model.layers.9.q_proj.weight"] = kShard1;
    write_index(model, j);
    check_rejected(model, std::string("says tensor 'model.layers.9.q_proj.weight' is in shard '") + kShard1 +
                              "', but that shard does not contain it");
    j["weight_map"].erase("model.layers.9.q_proj.weight");
    j["weight_map"]["c"] = kShard1;
    write_index(model, j);
    check_rejected(model, std::string("says tensor 'c' is in shard '") + kShard1 +
                              "', but that shard does not "
                              "contain it (it is in '" +
                              kShard3 + "' instead)");
  }
  SUBCASE("a tensor in two shards") {
    const fs::path model = make_model(dir);
    io::safetensors_write(model / kShard2, {io::tensor_source(iota(Shape{8, 4}, DType::F32), "b"),
                                            io::tensor_source(iota(Shape{8, 4}, DType::F32), "a")});
    check_rejected(model, std::string("tensor 'a' is in two shards, '") + kShard1 + "' and '" + kShard2 + "'");
  }
  SUBCASE("a truncated shard") {
    const fs::path model = make_model(dir);
    fs::resize_file(model / kShard3, fs::file_size(model / kShard3) - 10);
    check_rejected(model, (model / kShard3).string() + "': the file is");
    check_rejected(model, "10 bytes are missing. The file is truncated");
  }
  SUBCASE("extra tensors in a shard are kept") {
    const fs::path model = make_model(dir);
    io::safetensors_write(model / kShard1, {io::tensor_source(iota(Shape{8, 4}, DType::F32), "a"),
                                            io::tensor_source(iota(Shape{3}, DType::F32), "extra")});
    io::ShardedSafetensors m(model);
    CHECK(m.find("extra") != nullptr);
    CHECK(m.tensor_names().size() == 5);
  }
  SUBCASE("malformed index JSON") {
    const fs::path model = make_model(dir);
    file_write_atomic(model / kIndex, std::string_view("{\"weight_map\": {\"a\": "));
    check_rejected(model, "is not valid JSON");
    write_index(model, json{{"metadata", {{"total_size", 400}}}});
    check_rejected(model, "has no 'weight_map' object");
    write_index(model, json{{"weight_map", json::object()}});
    check_rejected(model, "has an empty 'weight_map'");
    write_index(model, json{{"weight_map", {{"a", 1}}}});
    check_rejected(model, "maps tensor 'a' to 1; it must be a shard file name");
    write_index(model, json{{"metadata", {{"total_size", -1}}}, {"weight_map", {{"a", kShard1}}}});
    check_rejected(model, "metadata.total_size is -1");
    write_index(model, json{{"metadata", {{"total_size", 128.0}}}, {"weight_map", {{"a", kShard1}}}});
    io::ShardedSafetensors m(model);  // only shard 1 is opened; 1.28e2 style sizes are accepted
    CHECK(m.index_total_size() == 128u);
    CHECK(m.files().size() == 1);
  }
}

TEST_CASE("folders without weights say what they hold") {
  test::TempDir dir;
  check_rejected(dir / "nope", "model folder '" + (dir / "nope").string() + "' does not exist");
  fs::create_directories(dir / "empty");
  check_rejected(dir / "empty", "has neither model.safetensors.index.json nor model.safetensors. The folder is empty");
  fs::create_directories(dir / "bin");
  test::write_bytes(dir / "bin" / "pytorch_model.bin", "x");
  check_rejected(dir / "bin", "PyTorch pickle weights ('pytorch_model.bin')");
  fs::create_directories(dir / "meta");
  test::write_bytes(dir / "meta" / "consolidated.00.pth", "x");
  check_rejected(dir / "meta", "Meta checkpoint ('consolidated.00.pth')");
  fs::create_directories(dir / "peft");
  test::write_bytes(dir / "peft" / "adapter_model.safetensors", "x");
  check_rejected(dir / "peft", "a PEFT adapter?");
}
