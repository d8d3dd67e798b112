// safetensors writer: bytes identical to the reference writer's unit tests (SPEC-llama.md §1.3),
// ordering, round trips for every DType, streaming order, atomic failure, sharded folders.
#include <doctest/doctest.h>

#include <cstring>
#include <nlohmann/json.hpp>
#include <random>

#include "core/error.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "io/sharded.h"
#include "tests/support/test_support.h"
#include "tests/unit/io/io_test_util.h"

using namespace adapt;

namespace {

Tensor iota_f32(const Shape& s) {
  Tensor t = Tensor::empty(s, DType::F32);
  for (std::int64_t i = 0; i < t.numel(); ++i) t.data<float>()[i] = static_cast<float>(i);
  return t;
}

/// A seeded tensor of any dtype (floats in [-4, 4), ints in a small range).
Tensor random_tensor(const Shape& s, DType d, std::mt19937_64& rng) {
  Tensor f = Tensor::empty(s, DType::F32);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  for (std::int64_t i = 0; i < f.numel(); ++i)
    f.data<float>()[i] = is_float(d) ? u(rng) : static_cast<float>(static_cast<int>(u(rng) * 30) + 120);
  return f.to_host(d);
}

std::vector<std::uint8_t> bytes_of(std::initializer_list<int> v) { return {v.begin(), v.end()}; }

int count_files(const fs::path& dir) {
  int n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.is_regular_file();
  return n;
}

}  // namespace

TEST_CASE("writer bytes equal the reference writer's unit tests") {
  test::TempDir dir;
  SUBCASE("attn0 [1,1,2,3] F32: 65-byte JSON padded to N = 72") {
    io::safetensors_write(dir / "a.safetensors", {io::tensor_source(iota_f32(Shape{1, 1, 2, 3}), "attn0")}, {});
    const std::string got = test::read_all(dir / "a.safetensors");
    const std::vector<std::uint8_t> expected =
        bytes_of({72,  0,   0,   0,  0,  0,  0,  0,  123, 34,  97, 116, 116, 110, 48,  34,  58,  123, 34,  100, 116,
                  121, 112, 101, 34, 58, 34, 70, 51, 50,  34,  44, 34,  115, 104, 97,  112, 101, 34,  58,  91,  49,
                  44,  49,  44,  50, 44, 51, 93, 44, 34,  100, 97, 116, 97,  95,  111, 102, 102, 115, 101, 116, 115,
                  34,  58,  91,  48, 44, 50, 52, 93, 125, 125, 32, 32,  32,  32,  32,  32,  32,  0,   0,   0,   0,
                  0,   0,   128, 63, 0,  0,  0,  64, 0,   0,   64, 64,  0,   0,   128, 64,  0,   0,   160, 64});
    REQUIRE(got.size() == expected.size());
    CHECK(std::memcmp(got.data(), expected.data(), expected.size()) == 0);
    io::SafetensorsFile f(dir / "a.safetensors");
    CHECK(f.data_offset() == 80);
    CHECK(f.read("attn0", DType::F32).data<float>()[5] == 5.0f);
  }
  SUBCASE("attn.0 [1,2,3] F32: N = 64, no padding") {
    io::safetensors_write(dir / "b.safetensors", {io::tensor_source(iota_f32(Shape{1, 2, 3}), "attn.0")}, {});
    const std::string got = test::read_all(dir / "b.safetensors");
    CHECK(got.substr(0, 8) == test::le64(64));
    CHECK(got.substr(8, 64) == R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})");
    CHECK(got.size() == 8 + 64 + 24);
  }
  SUBCASE("no tensors: '{}' padded to 8; metadata only: padded to 40") {
    io::safetensors_write(dir / "e.safetensors", {}, {});
    CHECK(test::read_all(dir / "e.safetensors") == test::le64(8) + "{}      ");
    io::safetensors_write(dir / "m.safetensors", {}, {{"framework", "pt"}});
    CHECK(test::read_all(dir / "m.safetensors") == test::le64(40) + R"({"__metadata__":{"framework":"pt"}})" + "     ");
  }
}

