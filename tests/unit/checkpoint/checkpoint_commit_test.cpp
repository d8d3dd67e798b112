// A checkpoint folder: the atomic commit (a save that fails or is killed half-way, or runs out of
// disk, leaves the previous checkpoint and `latest`), keep-last-K rotation, and the reader's
// fallback past a truncated or corrupt newest file, with the warning it prints.
#include <doctest/doctest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <stdexcept>

#include "checkpoint/checkpoint.h"
#include "checkpoint/checkpoint_seal.h"
#include "core/error.h"
#include "core/file.h"
#include "tests/support/test_support.h"
#include "tests/unit/checkpoint/checkpoint_test_util.h"

using namespace adapt;
using namespace adapt::checkpoint;

namespace {

std::vector<std::int64_t> steps_in(const fs::path& dir) {
  std::vector<std::int64_t> steps;
  for (const CheckpointFile& f : checkpoint_list(dir)) steps.push_back(f.step);
  return steps;
}

bool has_tmp_file(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().find(".tmp") != std::string::npos) return true;
  return false;
}

void truncate_to_half(const fs::path& p) {
  const std::string bytes = file_read_text(p);
  test::write_bytes(p, bytes.substr(0, bytes.size() / 2));
}

/// Flips one byte inside the data of the file (the tensors are made of a recognisable pattern).
void flip_data_byte(const fs::path& p, const std::string& pattern) {
  std::string bytes = file_read_text(p);
  const std::size_t at = bytes.find(pattern);
  REQUIRE(at != std::string::npos);
  bytes[at + pattern.size() / 2] ^= 0x10;
  test::write_bytes(p, bytes);
}

/// A state whose tensor bytes are one repeated 8-byte pattern (easy to find in the file).
CheckpointState patterned_state(std::int64_t step, std::int64_t n) {
  CheckpointState s = test::small_checkpoint_state(step);
  Tensor t = Tensor::empty({n}, DType::I64);
  for (std::int64_t i = 0; i < n; ++i) t.data<std::int64_t>()[i] = 0x0123456789abcdefll;
  s.tensors["adapters/pattern"] = t;
  return s;
}

const std::string kPatternBytes = std::string("\xef\xcd\xab\x89\x67\x45\x23\x01", 8) + "\xef\xcd\xab\x89";

}  // namespace

TEST_CASE("checkpoint_save commits step files and the latest pointer") {
  test::TempDir dir;
  const fs::path folder = dir / "run" / "checkpoints";  // created on demand
  CHECK(!checkpoint_exists(folder));
  checkpoint_save(folder, test::small_checkpoint_state(100));
  checkpoint_save(folder, test::small_checkpoint_state(200, 2));
  CHECK(checkpoint_exists(folder));
  CHECK(steps_in(folder) == std::vector<std::int64_t>{100, 200});
  CHECK(file_read_text(folder / "latest") == "step_00000200.h5\n");
  CHECK(checkpoint_latest(folder) == folder / "step_00000200.h5");
  test::check_same_state(checkpoint_load(checkpoint_latest(folder)), test::small_checkpoint_state(200, 2));
  CHECK(!has_tmp_file(folder));
}

TEST_CASE("a save that fails half-way leaves the previous checkpoint and latest") {
  test::TempDir dir;
  checkpoint_save(dir.path(), test::small_checkpoint_state(100));
  const std::string latest_before = file_read_text(dir / "latest");
  int n_called = 0;
  SaveOptions options{.on_dataset = [&](std::string_view, std::int64_t done, std::int64_t total) {
    CHECK(done <= total);
    if (++n_called == 2) throw IoError("simulated failure after the second dataset", ADAPT_HERE);
  }};
  CHECK_THROWS_WITH_AS(checkpoint_save(dir.path(), patterned_state(200, 1000), options),
                       doctest::Contains("simulated failure"), IoError);
  CHECK(n_called == 2);
  CHECK(file_read_text(dir / "latest") == latest_before);
  CHECK(steps_in(dir.path()) == std::vector<std::int64_t>{100});
  CHECK(!has_tmp_file(dir.path()));
  test::check_same_state(checkpoint_load(checkpoint_latest(dir.path())), test::small_checkpoint_state(100));
  // The library is left in a clean state: the same step saves fine afterwards.
  checkpoint_save(dir.path(), patterned_state(200, 1000));
  CHECK(checkpoint_latest(dir.path()) == dir / "step_00000200.h5");
}

