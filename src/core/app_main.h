// The top level every adapt binary shares: run the program, turn an adapt::Error into one logged
// message and its documented exit code, and anything else into "internal error" (70).
#pragma once

#include <functional>

namespace adapt {

/// Calls `body()` and returns its exit code; on an exception, logs it once and returns the code of
/// its ExitCode (ExitCode::Internal for exceptions that are not adapt::Error).
int app_main(const std::function<int()>& body);

}  // namespace adapt