TEST_CASE("header order: __metadata__ first, then dtype alignment descending, then name") {
  std::vector<io::TensorSource> src;
  for (auto [name, d] : std::vector<std::pair<std::string, DType>>{{"b", DType::U8},
                                                                   {"a", DType::U8},
                                                                   {"z", DType::F16},
                                                                   {"y", DType::BF16},
                                                                   {"x", DType::I32},
                                                                   {"w", DType::F32},
                                                                   {"v", DType::I64}})
    src.push_back(io::tensor_source(Tensor::zeros(Shape{1}, d), name));
  const std::string h = io::safetensors_header_json(src, {{"format", "pt"}, {"a\"b\\c\n", "é\x01"}});
  CHECK(h == R"({"__metadata__":{"a\"b\\c\n":"é\u0001","format":"pt"},)"
             R"("v":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},)"
             R"("w":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},)"
             R"("x":{"dtype":"I32","shape":[1],"data_offsets":[12,16]},)"
             R"("y":{"dtype":"BF16","shape":[1],"data_offsets":[16,18]},)"
             R"("z":{"dtype":"F16","shape":[1],"data_offsets":[18,20]},)"
             R"("a":{"dtype":"U8","shape":[1],"data_offsets":[20,21]},)"
             R"("b":{"dtype":"U8","shape":[1],"data_offsets":[21,22]}})");
}

TEST_CASE("round trip for every DType, odd names, metadata; fill is called once per tensor in file order") {
  test::TempDir dir;
  std::mt19937_64 rng(test::kSeed);
  const std::vector<DType> all = {DType::F32, DType::BF16, DType::F16, DType::I32, DType::I64, DType::U8};
  std::vector<Tensor> tensors;
  std::vector<io::TensorSource> src;
  std::vector<std::string> calls;
  for (DType d : all) {
    for (const Shape& s : {Shape{3, 5}, Shape{}, Shape{2, 0, 4}, Shape{7}}) {
      tensors.push_back(random_tensor(s, d, rng));
      io::TensorSource t = io::tensor_source(tensors.back(), fmt::format("{}.{}", dtype_name(d), s.str()));
      auto inner = t.fill;
      t.fill = [inner, &calls, name = t.name](void* p) {
        calls.push_back(name);
        inner(p);
      };
      src.push_back(std::move(t));
    }
  }
  // Names with JSON specials and non-ASCII characters survive the round trip.
  tensors.push_back(random_tensor(Shape{2}, DType::F32, rng));
  src.push_back(io::tensor_source(tensors.back(), "quote\" back\\slash\ttab ünï"));
  const std::map<std::string, std::string> md = {{"format", "pt"}, {"note", "line1\nline2 \"q\""}};
  io::safetensors_write(dir / "all.safetensors", src, md);

  io::SafetensorsFile f(dir / "all.safetensors");
  CHECK(f.metadata() == md);
  CHECK(f.tensors().size() == src.size());
  std::vector<std::string> order;
  for (const auto& t : f.tensors())
    if (t.name.find("quote") == std::string::npos) order.push_back(t.name);
  CHECK(calls == order);
  for (std::size_t i = 0; i < src.size(); ++i) {
    const io::TensorInfo& info = f.at(src[i].name);
    CHECK(info.shape == tensors[i].shape());
    CHECK(info.dtype == tensors[i].dtype());
    CHECK(f.data_offset() % 8 == 0);
    CHECK((f.data_offset() + info.begin) % dtype_size(tensors[i].dtype()) == 0);  // aligned, as the reference
    Tensor back = f.read(src[i].name, tensors[i].dtype());
    CHECK(std::memcmp(back.raw(), tensors[i].raw(), back.size_bytes()) == 0);
    Tensor as_f32 = f.read(src[i].name, DType::F32);
    Tensor expected = tensors[i].to_host(DType::F32);
    CHECK(std::memcmp(as_f32.raw(), expected.raw(), expected.size_bytes()) == 0);
  }
}

TEST_CASE("tensor_source copies strided views contiguously; bad names are refused") {
  test::TempDir dir;
  Tensor m = iota_f32(Shape{4, 6});
  io::safetensors_write(dir / "v.safetensors", {io::tensor_source(m.narrow(1, 2, 3), "cols")});
  io::SafetensorsFile f(dir / "v.safetensors");
  Tensor back = f.read("cols", DType::F32);
  CHECK(back.shape() == Shape{4, 3});
  CHECK(back.data<float>()[3] == 8.0f);  // row 1, column 2
  CHECK(f.metadata().at("format") == "pt");

  std::vector<io::TensorSource> dup = {io::tensor_source(m, "w"), io::tensor_source(m, "w")};
  CHECK_THROWS_WITH_AS(io::safetensors_write(dir / "d.safetensors", dup), doctest::Contains("'w' is given twice"),
                       IoError);
  CHECK_THROWS_WITH_AS(io::safetensors_write(dir / "d.safetensors", {io::tensor_source(m, "__metadata__")}),
                       doctest::Contains("reserved"), IoError);
  CHECK_FALSE(fs::exists(dir / "d.safetensors"));
}

