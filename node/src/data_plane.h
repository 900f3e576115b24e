// DataPlane: a node's data, on a thread of its own (ss-data): the store, the session table and
// whichever replication side the failover core chose (a Primary, a Subordinate, or neither yet),
// and the local ingest socket that feeds the table on a primary.
//
// The node's event loop tells it what to become (Follow, Promote, Serve) and reads its Status;
// none of these calls wait for RocksDB or a peer: the work is done on the data thread, and a
// promotion's result comes back through the callback given to Promote. The table has one owner,
// the data thread (on a secondary, the Subordinate's applier, reached through Read), so queries
// of the table (Query) run there too.
//
// Ingest: a ROUTER on the ingest endpoint. A request is two frames: an 8-byte request id, then a
// codec frame holding an Envelope with a DeltaBatch (docs/wire-protocol.md, "Ingest"); the
// deltas' positions are ignored, the table assigns them. The answer (the same id, then one JSON
// object) goes out when the batch is acknowledged: at once for async tables, once `min_acks`
// subordinates persisted it for sync ones. Refused while the node is not a serving primary.
//
// Thread-safety: every method from any thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "statesync/common/status.h"
#include "statesync/node/config.h"
#include "statesync/replication/events.h"
#include "statesync/replication/primary.h"
#include "statesync/replication/store.h"
#include "statesync/replication/subordinate.h"
#include "statesync/sessiontable/session_table.h"

namespace statesync::node {

struct DataPlaneStatus {
  enum class Mode : std::uint8_t { kIdle, kPrimary, kSubordinate, kPromoting };
  Mode mode = Mode::kIdle;
  bool serving = false;   // a primary taking writes
  std::string following;  // the node followed (subordinate)
  Position applied;       // in the table
  Position persisted;     // in the store (journal)
  bool in_sync = false;   // a subordinate at its primary's head (a primary: true)
  replication::SyncState sync = replication::SyncState::kConnecting;
  replication::CatchUpProgress progress;
  Seq primary_head = 0;                                       // as the subordinate last heard it
  std::uint64_t sessions = 0;                                 // records in every table
  std::vector<replication::PeerStatus> peers;                 // a primary's subordinates
  std::map<std::string, std::chrono::milliseconds> peer_lag;  // how old their position is
  std::uint64_t ingest_batches = 0;
  std::uint64_t ingest_records = 0;
  std::uint64_t ingest_refused = 0;
  std::uint64_t ingest_busy = 0;  // answered "retry": the change log had no room
  std::uint64_t snapshots = 0;
  std::uint64_t forks = 0;
};
std::string_view DataPlaneModeName(DataPlaneStatus::Mode mode);  // "idle", "primary", ...

class DataPlane {
 public:
  // Called on the data thread once a promotion is done: the table is writable in `epoch` and
  // holds everything up to `applied`. It must not block.
  using PromotedCallback = std::function<void(Epoch epoch, Position applied, const Status&)>;

  // Opens the store (under `store_dir`) and loads the table from it (this takes as long as the
  // store is large: about a second for 1M sessions), binds the ingest socket, starts the thread.
  static Result<std::unique_ptr<DataPlane>> Start(const NodeConfig& config,
                                                  const std::filesystem::path& store_dir,
                                                  replication::EventSink events);
  ~DataPlane();  // Stop()
  DataPlane(const DataPlane&) = delete;
  DataPlane& operator=(const DataPlane&) = delete;

  // Replicate from `primary` (its replication endpoint): a primary steps down first (what it
  // holds is flushed and journaled), a subordinate of another primary is restarted.
  void Follow(const std::string& primary, const std::string& endpoint);
  // Become the primary in `epoch`: wait until the subordinate persisted `up_to` (while records
  // arrive, as NodeConfig::HandOverWait() and HandOverLimit() say), stop it, make the table
  // writable, start serving replication. `done` follows.
  void Promote(Epoch epoch, Position up_to, PromotedCallback done);
  // Take writes (ingest) or refuse them.
  void Serve(bool on);
  // Refuse writes from now on, and say where the table stopped: the last record a primary took
  // (pumped into the stream), or the table's position when it was no primary.
  // `done` runs on the data thread and must not block.
  void StopServing(std::function<void(Position)> done);
  DataPlaneStatus status() const;
  // Runs `fn` on the table's owner and returns what it returns.
  std::future<std::string> Query(std::function<std::string(const SessionTable&)> fn);
  // The same with the store as well (its blob lane), both as of one moment of the data thread.
  std::future<std::string> Query(std::function<std::string(const SessionTable&, const Store&)> fn);
  const std::string& ingest_endpoint() const;
  // Stops replication and the thread; a primary flushes what the table holds first.
  void Stop();

 private:
  class Impl;
  explicit DataPlane(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace statesync::node
