#include "core/error.h"

#include <filesystem>

#include "core/log.h"

namespace adapt {

Error::Error(std::string message, SourceLoc where, ExitCode code)
    : std::runtime_error(std::move(message)), where_(where), code_(code), world_rank_(log::world_rank()) {}

UnexpectedError classify_unexpected(const std::exception& e) {
  if (dynamic_cast<const std::filesystem::filesystem_error*>(&e) != nullptr)
    return {ExitCode::Io, std::string(e.what()) +
                              ". Check the path named here: it must exist, and a folder "
                              "written to (run.dir, output.dir, checkpoint.dir, data.cache_dir) "
                              "must be writable and have room"};
  return {ExitCode::Internal, std::string(e.what()) + " (this is a bug in adapt; please report it)"};
}

}  // namespace adapt
