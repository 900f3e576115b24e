// How the stream's I/O threads are scheduled: the values of PrimaryOptions::io_realtime_priority
// and SubordinateOptions::io_realtime_priority.
//
// Thread-safety: constants.
#pragma once

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
// usually given, above nothing else of ours.
inline constexpr int kDefaultIoRealtimePriority = 10;

}  // namespace statesync::replication
