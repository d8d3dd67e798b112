#include <doctest/doctest.h>

#include <unistd.h>
#include <csignal>
#include <fstream>
#include <limits>
#include <optional>

#include "core/crc32c.h"
#include "core/error.h"
#include "core/file.h"
#include "core/stop_signal.h"
#include "core/strings.h"
#include "tests/support/test_support.h"

using namespace adapt;

TEST_CASE("errors carry their kind, exit code and location") {
  try {
    ADAPT_THROW(ConfigError, "train.lr = {} must be positive", -1.0);
  } catch (const Error& e) {
    CHECK(std::string(e.what()) == "train.lr = -1 must be positive");
    CHECK(e.exit_code() == ExitCode::Usage);
    CHECK(std::string(e.where().file).find("core_test.cpp") != std::string::npos);
  }
  CHECK_THROWS_WITH_AS(ADAPT_CHECK(1 + 1 == 3, "arithmetic {}", "broke"),
                       doctest::Contains("check failed: 1 + 1 == 3: arithmetic broke"), InternalError);
  CHECK_THROWS_AS(ADAPT_REQUIRE(false, IoError, "x"), IoError);
}

TEST_CASE("did you mean") {
  std::vector<std::string> keys = {"learning_rate", "warmup_steps", "seq_len", "tp"};
  CHECK(did_you_mean("learnig_rate", keys) == " (did you mean 'learning_rate'?)");
  CHECK(did_you_mean("seqlen", keys) == " (did you mean 'seq_len'?)");
  CHECK(did_you_mean("completely_unrelated", keys).empty());
  CHECK(edit_distance("kitten", "sitting") == 3);
}

TEST_CASE("parse_int takes a whole decimal int64 and nothing else") {
  CHECK(parse_int("42") == 42);
  CHECK(parse_int("-1") == -1);
  CHECK(parse_int("0") == 0);
  CHECK(parse_int("9223372036854775807") == std::numeric_limits<std::int64_t>::max());
  for (const char* bad : {"", "-", "+4", " 4", "4 ", "4x", "1e3", "0x10", "1.5", "9223372036854775808"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_int(bad).has_value());
  }
}

TEST_CASE("next_line: every line without its newline, a last line without one, empty lines kept") {
  auto lines = [](std::string_view text) {
    std::vector<std::string> out;
    std::size_t pos = 0;
    for (std::string_view line; next_line(text, &pos, &line);) out.emplace_back(line);
    return out;
  };
  CHECK(lines("").empty());
  CHECK(lines("a") == std::vector<std::string>{"a"});
  CHECK(lines("a\n") == std::vector<std::string>{"a"});
  CHECK(lines("a\n\nb\r\nc") == std::vector<std::string>{"a", "", "b\r", "c"});
  CHECK(lines("\n\n") == std::vector<std::string>{"", ""});
}

TEST_CASE("byte sizes and counts") {
  CHECK(parse_byte_size("5GB") == 5000000000ull);
  CHECK(parse_byte_size("500MB") == 500000000ull);
  CHECK(parse_byte_size("2GiB") == 2ull << 30);
  CHECK(parse_byte_size("1000") == 1000ull);
  CHECK(parse_byte_size("10kb") == 10000ull);
  CHECK_FALSE(parse_byte_size("GB").has_value());
  CHECK_FALSE(parse_byte_size("5 parsecs").has_value());
  CHECK(format_count(8030261248) == "8,030,261,248");
  CHECK(format_count(-1234) == "-1,234");
  CHECK(format_count(999) == "999");
  CHECK(format_bytes(17) == "17 B");
  CHECK(format_bytes(3u << 20) == "3.00 MiB");
}

TEST_CASE("atomic writes replace the file or leave it untouched") {
  test::TempDir dir;
  fs::path p = dir / "out.txt";
  file_write_atomic(p, "first");
  CHECK(file_read_text(p) == "first");
  file_write_atomic(p, "second");
  CHECK(file_read_text(p) == "second");

  // A writer that fails half-way: the previous contents survive and no temporary file is left.
  CHECK_THROWS_AS(file_write_atomic(p,
                                    [&](int fd) {
                                      fd_write_all(fd, "par", 3, p);
                                      ADAPT_THROW(IoError, "simulated failure");
                                    }),
                  IoError);
  CHECK(file_read_text(p) == "second");
  int n_files = 0;
  for (auto& e : fs::directory_iterator(dir.path())) n_files += e.is_regular_file();
  CHECK(n_files == 1);
}

