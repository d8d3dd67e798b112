// SafetensorsFile: the reference reader's validation rules (the Rust unit-test vectors of
// SPEC-llama.md §7.3 and every other rule of §1.4) and range reads counted by bytes_read().
#include <doctest/doctest.h>

#include <cstring>
#include <thread>
#include <vector>

#include "core/error.h"
#include "core/file.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "tests/support/test_support.h"
#include "tests/unit/io/io_test_util.h"

using namespace adapt;
using namespace std::string_literals;
using adapt::test::st_bytes;

namespace {

bool contains(const std::string& s, std::string_view sub) { return s.find(sub) != std::string::npos; }

/// The message of the IoError that opening `bytes` as a file throws, or a marker when none is thrown.
template <typename E = IoError>
std::string open_error(const std::string& bytes, fs::path* where = nullptr) {
  static int counter = 0;
  static test::TempDir dir("adapt-io-bad");
  const fs::path p = dir / ("bad" + std::to_string(counter++) + ".safetensors");
  test::write_bytes(p, bytes);
  if (where) *where = p;
  try {
    io::SafetensorsFile f(p);
  } catch (const E& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("<wrong exception type> ") + e.what();
  }
  return "<no error>";
}

/// Opening must fail with an IoError that names the file and contains `fragment`.
void check_rejected(const std::string& bytes, std::string_view fragment) {
  fs::path p;
  const std::string msg = open_error(bytes, &p);
  INFO("message: " << msg);
  CHECK(contains(msg, fragment));
  CHECK(contains(msg, p.string()));
}

io::SafetensorsFile* open_ok(const std::string& bytes, test::TempDir& dir, const std::string& name = "ok") {
  const fs::path p = dir / (name + ".safetensors");
  test::write_bytes(p, bytes);
  static std::vector<std::unique_ptr<io::SafetensorsFile>> keep;
  keep.push_back(std::make_unique<io::SafetensorsFile>(p));
  return keep.back().get();
}

std::string zeros(std::size_t n) { return std::string(n, '\0'); }

std::string f32_bytes(const std::vector<float>& v) {
  std::string s(v.size() * 4, '\0');
  std::memcpy(s.data(), v.data(), s.size());
  return s;
}

}  // namespace

