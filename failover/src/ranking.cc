#include "statesync/failover/ranking.h"

#include <string>

namespace statesync::failover {
namespace {

std::string Pair(auto winner, auto loser) {
  return "(" + std::to_string(winner) + " > " + std::to_string(loser) + ")";
}

// a wins when sign < 0.
Ranked Decide(int sign, std::string criterion) {
  return {sign, std::move(criterion)};
}

}  // namespace

Ranked Compare(const Candidate& a, const Candidate& b, const RankingOptions& options) {
  if (a.monitors_up != b.monitors_up) {
    const bool a_wins = a.monitors_up > b.monitors_up;
    return Decide(a_wins ? -1 : 1, "more monitored links and services up " +
                                       Pair(a_wins ? a.monitors_up : b.monitors_up,
                                            a_wins ? b.monitors_up : a.monitors_up));
  }
  if (options.override_enabled && a.priority != b.priority) {
    const bool a_wins = a.priority > b.priority;
    return Decide(a_wins ? -1 : 1,
                  "higher priority with override on " +
                      Pair(a_wins ? a.priority : b.priority, a_wins ? b.priority : a.priority));
  }
  if (options.compare_freshness && a.applied != b.applied) {
    const bool a_wins = a.applied > b.applied;
    const Position& w = a_wins ? a.applied : b.applied;
    const Position& l = a_wins ? b.applied : a.applied;
    return Decide(a_wins ? -1 : 1, "fresher replication " + ToString(w) + " > " + ToString(l));
  }
  const Millis uptime_gap = a.uptime > b.uptime ? a.uptime - b.uptime : b.uptime - a.uptime;
  if (options.compare_uptime && uptime_gap > options.uptime_margin) {
    const bool a_wins = a.uptime > b.uptime;
    return Decide(a_wins ? -1 : 1,
                  "longer uptime by " + std::to_string(uptime_gap.count() / 1000) + " s (margin " +
                      std::to_string(options.uptime_margin.count() / 1000) + " s)");
  }
  if (a.priority != b.priority) {
    const bool a_wins = a.priority > b.priority;
    return Decide(a_wins ? -1 : 1, "higher priority " + Pair(a_wins ? a.priority : b.priority,
                                                             a_wins ? b.priority : a.priority));
  }
  if (a.serial != b.serial) {
    const bool a_wins = a.serial > b.serial;
    return Decide(a_wins ? -1 : 1, "higher serial number ('" + (a_wins ? a.serial : b.serial) +
                                       "' > '" + (a_wins ? b.serial : a.serial) + "')");
  }
  if (a.id == b.id) return {0, "the same node"};
  const bool a_wins = a.id > b.id;
  return Decide(a_wins ? -1 : 1, "higher node id, all else equal");
}

}  // namespace statesync::failover
