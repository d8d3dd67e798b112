#include "core/stop_signal.h"

namespace adapt {

std::atomic<int>& stop_signal() {
  static std::atomic<int> flag{0};
  return flag;
}

namespace {
extern "C" void adapt_on_stop_signal(int sig) { stop_signal().store(sig); }
}  // namespace

StopSignalGuard::StopSignalGuard() {
  stop_signal().store(0);
  struct sigaction sa {};
  sa.sa_handler = adapt_on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, &old_usr1_);
  sigaction(SIGTERM, &sa, &old_term_);
}

StopSignalGuard::~StopSignalGuard() {
  sigaction(SIGUSR1, &old_usr1_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
}

}  // namespace adapt
