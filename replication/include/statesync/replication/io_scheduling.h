// How the stream's I/O threads are scheduled: the values of PrimaryOptions::io_realtime_priority
// and SubordinateOptions::io_realtime_priority.
//
// Thread-safety: constants.
#pragma once

namespace statesync::replication {

// The default: SCHED_FIFO at kDefaultIoRealtimePriority where the process may use it (root,
// CAP_SYS_NICE or RLIMIT_RTPRIO), the normal class elsewhere. An HA engine's stream competes with
// the writer it replicates on the same cores; on 2 cores the lag's p99 at half the maximum rate
// was 2-3 ms with it and 4-15 ms without (docs/BENCHMARKS.md).
inline constexpr int kIoRealtimeWhenPermitted = -1;
// The normal scheduling class, for embedders that keep SCHED_FIFO for threads of their own.
inline constexpr int kIoNormalClass = 0;
// Below the kernel's own realtime threads (50 and up) and what conntrackd and keepalived are
// usually given, above nothing else of ours.
inline constexpr int kDefaultIoRealtimePriority = 10;

}  // namespace statesync::replication
