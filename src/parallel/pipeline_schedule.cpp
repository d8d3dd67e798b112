#include "parallel/pipeline_schedule.h"

#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"

namespace adapt::parallel {

std::vector<PipeStep> schedule_1f1b(int pp_size, int stage, int n_micro) {
  ADAPT_CHECK(pp_size >= 1 && stage >= 0 && stage < pp_size && n_micro >= 1,
              "1F1B for stage {} of {}, {} micro-batches", stage, pp_size, n_micro);
  const int warmup = std::min(pp_size - stage - 1, n_micro);
  std::vector<PipeStep> steps;
  steps.reserve(static_cast<std::size_t>(2 * n_micro));
  int next_fwd = 0, next_bwd = 0;
  for (int i = 0; i < warmup; ++i) steps.push_back({PipeOp::Forward, next_fwd++});
  while (next_fwd < n_micro) {
    steps.push_back({PipeOp::Forward, next_fwd++});
    steps.push_back({PipeOp::Backward, next_bwd++});
  }
  while (next_bwd < n_micro) steps.push_back({PipeOp::Backward, next_bwd++});
  return steps;
}

int max_in_flight(const std::vector<PipeStep>& steps) {
  int live = 0, most = 0;
  for (const PipeStep& s : steps) {
    live += s.op == PipeOp::Forward ? 1 : -1;
    most = std::max(most, live);
  }
  return most;
}

std::string schedule_str(const std::vector<PipeStep>& steps) {
  std::string out;
  for (const PipeStep& s : steps) {
    if (!out.empty()) out += ' ';
    out += fmt::format("{}{}", s.op == PipeOp::Forward ? 'F' : 'B', s.micro);
  }
  return out;
}

}  // namespace adapt::parallel
