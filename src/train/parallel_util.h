// Small collective helpers of multi-rank jobs: work only rank 0 does (writing a file, tokenizing)
// with its success or failure shared by every rank, so that no rank goes on into a collective that a
// failed rank will never join; and strings broadcast from rank 0.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "comm/communicator.h"
#include "core/error.h"

namespace adapt::train {

/// An error every rank of the job raises at the same point, knowing of it through a collective (so
/// no rank is left waiting): rank 0 prints it, every rank exits with its code. An empty message marks
/// a rank that only follows another's failure.
class CollectiveError : public Error {
 public:
  CollectiveError(std::string message, SourceLoc where, ExitCode code) : Error(std::move(message), where, code) {}
};

/// Runs `fn` on rank 0 of `comm`, then shares whether it succeeded. When it threw, every rank throws
/// a CollectiveError with its exit code: rank 0 with its message, the others with an empty one (they
/// stay quiet; `what` goes to their debug log).
/// On one rank, `fn`'s exception passes unchanged. Called by all ranks of `comm`.
void on_root(comm::Communicator& comm, std::string_view what, const std::function<void()>& fn);
/// The same where `fn` may take longer than a collective's timeout (tokenizing a corpus, writing a
/// merged model): the other ranks wait up to `wait_s` (at least their timeout) for its status.
void on_root(comm::Communicator& comm, std::string_view what, const std::function<void()>& fn, double wait_s);

/// Rank 0's `s` on every rank of `comm`. Called by all ranks of `comm`.
std::string broadcast_string(comm::Communicator& comm, const std::string& s);

}  // namespace adapt::train
