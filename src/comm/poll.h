// Deadlines and polling back-off for the implementations that wait on non-blocking calls (MPI
// requests, NCCL streams): spin once for latency, then sleep in doubling steps up to 1 ms so that
// ranks sharing cores leave each other time to progress.
#pragma once

#include <algorithm>
#include <chrono>
#include <thread>

namespace adapt::comm {

using PollClock = std::chrono::steady_clock;

inline PollClock::time_point poll_deadline(double timeout_s) {
  return PollClock::now() + std::chrono::duration_cast<PollClock::duration>(std::chrono::duration<double>(timeout_s));
}

class PollBackoff {
 public:
  void pause() {
    if (step_.count() == 0) {
      std::this_thread::yield();
      step_ = std::chrono::microseconds(1);
      return;
    }
    std::this_thread::sleep_for(step_);
    step_ = std::min(step_ * 2, std::chrono::microseconds(1000));
  }

 private:
  std::chrono::microseconds step_{0};
};

}  // namespace adapt::comm