TEST_CASE("reference reader test vectors (SPEC 7.3)") {
  const std::string i32_2x2 = R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}})";
  SUBCASE("empty file: HeaderTooSmall") { check_rejected("", "shorter than the 8-byte"); }
  SUBCASE("8-byte file with N = 60: InvalidHeaderLength") { check_rejected(test::le64(60), "only 0 bytes follow"); }
  SUBCASE("sizes disagree: TensorInvalidInfo") {
    check_rejected(st_bytes(R"({"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0, 4]}})"),
                   "needs 16 bytes, but its data_offsets [0, 4] span 4 bytes");
  }
  SUBCASE("trailing bytes: MetadataIncompleteBuffer") {
    check_rejected(st_bytes(i32_2x2, zeros(16) + "extra_bogus_data_for_polyglot_file"),
                   "34 unexpected bytes follow the last tensor");
  }
  SUBCASE("2 missing bytes: MetadataIncompleteBuffer") {
    check_rejected(st_bytes(i32_2x2, zeros(14)), "2 bytes are missing");
  }
  SUBCASE("shape overflow: ValidationOverflow") {
    check_rejected(
        st_bytes(R"({"test":{"dtype":"I32","shape":[2,18446744073709551614],"data_offsets":[0,16]}})", zeros(16)),
        "overflows 64 bits");
    check_rejected(
        st_bytes(R"({"test":{"dtype":"I32","shape":[2,9223372036854775807],"data_offsets":[0,16]}})", zeros(16)),
        "overflows 64 bits");
  }
  SUBCASE("N with high bytes 0xFF: HeaderTooLarge") {
    std::string b = st_bytes(i32_2x2, zeros(16));
    b[5] = b[6] = b[7] = '\xff';
    check_rejected(b, "above the format's limit of 100,000,000 bytes");
  }
  SUBCASE("header byte 0xFF: InvalidHeader") { check_rejected(st_bytes("\xff"), "not valid UTF-8 (byte 0xff"); }
  SUBCASE("header '{': InvalidHeaderDeserialization") { check_rejected(st_bytes("{"), "is not valid JSON"); }
  SUBCASE("json attack: ten tensors at the same offsets: InvalidOffset") {
    std::string h = "{";
    for (int i = 0; i < 10; ++i) {
      if (i) h += ',';
      h += fmt::format(R"("weight_{}":{{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]}})", i);
    }
    check_rejected(st_bytes(h + "}", zeros(16)), "overlap the previous tensor");
  }
  SUBCASE("valid: 2x2 I32, zero-size [2,0], scalar, whitespace padding on both sides") {
    test::TempDir dir;
    auto* f = open_ok(st_bytes(i32_2x2, zeros(16)), dir, "a");
    REQUIRE(f->tensors().size() == 1);
    CHECK(f->at("test").shape == Shape{2, 2});
    CHECK(f->at("test").dtype == DType::I32);
    CHECK(f->data_offset() == 8 + 60);

    auto* z = open_ok(st_bytes(R"({"test":{"dtype":"I32","shape":[2,0],"data_offsets":[0, 0]}})"), dir, "b");
    Tensor t = z->read("test", DType::F32);
    CHECK(t.shape() == Shape{2, 0});
    CHECK(z->bytes_read() == 0);

    auto* s = open_ok(st_bytes(R"({"test":{"dtype":"I32","shape":[],"data_offsets":[0,4]}})", "\x07\0\0\0"s), dir, "c");
    CHECK(s->read("test", DType::I64).data<std::int64_t>()[0] == 7);
    CHECK(s->at("test").shape.rank() == 0);

    CHECK(open_ok(st_bytes("{}\r \t\n"), dir, "d")->tensors().empty());
    CHECK(open_ok(st_bytes("\t\n{}\r "), dir, "e")->tensors().empty());
  }
}

