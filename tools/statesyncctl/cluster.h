// A local cluster: real statesyncd processes on 127.0.0.1, each with a generated,
// self-contained config under DIR/<id>/ (running `statesyncd --config DIR/<id>/statesyncd.toml`
// again restarts that node). DIR/cluster.json lists the nodes.
//
// Ports: node k (0-based, witness last) uses base+10k for replication and base+10k+1, +2 for its
// two heartbeat links ("ha1", "ha2").
//
// Thread-safety: plain functions; one caller at a time per DIR.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "statesync/common/status.h"

namespace statesync::ctl {

struct ClusterSpec {
  int nodes = 2;  // data nodes: the first configured primary, the others secondary
  bool witness = false;
  std::filesystem::path dir;
  int base_port = 7400;
  std::string sync_mode = "async";  // async | sync
  int heartbeat_interval_ms = 100;
  int lost_threshold = 3;
  std::string takeover_hook;  // empty: none
};

struct ClusterNode {
  std::string id;
  std::string configured_role;
  std::filesystem::path config;
  std::filesystem::path socket;
  std::filesystem::path log;
  std::filesystem::path data_dir;
};

// Writes the configs and DIR/cluster.json (refuses a DIR that already holds a running cluster).
Result<std::vector<ClusterNode>> WriteCluster(const ClusterSpec& spec);
// The nodes DIR/cluster.json lists.
Result<std::vector<ClusterNode>> ReadCluster(const std::filesystem::path& dir);
// The pid of the statesyncd that holds the node's data directory now, if one does.
std::optional<pid_t> RunningPid(const ClusterNode& node);
// Starts statesyncd on the node's config, detached (its own session), its output to the node's
// log. Returns its pid.
Result<pid_t> StartNode(const ClusterNode& node);
// Waits until the node answers on its control socket, or the process has exited (its log's
// tail is in the error), or `limit` passes.
Status WaitAnswering(const ClusterNode& node, pid_t pid, std::chrono::milliseconds limit);
// Stops every running node (SIGINT, then SIGKILL after `grace`). Returns how many it stopped.
int StopCluster(const std::vector<ClusterNode>& nodes, std::chrono::milliseconds grace);

}  // namespace statesync::ctl
