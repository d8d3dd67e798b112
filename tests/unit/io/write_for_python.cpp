// io_write_for_python <out_dir>: writes safetensors files with adapt's writer plus expected.json (raw
// bytes and values of every tensor, and adapt's verdict on hand-made valid/broken files) for
// scripts/check_safetensors_written.py, which checks them against Python's reference `safetensors`.
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "io/safetensors_header.h"
#include "io/safetensors_writer.h"

using namespace adapt;
using json = nlohmann::json;

namespace {

std::string hex(const void* p, std::size_t n) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) {
    const auto b = static_cast<const unsigned char*>(p)[i];
    s += kHex[b >> 4];
    s += kHex[b & 0xf];
  }
  return s;
}

json value_json(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

/// A host tensor of `dtype` holding `values` (floats rounded to nearest even, ints by value).
Tensor make(const Shape& shape, DType dtype, const std::vector<double>& values) {
  Tensor t = Tensor::empty(shape, dtype);
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    switch (dtype) {
      case DType::F32: t.data<float>()[i] = static_cast<float>(v); break;
      case DType::BF16: t.data<bf16>()[i].bits = f32_to_bf16(static_cast<float>(v)); break;
      case DType::F16: t.data<f16>()[i].bits = f32_to_f16(static_cast<float>(v)); break;
      case DType::I32: t.data<std::int32_t>()[i] = static_cast<std::int32_t>(v); break;
      case DType::I64: t.data<std::int64_t>()[i] = static_cast<std::int64_t>(v); break;
      case DType::U8: t.data<std::uint8_t>()[i] = static_cast<std::uint8_t>(v); break;
    }
  }
  return t;
}

/// What Python must find: dtype, shape, raw bytes, and values (as the stored dtype rounds them).
json describe(const Tensor& t) {
  json values = json::array();
  const Tensor f = t.to_host(DType::F32);
  for (std::int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case DType::I64: values.push_back(t.data<std::int64_t>()[i]); break;
      case DType::I32: values.push_back(t.data<std::int32_t>()[i]); break;
      case DType::U8: values.push_back(t.data<std::uint8_t>()[i]); break;
      default: values.push_back(value_json(f.data<float>()[i]));
    }
  }
  return {{"dtype", std::string(io::safetensors_dtype_name(t.dtype()))},
          {"shape", t.shape().to_vector()},
          {"hex", hex(t.raw(), t.size_bytes())},
          {"values", values}};
}

std::string le64(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>(n >> (8 * i));
  return s;
}

std::string st(std::string_view header, std::string_view data = {}) {
  return le64(header.size()) + std::string(header) + std::string(data);
}

struct Case {
  std::string name;
  std::string bytes;
  bool stricter = false;  // adapt refuses on purpose what the reference accepts
};