TEST_CASE("a writer killed mid-save leaves the previous checkpoint") {
  test::TempDir dir;
  checkpoint_save(dir.path(), test::small_checkpoint_state(100));
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    SaveOptions crash{.on_dataset = [](std::string_view, std::int64_t, std::int64_t) { ::_exit(9); }};
    try {
      checkpoint_save(dir.path(), patterned_state(200, 100000), crash);
    } catch (...) {
    }
    ::_exit(0);  // not reached when the crash happened
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 9);
  CHECK(steps_in(dir.path()) == std::vector<std::int64_t>{100});
  CHECK(file_read_text(dir / "latest") == "step_00000100.h5\n");
  test::check_same_state(checkpoint_load(checkpoint_latest(dir.path())), test::small_checkpoint_state(100));
}

TEST_CASE(".tmp files of writers killed while writing are never read, and the next save removes them") {
  // What a writer killed during write(2) leaves: a partial step_N.h5.tmp. Even a complete file under
  // a .tmp name is not a candidate (it was never renamed, so never committed).
  test::TempDir dir;
  test::TempDir other;
  checkpoint_save(dir.path(), test::small_checkpoint_state(100));
  fs::copy_file(checkpoint_save(other.path(), test::small_checkpoint_state(200)), dir / "step_00000200.h5.tmp");
  fs::copy_file(checkpoint_save(other.path(), test::small_checkpoint_state(300)), dir / "step_00000300.h5.tmp");
  truncate_to_half(dir / "step_00000300.h5.tmp");
  CHECK(steps_in(dir.path()) == std::vector<std::int64_t>{100});
  CHECK(checkpoint_latest(dir.path()) == dir / "step_00000100.h5");

  SUBCASE("even without a latest pointer, the .tmp files are not candidates") {
    fs::remove(dir / "latest");
    test::StderrCapture cap(dir / "stderr.txt");
    CHECK(checkpoint_latest(dir.path()) == dir / "step_00000100.h5");
    CHECK(cap.text().find("there is no") != std::string::npos);
  }
  SUBCASE("only .tmp files: no checkpoint, and the message says they were ignored") {
    fs::remove(dir / "latest");
    fs::remove(dir / "step_00000100.h5");
    CHECK(checkpoint_exists(dir.path()) == false);
    CHECK_THROWS_WITH_AS(checkpoint_latest(dir.path()), doctest::Contains("2 unfinished .tmp file(s)"), IoError);
  }
  SUBCASE("the next save removes them") {
    checkpoint_save(dir.path(), test::small_checkpoint_state(400));
    CHECK(!has_tmp_file(dir.path()));
  }
}

TEST_CASE("a full disk (RLIMIT_FSIZE) fails the save and keeps the previous checkpoint") {
  test::TempDir dir;
  checkpoint_save(dir.path(), test::small_checkpoint_state(100));
  const std::string latest_before = file_read_text(dir / "latest");
  std::string message;
  test::with_file_size_limit(64 * 1024, [&] {
    try {
      checkpoint_save(dir.path(), test::small_checkpoint_state(200, 2, /*n_per_tensor=*/256 * 1024));
    } catch (const CheckpointError& e) {
      message = e.what();
    }
  });
  INFO(message);
  CHECK(message.find("checkpoint of step 200 not saved: cannot write '" + (dir / "step_00000200.h5.tmp").string()) !=
        std::string::npos);
  CHECK(message.find("File too large") != std::string::npos);  // EFBIG; a full disk says ENOSPC
  CHECK(message.find("Free some space") != std::string::npos);
  CHECK(message.find("previous checkpoint and 'latest' are kept") != std::string::npos);
  CHECK(file_read_text(dir / "latest") == latest_before);
  CHECK(steps_in(dir.path()) == std::vector<std::int64_t>{100});
  CHECK(!has_tmp_file(dir.path()));
  CHECK(checkpoint_latest(dir.path()) == dir / "step_00000100.h5");
  // With space again, the same save succeeds.
  checkpoint_save(dir.path(), test::small_checkpoint_state(200, 2, 256 * 1024));
  CHECK(checkpoint_latest(dir.path()) == dir / "step_00000200.h5");
}