TEST_CASE("a full disk is an IoError and the old file survives") {
  test::TempDir dir;
  fs::path p = dir / "big.bin";
  file_write_atomic(p, "old");
  const std::string big(1 << 16, 'x');
  test::with_file_size_limit(
      4096, [&] { CHECK_THROWS_WITH_AS(file_write_atomic(p, big), doctest::Contains("big.bin"), IoError); });
  CHECK(file_read_text(p) == "old");
}

TEST_CASE("a scratch file: its bytes back in order, nothing left in the folder, a full disk named") {
  test::TempDir dir;
  for (const bool o_tmpfile : {true, false}) {  // false: the named file, removed at once, of other file systems
    CAPTURE(o_tmpfile);
    ScratchFile a(dir.path(), "the test's numbers", o_tmpfile);
    std::string want;
    for (int i = 0; i < 3000; ++i) {  // many small appends
      const std::string piece = std::to_string(i) + ",";
      a.append(piece.data(), piece.size());
      want += piece;
    }
    CHECK(a.size_bytes() == want.size());
    CHECK(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator{}) == 0);  // unnamed
    file_write_atomic(dir / "out.txt", [&](int fd) { a.copy_to(fd, dir / "out.txt"); });
    CHECK(file_read_text(dir / "out.txt") == want);
    fs::remove(dir / "out.txt");
  }
  for (const bool o_tmpfile : {true, false})
    CHECK_THROWS_WITH_AS(ScratchFile(dir / "missing", "the test's numbers", o_tmpfile),
                         doctest::Contains((dir / "missing").string().c_str()), IoError);
  ScratchFile b(dir.path(), "the test's numbers");
  const std::string big(1 << 16, 'x');
  std::string message;
  test::with_file_size_limit(4096, [&] {
    try {
      b.append(big.data(), big.size());
    } catch (const IoError& e) {
      message = e.what();
    }
  });
  CHECK(message.find("cannot write the test's numbers to a scratch file in '" + dir.path().string() +
                     "': File too large") != std::string::npos);
  CHECK(message.find("Free space there") != std::string::npos);
}

TEST_CASE("folder checks, the run lock, and file-system errors as the input's problem") {
  test::TempDir dir;
  dir_require_writable(dir / "a/b", "run.dir");
  CHECK(fs::is_directory(dir / "a/b"));
  CHECK(fs::is_empty(dir / "a/b"));  // the probe file is gone
  test::write_bytes(dir / "file", "x");
  CHECK_THROWS_WITH_AS(dir_require_writable(dir / "file/sub", "output.dir"), doctest::Contains("output.dir '"),
                       IoError);

  // A second lock on the same file, from another open file (as another process would), is refused,
  // naming the holder; once the first is released it is taken.
  std::optional<FileLock> first;
  first.emplace(dir / ".lock", "run.dir 'x'");
  CHECK_THROWS_WITH_AS(FileLock(dir / ".lock", "run.dir 'x'"), doctest::Contains("is in use by another job (host "),
                       IoError);
  CHECK(file_read_text(dir / ".lock").find("pid " + std::to_string(::getpid())) != std::string::npos);
  first.reset();
  CHECK_NOTHROW(FileLock(dir / ".lock", "run.dir 'x'"));

  // std::filesystem's errors (a folder that cannot be made) exit as Io, not as a bug in adapt.
  try {
    fs::create_directories(dir / "file/sub");
    FAIL("create_directories under a file did not throw");
  } catch (const std::exception& e) {
    const UnexpectedError u = classify_unexpected(e);
    CHECK(u.code == ExitCode::Io);
    CHECK(u.message.find("must be writable") != std::string::npos);
  }
  const UnexpectedError bug = classify_unexpected(std::logic_error("x"));
  CHECK(bug.code == ExitCode::Internal);
  CHECK(bug.message.find("bug in adapt") != std::string::npos);
}

