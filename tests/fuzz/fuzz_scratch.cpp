#include "tests/fuzz/fuzz_target.h"
#include "tests/support/test_support.h"

namespace adapt::fuzz {

std::filesystem::path scratch_file(std::string_view bytes, const std::string& name) {
  static const test::TempDir dir("adapt-fuzz");  // removed at exit
  const std::filesystem::path p = dir / name;
  test::write_bytes(p, bytes);
  return p;
}

}  // namespace adapt::fuzz
