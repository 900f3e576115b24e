// The election ranking: which of two nodes is the better primary, and why.
//
// Election (a primary is lost, or nobody is primary), best first:
//   1. more monitored links and services up;
//   2. if override is on: higher priority;
//   3. fresher replication: the higher applied (epoch, seq);
//   4. longer uptime, when the uptimes differ by more than the margin (default 300 s);
//   5. higher priority;
//   6. higher serial number (then node id, so the order is total).
// Two primaries meeting (split brain) use the same order without steps 3 and 4: their histories
// have forked, so neither is "fresher" (the loser's writes since the fork go to quarantine); and
// each side would compare its own current uptime with the other's slightly older one, so near
// the margin both could win. Both sides must reach the same verdict from the same facts.
//
// Thread-safety: pure functions.
#pragma once

#include <string>

#include "statesync/failover/types.h"

namespace statesync::failover {

struct Candidate {
  NodeId id;
  int monitors_up = 0;
  std::uint16_t priority = 100;
  Position applied;
  Millis uptime{0};
  std::string serial;
};

struct RankingOptions {
  bool override_enabled = false;
  Millis uptime_margin{300'000};
  bool compare_freshness = true;  // false when two primaries meet
  bool compare_uptime = true;     // false when two primaries meet
};

struct Ranked {
  int order = 0;          // < 0: a ranks before b; > 0: b before a; never 0 for distinct ids
  std::string criterion;  // e.g. "more monitored links up (2 > 1)"
};

// Compares a and b; `criterion` explains the deciding step from the winner's side.
Ranked Compare(const Candidate& a, const Candidate& b, const RankingOptions& options);

}  // namespace statesync::failover
