#include "core/error.h"

#include "core/log.h"

namespace adapt {

Error::Error(std::string message, SourceLoc where, ExitCode code)
    : std::runtime_error(std::move(message)), where_(where), code_(code), world_rank_(log::world_rank()) {}

}  // namespace adapt
