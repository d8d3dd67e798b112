// doctest main for single-process suites: prints the fixed seed so failures can be reproduced.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "tests/support/test_support.h"

int main(int argc, char** argv) {
  std::fprintf(stderr, "test seed: 0x%llx\n", static_cast<unsigned long long>(adapt::test::kSeed));
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
