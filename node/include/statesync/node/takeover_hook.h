// TakeoverHook: runs the operator's command on promotion and demotion (where a virtual address
// is moved or state committed into a kernel), one at a time and in order, each with a time limit
// (SIGTERM at the limit, SIGKILL 2 s later), with its exit status, duration and output (the last
// 4 KiB of stdout and stderr together) reported when it ends.
//
// The command runs as `/bin/sh -c COMMAND statesync-hook promote|demote EPOCH`: a single word
// (a program's path) is given the event and the epoch as its arguments, a longer command finds
// them in "$1" and "$2" (`move-vip --dev eth0 "$@"`). Its environment gains STATESYNC_EVENT and
// STATESYNC_EPOCH, and its signals are a fresh process's.
// The run is over when the shell exits: a process the command leaves running (a daemon it
// starts) keeps running, and only what was printed until then is reported.
//
// Thread-safety: Run and the destructor from one thread (the node's event loop); reports come
// on the hook's own thread and must not block.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "statesync/common/pi_mutex.h"

namespace statesync::node {

struct HookResult {
  std::string event;  // "promote" or "demote"
  std::uint64_t epoch = 0;
  int exit_code = -1;      // the command's; -1 when it was killed or could not start
  bool timed_out = false;  // killed at the time limit
  std::string error;       // why it could not start, if so
  std::chrono::milliseconds duration{0};
  std::string output;  // the last 4 KiB of what it printed
  bool ok() const { return exit_code == 0 && !timed_out && error.empty(); }
};

class TakeoverHook {
 public:
  using Report = std::function<void(const HookResult&)>;
  // An empty command runs nothing (and reports nothing).
  TakeoverHook(std::string command, std::chrono::milliseconds timeout, Report report);
  ~TakeoverHook();  // waits for the running hook (up to its limit); queued ones do not run
  TakeoverHook(const TakeoverHook&) = delete;
  TakeoverHook& operator=(const TakeoverHook&) = delete;

  // Queues a run: `event` "promote" or "demote".
  void Run(const std::string& event, std::uint64_t epoch);
  // Waits until every queued run has run (each up to its limit): a stopping node's "demote".
  void Drain();

 private:
  void Loop();
  HookResult Execute(const std::string& event, std::uint64_t epoch);

  const std::string command_;
  const std::chrono::milliseconds timeout_;
  const Report report_;
  // Taken by the event loop, which runs in SCHED_FIFO where permitted: it lends priority.
  PriorityInheritanceMutex mu_;
  std::condition_variable_any cv_;
  std::deque<std::pair<std::string, std::uint64_t>> queue_;
  int outstanding_ = 0;  // queued or running
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace statesync::node
