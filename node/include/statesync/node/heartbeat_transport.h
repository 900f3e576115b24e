// HeartbeatTransport: the failover core's messages between nodes, on the heartbeat links. Each
// link is a network of its own: on each, this node binds a ROUTER on its own endpoint (what it
// receives) and connects one DEALER to each peer's endpoint (what it sends), in a ZeroMQ context
// of its own, so that bulk replication traffic never queues ahead of a heartbeat. Sends never
// block: a peer that is gone or slow drops messages past a small queue (the next heartbeat
// follows 100 ms later), and a message to an unconnected peer is not queued at all.
//
// Bulk traffic cannot take the CPU from heartbeats either: the context's thread runs in
// SCHED_FIFO above the stream's I/O threads where the process may ([cluster]
// heartbeat_realtime_priority), and so does the owner's thread (realtime_priority()).
//
// Thread-safety: one owner thread (the node's event loop); ZeroMQ's own I/O thread does the I/O.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "statesync/common/status.h"
#include "statesync/failover/types.h"
#include "statesync/node/config.h"

namespace statesync::node {

struct ReceivedPeerMessage {
  failover::NodeId from;
  failover::LinkIndex link = 0;  // the link it arrived on
  failover::Message message;
};

// The connection to a peer on a link opened or closed (ZeroMQ's socket monitor): a dead
// process's connections close at once, which the failover core takes as a crash when it
// happens on every link.
struct ConnectionEvent {
  failover::NodeId peer;
  failover::LinkIndex link = 0;
  bool up = false;
};

struct HeartbeatCounters {
  std::uint64_t sent = 0;
  std::uint64_t dropped = 0;   // not sent: the peer's queue on that link was full or unconnected
  std::uint64_t received = 0;  // accepted
  std::uint64_t refused = 0;   // damaged, another cluster, unknown sender, wrong link, ...
};

class HeartbeatTransport {
 public:
  // Binds this node's heartbeat endpoint on every link and connects to every peer's.
  static Result<std::unique_ptr<HeartbeatTransport>> Start(const NodeConfig& config);
  ~HeartbeatTransport();
  HeartbeatTransport(const HeartbeatTransport&) = delete;
  HeartbeatTransport& operator=(const HeartbeatTransport&) = delete;

  // Sends on the message's link, or on every link when it names none.
  void Send(const failover::SendMessage& message);
  // Waits up to `timeout` for the first message (or for `wake_fd`, when given, to become
  // readable: the caller's own work to do), then takes whatever else has arrived. Refused
  // input is counted and logged (rate-limited), never returned.
  std::vector<ReceivedPeerMessage> Receive(std::chrono::milliseconds timeout, int wake_fd = -1);
  // The connection events Receive saw (it also wakes for them), oldest first.
  std::vector<ConnectionEvent> TakeConnectionEvents();
  HeartbeatCounters counters() const;
  // The SCHED_FIFO priority the links' ZeroMQ thread runs at ([cluster]
  // heartbeat_realtime_priority as this process may use it), 0 for the normal class: the owner
  // runs its own thread at it too, so that nothing busier delays a heartbeat.
  int realtime_priority() const;

 private:
  class Impl;
  explicit HeartbeatTransport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace statesync::node
