// DataDir: a node's data directory, and what the node keeps there besides the store.
//   LOCK        an exclusive lock (flock) held while the node runs, with the holder's pid in
//               it: two daemons cannot share a directory, and the refusal names the other one
//   ha-state    the failover core's DurableState, in two checksummed slots: a save overwrites
//               the older one and syncs its data (about a millisecond, with no metadata to
//               commit), so a crash leaves the old state or the new one; the file itself is
//               written whole once per run (a temporary file, fsync, rename, fsync of the dir)
//   events.log  the HA event log, one JSON object a line, rotated to events.log.1 past a size
//   store/      the replication store (StorePath)
//
// Thread-safety: one owner thread (the node's event loop).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "statesync/common/status.h"
#include "statesync/failover/types.h"

namespace statesync::node {

class DataDir {
 public:
  // Creates the directory if needed and takes its lock. FailedPrecondition, naming the holder's
  // pid, when another process (or another DataDir of this one) holds it.
  static Result<std::unique_ptr<DataDir>> Open(const std::filesystem::path& dir,
                                               std::uint64_t max_event_log_bytes = 16 << 20);
  ~DataDir();  // releases the lock
  DataDir(const DataDir&) = delete;
  DataDir& operator=(const DataDir&) = delete;

  const std::filesystem::path& path() const { return dir_; }
  std::filesystem::path StorePath() const { return dir_ / "store"; }

  // The state saved last; all zero (a first start) when none was ever saved. Corruption when
  // the file cannot be read back: a node must not start from a made-up epoch.
  Result<failover::DurableState> LoadState() const;
  // In the file when it returns (a crash of the process keeps it); with `sync`, on the disk
  // (a power loss keeps it), which costs the disk's flush.
  Status SaveState(const failover::DurableState& state, bool sync = true);

  // Appends one event (a JSON object, written as one line). Not synced: the log is for people;
  // what the node relies on after a crash is in ha-state and the store.
  Status AppendEvent(const std::string& json_object);
  // The newest `max` events, oldest first (from events.log.1 too when needed).
  Result<std::vector<std::string>> RecentEvents(std::size_t max) const;

 private:
  DataDir(std::filesystem::path dir, int lock_fd, std::uint64_t max_event_log_bytes);

  std::filesystem::path dir_;
  int lock_fd_;
  std::uint64_t max_event_log_bytes_;
  int state_fd_ = -1;                           // ha-state, open after the first save of this run
  mutable std::uint64_t state_generation_ = 0;  // of the newest slot read or written
};

}  // namespace statesync::node
