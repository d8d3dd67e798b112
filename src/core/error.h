// Error hierarchy and check macros. Every message follows "what failed — observed vs expected —
// where — what to do"; every error records file:line and the world rank, and maps to a documented
// process exit code (ExitCode) that apps return.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace adapt {

/// Process exit codes shared by every adapt binary (documented in README.md, "Exit codes").
enum class ExitCode : int {
  Ok = 0,
  Failure = 1,      // a check the user asked for failed (e.g. adapt_model check found problems)
  Usage = 2,        // bad command line or configuration (TOML, config.json values)
  Io = 3,           // missing, truncated or malformed input file; cannot write output
  Cuda = 4,         // CUDA runtime / cuBLAS failure
  Comm = 5,         // MPI or NCCL failure
  Unsupported = 6,  // feature not compiled in or not available on this device
  Internal = 70,    // a bug: please report it
};

struct SourceLoc {
  const char* file = "";
  int line = 0;
};

/// Base of every adapt exception. what() is the full message, prefixed with nothing: the top-level
/// handler adds the rank. where() is the throwing source location.
class Error : public std::runtime_error {
 public:
  Error(std::string message, SourceLoc where, ExitCode code = ExitCode::Internal);
  const SourceLoc& where() const { return where_; }
  ExitCode exit_code() const { return code_; }
  int world_rank() const { return world_rank_; }

 private:
  SourceLoc where_;
  ExitCode code_;
  int world_rank_;
};

/// Bad configuration: TOML keys and values, command-line flags, config.json fields.
class ConfigError : public Error {
 public:
  ConfigError(std::string message, SourceLoc where) : Error(std::move(message), where, ExitCode::Usage) {}
};

/// A file that is missing, unreadable, truncated or malformed, or an output that cannot be written.
class IoError : public Error {
 public:
  IoError(std::string message, SourceLoc where) : Error(std::move(message), where, ExitCode::Io) {}
};

/// A tensor whose shape does not match what the model or op expects.
class ShapeError : public Error {
 public:
  ShapeError(std::string message, SourceLoc where) : Error(std::move(message), where, ExitCode::Io) {}
};

/// A feature that this binary was built without, or that this device/dtype does not support.
class UnsupportedError : public Error {
 public:
  UnsupportedError(std::string message, SourceLoc where) : Error(std::move(message), where, ExitCode::Unsupported) {}
};

class CudaError : public Error {
 public:
  CudaError(std::string message, SourceLoc where) : Error(std::move(message), where, ExitCode::Cuda) {}
};

class CommError : public Error {
 public:
  CommError(std::string message, SourceLoc where) : Error(std::move(message), where, ExitCode::Comm) {}
};

/// A violated internal invariant: a bug in adapt, not in the input.
class InternalError : public Error {
 public:
  InternalError(std::string message, SourceLoc where)
      : Error(std::move(message) + " (this is a bug in adapt; please report it)", where, ExitCode::Internal) {}
};

/// What a top-level handler reports for an exception that is not an Error: a std::filesystem error
/// (a folder that cannot be created, a read-only or full file system) is the input's problem, exit
/// code Io, with what to check; anything else is a bug in adapt, exit code Internal.
struct UnexpectedError {
  ExitCode code;
  std::string message;
};
UnexpectedError classify_unexpected(const std::exception& e);

}  // namespace adapt

#define ADAPT_HERE (::adapt::SourceLoc{__FILE__, __LINE__})

/// Throw ErrorType with a fmt-formatted message.
#define ADAPT_THROW(ErrorType, ...) throw ErrorType(::fmt::format(__VA_ARGS__), ADAPT_HERE)

/// User-facing validation: throws ErrorType when cond is false. Always on.
#define ADAPT_REQUIRE(cond, ErrorType, ...)           \
  do {                                                \
    if (!(cond)) ADAPT_THROW(ErrorType, __VA_ARGS__); \
  } while (0)

/// Internal invariant: throws InternalError naming the condition. Always on (not tied to NDEBUG).
#define ADAPT_CHECK(cond, ...)                                                                               \
  do {                                                                                                       \
    if (!(cond))                                                                                             \
      throw ::adapt::InternalError(::fmt::format("check failed: {}: {}", #cond, ::fmt::format(__VA_ARGS__)), \
                                   ADAPT_HERE);                                                              \
  } while (0)
