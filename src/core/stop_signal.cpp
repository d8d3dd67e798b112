#include "core/stop_signal.h"

namespace adapt {

std::atomic<int>& stop_signal() {
  static std::atomic<int> flag{0};
  return flag;
}

std::string stop_signal_name(int sig) {
  if (sig == SIGUSR1) return "SIGUSR1";
  if (sig == SIGTERM) return "SIGTERM";
  return "signal " + std::to_string(sig);
}

namespace {
extern "C" void adapt_on_stop_signal(int sig) { stop_signal().store(sig); }
std::atomic<int> g_guards{0};  // StopSignalGuards alive
}  // namespace

StopSignalGuard::StopSignalGuard() : outer_(g_guards.fetch_add(1) == 0) {
  if (!outer_) return;
  stop_signal().store(0);
  struct sigaction sa {};
  sa.sa_handler = adapt_on_stop_signal;
  // A read or write the signal interrupts (a checkpoint being written, a file on a network filesystem)
  // carries on instead of failing with EINTR: the signal only asks for a stop at the next safe point.
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, &old_usr1_);
  sigaction(SIGTERM, &sa, &old_term_);
}

StopSignalGuard::~StopSignalGuard() {
  g_guards.fetch_sub(1);
  if (!outer_) return;
  sigaction(SIGUSR1, &old_usr1_, nullptr);
  sigaction(SIGTERM, &old_term_, nullptr);
}

}  // namespace adapt
