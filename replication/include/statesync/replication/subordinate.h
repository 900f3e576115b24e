// Subordinate: follows a primary over ZeroMQ, persists its stream in the store's journal, and
// keeps the hot copy (a read-only SessionTable) up to date.
//
// Socket: one DEALER connected to the primary's ROUTER, with the node id as routing id.
//
// Protocol (numbered as in docs/wire-protocol.md):
//   1. On start, and whenever the primary has been silent for peer_timeout or did not answer a
//      HELLO within hello_timeout, it opens a new socket and says HELLO(replication id, last
//      applied position, epoch history, blob cursor, credit) with a new session number.
//   2. The primary answers CONTINUE (batches follow from the journal), FORK (this node's history
//      left the primary's: its divergent tail goes to the quarantine) or a SNAPSHOT (chunks then
//      SNAPSHOT_END; the tables are replaced).
//   3. Each batch is checked (envelope, epoch, seq continuity, every record verified), appended
//      to the journal (the durable point) and acknowledged with the persisted position and
//      renewed credit; an applier thread then applies it to the table, so that the checks and
//      journal write of the next batch overlap this one's apply. A batch that fails a check is
//      refused and counted; nothing already applied changes.
//   4. Blob chunks are stored at the blob cursor by a blob thread (so that voice data never
//      holds a delta batch back); a blob becomes visible when complete and verified.
// Fencing: a message from an epoch older than the newest this node has seen is refused.
//
// Thread-safety: every method from any thread. The table belongs to the applier thread while
// the subordinate runs; Read() lends it under a lock. Stop() applies what was journaled first.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "statesync/common/status.h"
#include "statesync/replication/events.h"
#include "statesync/replication/io_scheduling.h"
#include "statesync/replication/store.h"
#include "statesync/sessiontable/session_table.h"

namespace statesync::replication {

struct SubordinateOptions {
  std::string node_id = "secondary";
  std::uint64_t cluster_id = 0;
  std::string primary_endpoint = "tcp://127.0.0.1:7100";
  std::size_t max_message_bytes = 64 << 20;  // larger messages are refused unread
  // Credit granted: stream messages (batches, snapshot chunks) and blob chunks in flight.
  std::uint32_t credit_batches = 32;
  std::uint32_t credit_blob_chunks = 2;
  // Journaled batches waiting for the applier (the table) beyond this: no new credit until it
  // catches up. It bounds the memory they hold.
  std::size_t max_apply_backlog_bytes = 64 << 20;
  std::chrono::milliseconds hello_timeout{1000};
  std::chrono::milliseconds peer_timeout{3000};
  // The journal kept beyond the tables, for the subordinates of this node should it be promoted
  // (they continue from it); what the tables do not hold yet is kept whatever the limits.
  JournalLimits journal;
  std::chrono::milliseconds trim_interval{1000};
  // The scheduling of the I/O thread and ZeroMQ's: SCHED_FIFO where permitted by default, as
  // PrimaryOptions::io_realtime_priority says (why, the values, what it needs).
  int io_realtime_priority = kIoRealtimeWhenPermitted;
  // Options of the table built when a snapshot replaces the data.
  SessionTableOptions table_options{.writable = false};
  EventSink events;
};

enum class SyncState : std::uint8_t {
  kConnecting,  // HELLO sent, no answer yet
  kCatchingUp,  // following by CONTINUE, behind the primary's head
  kSnapshot,    // receiving a snapshot
  kInSync,      // at the primary's head
};
std::string_view SyncStateName(SyncState s);  // "disconnected", "catching_up", ...

struct CatchUpProgress {
  std::uint64_t records_done = 0;
  std::uint64_t records_total = 0;  // an estimate while a snapshot runs
  std::uint64_t bytes_done = 0;
  double fraction = 0;  // 0..1
  double records_per_second = 0;
  double eta_seconds = 0;
};

struct SubordinateStatus {
  SyncState state = SyncState::kConnecting;
  Position persisted;  // in the journal (the durable point; what acks report as persisted)
  Position applied;    // in the table (an applier thread follows the journal closely)
  Seq primary_head = 0;
  Epoch newest_epoch = 0;
  CatchUpProgress progress;
  std::uint64_t batches = 0;
  std::uint64_t deltas = 0;
  std::uint64_t snapshots = 0;
  std::uint64_t continues = 0;
  std::uint64_t forks = 0;
  std::uint64_t hellos = 0;
  std::uint64_t quarantined = 0;
  BlobCursor blob_cursor;
  InputCounters input;
};

class Subordinate {
 public:
  // REQUIRES: `table` is read-only and holds the store's content (Store::LoadInto).
  static Result<std::unique_ptr<Subordinate>> Start(SubordinateOptions options, Store& store,
                                                    std::unique_ptr<SessionTable> table);
  ~Subordinate();
  Subordinate(const Subordinate&) = delete;
  Subordinate& operator=(const Subordinate&) = delete;

  // Lends the table (read-only) under the lock the I/O thread takes to apply batches.
  void Read(const std::function<void(const SessionTable&)>& fn) const;
  SubordinateStatus status() const;
  // Stops following and hands the table back (for a promotion: BecomeWritable on it).
  std::unique_ptr<SessionTable> Stop();

 private:
  class Impl;
  explicit Subordinate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Checks one delta before it is persisted: a known table, a key, and for an upsert a value that
// verifies as the table's record type (and, for a firewall session, matches its key).
Status ValidateDelta(const DeltaView& d);

}  // namespace statesync::replication
