// DataDir: a node's data directory, and what the node keeps there besides the store.
//   LOCK        an exclusive lock (flock) held while the node runs, with the holder's pid in
//               it: two daemons cannot share a directory, and the refusal names the other one
//   ha-state    the failover core's DurableState, in two checksummed slots: a save overwrites
//               the older one and syncs its data (about a millisecond, with no metadata to
//               commit), so a crash leaves the old state or the new one; the file itself is
//               written whole once per run (a temporary file, fsync, rename, fsync of the dir).
//               A save may leave its sync to a background thread (SaveState)
//   events.log  the HA event log, one JSON object a line, rotated to events.log.1 past a size
//   store/      the replication store (StorePath)
//
// Thread-safety: one owner thread (the node's event loop). It starts one thread of its own,
// ss-state-sync, which syncs the state file in the background when a save asks it to.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "statesync/common/pi_mutex.h"
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
  // (a power loss keeps it), which costs the disk's flush: 0.1-5 ms idle, 100-300 ms while the
  // store flushes much. Without `sync` the background thread syncs it. A save never overwrites
  // a slot while the other one is not on the disk: if the save before is not synced yet, it is
  // synced here first, so that a save torn by a power loss always leaves a synced state.
  Status SaveState(const failover::DurableState& state, bool sync = true);
  // Whether the newest save is on the disk (its background sync done).
  bool StateOnDisk() const;
  // The error of a background sync, if one failed: the node must stop, its state is not safe.
  Status BackgroundSyncError() const;

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

  // The background sync. The owner thread is realtime in a node: the mutex lends priority, and
  // the thread is woken through an eventfd, since a condition variable's own lock would not.
  void SyncInBackground();
  Status SyncStateFile() const;  // fdatasync of ha-state, the error naming the file
  Status SyncNow();              // the owner's sync of everything saved so far
  mutable PriorityInheritanceMutex sync_mu_;
  int sync_wake_fd_ = -1;           // eventfd: a save asked for a sync, or the stop
  std::uint64_t sync_asked_ = 0;    // the newest generation a save asked to sync (sync_mu_)
  std::uint64_t synced_up_to_ = 0;  // every generation up to it is on the disk (sync_mu_)
  Status sync_error_;               // of a background sync (sync_mu_)
  bool stopping_ = false;           // (sync_mu_)
  std::thread sync_thread_;
};

}  // namespace statesync::node
