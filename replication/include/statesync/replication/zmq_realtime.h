// ZeroMQ contexts whose threads run in SCHED_FIFO: StartThreadsRealtime (io_scheduling.h) with
// the context's threads started by its first socket. Used by the replication stream and by a
// node's heartbeat links, each with a context of its own.
//
// Thread-safety: call before the context's first socket, from the thread that owns it.
#pragma once

#include <string>

#include <zmq.hpp>

#include "statesync/replication/io_scheduling.h"

namespace statesync::replication {

// Resolves `asked` for `threads` and, where it comes to a realtime priority this process may
// use, starts `ctx`'s threads in that class. Returns the priority (for the owner's own thread to
// enter with EnterRealtime) or 0 for the normal class.
inline Result<int> StartContextRealtime(zmq::context_t& ctx, int asked,
                                        const RealtimeThreads& threads) {
  return StartThreadsRealtime(asked, threads, [&ctx, &threads]() -> Status {
    try {
      zmq::socket_t first(ctx, zmq::socket_type::pair);  // starts the context's threads
      first.close();
      return Status::Ok();
    } catch (const zmq::error_t& e) {
      return Status::Unavailable("cannot start ZeroMQ's threads for " + threads.what + ": " +
                                 e.what());
    }
  });
}

}  // namespace statesync::replication