/// Hand-made files, valid and broken, for a differential test of the validation rules: Python's
/// reader must accept exactly the ones adapt accepts (except the cases marked stricter).
std::vector<Case> validation_cases() {
  const std::string z16(16, '\0');
  const std::string i32 = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
  auto one = [](std::string_view e) { return fmt::format(R"({{"w":{}}})", e); };
  std::string attack = "{";
  for (int i = 0; i < 10; ++i)
    attack += fmt::format(R"({}"w{}":{{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", i ? "," : "", i);
  std::string high = st(i32, z16);
  high[5] = high[6] = high[7] = '\xff';
  return {
      {"empty", ""},
      {"length_beyond_file", le64(60)},
      {"valid_i32", st(i32, z16)},
      {"size_mismatch", st(R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0, 4]}})")},
      {"trailing_bytes", st(i32, z16 + "extra")},
      {"missing_bytes", st(i32, z16.substr(2))},
      {"shape_overflow", st(R"({"test":{"dtype":"I32","shape":[2,18446744073709551614],"data_offsets":[0,16]}})", z16)},
      {"bytes_overflow", st(R"({"test":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}})", z16)},
      {"header_too_large", high},
      {"not_utf8", st("\xff")},
      {"not_json", st("{")},
      {"json_attack", st(attack + "}", z16)},
      {"zero_size", st(R"({"test":{"dtype":"I32","shape":[2,0],"data_offsets":[0, 0]}})")},
      {"scalar", st(R"({"test":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})", std::string(4, '\0'))},
      {"trailing_whitespace", st("{}\r \t\n")},
      {"leading_whitespace", st(" \n{}")},
      {"bom", st("\xef\xbb\xbf{}")},
      {"nul_padding", st(std::string("{}  \0", 5))},
      {"unknown_dtype", st(one(R"({"dtype":"BF17","shape":[2],"data_offsets":[0,4]})"), std::string(4, '\0'))},
      {"lowercase_dtype", st(one(R"({"dtype":"f32","shape":[1],"data_offsets":[0,4]})"), std::string(4, '\0'))},
      {"negative_dim", st(one(R"({"dtype":"U8","shape":[-1],"data_offsets":[0,1]})"), "x")},
      {"float_dim", st(one(R"({"dtype":"U8","shape":[1.0],"data_offsets":[0,1]})"), "x")},
      {"three_offsets", st(one(R"({"dtype":"U8","shape":[1],"data_offsets":[0,1,1]})"), "x")},
      {"missing_offsets", st(one(R"({"dtype":"U8","shape":[1]})"), "x")},
      {"extra_field", st(one(R"({"dtype":"U8","shape":[1],"data_offsets":[0,1],"extra":1})"), "x")},
      {"metadata_int", st(R"({"__metadata__":{"n":1}})")},
      {"metadata_null", st(R"({"__metadata__":null})")},
      {"top_level_array", st("[]")},
      {"gap", st(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"U8","shape":[1],)"
                 R"("data_offsets":[2,3]}})",
                 "xyz")},
      {"first_not_at_zero", st(one(R"({"dtype":"U8","shape":[1],"data_offsets":[1,2]})"), "xy")},
      {"overlap", st(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[1],)"
                     R"("data_offsets":[1,2]}})",
                     "xy")},
      {"end_before_begin", st(one(R"({"dtype":"U8","shape":[0],"data_offsets":[1,0]})"), "x")},
      {"two_empty_at_one_offset", st(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"F32",)"
                                     R"("shape":[0],"data_offsets":[0,0]}})")},
      {"misaligned_f32", st(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"b":{"dtype":"F32",)"
                            R"("shape":[1],"data_offsets":[1,5]}})",
                            "x\0\0\x80\x3f")},
      {"duplicate_tensor",
       st(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8",)"
          R"("shape":[1],"data_offsets":[0,1]}})",
          "x"),
       true},
      {"rank_9", st(one(R"({"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]})"), "x"), true},
  };
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s <out_dir>\n", argv[0]);
    return 2;
  }
  try {
    const fs::path out = argv[1];
    fs::create_directories(out);
    const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
    const std::vector<double> floats = {0.0, -0.0, 1.5, -2.25, inf, -inf, nan, 1e-40, 3.0e38, 1.0 / 3};
    const std::vector<double> halfs = {0.0, -0.0, 1.5, -2.25, inf, -inf, nan, 6e-8, 65504, 1.0 / 3};
    std::vector<std::pair<std::string, Tensor>> tensors = {
        {"f32.values", make(Shape{2, 5}, DType::F32, floats)},
        {"bf16.values", make(Shape{5, 2}, DType::BF16, floats)},
        {"f16.values", make(Shape{10}, DType::F16, halfs)},
        {"i32.values", make(Shape{2, 3}, DType::I32, {0, -1, -2147483648.0, 2147483647.0, 7, 123456})},
        {"u8.values", make(Shape{5}, DType::U8, {0, 1, 127, 128, 255})},
        {"f32.scalar", make(Shape{}, DType::F32, {-7.5})},
        {"bf16.empty", make(Shape{0, 4}, DType::BF16, {})},
        {"f32.cube", make(Shape{2, 3, 4}, DType::F32, std::vector<double>(24, 0.25))},
        {"name with \"quotes\", \\ and \xc3\xbcn\xc3\xaf", make(Shape{2}, DType::F32, {1, 2})},
    };
    Tensor i64 = Tensor::empty(Shape{4}, DType::I64);
    const std::int64_t i64_values[] = {std::numeric_limits<std::int64_t>::min(),
                                       std::numeric_limits<std::int64_t>::max(), -1, (1ll << 53) + 1};
    for (int i = 0; i < 4; ++i) i64.data<std::int64_t>()[i] = i64_values[i];
    tensors.emplace_back("i64.values", i64);

    json expected;
    std::vector<io::TensorSource> src;
    for (auto& [name, t] : tensors) {
      src.push_back(io::tensor_source(t, name));
      expected["files"]["all_dtypes.safetensors"]["tensors"][name] = describe(t);
    }
    const std::map<std::string, std::string> md = {{"format", "pt"}};
    io::safetensors_write(out / "all_dtypes.safetensors", src, md);
    expected["files"]["all_dtypes.safetensors"]["metadata"] = md;

    // A sharded folder: 16x8 bf16 embeddings (256 B) exceed the 200-byte limit and get their own shard.
    std::vector<std::pair<std::string, Tensor>> model = {
        {"model.embed_tokens.weight", make(Shape{16, 8}, DType::BF16, std::vector<double>(128, -0.5))},
        {"model.layers.0.self_attn.q_proj.weight", make(Shape{8, 8}, DType::BF16, std::vector<double>(64, 0.125))},
        {"model.layers.0.input_layernorm.weight", make(Shape{8}, DType::F32, std::vector<double>(8, 1.0))},
        {"model.norm.weight", make(Shape{8}, DType::F32, std::vector<double>(8, 2.0))}};
    std::vector<io::TensorSource> msrc;
    for (auto& [name, t] : model) {
      msrc.push_back(io::tensor_source(t, name));
      expected["sharded"]["tensors"][name] = describe(t);
    }
    const auto r = io::safetensors_write_sharded(out / "sharded", msrc, 200);
    expected["sharded"]["max_shard_bytes"] = 200;
    expected["sharded"]["total_size"] = r.total_size_bytes;
    for (const auto& p : r.shards) expected["sharded"]["shards"].push_back(p.filename().string());

    fs::create_directories(out / "validation");
    for (const Case& c : validation_cases()) {
      const fs::path p = out / "validation" / (c.name + ".safetensors");
      file_write_atomic(p, c.bytes);
      std::string outcome = "accepted";
      try {
        io::SafetensorsFile f(p);
      } catch (const Error&) {
        outcome = "rejected";
      }
      expected["validation"][c.name] = {{"adapt", outcome}, {"stricter", c.stricter}};
    }

    file_write_atomic(out / "expected.json", expected.dump(1) + "\n");
    std::printf("wrote %s\n", out.c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
