// doctest main of the cuda_emu suite: says what runs (the kernels on the CPU emulator, not on a GPU) and
// in which order the lanes go, then runs the tests.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "cuda_emu.h"
#include "tests/support/test_support.h"

int main(int argc, char** argv) {
  std::fprintf(stderr,
               "cuda_emu: kernels/*.cu compiled as C++ and run on the CPU emulator (no GPU involved); "
               "threads of a block in %s order; test seed: 0x%llx\n",
               cuda_emu::reverse_order() ? "reverse" : "forward", static_cast<unsigned long long>(adapt::test::kSeed));
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
