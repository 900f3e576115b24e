// How threads that must not wait behind busy ones are scheduled: the replication stream's I/O
// threads (PrimaryOptions::io_realtime_priority, SubordinateOptions::io_realtime_priority) and,
// above them, a node's heartbeat path (statesyncd's [cluster] heartbeat_realtime_priority).
//
// Thread-safety: constants, and free functions that act on the calling thread or on threads
// they start and join.
#pragma once

#include <functional>
#include <string>

#include "statesync/common/status.h"

namespace statesync::replication {

// The default: SCHED_FIFO at kDefaultIoRealtimePriority where the process may use it (root,
// CAP_SYS_NICE or RLIMIT_RTPRIO, and no RLIMIT_RTTIME), the normal class elsewhere. The stream
// then runs ahead of the table's writer and the applier on the same cores, and the writer gets
// what the stream leaves. Figures and the cases it does not cover: docs/BENCHMARKS.md and
// docs/architecture.md ("Scheduling").
inline constexpr int kIoRealtimeWhenPermitted = -1;
// The normal scheduling class, for embedders that keep SCHED_FIFO for threads of their own.
inline constexpr int kIoNormalClass = 0;
// Below the kernel's own realtime threads (50 and up) and what conntrackd and keepalived are
// usually given, above nothing else of ours but the heartbeat path.
inline constexpr int kDefaultIoRealtimePriority = 10;
// A node's heartbeat path (its event loop and its heartbeat sockets' thread) runs above the
// stream: a busy stream in SCHED_FIFO otherwise holds both cores of a small machine, and the
// heartbeats wait for the kernel's realtime throttling (up to 950 ms in every second).
inline constexpr int kDefaultHeartbeatRealtimePriority = 20;

// The priority `asked` comes to: `by_default` for kIoRealtimeWhenPermitted, else `asked` (0 for
// the normal class).
constexpr int ResolveRealtimePriority(int asked, int by_default) {
  return asked == kIoRealtimeWhenPermitted ? by_default : asked;
}

// Puts the calling thread in SCHED_FIFO at `priority`; false where refused. With
// `reset_on_fork`, the threads and processes it starts afterwards begin in the normal class.
bool EnterRealtime(int priority, bool reset_on_fork = false);

// Threads to be put in SCHED_FIFO, named for log lines and errors.
struct RealtimeThreads {
  std::string node_id;   // who says it
  std::string what;      // e.g. "the stream's I/O threads"
  std::string setting;   // the option that chooses it, e.g. "io_realtime_priority"
  int default_priority;  // what kIoRealtimeWhenPermitted comes to
};

// Resolves `asked` (kIoRealtimeWhenPermitted, kIoNormalClass or 1-99). Where it comes to a
// priority this process may use, runs `start` (which starts a library's threads, e.g. a
// ZeroMQ context's with its first socket) on a thread already in SCHED_FIFO at it, so that they
// inherit the class: ZeroMQ's own thread_sched_policy option aborts the process when its thread
// cannot take the class, and this cannot. Returns that priority (for the component's own thread
// to enter with EnterRealtime), or 0 for the normal class: a priority asked for and refused is a
// warning, the default refused only an info line (most unprivileged processes are refused). The
// default also keeps the normal class under a finite RLIMIT_RTTIME: a busy thread could run into
// it, and the kernel then kills the process. An error: `asked` out of range, or `start` failed.
Result<int> StartThreadsRealtime(int asked, const RealtimeThreads& threads,
                                 const std::function<Status()>& start);

}  // namespace statesync::replication
