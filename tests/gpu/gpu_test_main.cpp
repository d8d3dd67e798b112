// doctest main for GPU suites: when no CUDA device is visible, print the reason and exit 77 (CTest
// reports "Skipped" with this output), so a GPU test never passes silently on a CPU-only machine.
#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <cstdio>

#include "backend/backend.h"

int main(int argc, char** argv) {
  if (adapt::backend::cuda_device_count() == 0) {
    std::printf("skipped: %s\n", adapt::backend::cuda_unavailable_reason().c_str());
    return 77;
  }
  std::printf("running on %s\n", adapt::backend::cuda_device_name(0).c_str());
  doctest::Context ctx;
  ctx.applyCommandLine(argc, argv);
  return ctx.run();
}