TEST_CASE("a failed write leaves no file under the final name and keeps the previous one") {
  test::TempDir dir;
  const fs::path p = dir / "model.safetensors";
  io::safetensors_write(p, {io::tensor_source(iota_f32(Shape{4}), "old")});
  const std::string before = test::read_all(p);

  io::TensorSource ok = io::tensor_source(iota_f32(Shape{1024}), "a");
  io::TensorSource boom{"b", DType::F32, Shape{8}, [](void*) { ADAPT_THROW(IoError, "simulated read failure"); }};
  CHECK_THROWS_WITH_AS(io::safetensors_write(p, {ok, boom}), doctest::Contains("simulated read failure"), IoError);
  CHECK(test::read_all(p) == before);
  CHECK(count_files(dir.path()) == 1);

  // A full disk.
  std::string msg;
  test::with_file_size_limit(64 * 1024, [&] {
    try {
      io::safetensors_write(p, {io::tensor_source(iota_f32(Shape{1 << 16}), "big")});
    } catch (const IoError& e) {
      msg = e.what();
    }
  });
  CHECK(msg.find("cannot write") != std::string::npos);
  CHECK(test::read_all(p) == before);
  CHECK(count_files(dir.path()) == 1);
}

TEST_CASE("shard split follows huggingface_hub") {
  using V = std::vector<std::vector<std::size_t>>;
  CHECK(io::shard_split({6, 6, 2, 6, 2, 2}, 10) == V{{0}, {1, 2}, {3, 4, 5}});    // its docstring example
  CHECK(io::shard_split({3, 12, 3, 3, 12, 1}, 10) == V{{1}, {4}, {0, 2, 3, 5}});  // big ones jump the queue
  CHECK(io::shard_split({5, 5, 5}, 5) == V{{0}, {1}, {2}});
  CHECK(io::shard_split({}, 5).empty());
}

TEST_CASE("sharded writer: single file, shards + index, stale files of an earlier save removed") {
  test::TempDir dir;
  std::mt19937_64 rng(test::kSeed + 1);
  std::vector<Tensor> ts;
  std::vector<io::TensorSource> src;
  const std::vector<std::pair<std::string, Shape>> layout = {{"model.embed_tokens.weight", Shape{32, 8}},
                                                             {"model.layers.0.self_attn.q_proj.weight", Shape{8, 8}},
                                                             {"model.layers.0.mlp.up_proj.weight", Shape{16, 8}},
                                                             {"model.norm.weight", Shape{16}},
                                                             {"lm_head.weight", Shape{32, 8}}};
  std::uint64_t total = 0;
  for (const auto& [name, shape] : layout) {
    ts.push_back(random_tensor(shape, DType::BF16, rng));
    src.push_back(io::tensor_source(ts.back(), name));
    total += ts.back().size_bytes();
  }
  const fs::path model = dir / "out" / "model";  // created by the writer

  auto one = io::safetensors_write_sharded(model, src, 1u << 20);
  CHECK(one.shards == std::vector<fs::path>{model / "model.safetensors"});
  CHECK(one.total_size_bytes == total);
  CHECK_FALSE(fs::exists(model / "model.safetensors.index.json"));

  // 512-byte embeddings and lm_head exceed 400 bytes: own shards. Sizes 512, 128, 256, 32, 512.
  auto many = io::safetensors_write_sharded(model, src, 400);
  REQUIRE(many.shards.size() == 4);
  CHECK(many.shards[0].filename() == "model-00001-of-00004.safetensors");
  CHECK_FALSE(fs::exists(model / "model.safetensors"));  // the earlier single file is gone
  const auto index = nlohmann::json::parse(file_read_text(model / "model.safetensors.index.json"));
  CHECK(index["metadata"]["total_size"] == total);
  CHECK(index["weight_map"]["lm_head.weight"] == "model-00003-of-00004.safetensors");
  CHECK(index["weight_map"]["model.norm.weight"] == "model-00004-of-00004.safetensors");
  CHECK(file_read_text(model / "model.safetensors.index.json").ends_with("}\n"));

  io::ShardedSafetensors m(model);
  CHECK(m.files().size() == 4);
  CHECK(m.index_total_size() == total);
  for (std::size_t i = 0; i < layout.size(); ++i) {
    Tensor back = m.read(layout[i].first, DType::BF16);
    CHECK(std::memcmp(back.raw(), ts[i].raw(), back.size_bytes()) == 0);
  }

  // Writing fewer shards removes the extra old ones; a single file removes the index.
  auto two = io::safetensors_write_sharded(model, src, 1000);
  CHECK(two.shards.size() == 2);
  CHECK(count_files(model) == 3);
  io::safetensors_write_sharded(model, src, 1u << 20);
  CHECK(count_files(model) == 1);
  CHECK(io::ShardedSafetensors(model).files().size() == 1);
  CHECK_THROWS_AS(io::safetensors_write_sharded(model, src, 0), ConfigError);
}
