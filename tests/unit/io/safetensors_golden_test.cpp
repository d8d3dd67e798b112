// Golden: files written by Python's reference `safetensors` (scripts/make_safetensors_fixtures.py)
// read by adapt and compared with expected.json (sha256 of tensor bytes and slices, values, bit
// patterns); adapt's writer reproduces those files byte for byte, shards and index included.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "io/sharded.h"
#include "tests/support/test_support.h"
#include "tests/unit/io/io_test_util.h"

using namespace adapt;
using json = nlohmann::json;

namespace {

fs::path fixtures() { return test::data_dir() / "safetensors"; }
json expected() { return json::parse(file_read_text(fixtures() / "expected.json")); }

std::string tensor_sha(const io::SafetensorsFile& f, const std::string& name) {
  const io::TensorInfo& info = f.at(name);
  std::string bytes(static_cast<std::size_t>(info.size_bytes()), '\0');
  f.read_bytes(name, 0, info.size_bytes(), bytes.data());
  return test::sha256_hex(bytes);
}

std::string tensor_sha(const Tensor& t) { return test::sha256_hex(t.raw(), t.size_bytes()); }

/// Element i of a host tensor as double (exact for every dtype adapt reads, ints up to 2^53).
double value_at(const Tensor& t, std::int64_t i) {
  switch (t.dtype()) {
    case DType::F32: return t.data<float>()[i];
    case DType::BF16: return bf16_to_f32(t.data<bf16>()[i].bits);
    case DType::F16: return f16_to_f32(t.data<f16>()[i].bits);
    case DType::I32: return t.data<std::int32_t>()[i];
    case DType::I64: return static_cast<double>(t.data<std::int64_t>()[i]);
    case DType::U8: return t.data<std::uint8_t>()[i];
  }
  return 0;
}

/// Checks one file against its expected.json entry: header, tensor bytes, values, slices.
void check_file(const fs::path& path, const json& exp) {
  INFO("file: " << path.string());
  io::SafetensorsFile f(path);
  CHECK(fs::file_size(path) == exp["size_bytes"].get<std::uint64_t>());
  CHECK(test::sha256_hex(test::read_all(path)) == exp["sha256"].get<std::string>());
  CHECK(f.data_offset() == 8 + exp["header_bytes"].get<std::uint64_t>());
  CHECK(f.metadata() == exp["metadata"].get<std::map<std::string, std::string>>());
  CHECK(f.tensors().size() == exp["tensors"].size());
  for (const auto& [name, t] : exp["tensors"].items()) {
    INFO("tensor: " << name);
    const io::TensorInfo& info = f.at(name);
    CHECK(info.dtype_name == t["dtype"].get<std::string>());
    CHECK(info.shape.to_vector() == t["shape"].get<std::vector<std::int64_t>>());
    CHECK(info.begin == t["data_offsets"][0].get<std::uint64_t>());
    CHECK(info.end == t["data_offsets"][1].get<std::uint64_t>());
    CHECK(tensor_sha(f, name) == t["sha256"].get<std::string>());
    if (!info.dtype) {
      CHECK_THROWS_AS(f.read(name, DType::F32), UnsupportedError);
      continue;
    }
    const DType native = *info.dtype;
    Tensor whole = f.read(name, native);
    CHECK(tensor_sha(whole) == t["sha256"].get<std::string>());
    if (t.contains("values")) {
      for (std::size_t i = 0; i < t["values"].size(); ++i) {
        const json& v = t["values"][i];
        const auto k = static_cast<std::int64_t>(i);
        const double got = value_at(whole, k);
        if (v.is_string()) {
          const std::string s = v.get<std::string>();
          CHECK((s == "nan" ? std::isnan(got) : got == (s == "inf" ? INFINITY : -INFINITY)));
        } else if (native == DType::I64) {
          CHECK(whole.data<std::int64_t>()[k] == v.get<std::int64_t>());
        } else {
          CHECK(got == v.get<double>());
          if (got == 0) CHECK(std::signbit(got) == std::signbit(v.get<double>()));
        }
      }
    }
    if (t.contains("bits"))
      for (std::size_t i = 0; i < t["bits"].size(); ++i)
        CHECK(static_cast<const std::uint16_t*>(whole.raw())[i] == t["bits"][i].get<std::uint16_t>());
    if (t.contains("rows")) {
      const auto& r = t["rows"];
      Tensor rows = f.read_rows(name, r["begin"].get<std::int64_t>(), r["n"].get<std::int64_t>(), native);
      CHECK(tensor_sha(rows) == r["sha256"].get<std::string>());
    }
    if (t.contains("cols")) {
      const auto& c = t["cols"];
      Tensor cols = f.read_cols(name, c["begin"].get<std::int64_t>(), c["n"].get<std::int64_t>(), native);
      CHECK(tensor_sha(cols) == c["sha256"].get<std::string>());
    }
  }
}

}  // namespace