TEST_CASE("missing files name the path") {
  CHECK_THROWS_WITH_AS(file_read_text("/nonexistent/adapt/file.json"),
                       doctest::Contains("/nonexistent/adapt/file.json"), IoError);
  CHECK_THROWS_WITH_AS(MappedFile("/nonexistent/x.safetensors"), doctest::Contains("x.safetensors"), IoError);
  test::TempDir dir;
  test::write_bytes(dir / "a.bin", "hello");
  MappedFile m(dir / "a.bin");
  REQUIRE(m.size_bytes() == 5);
  CHECK(std::string(reinterpret_cast<const char*>(m.data()), 5) == "hello");
  char buf[3];
  file_read_at(dir / "a.bin", 2, buf, 3);
  CHECK(std::string(buf, 3) == "llo");
  CHECK_THROWS_WITH_AS(file_read_at(dir / "a.bin", 4, buf, 3), doctest::Contains("truncated"), IoError);
}

// CRC-32C against published check values: the "123456789" check of the CRC catalogue (CRC-32/ISCSI)
// and the four 32-byte vectors of RFC 3720 (iSCSI), appendix B.4.
TEST_CASE("crc32c matches the published check values") {
  const std::string check = "123456789";
  CHECK(crc32c(check.data(), check.size()) == 0xE3069283u);
  CHECK(crc32c_portable(check.data(), check.size()) == 0xE3069283u);
  unsigned char zeros[32] = {}, ones[32], up[32], down[32];
  for (int i = 0; i < 32; ++i) {
    ones[i] = 0xFF;
    up[i] = static_cast<unsigned char>(i);
    down[i] = static_cast<unsigned char>(31 - i);
  }
  CHECK(crc32c(zeros, 32) == 0x8A9136AAu);
  CHECK(crc32c(ones, 32) == 0x62A8AB43u);
  CHECK(crc32c(up, 32) == 0x46DD794Eu);
  CHECK(crc32c(down, 32) == 0x113FDB5Cu);
  CHECK(crc32c(nullptr, 0) == 0u);
}

TEST_CASE("crc32c: the hardware streams, the tables and pieces agree") {
  MESSAGE("crc32c uses the CPU's crc32 instruction: " << (crc32c_has_hardware() ? "yes" : "no"));
  std::vector<unsigned char> bytes(200000 + 7);
  std::uint64_t x = 0x9E3779B97F4A7C15u;
  for (auto& b : bytes) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b = static_cast<unsigned char>(x >> 32);
  }
  // Lengths around the 3 × 8 KiB blocks of the hardware path, at odd offsets.
  for (std::size_t n : {0, 1, 7, 8, 9, 24575, 24576, 24577, 49152 + 13, 200000}) {
    for (std::size_t off : {0, 3}) {
      const unsigned char* p = bytes.data() + off;
      const std::uint32_t whole = crc32c(p, n);
      CHECK_MESSAGE(whole == crc32c_portable(p, n), "n = " << n << " offset " << off);
      const std::size_t cut = n / 3;
      CHECK(crc32c(p + cut, n - cut, crc32c(p, cut)) == whole);
    }
  }
  // A single flipped bit changes the sum.
  const std::uint32_t before = crc32c(bytes.data(), bytes.size());
  bytes[123457] ^= 0x10;
  CHECK(crc32c(bytes.data(), bytes.size()) != before);
}

// adapt_train holds a guard from its start and the trainer makes its own later: a signal that came while
// the model loaded must still be pending then, and the handlers stay until the outer guard goes.
TEST_CASE("StopSignalGuard: nested guards keep a pending signal and the outer guard's handlers") {
  struct sigaction before {};
  sigaction(SIGUSR1, nullptr, &before);
  {
    const StopSignalGuard outer;
    CHECK(stop_signal().load() == 0);
    struct sigaction now {};
    sigaction(SIGUSR1, nullptr, &now);
    const bool installed = now.sa_handler != before.sa_handler;
    CHECK(installed);
    CHECK((now.sa_flags & SA_RESTART) != 0);
    std::raise(SIGUSR1);
    CHECK(stop_signal().load() == SIGUSR1);
    {
      const StopSignalGuard inner;
      CHECK(stop_signal().load() == SIGUSR1);
    }
    std::raise(SIGTERM);  // still caught after the inner guard is gone
    CHECK(stop_signal().load() == SIGTERM);
  }
  struct sigaction after {};
  sigaction(SIGUSR1, nullptr, &after);
  const bool restored = after.sa_handler == before.sa_handler;
  CHECK(restored);
  stop_signal().store(0);
}
