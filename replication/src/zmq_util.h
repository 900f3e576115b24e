// Small helpers shared by the ZeroMQ adapters: a wake-up descriptor other threads can signal,
// non-blocking sends that turn cppzmq's exceptions into values, and a rate-limited log of refused
// input.
//
// Internal to replication. Thread-safety: Waker::Signal from any thread; the rest belongs to the
// thread that owns the socket.
#pragma once

#include <pthread.h>
#include <sched.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>

#include <zmq.hpp>

#include "statesync/common/status.h"
#include "statesync/replication/events.h"
#include "statesync/replication/io_scheduling.h"
#include "statesync/sessiontable/types.h"

namespace statesync::replication::detail {

// Puts the calling thread in SCHED_FIFO at `priority`; false where refused.
inline bool EnterRealtime(int priority) {
  sched_param param{};
  param.sched_priority = priority;
  return pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) == 0;
}

// Resolves `asked` (io_realtime_priority: kIoRealtimeWhenPermitted, 0 or 1-99). Where it comes to
// a priority this process may use, starts ZeroMQ's threads of `ctx` (call before its first
// socket) from a thread already in SCHED_FIFO at it, so that they inherit the class: ZeroMQ's own
// thread_sched_policy option aborts the process when its thread cannot take the class, and this
// cannot. Returns the priority the adapter's I/O thread should enter (EnterRealtime), or 0 for
// the normal class: a priority asked for and refused is a warning, the default refused only an
// info line (most unprivileged processes are refused). The default also keeps the normal class
// under a finite RLIMIT_RTTIME: a busy stream could run into it, and the kernel then kills the
// process.
inline Result<int> SetUpRealtime(zmq::context_t& ctx, int asked, const std::string& node_id) {
  if (asked != kIoRealtimeWhenPermitted && (asked < 0 || asked > 99)) {
    return Status::InvalidArgument(
        "io_realtime_priority is " + std::to_string(asked) +
        ": it must be -1 (realtime where permitted, the default), 0 (the normal class) or a "
        "SCHED_FIFO priority from 1 to 99");
  }
  const bool by_default = asked == kIoRealtimeWhenPermitted;
  const int priority = by_default ? kDefaultIoRealtimePriority : asked;
  if (priority == kIoNormalClass) return 0;
  rlimit rttime{};
  if (by_default && ::getrlimit(RLIMIT_RTTIME, &rttime) == 0 && rttime.rlim_cur != RLIM_INFINITY) {
    spdlog::info(
        "{}: the stream's I/O threads keep the normal scheduling class: RLIMIT_RTTIME is set "
        "({} us); set io_realtime_priority to use SCHED_FIFO anyway",
        node_id, rttime.rlim_cur);
    return 0;
  }
  bool entered = false;
  std::string failure;
  std::thread starter([&] {
    entered = EnterRealtime(priority);
    if (!entered) return;
    try {
      zmq::socket_t first(ctx, zmq::socket_type::pair);  // starts the context's threads
      first.close();
    } catch (const zmq::error_t& e) {
      failure = e.what();
    }
  });
  starter.join();
  if (!failure.empty()) {
    return Status::Unavailable("cannot start ZeroMQ's threads: " + failure);
  }
  if (!entered) {
    spdlog::log(by_default ? spdlog::level::info : spdlog::level::warn,
                "{}: the stream's I/O threads keep the normal scheduling class: SCHED_FIFO at {} "
                "is refused (it needs CAP_SYS_NICE or RLIMIT_RTPRIO){}",
                node_id, priority,
                by_default ? "; set io_realtime_priority to 0 to choose the normal class" : "");
    return 0;
  }
  return priority;
}

// The wall clock, as the store and the table take time (adapters may read clocks; the pure
// components never do).
inline TimePoint WallNow() {
  return std::chrono::time_point_cast<std::chrono::milliseconds>(std::chrono::system_clock::now());
}

class Waker {
 public:
  Waker() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~Waker() {
    if (fd_ >= 0) ::close(fd_);
  }
  Waker(const Waker&) = delete;
  Waker& operator=(const Waker&) = delete;
  bool ok() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void Signal() {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(fd_, &one, sizeof(one));
  }
  void Clear() {
    std::uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(fd_, &v, sizeof(v));
  }

 private:
  int fd_;
};

enum class SendResult { kSent, kFull, kGone };

// Sends one message (after an optional routing id) without blocking.
inline SendResult Send(zmq::socket_t& socket, std::string_view routing_id, std::string_view body) {
  try {
    if (!routing_id.empty()) {
      if (!socket.send(zmq::buffer(routing_id.data(), routing_id.size()),
                       zmq::send_flags::sndmore | zmq::send_flags::dontwait)) {
        return SendResult::kFull;
      }
    }
    if (!socket.send(zmq::buffer(body.data(), body.size()), zmq::send_flags::dontwait)) {
      return SendResult::kFull;
    }
    return SendResult::kSent;
  } catch (const zmq::error_t& e) {
    // EHOSTUNREACH: ROUTER_MANDATORY and the peer is not connected.
    return SendResult::kGone;
  }
}

// Counts a refusal and logs it: the first ten of each reason, then one in a thousand.
inline void LogRefusal(std::uint64_t count, std::string_view who, std::string_view reason) {
  if (count <= 10 || count % 1000 == 0) {
    spdlog::warn("{}: refused a message ({} so far for this reason): {}", who, count, reason);
  }
}

inline void CountDecodeError(InputCounters& c, const wire::Decoded& d, std::string_view who) {
  auto& n = c.decode[static_cast<std::size_t>(d.error)];
  ++n;
  LogRefusal(n, who, d.reason);
}

}  // namespace statesync::replication::detail
