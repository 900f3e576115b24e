#include "statesync/replication/io_scheduling.h"

#include <pthread.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <thread>

namespace statesync::replication {

bool EnterRealtime(int priority, bool reset_on_fork) {
  sched_param param{};
  param.sched_priority = priority;
  // sched_setscheduler acts on the calling thread on Linux, and alone takes the reset flag.
  return ::sched_setscheduler(0, SCHED_FIFO | (reset_on_fork ? SCHED_RESET_ON_FORK : 0), &param) ==
         0;
}

Result<int> StartThreadsRealtime(int asked, const RealtimeThreads& threads,
                                 const std::function<Status()>& start) {
  if (asked != kIoRealtimeWhenPermitted && (asked < 0 || asked > 99)) {
    return Status::InvalidArgument(
        threads.setting + " is " + std::to_string(asked) +
        ": it must be -1 (realtime where permitted, the default), 0 (the normal class) or a "
        "SCHED_FIFO priority from 1 to 99");
  }
  const bool by_default = asked == kIoRealtimeWhenPermitted;
  const int priority = ResolveRealtimePriority(asked, threads.default_priority);
  if (priority == kIoNormalClass) return 0;
  rlimit rttime{};
  if (by_default && ::getrlimit(RLIMIT_RTTIME, &rttime) == 0 && rttime.rlim_cur != RLIM_INFINITY) {
    spdlog::info(
        "{}: {} keep the normal scheduling class: RLIMIT_RTTIME is set ({} us); set {} to use "
        "SCHED_FIFO anyway",
        threads.node_id, threads.what, rttime.rlim_cur, threads.setting);
    return 0;
  }
  bool entered = false;
  Status started = Status::Ok();
  std::thread starter([&] {
    entered = EnterRealtime(priority);
    if (entered) started = start();
  });
  starter.join();
  if (!started.ok()) return started;
  if (!entered) {
    spdlog::log(by_default ? spdlog::level::info : spdlog::level::warn,
                "{}: {} keep the normal scheduling class: SCHED_FIFO at {} is refused (it needs "
                "CAP_SYS_NICE or RLIMIT_RTPRIO){}",
                threads.node_id, threads.what, priority,
                by_default ? "; set " + threads.setting + " to 0 to choose the normal class" : "");
    return 0;
  }
  return priority;
}

}  // namespace statesync::replication