TEST_CASE("every header rule is enforced, with the tensor named") {
  auto one = [](std::string_view entry, std::string_view data = {}) {
    return st_bytes(fmt::format(R"({{"w":{}}})", entry), data);
  };
  check_rejected(one(R"({"dtype":"BF17","shape":[2],"data_offsets":[0,4]})", zeros(4)),
                 "tensor 'w' has dtype 'BF17', which is not a safetensors dtype (did you mean 'BF16'?)");
  check_rejected(one(R"({"dtype":"F32","shape":[-2],"data_offsets":[0,8]})", zeros(8)),
                 "tensor 'w' has shape entry -2");
  check_rejected(one(R"({"dtype":"F32","shape":[2.0],"data_offsets":[0,8]})", zeros(8)),
                 "tensor 'w' has shape entry 2.0");
  check_rejected(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,8,8]})", zeros(8)), "exactly 2 non-negative");
  check_rejected(one(R"({"dtype":"F32","shape":[2],"data_offsets":[0,-8]})", zeros(8)), "data_offsets entry -8");
  check_rejected(one(R"({"dtype":"F32","shape":[2]})", zeros(8)), "tensor 'w' has no 'data_offsets' field");
  check_rejected(one(R"([1,2])"), "tensor 'w' maps to [1,2] instead of an object");
  check_rejected(one(R"({"dtype":7,"shape":[2],"data_offsets":[0,8]})", zeros(8)), "has dtype 7");
  check_rejected(st_bytes("[]"), "the header must be a JSON object, found array");
  check_rejected(st_bytes(R"({"__metadata__":{"format":"pt","n":1}})"),
                 "'__metadata__' key 'n' has the value 1; metadata values must be strings");
  check_rejected(st_bytes(R"({"__metadata__":["pt"]})"), "'__metadata__' must be an object");
  check_rejected(st_bytes(R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                          R"("w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                          zeros(2)),
                 "tensor name 'w' appears more than once");
  check_rejected(one(R"({"dtype":"U8","dtype":"U8","shape":[1],"data_offsets":[0,1]})", zeros(1)),
                 "key 'dtype' appears more than once");
  // Offsets: first tensor not at 0, gap, end before begin.
  check_rejected(one(R"({"dtype":"U8","shape":[1],"data_offsets":[1,2]})", zeros(2)),
                 "tensor 'w' has data_offsets [1, 2], but the first tensor must begin at 0");
  check_rejected(st_bytes(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                          R"("b":{"dtype":"U8","shape":[2],"data_offsets":[5,7]}})",
                          zeros(7)),
                 "tensor 'b' has data_offsets [5, 7], but the previous tensor 'a' ends at byte 2: 3 bytes");
  check_rejected(st_bytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                          R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                          zeros(4)),
                 "tensor 'b' has data_offsets [2, 4], which overlap the previous tensor 'a' (ending at 4) by 2");
  check_rejected(st_bytes("\xef\xbb\xbf{}"), "byte-order mark");
  check_rejected(st_bytes("{} \0"s), "is not valid JSON");  // NUL padding is not JSON whitespace
  {
    // Eight U8 tensors of 2^61-1 bytes each: every size is valid, but 8 + N + total overflows 64 bits.
    std::string h = "{";
    const std::uint64_t n = (1ull << 61) - 1;
    for (std::uint64_t i = 0; i < 8; ++i) {
      if (i) h += ',';
      h += fmt::format(R"("t{}":{{"dtype":"U8","shape":[{}],"data_offsets":[{},{}]}})", i, n, i * n, (i + 1) * n);
    }
    check_rejected(st_bytes(h + "}"), "its tensors claim 18446744073709551608 bytes of data");
  }
  // Sub-byte dtypes: 3 F4 values are 12 bits (MisalignedSlice); 4 are 2 bytes.
  check_rejected(one(R"({"dtype":"F4","shape":[3],"data_offsets":[0,2]})", zeros(2)),
                 "3 elements of F4 (4 bits each) = 12 bits, which is not a whole number of bytes");
  test::TempDir dir;
  auto* f4 = open_ok(one(R"({"dtype":"F4","shape":[4],"data_offsets":[0,2]})", zeros(2)), dir, "f4");
  CHECK(f4->at("w").dtype_name == "F4");
  CHECK_FALSE(f4->at("w").dtype.has_value());
  CHECK_THROWS_WITH_AS(f4->read("w", DType::F32), doctest::Contains("tensor 'w'"), UnsupportedError);
  // More dimensions than adapt's Shape holds: UnsupportedError.
  CHECK(contains(open_error<UnsupportedError>(one(R"({"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1],)"
                                                  R"("data_offsets":[0,1]})",
                                                  zeros(1))),
                 "has 9 dimensions"));
  // Git LFS pointers are recognised.
  check_rejected("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n", "git lfs pull");
}

