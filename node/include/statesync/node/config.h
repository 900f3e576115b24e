// NodeConfig: a node's configuration, read from TOML (statesyncd --config FILE). Parsing checks
// every key: an unknown key, a value of the wrong type or out of range, and a cluster the
// failover core would refuse are errors that name the key, its line and the reason, all of them
// at once (statesyncd --check-config). DefaultConfigText() is the commented file
// `statesyncd --print-config` prints: every key with its default.
//
// Thread-safety: plain values and pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "statesync/common/status.h"
#include "statesync/failover/types.h"

namespace statesync::node {

enum class SyncMode : std::uint8_t { kAsync, kSync };
enum class OnSyncTimeout : std::uint8_t { kBlock, kFail };
// How a remote service check probes a peer: a TCP connection, an HTTP GET answered 2xx or 3xx,
// a SIP OPTIONS over UDP answered at all, or the operator's command exiting 0.
enum class CheckKind : std::uint8_t { kTcp, kHttp, kSip, kCommand };

// [[remote_check]]: one service of the peers that remote service monitoring checks.
struct RemoteCheckConfig {
  std::string name;  // as the alerts and the status show it: "SIP_UDP", "HTTP"
  CheckKind kind = CheckKind::kTcp;
  std::uint16_t port = 0;  // tcp, http, sip
  std::string path = "/";  // http
  std::string command;     // command: gets the peer's address as "$1" and STATESYNC_PEER_HOST
  bool enabled = true;     // false: reported DISABLED, never probed
};

struct MemberConfig {
  std::string id;
  failover::ConfiguredRole role = failover::ConfiguredRole::kSecondary;
  std::uint16_t priority = 100;
  std::string serial;  // the ranking's last tie-breaker; empty: the id
  // Where the member's primary side listens for its subordinates (a data node's; a witness has
  // none), and one heartbeat endpoint per heartbeat link, in the order of `links`.
  std::string replication;
  std::vector<std::string> heartbeat;
  // The address remote service checks of this member aim at; empty: the host of `replication`.
  std::string service_address;
  std::string ServiceAddress() const;
};

struct NodeConfig {
  // [node]
  std::string id;
  std::filesystem::path data_dir = "/var/lib/statesync";
  std::filesystem::path control_socket;  // empty: <data_dir>/control.sock
  // fsync the store's writes: they survive a power loss, at the disk's flush latency on every
  // write. (The HA state is always synced.)
  bool sync_writes = false;
  // [cluster]
  std::string cluster = "statesync";  // messages of another cluster are refused
  std::chrono::milliseconds heartbeat_interval{100};
  int lost_threshold = 3;
  failover::OnFailure on_failure = failover::OnFailure::kBecomeSecondary;
  bool override_enabled = false;
  std::chrono::seconds holdoff_max{300};
  std::chrono::seconds preempt_delay{30};
  std::chrono::seconds uptime_margin{300};
  std::vector<std::string> links{"ha1"};
  // -1: SCHED_FIFO 20 where permitted; 0: normal class; 1-99. Above io_realtime_priority.
  int heartbeat_realtime_priority = -1;
  // [[member]], self included, in the same order on every node.
  std::vector<MemberConfig> members;
  // [replication]
  SyncMode sync_mode = SyncMode::kAsync;
  int min_acks = 1;
  std::chrono::milliseconds sync_timeout{1000};
  OnSyncTimeout on_sync_timeout = OnSyncTimeout::kBlock;
  int io_realtime_priority = -1;  // -1: SCHED_FIFO 10 where permitted; 0: normal class; 1-99
  std::uint64_t backlog_max_bytes = 4ull << 30;
  std::chrono::seconds backlog_max_age{3600};
  // [monitor]: this node's monitored links (interfaces: up while up with a carrier), read every
  // heartbeat interval, and the pace of remote service monitoring.
  std::vector<std::string> monitored_links;
  std::chrono::milliseconds check_interval{1000};
  std::chrono::milliseconds check_timeout{500};
  int check_fail_after = 3;  // failed rounds in a row before a check counts as FAILED
  // [[remote_check]]
  std::vector<RemoteCheckConfig> remote_checks;
  // [ingest]
  std::string ingest_endpoint;  // empty: ipc://<data_dir>/ingest.sock
  // [hooks]
  std::string takeover_hook;  // empty: none
  std::chrono::seconds hook_timeout{10};

  const MemberConfig& self() const;  // REQUIRES: a config ParseConfig accepted
  const MemberConfig* FindMember(std::string_view member_id) const;  // nullptr if not a member
  // How long a promotion waits for the position the old primary handed over, and a primary
  // that hands over streams the tail to the node taking over, while nothing of it arrives: a
  // few loss times, at least 1 s. While records arrive both wait on, up to HandOverLimit() in
  // all: no primary takes writes meanwhile, and past it the tail is left behind.
  std::chrono::milliseconds HandOverWait() const;
  std::chrono::milliseconds HandOverLimit() const;  // 30 s, or HandOverWait() if longer
  std::filesystem::path ControlSocket() const;
  std::string IngestEndpoint() const;
  // The cluster's id on the wire: a hash of `cluster`.
  std::uint64_t ClusterId() const;
  // The failover core's view: members, links, timers and policies.
  failover::ClusterConfig ToClusterConfig() const;
};

// Parses and checks a configuration. `source` names it in messages ("node.toml"). The error's
// message lists every problem, one a line, as "source:LINE: [section] key: reason".
Result<NodeConfig> ParseConfig(std::string_view text, std::string_view source);
Result<NodeConfig> LoadConfig(const std::filesystem::path& file);

// The commented defaults (a two-node cluster as the example members); ParseConfig accepts it.
std::string DefaultConfigText();

std::string_view SyncModeName(SyncMode mode);            // "async", "sync"
std::string_view OnSyncTimeoutName(OnSyncTimeout what);  // "block", "fail"
std::string_view CheckKindName(CheckKind kind);          // "tcp", "http", "sip", "command"

}  // namespace statesync::node
