// The seeded fault simulator (in the manner of TigerBeetle's VOPR): one seed builds a cluster of
// 2-5 nodes (sometimes with a witness), runs the real FailoverCore on a simulated network with
// drops, duplicates, delays, reordering, cut links (one way or both), partitions, crashes,
// planned restarts, clock jumps and drift, and checks the safety properties after every step.
// Then the faults stop and it checks liveness: exactly one ready primary that every other data
// node follows, within the bound, and still so at the end.
//
//   failover_sim [--first S] [--seeds N] [--seed X] [--verbose]
//
// A failure prints its seed and the command that replays it; the exit status is 1.
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>

#include "sim_cluster.h"

namespace statesync::failover::sim {
namespace {

constexpr Millis kFaultPhase{12'000};
constexpr Millis kLivenessBound{30'000};  // after the faults stop
constexpr Millis kStableFor{3'000};       // and it must still hold this long after

struct Pending {
  Millis at;
  NodeId node;
};

struct Outcome {
  std::string failure;  // empty: the seed passed
  int faults = 0;
  Millis converged_after{0};
};

Outcome RunSeed(std::uint64_t seed, bool verbose) {
  std::mt19937_64 rng(seed);
  auto uniform = [&](std::int64_t lo, std::int64_t hi) {
    return std::uniform_int_distribution<std::int64_t>(lo, hi)(rng);
  };
  auto chance = [&](double p) { return std::uniform_real_distribution<double>(0, 1)(rng) < p; };

  const int data_nodes = static_cast<int>(uniform(2, 4));
  const bool witness = data_nodes >= 2 && chance(0.5);
  ClusterConfig config;
  for (int i = 0; i < data_nodes; ++i) {
    Member m;
    m.id = "n" + std::to_string(i + 1);
    m.role = i == 0 ? ConfiguredRole::kPrimary : ConfiguredRole::kSecondary;
    m.priority = static_cast<std::uint16_t>(100 + 50 * uniform(0, 2));
    m.serial = "SN" + std::to_string(uniform(1000, 9999));
    config.members.push_back(m);
  }
  if (witness) config.members.push_back(Member{"w", ConfiguredRole::kWitness, 0, "W"});
  config.links =
      chance(0.5) ? std::vector<std::string>{"ha1"} : std::vector<std::string>{"ha1", "ha2"};
  config.override_enabled = chance(0.3);
  const OnFailure policies[] = {OnFailure::kRestoreRole, OnFailure::kBecomeSecondary,
                                OnFailure::kSwitchOff};
  config.on_failure = policies[uniform(0, 2)];
  config.holdoff_max = Millis{3'000};
  config.preempt_delay = Millis{1'000};
  config.flap_window = Millis{5'000};
  config.self = config.members.front().id;

  SimOptions options;
  options.seed = seed;
  options.faults.drop = std::uniform_real_distribution<double>(0, 0.3)(rng);
  options.faults.duplicate = std::uniform_real_distribution<double>(0, 0.1)(rng);
  options.faults.min_delay = Millis{1};
  // Mostly prompt, sometimes far beyond the heartbeat interval and the detection window, so
  // that heartbeats reorder and controls and votes arrive after the state they were sent in.
  options.faults.max_delay = Millis{chance(0.2) ? uniform(100, 500) : uniform(1, 60)};
  SimCluster cluster(config, {"port1", "port2"}, options);
  const std::vector<NodeId>& ids = cluster.ids();
  const auto pick = [&]() -> const NodeId& { return ids[uniform(0, ids.size() - 1)]; };
  if (verbose) {
    std::printf("seed %llu: %d data nodes%s, %zu links, override %s, on_failure %s, drop %.2f\n",
                static_cast<unsigned long long>(seed), data_nodes, witness ? " + witness" : "",
                config.links.size(), config.override_enabled ? "on" : "off",
                std::string(OnFailureName(config.on_failure)).c_str(), options.faults.drop);
    cluster.SetObserver([](Millis now, const NodeId& node, const Action& action) {
      if (const auto* p = std::get_if<PersistState>(&action)) {
        std::printf(
            "%8.3f %-3s   persist epoch %llu role %s%s vote %llu:%s boots %llu reserved %llu%s\n",
            now.count() / 1000.0, node.c_str(), static_cast<unsigned long long>(p->state.epoch),
            std::string(RoleName(p->state.role)).c_str(),
            p->state.planned_stop ? " (planned stop)" : "",
            static_cast<unsigned long long>(p->state.voted_round), p->state.voted_for.c_str(),
            static_cast<unsigned long long>(p->state.boots),
            static_cast<unsigned long long>(p->state.reserved_epoch),
            p->sync ? "" : " (not synced)");
      }
      if (const auto* rc = std::get_if<RoleChange>(&action)) {
        std::printf("%8.3f %-3s %s -> %s (epoch %llu): %s\n", now.count() / 1000.0, node.c_str(),
                    std::string(RoleName(rc->from)).c_str(), std::string(RoleName(rc->to)).c_str(),
                    static_cast<unsigned long long>(rc->epoch), rc->reason.c_str());
      }
    });
  }
  for (const NodeId& id : ids) {
    cluster.SetDrift(id, static_cast<double>(uniform(-500, 500)));
    cluster.Boot(id);
  }

  SafetyChecker safety;
  Outcome outcome;
  std::vector<Pending> reboots;
  const auto check = [&]() {
    if (outcome.failure.empty()) outcome.failure = safety.Check(cluster.now(), cluster.Views());
    return outcome.failure.empty();
  };

  // Phase 1: faults.
  while (cluster.now() < kFaultPhase) {
    cluster.Step();
    if (!check()) return outcome;
    for (auto it = reboots.begin(); it != reboots.end();) {
      if (it->at <= cluster.now()) {
        if (!cluster.Running(it->node)) cluster.Boot(it->node);
        it = reboots.erase(it);
      } else {
        ++it;
      }
    }
    if (!chance(0.012)) continue;  // about one fault a second
    ++outcome.faults;
    const NodeId& node = pick();
    switch (uniform(0, 11)) {
      case 0:
        if (cluster.Running(node)) {
          if (chance(0.5)) {
            cluster.Crash(node);
          } else {
            cluster.PowerLoss(node);
          }
          reboots.push_back({cluster.now() + Millis{uniform(200, 4'000)}, node});
        }
        break;
      case 1:
        if (cluster.Running(node)) {
          cluster.Command(node, OperatorCommand::kPlannedRestart);
          reboots.push_back({cluster.now() + Millis{uniform(200, 5'000)}, node});
        }
        break;
      case 2: {  // one direction of one link
        const NodeId& other = pick();
        if (other != node) {
          cluster.SetLink(static_cast<LinkIndex>(uniform(0, config.links.size() - 1)), node, other,
                          false);
        }
        break;
      }
      case 3: {  // a partition: every link between two groups
        std::vector<bool> side(ids.size());
        for (std::size_t i = 0; i < ids.size(); ++i) side[i] = chance(0.5);
        for (LinkIndex l = 0; l < config.links.size(); ++l) {
          for (std::size_t a = 0; a < ids.size(); ++a) {
            for (std::size_t b = 0; b < ids.size(); ++b) {
              if (side[a] != side[b]) cluster.SetLink(l, ids[a], ids[b], false);
            }
          }
        }
        break;
      }
      case 4:
      case 5:
        cluster.SetAllLinks(true);
        break;
      case 6:
        cluster.ClockJump(node, Millis{uniform(-5'000, 5'000)});
        break;
      case 7:
        cluster.SetMonitor(node, chance(0.5) ? "port1" : "port2", chance(0.5));
        break;
      case 8:
        if (cluster.Running(node) && chance(0.5)) {
          const OperatorCommand commands[] = {
              OperatorCommand::kSetPrimary, OperatorCommand::kSetSecondary,
              OperatorCommand::kSetOff, OperatorCommand::kRestoreRole, OperatorCommand::kShutdown};
          const OperatorCommand c = commands[uniform(0, 4)];
          cluster.Command(node, c);
          if (c == OperatorCommand::kShutdown) {
            reboots.push_back({cluster.now() + Millis{uniform(200, 5'000)}, node});
          }
        }
        break;
      case 9: {  // remote service monitoring: what `node` sees of its primary's services
        const ServiceState sip = chance(0.6) ? ServiceState::kFailed : ServiceState::kOk;
        cluster.Remote(node, {{"SIP_UDP", sip}, {"HTTP", ServiceState::kDisabled}});
        break;
      }
      case 10:  // dies part-way through the next list of actions it carries out
        if (cluster.Running(node)) {
          cluster.CrashAfterActions(node, static_cast<int>(uniform(0, 3)), chance(0.5));
          reboots.push_back({cluster.now() + Millis{uniform(200, 4'000)}, node});
        }
        break;
      case 11:
        cluster.Remote(node, {{"SIP_UDP", ServiceState::kOk}, {"HTTP", ServiceState::kOk}});
        break;
    }
  }

  // Phase 2: the faults stop. Every link heals, every node runs, the network is clean.
  cluster.SetAllLinks(true);
  cluster.faults() = NetworkFaults{};
  cluster.DisarmCrashes();  // one armed in the last moments of phase 1 would fire in phase 2
  for (const NodeId& id : ids) {
    cluster.SetMonitor(id, "port1", true);
    cluster.SetMonitor(id, "port2", true);
    if (!cluster.Running(id)) cluster.Boot(id);
  }
  const Millis calm_since = cluster.now();
  std::optional<Millis> holding_since;
  const std::vector<Millis> operator_rounds = {Millis{1'000}, Millis{5'000}, Millis{10'000}};
  while (cluster.now() - calm_since < kLivenessBound + kStableFor) {
    cluster.Step();
    if (!check()) return outcome;
    // Remote checks pass again, and the operator brings back what waits for one (switch_off,
    // set-off, FAILED) a few times in the first seconds.
    const Millis calm = cluster.now() - calm_since;
    if (calm == Millis{500}) {
      for (const NodeId& id : ids) {
        cluster.Remote(id, {{"SIP_UDP", ServiceState::kOk}, {"HTTP", ServiceState::kOk}});
      }
    }
    for (Millis round : operator_rounds) {
      if (calm != round) continue;
      for (const NodeView& v : cluster.Views()) {
        if (v.running && (v.role == EffectiveRole::kOff || v.role == EffectiveRole::kFailed)) {
          cluster.Command(v.id, OperatorCommand::kRestoreRole);
        }
      }
    }
    const bool one = CheckOnePrimary(cluster.Views()).empty();
    if (!one) {
      holding_since.reset();
    } else if (!holding_since) {
      holding_since = cluster.now();
    }
  }
  if (!holding_since || *holding_since - calm_since > kLivenessBound) {
    outcome.failure = "liveness: no stable single primary within " +
                      std::to_string(kLivenessBound.count() / 1000) +
                      " s after the faults stopped: " + CheckOnePrimary(cluster.Views());
    if (outcome.failure.back() == ' ') outcome.failure += "(it held only briefly)";
    return outcome;
  }
  outcome.converged_after = *holding_since - calm_since;
  return outcome;
}

// An invariant broken inside the core aborts: say which seed did it.
volatile std::uint64_t current_seed_for_abort = 0;  // abort() is raised on this thread
void PrintSeedOnAbort(int) {
  char text[96];
  const int n = std::snprintf(
      text, sizeof text, "failover_sim: aborted in seed %llu; replay: failover_sim --seed %llu\n",
      static_cast<unsigned long long>(current_seed_for_abort),
      static_cast<unsigned long long>(current_seed_for_abort));
  if (n > 0) (void)!write(2, text, static_cast<std::size_t>(n));
  std::signal(SIGABRT, SIG_DFL);
  std::abort();
}

}  // namespace
}  // namespace statesync::failover::sim

int main(int argc, char** argv) {
  using namespace statesync::failover::sim;
  std::uint64_t first = 1;
  std::uint64_t count = 100;
  bool verbose = false;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--first" || arg == "--seeds" || arg == "--seed") && i + 1 < argc) {
      const std::uint64_t value = std::strtoull(argv[++i], nullptr, 10);
      if (arg == "--first") first = value;
      if (arg == "--seeds") count = value;
      if (arg == "--seed") {
        first = value;
        count = 1;
        verbose = true;
      }
    } else if (arg == "--verbose") {
      verbose = true;
    } else {
      std::fprintf(stderr,
                   "usage: failover_sim [--first S] [--seeds N] [--seed X] [--verbose]\n"
                   "  runs seeds S..S+N-1 (default 1..100); --seed X replays one seed with its "
                   "role changes printed\n");
      return arg == "--help" || arg == "-h" ? 0 : 2;
    }
  }
  std::signal(SIGABRT, PrintSeedOnAbort);
  if (verbose) std::setvbuf(stdout, nullptr, _IOLBF, 0);  // all of the trace before an abort
  const auto started = std::chrono::steady_clock::now();
  std::uint64_t failures = 0;
  long long converged_max_ms = 0;
  long long faults = 0;
  for (std::uint64_t seed = first; seed < first + count; ++seed) {
    current_seed_for_abort = seed;
    const Outcome o = RunSeed(seed, verbose);
    faults += o.faults;
    if (!o.failure.empty()) {
      ++failures;
      std::printf("FAILED seed %llu: %s\n  replay: failover_sim --seed %llu\n",
                  static_cast<unsigned long long>(seed), o.failure.c_str(),
                  static_cast<unsigned long long>(seed));
    } else {
      converged_max_ms = std::max<long long>(converged_max_ms, o.converged_after.count());
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf(
      "failover_sim: %llu seeds (%llu..%llu), %lld faults injected, %llu failed, "
      "slowest convergence %.1f s after the faults stopped, %.1f s\n",
      static_cast<unsigned long long>(count), static_cast<unsigned long long>(first),
      static_cast<unsigned long long>(first + count - 1), faults,
      static_cast<unsigned long long>(failures), converged_max_ms / 1000.0, seconds);
  return failures == 0 ? 0 : 1;
}
