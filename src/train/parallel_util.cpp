#include "train/parallel_util.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <string>

#include "core/error.h"
#include "core/log.h"

namespace adapt::train {

void on_root(comm::Communicator& comm, std::string_view what, const std::function<void()>& fn, double wait_s) {
  const double timeout = comm.options().timeout_s;
  comm.set_timeout(std::max(timeout, wait_s));
  try {
    on_root(comm, what, fn);
  } catch (...) {
    comm.set_timeout(timeout);
    throw;
  }
  comm.set_timeout(timeout);
}

void on_root(comm::Communicator& comm, std::string_view what, const std::function<void()>& fn) {
  if (comm.size() == 1) {
    fn();
    return;
  }
  std::int64_t code = 0;
  std::string message;
  SourceLoc where = ADAPT_HERE;
  if (comm.rank() == 0) {
    try {
      fn();
    } catch (const Error& e) {
      code = static_cast<std::int64_t>(e.exit_code());
      message = e.what();
      where = e.where();
    } catch (const std::exception& e) {
      const UnexpectedError u = classify_unexpected(e);
      code = static_cast<std::int64_t>(u.code);
      message = u.message;
    }
  }
  comm.all_reduce(&code, 1, comm::CommDType::I64, comm::ReduceOp::Max);
  if (code == 0) return;
  if (comm.rank() == 0) throw CollectiveError(message, where, static_cast<ExitCode>(code));
  log::debug("rank 0 failed to {} (exit code {})", what, code);
  throw CollectiveError("", ADAPT_HERE, static_cast<ExitCode>(code));
}

std::string broadcast_string(comm::Communicator& comm, const std::string& s) {
  if (comm.size() == 1) return s;
  std::int64_t n = static_cast<std::int64_t>(s.size());
  comm.broadcast(&n, 1, comm::CommDType::I64, 0);
  std::string out = comm.rank() == 0 ? s : std::string(static_cast<std::size_t>(n), '\0');
  if (n > 0) comm.broadcast(out.data(), n, comm::CommDType::U8, 0);
  return out;
}

}  // namespace adapt::train
