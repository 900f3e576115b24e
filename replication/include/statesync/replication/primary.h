// Primary: streams the primary's deltas and blobs to its subordinates over ZeroMQ.
//
// Sockets: one ROUTER socket bound on `endpoint`; every subordinate connects a DEALER whose
// routing id is its node id. ROUTER/DEALER because the traffic is both ways (deltas out; HELLO
// and acks in), the primary must address each subordinate on its own (each is at its own place
// in the history), and several subordinates share one port. ZeroMQ's queues are not the flow
// control: the primary never sends a subordinate more than the credit it granted, so those
// queues hold at most `credit` messages each.
//
// Data path:
//   1. The table's owner thread calls Pump(table): deltas are drained from the table's change log
//      into a batch, which closes on size (batch_max_deltas, batch_max_bytes) or when it has been
//      open for batch_deadline (closed by the I/O thread if the owner does not call Pump by then,
//      to within ZeroMQ's poll resolution of a millisecond). Closed batches go to a bounded
//      outbox (outbox_max_bytes); when
//      the outbox is full Pump drains nothing, the table's change log fills, and the table
//      refuses new records (ResourceExhausted): the bound on the primary's memory.
//   2. The I/O thread appends each batch to the store's journal (the backlog), keeps it in a
//      bounded ring of recent batches, and sends it to every subordinate that is at the head
//      and has credit. A subordinate that is behind is served from the ring or the journal; one
//      whose place is no longer in the journal gets a snapshot.
//   3. Each subordinate acknowledges what it has persisted and grants credit; WhenDurable()
//      completes sync writes once `min_acks` subordinates persisted them.
// Blobs (PutBlob) go to the store and then out as chunks, a chunk only when the subordinate's
// small blob window has room, and after any delta message that is ready for it.
//
// Thread-safety: Pump and Flush from the table's owner thread (one at a time); PutBlob,
// WhenDurable, stats and peers from any thread. The I/O thread is internal.
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
#include "statesync/replication/events.h"
#include "statesync/replication/io_scheduling.h"
#include "statesync/replication/store.h"
#include "statesync/sessiontable/session_table.h"

