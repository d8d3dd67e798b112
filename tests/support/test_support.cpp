#include "tests/support/test_support.h"

#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>

#include "core/error.h"

namespace adapt::test {

void with_file_size_limit(std::uint64_t max_bytes, const std::function<void()>& body) {
  struct rlimit old_limit {};
  getrlimit(RLIMIT_FSIZE, &old_limit);
  struct rlimit lim = old_limit;
  lim.rlim_cur = static_cast<rlim_t>(max_bytes);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  setrlimit(RLIMIT_FSIZE, &lim);
  auto restore = [&] {
    setrlimit(RLIMIT_FSIZE, &old_limit);
    std::signal(SIGXFSZ, old_handler);
  };
  try {
    body();
  } catch (...) {
    restore();
    throw;
  }
  restore();
}

TempDir::TempDir(const std::string& tag) {
  const char* base = std::getenv("TMPDIR");
  fs::path root = base && *base ? fs::path(base) : fs::path("/tmp");
  std::random_device rd;
  for (int attempt = 0; attempt < 100; ++attempt) {
    fs::path p = root / (tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(rd() % 1000000));
    if (fs::create_directories(p)) {
      path_ = p;
      return;
    }
  }
  ADAPT_THROW(IoError, "cannot create a temporary folder under {}", root.string());
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

static fs::path env_path(const char* name, const char* what) {
  const char* v = std::getenv(name);
  ADAPT_REQUIRE(v && *v, IoError, "${} is not set: run the tests through ctest so that {} is known", name, what);
  return fs::path(v);
}

fs::path data_dir() { return env_path("ADAPT_TEST_DATA", "the test data folder"); }
fs::path source_dir() { return env_path("ADAPT_SOURCE_DIR", "the source folder"); }
fs::path binary_dir() { return env_path("ADAPT_BINARY_DIR", "the build folder"); }
fs::path shared_dir() { return env_path("ADAPT_SHARED_DIR", "the shared folder"); }

int run_command(const std::string& command, std::string* output) {
  std::string cmd = command + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ADAPT_REQUIRE(p != nullptr, IoError, "cannot run '{}'", command);
  char buf[4096];
  std::string out;
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  int status = ::pclose(p);
  if (output) *output = out;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

void write_bytes(const fs::path& path, std::string_view bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ADAPT_REQUIRE(f.good(), IoError, "cannot write test file {}", path.string());
}

std::string base64(std::string_view bytes) {
  static const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (std::size_t i = 0; i < bytes.size(); i += 3) {
    std::uint32_t v = static_cast<unsigned char>(bytes[i]) << 16;
    if (i + 1 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 1]) << 8;
    if (i + 2 < bytes.size()) v |= static_cast<unsigned char>(bytes[i + 2]);
    for (std::size_t k = 0; k < 4; ++k)
      out.push_back(i + k <= bytes.size() ? kAlphabet[(v >> (18 - 6 * k)) & 63] : '=');
  }
  return out;
}

Run run(const std::string& command) {
  Run r;
  r.code = run_command(command, &r.out);
  return r;
}

std::string bin(const char* name) { return (binary_dir() / "bin" / name).string(); }

}  // namespace adapt::test
