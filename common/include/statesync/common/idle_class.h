// EnterIdleClass: moves the calling thread to the idle scheduling class, for background work
// that must give a core up at once to anything else (the materializer, the page supplier, the
// blob lane).
//
// Thread-safety: affects only the calling thread.
#pragma once

#include <sched.h>
#include <sys/resource.h>
#include <unistd.h>

namespace statesync {

// SCHED_IDLE rather than nice 19: a nice-19 thread still holds a core until the scheduler's next
// decision when a normal one wakes, an idle-class one gives it up at once (docs/BENCHMARKS.md).
// Falls back to nice 19 where the class is refused.
inline void EnterIdleClass() {
  sched_param idle{};
  if (::sched_setscheduler(0, SCHED_IDLE, &idle) != 0) {
    ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);
  }
}

// Moves the calling thread from the idle class back to the normal one, for work someone waits
// for: an idle-class thread makes no progress at all while normal ones keep every core busy.
// Needs CAP_SYS_NICE (or RLIMIT_NICE allowing nice 0); returns false, changing nothing, where
// refused.
inline bool LeaveIdleClass() {
  sched_param normal{};
  return ::sched_setscheduler(0, SCHED_OTHER, &normal) == 0;
}

}  // namespace statesync
