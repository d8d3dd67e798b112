// A fuzz target: LLVMFuzzerTestOneInput feeds one input to a parser of untrusted input, and
// fuzz_seeds() gives valid inputs made by adapt's own writers to mutate from. A target passes an
// input when the parser accepts it or refuses it with an adapt::Error (the clear error every bad
// file must get); any other exception, a crash, a sanitizer report or a hang is a finding.
//
// Built two ways (tests/fuzz/CMakeLists.txt): with fuzz_driver.cpp, a deterministic mutator that
// CTest runs on every build (cpu.fuzz_*: the seeds, then thousands of seeded mutations of them), or,
// with clang and -DADAPT_FUZZ=libfuzzer, against libFuzzer for open-ended runs.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "core/error.h"

namespace adapt::fuzz {

/// Valid inputs for this target (made by adapt's writers, so they track the formats).
std::vector<std::string> fuzz_seeds();

/// Set when a parser refused the input being run with an adapt::Error (the driver's summary counts
/// such inputs).
inline bool& refused_flag() {
  static bool refused = false;
  return refused;
}

/// Runs `body`, accepting an adapt::Error as a refusal; anything else propagates (a finding), an
/// InternalError (a broken invariant) included.
template <typename F>
void refuse_ok(F&& body) {
  try {
    body();
  } catch (const adapt::InternalError&) {
    throw;
  } catch (const adapt::Error&) {
    refused_flag() = true;
  }
}

/// A per-process scratch file for parsers that take a path: `bytes` written to it, its path returned
/// (named `name` inside a folder of this process).
std::filesystem::path scratch_file(std::string_view bytes, const std::string& name);

}  // namespace adapt::fuzz

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);