TEST_CASE("keep_last rotation") {
  test::TempDir dir;
  for (std::int64_t step : {100, 200, 300, 400, 500})
    checkpoint_save(dir.path(), test::small_checkpoint_state(step), {.keep_last = 3});
  CHECK(steps_in(dir.path()) == std::vector<std::int64_t>{300, 400, 500});

  SUBCASE("keep_last = 0 keeps everything") {
    checkpoint_save(dir.path(), test::small_checkpoint_state(600));
    CHECK(steps_in(dir.path()) == std::vector<std::int64_t>{300, 400, 500, 600});
  }
  SUBCASE("keep_last = 1 keeps only the new one") {
    checkpoint_save(dir.path(), test::small_checkpoint_state(600), {.keep_last = 1});
    CHECK(steps_in(dir.path()) == std::vector<std::int64_t>{600});
  }
  SUBCASE("after resuming from an earlier checkpoint, newer files of the abandoned run go") {
    // The run resumed from 300 (say 400 and 500 were unusable) and saves 350.
    checkpoint_save(dir.path(), test::small_checkpoint_state(350), {.keep_last = 3});
    CHECK(steps_in(dir.path()) == std::vector<std::int64_t>{300, 350});
    CHECK(checkpoint_latest(dir.path()) == dir / "step_00000350.h5");
  }
  SUBCASE("saving the same step again replaces it") {
    checkpoint_save(dir.path(), test::small_checkpoint_state(500, 7), {.keep_last = 3});
    CHECK(steps_in(dir.path()) == std::vector<std::int64_t>{300, 400, 500});
    test::check_same_state(checkpoint_load(checkpoint_latest(dir.path())), test::small_checkpoint_state(500, 7));
  }
}

TEST_CASE("checkpoint_latest falls back past an unusable newest checkpoint and says why") {
  test::TempDir dir;
  checkpoint_save(dir.path(), patterned_state(100, 4096));
  checkpoint_save(dir.path(), patterned_state(200, 4096));
  checkpoint_save(dir.path(), patterned_state(300, 4096));
  const fs::path newest = dir / "step_00000300.h5";
  const fs::path previous = dir / "step_00000200.h5";
  std::string expect_reason;
  SUBCASE("truncated (the seal's length)") {
    truncate_to_half(newest);
    expect_reason = "the file was truncated";
  }
  SUBCASE("a flipped bit in the data (the seal's CRC-32C)") {
    flip_data_byte(newest, kPatternBytes);
    expect_reason = "is damaged: the CRC-32C of its";
  }
  SUBCASE("a flipped bit in the data under a recomputed seal (the chunk's Fletcher-32 checksum)") {
    flip_data_byte(newest, kPatternBytes);
    checkpoint::detail::reseal_file(newest);
    expect_reason = "Fletcher32";
  }
  SUBCASE("latest names a file that is gone") {
    fs::remove(newest);
    expect_reason = "does not exist";
  }
  SUBCASE("renamed over another step") {
    fs::copy_file(dir / "step_00000100.h5", newest, fs::copy_options::overwrite_existing);
    expect_reason = "records step 100 in /meta but its name says step 300";
  }
  test::StderrCapture cap(dir / "stderr.txt");
  const fs::path chosen = checkpoint_latest(dir.path());
  const std::string log = cap.text();
  INFO(log);
  CHECK(chosen == previous);
  CHECK(log.find("warning:") != std::string::npos);
  CHECK(log.find("'" + newest.string() + "' is unusable") != std::string::npos);
  CHECK(log.find("resuming from the earlier checkpoint '" + previous.string() + "' (step 200)") != std::string::npos);
  CHECK(log.find(expect_reason) != std::string::npos);
  test::check_same_state(checkpoint_load(chosen), patterned_state(200, 4096));
}