TEST_CASE("valid headers: all reference dtypes, zero-size tensors sharing an offset, metadata") {
  test::TempDir dir;
  std::string h = R"({"__metadata__":{"format":"pt","note":"x"})";
  std::string data;
  std::uint64_t off = 0;
  for (const auto& d : io::safetensors_dtypes()) {
    const std::uint64_t n = 8 * static_cast<std::uint64_t>(d.bits) / 8;  // 8 elements
    h += fmt::format(R"(,"t_{}":{{"dtype":"{}","shape":[2,4],"data_offsets":[{},{}]}})", d.name, d.name, off, off + n);
    off += n;
  }
  h += fmt::format(R"(,"z1":{{"dtype":"F32","shape":[0,3],"data_offsets":[{},{}]}})", off, off);
  h += fmt::format(R"(,"z0":{{"dtype":"BF16","shape":[3,0],"data_offsets":[{},{}]}}}})", off, off);
  data = zeros(off);
  auto* f = open_ok(st_bytes(h, data), dir);
  CHECK(f->tensors().size() == io::safetensors_dtypes().size() + 2);
  CHECK(f->metadata().at("note") == "x");
  CHECK(f->at("t_BF16").dtype == DType::BF16);
  CHECK(f->at("t_F64").dtype == std::nullopt);
  CHECK(f->at("t_F4").size_bytes() == 4);
  CHECK(f->at("t_F6_E3M2").size_bytes() == 6);
  CHECK(f->tensors().back().name == "z1");  // offset order, ties by name
  CHECK_THROWS_WITH_AS(f->at("t_bf16"), doctest::Contains("did you mean 't_BF16'"), IoError);
  const std::string c64 =
      "tensor 't_C64' in safetensors file '" + (dir / "ok.safetensors").string() + "' has dtype C64";
  CHECK_THROWS_WITH_AS(f->read("t_C64", DType::F32), doctest::Contains(c64.c_str()), UnsupportedError);
  std::uint8_t raw[8];
  f->read_bytes("t_F8_E4M3", 0, 8, raw);
  CHECK(f->bytes_read() == 8);
  CHECK_THROWS_AS(f->read_bytes("t_F8_E4M3", 4, 5, raw), ShapeError);
}

TEST_CASE("missing and unreadable files name the path") {
  CHECK_THROWS_WITH_AS(io::SafetensorsFile("/nonexistent/dir/model.safetensors"),
                       doctest::Contains("'/nonexistent/dir/model.safetensors' does not exist"), IoError);
  test::TempDir dir;
  CHECK_THROWS_WITH_AS(io::SafetensorsFile(dir.path()), doctest::Contains("is not a regular file"), IoError);
}

TEST_CASE("row and column ranges read only their bytes, also from misaligned data") {
  // Layout by hand: a 3-byte U8 tensor first, so the F32 matrix starts at an odd data offset.
  constexpr int R = 6, C = 10;
  std::vector<float> m(R * C);
  for (int i = 0; i < R * C; ++i) m[static_cast<std::size_t>(i)] = static_cast<float>(i) + 0.5f;
  const std::string h = fmt::format(R"({{"a":{{"dtype":"U8","shape":[3],"data_offsets":[0,3]}},)"
                                    R"("m":{{"dtype":"F32","shape":[{},{}],"data_offsets":[3,{}]}}}})",
                                    R, C, 3 + R * C * 4);
  test::TempDir dir;
  auto* f = open_ok(st_bytes(h, "\x01\x02\x03"s + f32_bytes(m)), dir);
  CHECK((f->data_offset() + f->at("m").begin) % 4 != 0);

  Tensor rows = f->read_rows("m", 2, 3, DType::F32);
  CHECK(rows.shape() == Shape{3, C});
  CHECK(f->bytes_read() == 3 * C * 4);
  for (int i = 0; i < 3 * C; ++i) CHECK(rows.data<float>()[i] == m[static_cast<std::size_t>(2 * C + i)]);

  const std::uint64_t before = f->bytes_read();
  Tensor cols = f->read_cols("m", 4, 3, DType::F32);
  CHECK(cols.shape() == Shape{R, 3});
  CHECK(f->bytes_read() - before == R * 3 * 4);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < 3; ++c) CHECK(cols.data<float>()[r * 3 + c] == m[static_cast<std::size_t>(r * C + 4 + c)]);

  // Converting reads count the file bytes, not the converted ones.
  const std::uint64_t b2 = f->bytes_read();
  Tensor cols_bf16 = f->read_cols("m", 0, 7, DType::BF16);
  CHECK(f->bytes_read() - b2 == R * 7 * 4);
  CHECK(bf16_to_f32(cols_bf16.data<bf16>()[7 + 2].bits) == 12.5f);  // row 1, column 2
  // Whole-width column range = one contiguous read; empty ranges read nothing.
  const std::uint64_t b3 = f->bytes_read();
  CHECK(f->read_cols("m", 0, C, DType::F32).shape() == Shape{R, C});
  CHECK(f->read_rows("m", 6, 0, DType::F32).shape() == Shape{0, C});
  CHECK(f->read_cols("m", 10, 0, DType::F32).shape() == Shape{R, 0});
  CHECK(f->bytes_read() - b3 == R * C * 4);

  // Out of range and wrong rank.
  CHECK_THROWS_WITH_AS(f->read_rows("m", 4, 3, DType::F32), doctest::Contains("rows [4, 7) of tensor 'm'"), ShapeError);
  CHECK_THROWS_WITH_AS(f->read_cols("m", -1, 2, DType::F32), doctest::Contains("columns [-1, 1)"), ShapeError);
  CHECK_THROWS_WITH_AS(f->read_cols("a", 0, 1, DType::F32), doctest::Contains("need a 2-D tensor"), ShapeError);
  CHECK(f->read_rows("a", 1, 2, DType::I32).data<std::int32_t>()[1] == 3);

  // Caller-provided destinations: shape checked, dtype converted.
  Tensor dst = Tensor::empty(Shape{2, C}, DType::F16);
  f->read_rows_into("m", 1, dst);
  CHECK(f16_to_f32(dst.data<f16>()[0].bits) == 10.5f);
  Tensor wrong = Tensor::empty(Shape{2, C + 1}, DType::F32);
  CHECK_THROWS_WITH_AS(f->read_rows_into("m", 1, wrong), doctest::Contains("expected (2, 10)"), ShapeError);
}

