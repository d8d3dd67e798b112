// The runtime.device / runtime.weights_dtype refusals that adapt_train and adapt_gen share (the same
// keys, parser and messages, src/apps/app_device.h): each case runs the app through `refused`, which
// checks the exit code, that every needle is in the output, and that nothing was written.
#pragma once

#include <doctest/doctest.h>

#include <functional>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace adapt::test {

/// refused(extra command-line options, expected exit code, texts the output must contain).
using RefusedRun = std::function<void(const std::string&, int, const std::vector<std::string>&)>;

/// Without a GPU: "cuda" and "cuda:0" (also with --dry-run, and with tp = 2 or pp = 2) exit 6 naming the
/// key, CUDA's reason and the way back to the CPU. With one: an index that is not there exits 2
/// (`gpu_test` names the GPU test that covers the rest). On both: a bad device or weights dtype exits 2.
inline void check_runtime_device_refusals(const RefusedRun& refused, const char* gpu_test) {
  if (backend::cuda_device_count() == 0) {
    const std::string reason = backend::cuda_unavailable_reason();
    REQUIRE_FALSE(reason.empty());
    for (const char* device : {"cuda", "cuda:0"}) {
      refused(std::string("--set runtime.device=") + device, 6,
              {std::string("runtime.device = \"") + device + "\", but", reason, "set runtime.device = \"cpu\""});
      refused(std::string("--dry-run --set runtime.device=") + device, 6, {"runtime.device", reason});
    }
    // Tensor and pipeline layouts are accepted with a GPU; the missing device is what stops them, before
    // the layout is checked against the world (one process here).
    for (const char* layout : {"--set parallel.tp=2", "--set parallel.pp=2"}) {
      refused(std::string("--set runtime.device=cuda ") + layout, 6,
              {"runtime.device = \"cuda\", but", reason, "set runtime.device = \"cpu\""});
    }
  } else {
    MESSAGE("a CUDA device is visible: the no-GPU refusal is not exercised here (" << gpu_test << " runs on it)");
    refused("--set runtime.device=cuda:99", 2,
            {"runtime.device = \"cuda:99\", but", "CUDA device(s)", "set runtime.device = \"cpu\""});
  }
  refused("--set runtime.device=gpu", 2, {"runtime.device = \"gpu\"", "\"cpu\", \"cuda\" or \"cuda:N\""});
  refused("--set runtime.device=cuda --set runtime.weights_dtype=f16", 2,
          {"runtime.weights_dtype", "\"bf16\", \"f32\""});
}

}  // namespace adapt::test
