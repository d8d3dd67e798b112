// doctest main for suites that need Meta's Llama 3 tokenizer.model (licensed test data in
// ../shared/models/llama3, never in the repository): without it, print why and exit 77 (CTest: skipped).
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "tests/golden/tokenizer/tokenizer_fixtures.h"

int main(int argc, char** argv) {
  const std::filesystem::path path = adapt::test::meta_tokenizer_path();
  if (!std::filesystem::exists(path)) {
    std::printf(
        "skipped: Meta's Llama 3 tokenizer.model is not at %s (it is licensed test data kept outside the "
        "repository; set ADAPT_SHARED_DIR at configure time to point at the shared folder)\n",
        path.c_str());
    return 77;
  }
  std::printf("using %s\n", path.c_str());
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
