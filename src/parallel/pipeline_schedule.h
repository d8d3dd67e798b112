// The 1F1B pipeline schedule (PipeDream-Flush, as Megatron runs it) as a pure function: the ordered
// forward/backward micro-batch steps of one stage. Stage s first runs min(pp - s - 1, m) forwards
// (warm-up), then alternates one forward and one backward, then runs the remaining backwards
// (cool-down), so at most pp - s micro-batches hold activations at once.
#pragma once

#include <string>
#include <vector>

namespace adapt::parallel {

enum class PipeOp { Forward, Backward };

struct PipeStep {
  PipeOp op;
  int micro;  // micro-batch index, 0 .. n_micro - 1
  friend bool operator==(const PipeStep&, const PipeStep&) = default;
};

/// The steps of stage `stage` (0 .. pp_size - 1) for `n_micro` micro-batches (>= 1). A forward of
/// micro-batch i receives its input from stage - 1 (except on the first stage) and sends its output
/// to stage + 1 (except on the last); a backward receives from stage + 1 and sends to stage - 1.
/// Forwards and backwards each run in micro-batch order. The executor must not block a send on its
/// receiver: neighbouring stages reach a matching send and recv in different step orders (pair a send
/// with the next receive from the same neighbour through Communicator::send_recv).
std::vector<PipeStep> schedule_1f1b(int pp_size, int stage, int n_micro);

/// The most micro-batches whose forward has run and whose backward has not, over `steps`.
int max_in_flight(const std::vector<PipeStep>& steps);

/// "F0 F1 B0 F2 B1 B2" (logs and test messages).
std::string schedule_str(const std::vector<PipeStep>& steps);

}  // namespace adapt::parallel
