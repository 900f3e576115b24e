// SimCluster: a whole cluster of FailoverCores on one thread, over a simulated network and with
// simulated time. The scenario runner drives it with scripted commands; the seeded simulator
// drives it with random faults. Every random choice comes from the seed, so a seed or a script
// replays exactly.
//
// The network delivers each message after a delay, per heartbeat link and per direction; a link
// direction can be cut; messages can be dropped, duplicated and (through random delays)
// reordered. Each node has its own clock: an offset, a drift, and jumps on request. A node can
// crash (its core and everything not persisted is gone), stop through a planned restart or a
// shutdown, and boot again from what it persisted. Replication is modelled as positions: a
// ready primary writes `writes_per_step` records per step, and a secondary that hears its
// primary copies the primary's position.
//
// Thread-safety: none.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "statesync/failover/core.h"

namespace statesync::failover::sim {

struct NetworkFaults {
  double drop = 0;       // probability that one message on one link is lost
  double duplicate = 0;  // probability that it arrives twice
  Millis min_delay{1};
  Millis max_delay{1};
};

struct SimOptions {
  Millis step{10};
  std::uint64_t seed = 1;
  NetworkFaults faults;
  std::uint64_t writes_per_step = 1;
  std::uint64_t catch_up_per_step = 5;  // how fast a secondary that fell behind catches up
};

struct NodeView {
  NodeId id;
  ConfiguredRole configured = ConfiguredRole::kSecondary;
  bool running = false;
  EffectiveRole role = EffectiveRole::kOff;
  Epoch epoch = 0;
  bool ready = false;
  Position applied;
  NodeId following;
  std::uint64_t boots = 0;         // how many times it started (Boot)
  std::uint64_t power_losses = 0;  // how many of its stops lost what was not on the disk
};

class SimCluster {
 public:
  // Called for every action a core returns, before the cluster carries it out.
  using Observer = std::function<void(Millis now, const NodeId& node, const Action& action)>;

  // `config.self` is ignored: each node gets the same config with its own id. `monitors` are
  // the names every node monitors; they start up.
  SimCluster(ClusterConfig config, std::vector<std::string> monitors, SimOptions options);
  ~SimCluster();

  void SetObserver(Observer observer) { observer_ = std::move(observer); }
  NetworkFaults& faults() { return options_.faults; }

  void Boot(const NodeId& id);   // start, or start again from what the node persisted
  void Crash(const NodeId& id);  // the process dies at once
  // The host loses power: the process dies and the disk keeps only what was synced, as the
  // adapter does it (DataDir: a save not synced is synced by the next one).
  void PowerLoss(const NodeId& id);
  // The process dies and its kernel closes its connections: every running node that can reach
  // it on a link sees its connection to it close there (ConnectionChanged), at once.
  void Kill(const NodeId& id);
  // The connection between `a` and `b` on `link` closes, seen by both (a reset on one link).
  void CloseConnection(LinkIndex link, const NodeId& a, const NodeId& b);
  // The process dies after carrying out `actions` more actions: in the middle of a list, so
  // that whatever the core handed out after those is never done ("persist before acting").
  void CrashAfterActions(const NodeId& id, int actions, bool power_loss = false);
  void DisarmCrashes();  // forget every CrashAfterActions not yet fired
  // PlannedRestart and Shutdown stop the node once its actions are carried out.
  void Command(const NodeId& id, OperatorCommand command);
  void SetLink(LinkIndex link, const NodeId& from, const NodeId& to, bool up);
  void SetAllLinks(bool up);
  void SetMonitor(const NodeId& id, const std::string& name, bool up);
  void Remote(const NodeId& id, const std::vector<ServiceCheck>& checks);
  void ClockJump(const NodeId& id, Millis jump);
  void SetDrift(const NodeId& id, double ppm);

  void Run(Millis duration);  // in steps of options.step
  void Step();

  Millis now() const { return now_; }
  std::vector<NodeView> Views() const;
  NodeView View(const NodeId& id) const;
  const std::vector<NodeId>& ids() const { return ids_; }
  bool Running(const NodeId& id) const;

 private:
  struct Node;
  struct InFlight {
    NodeId from;
    NodeId to;
    LinkIndex link = 0;
    Message message;
  };

  Node& Find(const NodeId& id);
  const Node& Find(const NodeId& id) const;
  std::size_t Index(const NodeId& id) const;
  Instant LocalNow(const Node& node) const;
  void Execute(Node& node, Actions actions);
  void Transmit(const NodeId& from, const SendMessage& send);
  void Replicate(Node& node);
  bool Reachable(const NodeId& from, const NodeId& to) const;  // on any link, that direction

  ClusterConfig config_;
  std::vector<std::string> monitors_;
  SimOptions options_;
  std::vector<NodeId> ids_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::vector<std::vector<bool>>> link_up_;  // [link][from][to]
  std::multimap<std::pair<Millis, std::uint64_t>, InFlight> in_flight_;
  std::uint64_t sent_ = 0;
  std::mt19937_64 network_random_;
  Millis now_{0};
  Observer observer_;
};

// The safety properties, checked after every step:
//   - never two primaries accepting writes (ready) in the same epoch, at the same time or ever,
//     nor one node in two of its runs (a power loss must not make it take an epoch again);
//   - a node's epoch never goes backwards, across restarts too (a power loss may take it back
//     to what was synced);
//   - a witness is never primary.
class SafetyChecker {
 public:
  // Returns what broke, or an empty string.
  std::string Check(Millis now, const std::vector<NodeView>& views);

 private:
  std::map<Epoch, std::pair<NodeId, std::uint64_t>> writer_of_epoch_;  // node and its boots
  std::map<NodeId, Epoch> last_epoch_;
  std::map<NodeId, std::uint64_t> power_losses_;
};

// Liveness: exactly one ready primary, and every other running data node a secondary that
// follows it. Returns what is missing, or an empty string.
std::string CheckOnePrimary(const std::vector<NodeView>& views);

}  // namespace statesync::failover::sim
