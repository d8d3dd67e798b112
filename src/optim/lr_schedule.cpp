#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "core/strings.h"

namespace adapt::optim {

double lr_at(const LrSchedule& s, std::int64_t step) {
  const double warmup = static_cast<double>(s.warmup_steps);
  const double t = static_cast<double>(step);
  if (step < s.warmup_steps) return s.lr * t / std::max(1.0, warmup);
  double factor = 1.0;
  const double span = std::max(1.0, static_cast<double>(s.total_steps - s.warmup_steps));
  const double progress = (t - warmup) / span;
  switch (s.kind) {
    case LrScheduleKind::Constant: return s.lr;
    case LrScheduleKind::Linear: factor = std::max(0.0, 1.0 - progress); break;
    case LrScheduleKind::Cosine:
      factor = std::max(0.0, 0.5 * (1.0 + std::cos(M_PI * 2.0 * 0.5 * progress)));  // num_cycles = 0.5
      break;
  }
  return s.lr * (s.min_lr_ratio + (1.0 - s.min_lr_ratio) * factor);
}

LrScheduleKind parse_lr_schedule(const std::string& name) {
  if (name == "constant") return LrScheduleKind::Constant;
  if (name == "linear") return LrScheduleKind::Linear;
  if (name == "cosine") return LrScheduleKind::Cosine;
  ADAPT_THROW(ConfigError, "unknown learning-rate schedule '{}'{}: use constant, linear or cosine", name,
              did_you_mean(name, {"constant", "linear", "cosine"}));
}

}  // namespace adapt::optim