TEST_CASE("checkpoint_latest messages when nothing is usable") {
  test::TempDir dir;
  SUBCASE("missing folder") {
    const std::string want = "checkpoint folder '" + (dir / "nope").string() + "' does not exist";
    CHECK_THROWS_WITH_AS(checkpoint_latest(dir / "nope"), doctest::Contains(want.c_str()), IoError);
    CHECK(!checkpoint_exists(dir / "nope"));
  }
  SUBCASE("empty folder") {
    CHECK_THROWS_WITH_AS(checkpoint_latest(dir.path()), doctest::Contains("no checkpoint in"), IoError);
  }
  SUBCASE("every file corrupt: each is listed with its reason") {
    checkpoint_save(dir.path(), test::small_checkpoint_state(100));
    checkpoint_save(dir.path(), test::small_checkpoint_state(200));
    truncate_to_half(dir / "step_00000100.h5");
    truncate_to_half(dir / "step_00000200.h5");
    try {
      checkpoint_latest(dir.path());
      FAIL("no exception");
    } catch (const IoError& e) {
      const std::string m = e.what();
      CHECK(m.find("no usable checkpoint in") != std::string::npos);
      CHECK(m.find("step_00000100.h5") != std::string::npos);
      CHECK(m.find("step_00000200.h5") != std::string::npos);
      CHECK(m.find("Restore the folder from a backup") != std::string::npos);
    }
  }
  SUBCASE("a garbled latest pointer falls back to the newest file") {
    checkpoint_save(dir.path(), test::small_checkpoint_state(100));
    test::write_bytes(dir / "latest", "../../etc/passwd\n");
    test::StderrCapture cap(dir / "stderr.txt");
    CHECK(checkpoint_latest(dir.path()) == dir / "step_00000100.h5");
    CHECK(cap.text().find("which is not a checkpoint file name") != std::string::npos);
  }
}

TEST_CASE("checkpoint_verify reads every block of a large dataset") {
  // 80 MiB of u8 is read in 64 MiB blocks; a flipped byte in the second block is caught.
  test::TempDir dir;
  CheckpointState s = test::small_checkpoint_state(1);
  Tensor big = Tensor::empty({80, 1 << 20}, DType::U8);
  auto* p = big.data<std::uint8_t>();
  for (std::int64_t i = 0; i < big.numel(); ++i) p[i] = static_cast<std::uint8_t>((i * 131) >> 8);
  const std::int64_t marker = 70ll << 20;  // row 70: in the second 64 MiB block
  for (int k = 0; k < 16; ++k) p[marker + k] = static_cast<std::uint8_t>(0xA0 + k);
  s.tensors["optim/big"] = big;
  const fs::path path = checkpoint_save(dir.path(), s);
  CHECK(checkpoint_verify(path) == 1);
  std::string marker_bytes;
  for (int k = 0; k < 16; ++k) marker_bytes += static_cast<char>(0xA0 + k);
  flip_data_byte(path, marker_bytes);
  CHECK_THROWS_WITH_AS(checkpoint_verify(path), doctest::Contains("is damaged: the CRC-32C"), CheckpointError);
  checkpoint::detail::reseal_file(path);  // past the seal, HDF5's own per-chunk checksum still holds
  CHECK_THROWS_WITH_AS(checkpoint_verify(path), doctest::Contains("Fletcher32"), CheckpointError);
}
