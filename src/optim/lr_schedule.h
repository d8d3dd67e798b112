// Learning-rate schedules with linear warmup: constant, linear decay and cosine decay, with the
// formulas of HF transformers' get_{constant,linear,cosine}_schedule_with_warmup, plus an optional
// floor (min_lr_ratio).
#pragma once

#include <cstdint>
#include <string>

namespace adapt::optim {

enum class LrScheduleKind { Constant, Linear, Cosine };

struct LrSchedule {
  LrScheduleKind kind = LrScheduleKind::Cosine;
  double lr = 1e-4;  // peak learning rate
  std::int64_t warmup_steps = 0;
  std::int64_t total_steps = 1;  // optimizer steps of the whole run
  double min_lr_ratio = 0.0;     // the decay ends at lr * min_lr_ratio
};

/// Learning rate for optimizer step `step` (0-based: the rate used by the (step+1)-th update), as
/// torch's LambdaLR with HF's lambdas gives it.
double lr_at(const LrSchedule& s, std::int64_t step);

/// "constant" | "linear" | "cosine"; ConfigError listing them otherwise.
LrScheduleKind parse_lr_schedule(const std::string& name);

}  // namespace adapt::optim