namespace statesync::replication {

enum class Durability : std::uint8_t {
  kAsync,  // a write is done when it is in the table; subordinates ack what they applied
  kSync,   // a write is done when min_acks subordinates have persisted it
};
enum class SyncFailure : std::uint8_t {
  kBlock,  // keep waiting after sync_timeout (and raise kSyncTimeout)
  kFail,   // complete with Unavailable after sync_timeout (and raise kSyncTimeout)
};

struct PrimaryOptions {
  std::string node_id = "primary";
  std::uint64_t cluster_id = 0;
  std::string endpoint = "tcp://127.0.0.1:7100";  // what the ROUTER binds (port * = any)
  std::size_t max_message_bytes = 64 << 20;       // larger messages are refused unread
  // Batching. At a low rate batches close on the deadline, so the size limits only matter under
  // load, where fewer and larger messages cost less per delta (wake-ups, acks, index entries):
  // 2000 deltas (about 440 KB of firewall sessions) moved case (b) of docs/BENCHMARKS.md from
  // 1.80M to 2.00M deltas/s against 500.
  std::size_t batch_max_deltas = 2000;
  std::size_t batch_max_bytes = 1 << 20;
  std::chrono::microseconds batch_deadline{1000};
  // Memory bounds: closed batches not yet taken by the I/O thread, and recent batches kept in
  // memory to serve subordinates that are slightly behind.
  std::size_t outbox_max_bytes = 32 << 20;
  std::size_t recent_max_bytes = 32 << 20;
  // The most stream messages one subordinate may have in flight, whatever credit it grants.
  std::uint32_t max_credit_batches = 64;
  std::uint32_t max_credit_blob_chunks = 4;
  // The journal: how much history is kept for CONTINUE. What a snapshot in progress or a
  // connected subordinate still needs is kept beyond the limits, up to twice max_bytes.
  JournalLimits journal;
  std::chrono::milliseconds trim_interval{1000};
  // Durability per table (tables not named are async).
  std::map<TableId, Durability> durability;
  int min_acks = 1;
  std::chrono::milliseconds sync_timeout{1000};
  SyncFailure on_sync_timeout = SyncFailure::kFail;
  // Blob lane.
  std::size_t blob_chunk_bytes = 64 << 10;
  // The blob lane yields to the deltas: its rate, for storing blobs on the primary (PutBlob
  // waits) and for sending them to each subordinate, adapts to the delay of the delta stream
  // (closing a batch to a subordinate's acknowledgement). When that delay rises more than
  // blob_yield_delay above its recent floor, the rate is halved, down to
  // blob_min_bytes_per_second; below it, the rate grows again. Zero blob_yield_delay turns the
  // adaptation off: the lane then goes as fast as it can, up to blob_max_bytes_per_second.
  // The lane's threads (storing on the primary, on each subordinate) run in the idle scheduling
  // class: while normal-class threads keep every core busy, blobs move slower than any of these
  // rates, the floor included.
  std::chrono::microseconds blob_yield_delay{2000};
  std::uint64_t blob_min_bytes_per_second = 1 << 20;
  // A ceiling on the lane's rate (0: none), for links shared with other traffic.
  std::uint64_t blob_max_bytes_per_second = 0;
  // The scheduling of the stream's threads (the I/O thread and ZeroMQ's), so that the table's
  // writer and other busy threads of the machine do not delay the stream (as conntrackd's
  // `Scheduler` setting). kIoRealtimeWhenPermitted (-1, the default): SCHED_FIFO at
  // kDefaultIoRealtimePriority (10) where the process may use it and RLIMIT_RTTIME is not set,
  // else the normal class and an info line. 1-99: SCHED_FIFO at that priority, else the normal
  // class and a warning. 0 (kIoNormalClass): the normal class. On 2 cores the lag's p99 at half
  // of case (a)'s rate was about 2-3.5 ms in SCHED_FIFO and 3-15 ms in the normal class, more
  // with blobs (docs/BENCHMARKS.md).
  int io_realtime_priority = kIoRealtimeWhenPermitted;
  // Liveness: a heartbeat to each subordinate every keepalive; one not heard from for
  // peer_timeout is dropped until it says HELLO again.
  std::chrono::milliseconds keepalive{100};
  std::chrono::milliseconds peer_timeout{3000};
  // Snapshot chunks.
  std::size_t snapshot_chunk_bytes = 256 << 10;
  EventSink events;
};

struct PeerStatus {
  std::string node_id;
  enum class State : std::uint8_t { kContinue, kSnapshot, kLost } state = State::kLost;
  Position persisted;
  Seq sent_seq = 0;
  std::uint64_t snapshot_records_sent = 0;
  std::uint64_t snapshot_records_total = 0;
  BlobCursor blob_acked;
  std::chrono::milliseconds since_heard{0};
};

struct PrimaryStats {
  std::uint64_t batches = 0;  // closed by Pump
  std::uint64_t deltas = 0;
  std::uint64_t bytes = 0;
  std::uint64_t outbox_full = 0;  // closes of a batch that found the outbox full
  std::size_t outbox_bytes = 0;
  std::size_t recent_bytes = 0;
  std::uint64_t sync_timeouts = 0;
  std::uint64_t snapshots = 0;
  std::uint64_t forks = 0;
  std::uint64_t blob_chunks_sent = 0;
  std::uint64_t blob_bytes_sent = 0;
  double blob_bytes_per_second = 0;  // the lane's rate now (0: not limited)
  Position journaled;                // the head of the journal
  InputCounters input;
};

// Told once whether a sync write became durable (Ok) or not (Unavailable).
using DurableCallback = std::function<void(const Status&)>;

class Primary {
 public:
  // Starts serving. The store's history gets `epoch` if it is new (a promotion); the replication
  // id is the store's, or a new one for a new store. REQUIRES: the table is writable in `epoch`.
  static Result<std::unique_ptr<Primary>> Start(PrimaryOptions options, Store& store, Epoch epoch);
  ~Primary();  // Stop()
  Primary(const Primary&) = delete;
  Primary& operator=(const Primary&) = delete;

  // Takes deltas from the table into batches and hands closed batches to the I/O thread.
  // Returns how many deltas it took. Call it after writes; a batch left open is closed by the
  // I/O thread at its deadline.
  std::size_t Pump(SessionTable& table);
  // Takes every pending delta and closes the open batch now.
  std::size_t Flush(SessionTable& table);
  // Completes when the write at `position` to `table` is durable as the table's class asks:
  // at once for async tables; for sync tables once min_acks subordinates persisted it (or with
  // Unavailable after sync_timeout under SyncFailure::kFail).
  std::future<Status> WhenDurable(TableId table, Position position);
  // The same with a callback, for an event loop that cannot park a thread on a future. `done`
  // runs once: on the caller's thread when the write is already durable (or the table async),
  // else on the I/O thread, where it must not block (hand the result to the caller's loop).
  void WhenDurable(TableId table, Position position, DurableCallback done);
  // The highest position persisted by at least min_acks subordinates.
  Position durable() const;
  // Stores a blob and queues it on the blob lane. Returns once the blob is stored, which takes
  // as long as the lane's rate asks (it yields to the deltas): call it off the table's thread.
  Result<BlobInfo> PutBlob(std::string_view blob_id, std::uint8_t kind, std::string_view name,
                           std::string_view data);

  // The bound endpoint (with the port chosen when the option said *).
  const std::string& endpoint() const;
  const std::string& replication_id() const;
  Epoch epoch() const;
  PrimaryStats stats() const;
  std::vector<PeerStatus> peers() const;
  // Sends what the outbox holds, then stops the I/O thread.
  void Stop();

 private:
  class Impl;
  explicit Primary(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace statesync::replication
