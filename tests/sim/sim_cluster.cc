#include "sim_cluster.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

namespace statesync::failover::sim {

struct SimCluster::Node {
  NodeId id;
  ConfiguredRole configured = ConfiguredRole::kSecondary;
  ClusterConfig config;
  DurableState disk;
  DurableState synced_disk;  // what a power loss leaves
  bool last_save_unsynced = false;
  std::uint64_t boots = 0;
  std::uint64_t power_losses = 0;
  bool power_loss_armed = false;  // the armed crash (crash_after_actions) is a power loss
  std::unique_ptr<FailoverCore> core;
  std::mt19937_64 random;
  Millis clock_offset{0};
  double drift_ppm = 0;
  Position applied;
  bool awaiting = false;
  Position await_up_to;
  NodeId following;
  std::map<std::string, bool> monitors;
  bool stop_after_actions = false;
  int crash_after_actions = -1;  // < 0: no crash planned
};

SimCluster::SimCluster(ClusterConfig config, std::vector<std::string> monitors, SimOptions options)
    : config_(std::move(config)),
      monitors_(std::move(monitors)),
      options_(options),
      network_random_(options.seed * 0x9E3779B97F4A7C15ULL + 1) {
  for (std::size_t i = 0; i < config_.members.size(); ++i) {
    auto node = std::make_unique<Node>();
    node->id = config_.members[i].id;
    node->configured = config_.members[i].role;
    node->config = config_;
    node->config.self = node->id;
    node->random.seed(options.seed * 1000003ULL + i);
    for (const std::string& m : monitors_) node->monitors[m] = true;
    ids_.push_back(node->id);
    nodes_.push_back(std::move(node));
  }
  const std::size_t n = nodes_.size();
  link_up_.assign(config_.links.size(),
                  std::vector<std::vector<bool>>(n, std::vector<bool>(n, true)));
}

SimCluster::~SimCluster() = default;

SimCluster::Node& SimCluster::Find(const NodeId& id) {
  return *nodes_[Index(id)];
}
const SimCluster::Node& SimCluster::Find(const NodeId& id) const {
  return *nodes_[Index(id)];
}

std::size_t SimCluster::Index(const NodeId& id) const {
  for (std::size_t i = 0; i < ids_.size(); ++i) {
    if (ids_[i] == id) return i;
  }
  std::fprintf(stderr, "sim: no node '%s'\n", id.c_str());
  std::abort();
}

bool SimCluster::Running(const NodeId& id) const {
  return Find(id).core != nullptr;
}

Instant SimCluster::LocalNow(const Node& node) const {
  const auto drift =
      static_cast<std::int64_t>(static_cast<double>(now_.count()) * node.drift_ppm / 1e6);
  return Instant{now_.count() + drift} + node.clock_offset;
}

void SimCluster::Boot(const NodeId& id) {
  Node& node = Find(id);
  std::mt19937_64* random = &node.random;
  std::string reconciled;
  node.disk = ReconcileWithStore(node.config, node.disk, node.applied, &reconciled);
  node.core =
      std::make_unique<FailoverCore>(node.config, node.disk, [random] { return (*random)(); });
  ++node.boots;
  node.awaiting = false;
  node.following.clear();
  const Instant local = LocalNow(node);
  Execute(node, node.core->ReplicationProgress(local, node.applied, false));
  for (const auto& [name, up] : node.monitors) {
    if (node.core) Execute(node, node.core->MonitorChanged(local, name, up));
  }
}

void SimCluster::Crash(const NodeId& id) {
  Find(id).core.reset();
}

void SimCluster::PowerLoss(const NodeId& id) {
  Node& node = Find(id);
  node.core.reset();
  node.disk = node.synced_disk;
  node.last_save_unsynced = false;
  ++node.power_losses;
}

void SimCluster::Kill(const NodeId& id) {
  Find(id).core.reset();
  for (auto& node : nodes_) {
    if (!node->core || node->id == id) continue;
    for (LinkIndex link = 0; link < link_up_.size(); ++link) {
      if (!link_up_[link][Index(id)][Index(node->id)]) continue;
      Execute(*node, node->core->ConnectionChanged(LocalNow(*node), id, link, false));
    }
  }
}

void SimCluster::CloseConnection(LinkIndex link, const NodeId& a, const NodeId& b) {
  for (const auto& [self, other] : {std::pair{a, b}, std::pair{b, a}}) {
    Node& node = Find(self);
    if (node.core) Execute(node, node.core->ConnectionChanged(LocalNow(node), other, link, false));
  }
}

void SimCluster::CrashAfterActions(const NodeId& id, int actions, bool power_loss) {
  Find(id).crash_after_actions = actions;
  Find(id).power_loss_armed = power_loss;
}

void SimCluster::DisarmCrashes() {
  for (auto& node : nodes_) node->crash_after_actions = -1;
}

void SimCluster::Command(const NodeId& id, OperatorCommand command) {
  Node& node = Find(id);
  if (!node.core) return;
  node.stop_after_actions =
      command == OperatorCommand::kPlannedRestart || command == OperatorCommand::kShutdown;
  Execute(node, node.core->Command(LocalNow(node), command));
  if (node.stop_after_actions) {
    node.core.reset();
    node.stop_after_actions = false;
  }
}

void SimCluster::SetLink(LinkIndex link, const NodeId& from, const NodeId& to, bool up) {
  link_up_.at(link)[Index(from)][Index(to)] = up;
}

void SimCluster::SetAllLinks(bool up) {
  for (auto& link : link_up_) {
    for (auto& row : link) std::fill(row.begin(), row.end(), up);
  }
}

void SimCluster::SetMonitor(const NodeId& id, const std::string& name, bool up) {
  Node& node = Find(id);
  node.monitors[name] = up;
  if (node.core) Execute(node, node.core->MonitorChanged(LocalNow(node), name, up));
}

void SimCluster::Remote(const NodeId& id, const std::vector<ServiceCheck>& checks) {
  Node& node = Find(id);
  if (node.core) Execute(node, node.core->RemoteChecks(LocalNow(node), checks));
}

void SimCluster::ClockJump(const NodeId& id, Millis jump) {
  Find(id).clock_offset += jump;
}
void SimCluster::SetDrift(const NodeId& id, double ppm) {
  Find(id).drift_ppm = ppm;
}

void SimCluster::Run(Millis duration) {
  const Millis end = now_ + duration;
  while (now_ < end) Step();
}

void SimCluster::Step() {
  now_ += options_.step;
  while (!in_flight_.empty() && in_flight_.begin()->first.first <= now_) {
    InFlight m = std::move(in_flight_.begin()->second);
    in_flight_.erase(in_flight_.begin());
    Node& to = Find(m.to);
    if (!to.core) continue;
    Execute(to, to.core->Receive(LocalNow(to), m.from, m.link, m.message));
  }
  for (auto& node : nodes_) {
    if (!node->core) continue;
    Replicate(*node);
    if (!node->core) continue;
    Execute(*node, node->core->Tick(LocalNow(*node)));
  }
}

bool SimCluster::Reachable(const NodeId& from, const NodeId& to) const {
  for (const auto& link : link_up_) {
    if (link[Index(from)][Index(to)]) return true;
  }
  return false;
}

void SimCluster::Replicate(Node& node) {
  const Instant local = LocalNow(node);
  FailoverCore& core = *node.core;
  bool in_sync = false;
  if (core.role() == EffectiveRole::kPrimary) {
    if (core.ready()) {
      node.applied = Position{core.epoch(), node.applied.seq + options_.writes_per_step};
    }
    in_sync = true;
  } else if (!node.following.empty() && node.following != node.id) {
    const Node& source = Find(node.following);
    if (source.core && source.core->role() == EffectiveRole::kPrimary &&
        Reachable(source.id, node.id)) {
      // Catch up at a bounded rate, so that a node that was away needs time to be in sync.
      if (source.applied > node.applied) {
        if (source.applied.seq > node.applied.seq + options_.catch_up_per_step) {
          node.applied =
              Position{source.applied.epoch, node.applied.seq + options_.catch_up_per_step};
        } else {
          node.applied = source.applied;
        }
      }
      in_sync = node.applied == source.applied ||
                (node.applied.epoch == source.applied.epoch &&
                 source.applied.seq <= node.applied.seq + options_.writes_per_step);
    }
  }
  Execute(node, core.ReplicationProgress(local, node.applied, in_sync));
  if (node.awaiting && node.core) {
    node.awaiting = false;
    // Drain what the old primary wrote before it handed over, if it can still be reached.
    for (const auto& other : nodes_) {
      if (other.get() == &node || !other->core || other->applied < node.await_up_to) continue;
      if (Reachable(other->id, node.id)) node.applied = std::max(node.applied, node.await_up_to);
    }
    Execute(node, node.core->StateApplied(local, node.applied));
  }
}

void SimCluster::Execute(Node& node, Actions actions) {
  for (const Action& action : actions) {
    if (!node.core) return;
    if (node.crash_after_actions == 0) {
      node.crash_after_actions = -1;
      if (node.power_loss_armed) {
        PowerLoss(node.id);
      } else {
        node.core.reset();
      }
      return;
    }
    if (node.crash_after_actions > 0) --node.crash_after_actions;
    if (observer_) observer_(now_, node.id, action);
    if (const auto* send = std::get_if<SendMessage>(&action)) {
      Transmit(node.id, *send);
    } else if (const auto* persist = std::get_if<PersistState>(&action)) {
      node.disk = persist->state;
      if (persist->sync || node.last_save_unsynced) {
        node.synced_disk = persist->state;
        node.last_save_unsynced = false;
      } else {
        node.last_save_unsynced = true;
      }
    } else if (const auto* await = std::get_if<AwaitState>(&action)) {
      node.awaiting = true;
      node.await_up_to = await->up_to;
    } else if (const auto* follow = std::get_if<Follow>(&action)) {
      node.following = follow->primary;
    }
  }
}

void SimCluster::Transmit(const NodeId& from, const SendMessage& send) {
  const std::size_t a = Index(from);
  const std::size_t b = Index(send.to);
  const NetworkFaults& f = options_.faults;
  std::uniform_real_distribution<double> chance(0.0, 1.0);
  std::uniform_int_distribution<std::int64_t> delay(f.min_delay.count(), f.max_delay.count());
  for (LinkIndex link = 0; link < link_up_.size(); ++link) {
    if (send.link && *send.link != link) continue;
    if (!link_up_[link][a][b]) continue;
    if (f.drop > 0 && chance(network_random_) < f.drop) continue;
    const int copies = (f.duplicate > 0 && chance(network_random_) < f.duplicate) ? 2 : 1;
    for (int c = 0; c < copies; ++c) {
      const Millis at =
          now_ + Millis{f.max_delay > f.min_delay ? delay(network_random_) : f.min_delay.count()};
      in_flight_.emplace(std::make_pair(at, sent_++), InFlight{from, send.to, link, send.message});
    }
  }
}

std::vector<NodeView> SimCluster::Views() const {
  std::vector<NodeView> views;
  for (const NodeId& id : ids_) views.push_back(View(id));
  return views;
}

NodeView SimCluster::View(const NodeId& id) const {
  const Node& node = Find(id);
  NodeView v;
  v.id = id;
  v.configured = node.configured;
  v.running = node.core != nullptr;
  v.applied = node.applied;
  v.epoch = node.disk.epoch;
  v.boots = node.boots;
  v.power_losses = node.power_losses;
  if (node.core) {
    v.role = node.core->role();
    v.epoch = node.core->epoch();
    v.ready = node.core->ready();
    v.following = node.core->primary();
  }
  return v;
}

std::string SafetyChecker::Check(Millis now, const std::vector<NodeView>& views) {
  const std::string at = " at " + std::to_string(now.count()) + " ms";
  for (const NodeView& v : views) {
    if (!v.running) continue;
    if (v.configured == ConfiguredRole::kWitness && v.role == EffectiveRole::kPrimary) {
      return "witness '" + v.id + "' is primary" + at;
    }
    std::uint64_t& losses = power_losses_[v.id];
    if (losses != v.power_losses) {
      losses = v.power_losses;
      last_epoch_.erase(v.id);  // back to what was synced, which may be older
    }
    auto [it, fresh] = last_epoch_.try_emplace(v.id, v.epoch);
    if (!fresh) {
      if (v.epoch < it->second) {
        return "the epoch of '" + v.id + "' went back from " + std::to_string(it->second) + " to " +
               std::to_string(v.epoch) + at;
      }
      it->second = v.epoch;
    }
    if (v.role == EffectiveRole::kPrimary && v.ready) {
      auto [w, first] = writer_of_epoch_.try_emplace(v.epoch, v.id, v.boots);
      if (!first && w->second.first != v.id) {
        return "two primaries accepted writes in epoch " + std::to_string(v.epoch) + ": '" +
               w->second.first + "' and '" + v.id + "'" + at;
      }
      if (!first && w->second.second != v.boots) {
        return "'" + v.id + "' accepted writes in epoch " + std::to_string(v.epoch) +
               " in two of its runs (boots " + std::to_string(w->second.second) + " and " +
               std::to_string(v.boots) + ")" + at;
      }
    }
  }
  return "";
}

std::string CheckOnePrimary(const std::vector<NodeView>& views) {
  std::vector<const NodeView*> primaries;
  for (const NodeView& v : views) {
    if (v.running && v.role == EffectiveRole::kPrimary) primaries.push_back(&v);
  }
  if (primaries.size() != 1) {
    return std::to_string(primaries.size()) + " primaries";
  }
  const NodeView& p = *primaries.front();
  if (!p.ready) return "primary '" + p.id + "' is not ready";
  for (const NodeView& v : views) {
    if (!v.running || &v == &p || v.configured == ConfiguredRole::kWitness) continue;
    if (v.role != EffectiveRole::kSecondary || v.following != p.id) {
      return "'" + v.id + "' is " + std::string(RoleName(v.role)) + " following '" + v.following +
             "', not a secondary of '" + p.id + "'";
    }
  }
  return "";
}

}  // namespace statesync::failover::sim