TEST_CASE("rank-3 rows, conversions through the staging buffer, concurrent readers") {
  test::TempDir dir;
  // 3000 x 2000 f32 (24 MB): reading 1500 columns as bf16 streams 18 MB through the 16 MiB staging
  // buffer, splitting one row's segment at the boundary.
  constexpr std::int64_t R = 3000, C = 2000;
  Tensor big = Tensor::empty(Shape{R, C}, DType::F32);
  for (std::int64_t i = 0; i < R * C; ++i) big.data<float>()[i] = static_cast<float>(i % 4093) - 2000.0f;
  Tensor cube = Tensor::empty(Shape{4, 3, 5}, DType::BF16);
  for (int i = 0; i < 60; ++i) cube.data<bf16>()[i].bits = f32_to_bf16(static_cast<float>(i));
  io::safetensors_write(dir / "big.safetensors", {io::tensor_source(big, "big"), io::tensor_source(cube, "cube")});
  io::SafetensorsFile f(dir / "big.safetensors");

  Tensor c = f.read_cols("big", 300, 1500, DType::BF16);
  CHECK(f.bytes_read() == static_cast<std::uint64_t>(R * 1500 * 4));
  int bad = 0;
  for (std::int64_t r = 0; r < R; ++r)
    for (std::int64_t k = 0; k < 1500; k += 7)
      bad += c.data<bf16>()[r * 1500 + k].bits != f32_to_bf16(big.data<float>()[r * C + 300 + k]);
  CHECK(bad == 0);

  Tensor full = f.read("big", DType::F32);
  CHECK(std::memcmp(full.raw(), big.raw(), big.size_bytes()) == 0);

  Tensor rows = f.read_rows("cube", 1, 2, DType::F32);
  CHECK(rows.shape() == Shape{2, 3, 5});
  CHECK(rows.data<float>()[0] == 15.0f);
  CHECK(rows.data<float>()[29] == 44.0f);

  // Four threads, each its own row block: the counter sums exactly.
  const std::uint64_t before = f.bytes_read();
  std::vector<std::thread> threads;
  std::vector<int> ok(4, 0);
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      Tensor part = f.read_rows("big", t * 750, 750, DType::F32);
      ok[static_cast<std::size_t>(t)] =
          std::memcmp(part.raw(), big.data<float>() + t * 750 * C, part.size_bytes()) == 0;
    });
  for (auto& th : threads) th.join();
  CHECK(ok == std::vector<int>{1, 1, 1, 1});
  CHECK(f.bytes_read() - before == static_cast<std::uint64_t>(R * C * 4));
}
