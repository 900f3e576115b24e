// Node: one statesync node, as statesyncd runs it. It owns the data directory, the failover
// core, the heartbeat links, the data plane (store, table, replication, ingest), the takeover
// hook and the control socket, and runs the event loop that joins them.
//
// The event loop (the thread that calls Run) is the failover core's only owner. Every 10 ms it
// ticks the core, and it feeds it what arrived on the heartbeat links, the data plane's
// progress and operator commands; it carries out the core's actions in order: a PersistState
// is on disk before the next action runs (so a message of a new epoch never leaves before the
// epoch is durable: a lone promotion's save may leave its sync to the background, because the
// epoch was reserved on the disk before), then messages go out, then the data plane and the
// hook are told. Nothing there waits for RocksDB or a peer: the data plane works on its own
// thread and reports back.
//
// Threads: the event loop; ss-data (DataPlane); ss-control and one per control connection;
// ss-hook; ss-state-sync (DataDir); the replication adapters' and ZeroMQ's own.
//
// Thread-safety: Open and Run from one thread; RequestStop from any thread (a signal-waiting
// thread, a control connection).
#pragma once

#include <chrono>
#include <memory>

#include "statesync/common/status.h"
#include "statesync/node/config.h"

namespace statesync::node {

class Node {
 public:
  // Takes the data directory's lock, reads the core's state, opens and loads the store, binds
  // the heartbeat, ingest and control sockets. Errors name what failed (a held lock names the
  // holder's pid).
  static Result<std::unique_ptr<Node>> Open(NodeConfig config);
  ~Node();
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;

  // Runs the event loop until RequestStop; then stops everything in order. A non-OK status
  // says why the node could not go on (its state could not be saved, say).
  Status Run();
  // A planned restart tells the peers to hold off for `holdoff` (0: the cluster's holdoff_max)
  // before the node stops; otherwise the node stops and the peers see it go.
  void RequestStop(bool planned, std::chrono::milliseconds holdoff = std::chrono::milliseconds{0});

 private:
  class Impl;
  explicit Node(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace statesync::node