TEST_CASE("fixtures written by Python safetensors read back exactly") {
  const json exp = expected();
  MESSAGE("fixtures by " << exp["generator"].get<std::string>() << " (safetensors "
                         << exp["versions"]["safetensors"].get<std::string>() << ", seed " << exp["seed"] << ")");
  for (const auto& [file, e] : exp["files"].items()) check_file(fixtures() / file, e);
  for (const auto& [file, e] : exp["model"]["shards"].items()) check_file(fixtures() / "model" / file, e);
}

TEST_CASE("our writer reproduces the reference writer's file byte for byte") {
  io::SafetensorsFile f(fixtures() / "dtypes.safetensors");
  std::vector<io::TensorSource> src;
  for (auto it = f.tensors().rbegin(); it != f.tensors().rend(); ++it)  // any input order
    src.push_back(io::tensor_source(f.read(it->name, *it->dtype), it->name));
  test::TempDir dir;
  io::safetensors_write(dir / "dtypes.safetensors", src, f.metadata());
  CHECK(test::read_all(dir / "dtypes.safetensors") == test::read_all(fixtures() / "dtypes.safetensors"));
}

TEST_CASE("the sharded model: index, shards, and huggingface_hub's split reproduced") {
  const json exp = expected()["model"];
  io::ShardedSafetensors m(fixtures() / "model");
  CHECK(m.index_total_size() == exp["total_size"].get<std::uint64_t>());
  CHECK(m.total_size_bytes() == exp["total_size"].get<std::uint64_t>());
  CHECK(m.files().size() == exp["shards"].size());
  for (const auto& [name, shard] : exp["weight_map"].items()) {
    CHECK(m.file_of(name).path().filename() == shard.get<std::string>());
    CHECK(tensor_sha(m.read(name, DType::BF16)) ==
          exp["shards"][shard.get<std::string>()]["tensors"][name]["sha256"].get<std::string>());
  }

  // Same tensors, same order, same limit: identical shards and index.
  std::vector<io::TensorSource> src;
  for (const auto& n : exp["order"])
    src.push_back(io::tensor_source(m.read(n.get<std::string>(), DType::BF16), n.get<std::string>()));
  test::TempDir dir;
  auto r = io::safetensors_write_sharded(dir.path(), src, exp["max_shard_size"].get<std::uint64_t>());
  CHECK(r.total_size_bytes == exp["total_size"].get<std::uint64_t>());
  REQUIRE(r.shards.size() == exp["shards"].size());
  for (const auto& p : r.shards) {
    INFO("shard " << p.filename().string());
    CHECK(test::read_all(p) == test::read_all(fixtures() / "model" / p.filename()));
  }
  CHECK(test::sha256_hex(test::read_all(dir / "model.safetensors.index.json")) ==
        exp["index_sha256"].get<std::string>());
}

TEST_CASE("shard_split equals huggingface_hub's split_state_dict_into_shards_factory") {
  for (const auto& c : expected()["split_cases"]) {
    INFO("case: " << c.dump());
    CHECK(io::shard_split(c["sizes"].get<std::vector<std::uint64_t>>(), c["max_shard_size"].get<std::uint64_t>()) ==
          c["shards"].get<std::vector<std::vector<std::size_t>>>());
  }
}
