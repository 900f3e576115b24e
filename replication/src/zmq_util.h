// Small helpers shared by the ZeroMQ adapters: a wake-up descriptor other threads can signal,
// non-blocking sends that turn cppzmq's exceptions into values, and a rate-limited log of refused
// input.
//
// Internal to replication. Thread-safety: Waker::Signal from any thread; the rest belongs to the
// thread that owns the socket.
#pragma once

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "statesync/common/status.h"
#include "statesync/replication/events.h"
#include "statesync/replication/io_scheduling.h"
#include "statesync/replication/zmq_realtime.h"
#include "statesync/sessiontable/types.h"

namespace statesync::replication::detail {

// Resolves `asked` (io_realtime_priority) for the stream's I/O threads (call before `ctx`'s
// first socket).
inline Result<int> SetUpRealtime(zmq::context_t& ctx, int asked, const std::string& node_id) {
  return StartContextRealtime(ctx, asked,
                              RealtimeThreads{node_id, "the stream's I/O threads",
                                              "io_realtime_priority", kDefaultIoRealtimePriority});
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
