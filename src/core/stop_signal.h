// SIGUSR1 / SIGTERM as a request to stop at the next safe point: what Slurm sends before a time limit
// (--signal=B:USR1@N, forwarded by the job script) and when it preempts or cancels a job. A job that
// stops on it saves what it has (a checkpoint, generation progress) and exits with kExitRequeue so its
// job script requeues it; the next start continues from what was saved.
#pragma once

#include <atomic>
#include <csignal>
#include <string>

namespace adapt {

/// Exit code of a run that stopped early on SIGUSR1/SIGTERM after saving its state: the job wants to
/// be requeued, and the next start continues (sysexits' EX_TEMPFAIL).
inline constexpr int kExitRequeue = 75;

/// The last SIGUSR1 or SIGTERM received while a StopSignalGuard was alive (0: none). Polled at safe
/// points; tests may store into it to simulate a signal.
std::atomic<int>& stop_signal();

/// "SIGUSR1", "SIGTERM", or "signal N" for another number: how logs name a stop signal.
std::string stop_signal_name(int sig);

/// Installs handlers for SIGUSR1 and SIGTERM that store the signal number in stop_signal() (SA_RESTART:
/// the system calls they interrupt carry on), and clears it; restores the previous handlers when
/// destroyed. Guards nest: one made while another is alive (the trainer's inside adapt_train's, which
/// covers the minutes of loading before the first step) changes nothing, so a signal received by the
/// outer one stays pending.
class StopSignalGuard {
 public:
  StopSignalGuard();
  ~StopSignalGuard();
  StopSignalGuard(const StopSignalGuard&) = delete;
  StopSignalGuard& operator=(const StopSignalGuard&) = delete;

 private:
  bool outer_ = false;  // the guard that installed the handlers
  struct sigaction old_usr1_ {
  }, old_term_{};
};

}  // namespace adapt
