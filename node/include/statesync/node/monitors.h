// Monitors: what the failover core ranks nodes by and fails a primary over, seen from here.
//
// - LinkMonitor reads whether this node's monitored interfaces are up (administratively up and
//   with a carrier: IFF_UP and IFF_RUNNING) with one ioctl each, which does not block, and says
//   which changed since it last looked. An interface that does not exist counts as down.
// - ProbeServices runs one round of remote service checks against a host: every check at once,
//   each given the timeout (a command check is stopped at it).
// - RemoteMonitor runs a round every check interval on its own thread (ss-checks) against the
//   peer the event loop names, keeps each check's state (FAILED after check_fail_after failed
//   rounds in a row, OK after one that passed) and reports each round once every enabled check
//   has a state.
//
// Thread-safety: a LinkMonitor is used by one thread. ProbeServices may run on several threads
// at once. RemoteMonitor::SetTarget may be called from any thread; reports come on ss-checks and
// must not block.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "statesync/common/pi_mutex.h"
#include "statesync/failover/types.h"
#include "statesync/node/config.h"

namespace statesync::node {

struct LinkState {
  std::string name;
  bool up = false;
};

class LinkMonitor {
 public:
  explicit LinkMonitor(std::vector<std::string> links);
  ~LinkMonitor();
  LinkMonitor(const LinkMonitor&) = delete;
  LinkMonitor& operator=(const LinkMonitor&) = delete;

  // The links whose state differs from the previous call's (every link on the first call).
  std::vector<LinkState> Poll();
  // Every link as last read.
  std::vector<LinkState> Current() const;

 private:
  bool IsUp(const std::string& name) const;

  int fd_ = -1;  // any socket will do for SIOCGIFFLAGS
  std::vector<std::string> links_;
  std::vector<std::optional<bool>> last_;
};

struct ProbeResult {
  std::string name;
  failover::ServiceState state = failover::ServiceState::kFailed;  // kDisabled if not enabled
  std::string detail;  // "connected", "HTTP 200", "connect to 10.0.0.2:80: Connection refused"
};

// One round of `checks` against `host` (an address or a name), in the order of `checks`.
std::vector<ProbeResult> ProbeServices(const std::vector<RemoteCheckConfig>& checks,
                                       const std::string& host, std::chrono::milliseconds timeout);

class RemoteMonitor {
 public:
  struct Round {
    std::string peer;                            // the member checked
    std::string host;                            // its service address
    std::vector<failover::ServiceCheck> checks;  // the states, after check_fail_after
    std::vector<ProbeResult> probes;             // this round's raw results
  };
  using Report = std::function<void(Round)>;

  // Runs nothing until SetTarget names a peer; with no [[remote_check]], never.
  RemoteMonitor(const NodeConfig& config, Report report);
  ~RemoteMonitor();
  RemoteMonitor(const RemoteMonitor&) = delete;
  RemoteMonitor& operator=(const RemoteMonitor&) = delete;

  // The peer to check, and its address; an empty peer stops checking. A new target starts its
  // checks from no state, so a round about the previous target is never reported for it.
  void SetTarget(const std::string& peer, const std::string& host);

 private:
  void Loop();

  const std::vector<RemoteCheckConfig> checks_;
  const std::chrono::milliseconds interval_;
  const std::chrono::milliseconds timeout_;
  const int fail_after_;
  const Report report_;
  // Taken by the event loop, which runs in SCHED_FIFO where permitted: it lends priority.
  PriorityInheritanceMutex mu_;
  std::condition_variable_any cv_;
  std::string peer_;
  std::string host_;
  std::uint64_t target_version_ = 0;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace statesync::node
