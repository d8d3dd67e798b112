// One checkpoint file: bit-exact round trips of every dtype and scalar kind, name and content
// validation before writing, and the reader's refusals (fingerprint, version, completion marker,
// mislabelled datasets) with messages that say what to do.
#include <doctest/doctest.h>
#include <hdf5.h>

#include <limits>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_seal.h"
#include "core/error.h"
#include "core/file.h"
#include "tests/support/test_support.h"
#include "tests/unit/checkpoint/checkpoint_test_util.h"

using namespace adapt;
using namespace adapt::checkpoint;

namespace {

/// Opens a checkpoint with the HDF5 C API to tamper with it (the tests own the file), then seals it
/// again, so the reader's HDF5-level checks are what refuse it.
struct RawFile {
  fs::path path;
  hid_t id;
  explicit RawFile(const fs::path& p) : path(p), id(H5Fopen(p.c_str(), H5F_ACC_RDWR, H5P_DEFAULT)) { REQUIRE(id >= 0); }
  ~RawFile() {
    H5Fclose(id);
    checkpoint::detail::reseal_file(path);
  }
  void set_meta_int(const char* name, std::int64_t v) {
    const hid_t g = H5Gopen2(id, "/meta", H5P_DEFAULT);
    REQUIRE(H5Adelete(g, name) >= 0);
    const hid_t sp = H5Screate(H5S_SCALAR);
    const hid_t a = H5Acreate2(g, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(H5Awrite(a, H5T_NATIVE_INT64, &v) >= 0);
    H5Aclose(a);
    H5Sclose(sp);
    H5Gclose(g);
  }
  void delete_attr(const char* object, const char* name) {
    const hid_t o = H5Oopen(id, object, H5P_DEFAULT);
    REQUIRE(H5Adelete(o, name) >= 0);
    H5Oclose(o);
  }
};

}  // namespace

TEST_CASE("checkpoint round trip of every dtype, scalars and strings is bit-exact") {
  test::TempDir dir;
  const CheckpointState state = test::sample_checkpoint_state(400);
  const fs::path path = checkpoint_save(dir.path(), state);
  CHECK(path == dir / "step_00000400.h5");
  CHECK(file_read_text(dir / "latest") == "step_00000400.h5\n");
  CHECK(checkpoint_verify(path) == 400);
  const CheckpointState loaded = checkpoint_load(path, {.expected_base_model_fingerprint = "sha256:3fa1c0ffee"});
  test::check_same_state(loaded, state);

  SUBCASE("created_by defaults to the adapt version") {
    CheckpointState s = test::small_checkpoint_state(1);
    s.created_by.clear();
    CHECK(checkpoint_load(checkpoint_save(dir / "other", s)).created_by.starts_with("adapt "));
  }
  SUBCASE("the same state gives the same bytes") {
    const fs::path again = checkpoint_save(dir / "again", state);
    CHECK(file_read_text(again) == file_read_text(path));
  }
}

TEST_CASE("checkpoint file names") {
  CHECK(checkpoint_file_name(0) == "step_00000000.h5");
  CHECK(checkpoint_file_name(400) == "step_00000400.h5");
  CHECK(checkpoint_file_name(123456789) == "step_123456789.h5");
  CHECK_THROWS_WITH_AS(checkpoint_file_name(-1), doctest::Contains("negative"), CheckpointError);
}

TEST_CASE("checkpoint_save refuses bad names and contents before writing anything") {
  test::TempDir dir;
  auto refuses = [&](const CheckpointState& s, const char* text) {
    CHECK_THROWS_WITH_AS(checkpoint_save(dir.path(), s), doctest::Contains(text), CheckpointError);
    CHECK(checkpoint_list(dir.path()).empty());
    CHECK(!fs::exists(dir / "latest"));
  };
  const Tensor t = Tensor::zeros({2}, DType::F32);
  CheckpointState s = test::small_checkpoint_state(5);
  SUBCASE("reserved meta") {
    s.tensors["meta/x"] = t;
    refuses(s, "reserved");
  }
  SUBCASE("empty component") {
    s.tensors["adapters//x"] = t;
    refuses(s, "'adapters//x' is not a valid path");
  }
  SUBCASE("space") {
    s.ints["data/a b"] = 1;
    refuses(s, "'data/a b' is not a valid path");
  }
  SUBCASE("dot-dot") {
    s.floats["../x"] = 1;
    refuses(s, "is not a valid path");
  }
  SUBCASE("tensor used as a group") {
    s.tensors["optim/m"] = t;
    s.tensors["optim/m/x"] = t;
    refuses(s, "'optim/m' is also used as a group");
  }
  SUBCASE("scalar below a tensor") {
    s.ints["adapters/a/count"] = 1;
    refuses(s, "'adapters/a' is also used as a group");
  }
  SUBCASE("scalar in two maps") {
    s.ints["rng/state"] = 1;
    refuses(s, "'rng/state' appears in more than one");
  }
  SUBCASE("NUL in a string") {
    s.strings["rng/bin"] = std::string("a\0b", 3);
    refuses(s, "NUL byte at offset 1");
  }
  SUBCASE("invalid UTF-8") {
    s.strings["rng/bin"] = "\xff\xfe";
    refuses(s, "not valid UTF-8");
  }
  SUBCASE("negative step") {
    s.step = -3;
    refuses(s, "step -3 is negative");
  }
  SUBCASE("device tensor") {
    static float host[4];
    s.tensors["adapters/gpu"] = Tensor::wrap(host, {4}, DType::F32, Device{DeviceKind::Cuda, 0}, nullptr);
    refuses(s, "lives on cuda:0; copy it to host memory");
  }
  SUBCASE("undefined tensor") {
    s.tensors["adapters/none"] = Tensor();
    refuses(s, "'adapters/none' is undefined");
  }
}

TEST_CASE("checkpoint_load checks the base-model fingerprint first") {
  test::TempDir dir;
  const fs::path p = checkpoint_save(dir.path(), test::small_checkpoint_state(10));
  CHECK_THROWS_WITH_AS(
      checkpoint_load(p, {.expected_base_model_fingerprint = "fp-other"}),
      doctest::Contains("was written for base model fingerprint 'fp-small', but this run's base model has fingerprint "
                        "'fp-other'. Hint: point model.path at the base model used for training."),
      CheckpointError);
  CHECK(checkpoint_load(p, {.expected_base_model_fingerprint = "fp-small"}).step == 10);
  CHECK(checkpoint_load(p).step == 10);  // no expectation: no check
}

TEST_CASE("checkpoint reader refuses incomplete, unknown-version and mislabelled files") {
  test::TempDir dir;
  const fs::path p = checkpoint_save(dir.path(), test::small_checkpoint_state(10));
  SUBCASE("no completion marker") {
    RawFile(p).delete_attr("/meta", "complete");
    CHECK_THROWS_WITH_AS(checkpoint_load(p), doctest::Contains("is incomplete"), CheckpointError);
    CHECK_THROWS_WITH_AS(checkpoint_verify(p), doctest::Contains("its writer did not finish"), CheckpointError);
  }
  SUBCASE("completion marker not 1") {
    RawFile(p).set_meta_int("complete", 0);
    CHECK_THROWS_WITH_AS(checkpoint_load(p), doctest::Contains("is incomplete"), CheckpointError);
  }
  SUBCASE("newer format") {
    RawFile(p).set_meta_int("format_version", 99);
    CHECK_THROWS_WITH_AS(checkpoint_load(p),
                         doctest::Contains("has format_version 99, but this build of adapt reads format_version 1"),
                         CheckpointError);
  }
  SUBCASE("tensor count") {
    RawFile(p).set_meta_int("n_tensors", 3);
    CHECK_THROWS_WITH_AS(checkpoint_verify(p), doctest::Contains("holds 2 datasets, but /meta n_tensors says 3"),
                         CheckpointError);
  }
  SUBCASE("dataset without dtype") {
    RawFile(p).delete_attr("/adapters/a", "dtype");
    CHECK_THROWS_WITH_AS(checkpoint_load(p), doctest::Contains("dataset '/adapters/a' has no string attribute 'dtype'"),
                         CheckpointError);
  }
  SUBCASE("shorter than the seal") {
    test::write_bytes(p, "this is not an HDF5 file");
    CHECK_THROWS_WITH_AS(checkpoint_load(p), doctest::Contains("is 24 bytes, too short for adapt's 512-byte seal"),
                         CheckpointError);
  }
  SUBCASE("not HDF5 at all") {
    test::write_bytes(p, std::string(600, 'x'));
    CHECK_THROWS_WITH_AS(checkpoint_load(p), doctest::Contains("does not start with adapt's seal 'ADAPTCKP'"),
                         CheckpointError);
  }
  SUBCASE("sealed, but not HDF5 inside") {
    std::string bytes(512, '\0');
    for (int i = 0; i < 40; ++i) bytes += "this is not an HDF5 file. ";
    checkpoint::detail::seal_image(bytes.data(), bytes.size());
    test::write_bytes(p, bytes);
    CHECK_THROWS_WITH_AS(checkpoint_load(p), doctest::Contains("H5Fopen failed"), CheckpointError);
  }
  SUBCASE("a plain HDF5 file (no seal)") {
    const hid_t f = H5Fcreate(p.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(f >= 0);
    H5Fclose(f);
    CHECK_THROWS_WITH_AS(checkpoint_verify(p), doctest::Contains("is a plain HDF5 file without adapt's seal"),
                         CheckpointError);
  }
  SUBCASE("seal damaged, truncated, lengthened, body changed") {
    std::string bytes = file_read_text(p);
    std::string bad = bytes;
    bad[17] ^= 1;  // the recorded file size
    test::write_bytes(p, bad);
    CHECK_THROWS_WITH_AS(checkpoint_verify(p), doctest::Contains("its seal (bytes 0-511) fails its own CRC-32C"),
                         CheckpointError);
    test::write_bytes(p, bytes.substr(0, bytes.size() - 1));
    CHECK_THROWS_WITH_AS(checkpoint_verify(p), doctest::Contains("the file was truncated"), CheckpointError);
    test::write_bytes(p, bytes + "x");
    CHECK_THROWS_WITH_AS(checkpoint_verify(p), doctest::Contains("bytes were appended after it was written"),
                         CheckpointError);
    bad = bytes;
    bad[600] ^= 0x40;  // HDF5 metadata just past the superblock
    test::write_bytes(p, bad);
    CHECK_THROWS_WITH_AS(checkpoint_load(p), doctest::Contains("is damaged: the CRC-32C of its"), CheckpointError);
    test::write_bytes(p, bytes);
    CHECK(checkpoint_verify(p) == 10);
  }
  SUBCASE("missing file") {
    CHECK_THROWS_WITH_AS(checkpoint_load(dir / "step_00000099.h5"), doctest::Contains("does not exist"),
                         CheckpointError);
  }
}

TEST_CASE("checkpoint errors name the file and carry HDF5's error stack") {
  test::TempDir dir;
  const fs::path p = checkpoint_save(dir.path(), test::small_checkpoint_state(10));
  // A damaged superblock under a valid seal (as if the writer itself had produced it) reaches HDF5.
  std::string bytes = file_read_text(p);
  bytes[checkpoint::detail::kSealBytes + 20] ^= 0x01;  // inside the superblock, which HDF5 checksums
  checkpoint::detail::seal_image(bytes.data(), bytes.size());
  test::write_bytes(p, bytes);
  try {
    checkpoint_load(p);
    FAIL("a damaged file loaded");
  } catch (const CheckpointError& e) {
    const std::string m = e.what();
    CHECK(m.find(p.string()) != std::string::npos);
    CHECK(m.find("H5Fopen") != std::string::npos);
    CHECK(m.find("superblock") != std::string::npos);  // HDF5's own words, from its error stack
    CHECK(e.exit_code() == ExitCode::Io);
  }
}
