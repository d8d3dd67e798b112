#include <unistd.h>

#include <cstdlib>
#include <fstream>

#include "tests/fuzz/fuzz_target.h"

namespace adapt::fuzz {

namespace {

std::filesystem::path& scratch_dir() {
  static std::filesystem::path dir;
  return dir;
}

}  // namespace

std::filesystem::path scratch_file(std::string_view bytes, const std::string& name) {
  if (scratch_dir().empty()) {
    const char* tmp = std::getenv("TMPDIR");
    scratch_dir() = std::filesystem::path(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") /
                    ("adapt-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(scratch_dir());
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(scratch_dir(), ec);
    });
  }
  const std::filesystem::path p = scratch_dir() / name;
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  return p;
}

}  // namespace adapt::fuzz
