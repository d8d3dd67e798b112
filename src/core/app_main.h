// The top level every adapt binary shares: process-wide settings first, then the program; an
// adapt::Error becomes one logged message and its documented exit code, anything else "internal
// error" (70).
#pragma once

#include <functional>

namespace adapt {

/// Calls app_process_setup(), then `body()`, and returns its exit code; on an exception, logs it once
/// and returns the code of its ExitCode (ExitCode::Internal for exceptions that are not adapt::Error).
int app_main(const std::function<int()>& body);

/// Process-wide settings every adapt binary starts with (app_main calls it; the apps that start MPI
/// first call it before). glibc's malloc serves a request of 128 KiB or more with its own mapping, which
/// goes back to the system when freed, until such a block is freed: from then on the threshold rises
/// to the freed size, and later large requests come from the heap, where freed memory stays with the
/// process and fragments. A job's peak host memory then depends on the order of its frees (in tp2 runs
/// with recomputation, one rank's peak was 21 MiB of 695 above what it held at once, and varied
/// between runs). Fixing the threshold at 128 KiB keeps large buffers on their own mappings; the
/// buffers of the hot loops are workspaces, so the speed does not change (training, prefill and
/// decoding measured with and without).
void app_process_setup();

}  // namespace adapt
