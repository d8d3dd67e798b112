// Shared test helpers: fixed seeds, per-test temporary folders, paths to test data, and the
// comparison helpers with named tolerances.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

namespace adapt::test {

namespace fs = std::filesystem;

/// Seed used by every randomised test; printed by the test mains so a failure can be reproduced.
constexpr std::uint64_t kSeed = 0x5eed2026;

/// A full disk, for the duration of `body`: the file-size limit (RLIMIT_FSIZE) at `max_bytes` and SIGXFSZ
/// ignored, both restored afterwards (also when `body` throws). Past the limit write() fails with EFBIG
/// ("File too large") as a full disk fails with ENOSPC.
void with_file_size_limit(std::uint64_t max_bytes, const std::function<void()>& body);

/// A fresh, empty folder under $TMPDIR (or /tmp), removed when the object goes out of scope.
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "adapt-test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& name) const { return path_ / name; }

 private:
  fs::path path_;
};

/// tests/golden/data (from $ADAPT_TEST_DATA, set by CTest).
fs::path data_dir();
/// The source tree root (from $ADAPT_SOURCE_DIR).
fs::path source_dir();
/// The build tree (from $ADAPT_BINARY_DIR); binaries are under bin/.
fs::path binary_dir();
/// ../shared beside the checkout (from $ADAPT_SHARED_DIR); may not exist.
fs::path shared_dir();

/// Runs a shell command, returns its exit status; stdout+stderr captured into `output`.
int run_command(const std::string& command, std::string* output = nullptr);

/// A command's exit status and its captured stdout+stderr.
struct Run {
  int code;
  std::string out;
};
/// run_command, keeping the output.
Run run(const std::string& command);
/// The path of an application built into binary_dir()/bin (e.g. "adapt_train").
std::string bin(const char* name);

/// Writes bytes to a file (test inputs).
void write_bytes(const fs::path& path, std::string_view bytes);

/// `bytes` in standard base64 with padding (the token column of a tiktoken rank file).
std::string base64(std::string_view bytes);

}  // namespace adapt::test
