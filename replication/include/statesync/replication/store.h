// Store: the durable copy of a node, in RocksDB.
//
// Two RocksDB instances. The tables' one, in the store's directory: a column family per table
// (`fw_sessions`, `calls`, `cdrs`, `blobs`, `user_N` created on first use); `meta` (the
// materialized position, replication id, blob cursor); `blob_lane` (each voice-data blob's info
// and id: the data is in a file per blob under `blob-lane/`); `quarantine` (divergent records
// kept aside). The journal's, under `journal-index/`: `backlog_index` (the journal's index: its
// frames are in segment files under `journal/`) and the epoch history. The materializer's file
// ingestion stops every write of the instance it ingests into, and the index is written on the
// stream's path: apart, the stream does not wait for it. A store of the earlier one-instance
// layout has its index moved over when it opens.
//
// Two ways in:
// - The journal (Append): every batch a node sends (primary) or receives (subordinate) is
//   written whole, as its frame, to a segment file, then its index entry (and the history, on a
//   new epoch) in one WriteBatch; the head (`applied`) is the last entry's, or `materialized`
//   when that is further. That is the durable point: a SIGKILL after Append returns loses
//   nothing, and one before leaves no trace of the batch (an unindexed frame is cut off when the
//   store opens). The frame never goes through RocksDB; the index (`backlog_index`) names its
//   segment, offset and XXH3, checked when it is read back, and Trim removes the segments no
//   batch needs. The journal is also the replication backlog a primary serves CONTINUE from,
//   bounded by size and age (Trim).
// - Materialization: a background thread reads the journal after the `materialized` position,
//   coalesces a group of batches by key (the last state of a key wins), writes the records as
//   one sorted SST file per table, ingests them, then records the new `materialized` position.
//   It waits until enough is gathered or the journal is idle (StoreOptions). Start-up
//   (LoadInto) reads the tables, then replays the journal from `materialized` to `applied`.
//   Writing a batch costs the writer one sequential append; the per-key work happens behind it.
//
// ApplyBatch writes records straight into the tables (no journal): snapshots use it, and it is
// the naive path the benchmarks compare with.
//
// Without `sync_writes` a write survives the death of the process (it is in the kernel's page
// cache) but not a power loss; with it, every Append and ApplyBatch is fsynced.
//
// Thread-safety: every method may be called from any thread. Writes (Append, ApplyBatch, the
// snapshot and blob writers, Trim) are serialized inside; the materializer runs on its own
// thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "statesync/common/status.h"
#include "statesync/sessiontable/session_table.h"
#include "statesync/sessiontable/types.h"

namespace statesync {

struct StoredDelta {
  TableId table = TableId::kFwSessions;
  DeltaKind kind = DeltaKind::kUpsert;
  std::string_view key;
  std::string_view value;  // ignored for kDelete and kExpire
};

struct StoreOptions {
  std::filesystem::path dir;
  // false: RocksDB's default options, kept as the benchmark baseline.
  bool tuned = true;
  // fsync every write: the WAL, and the journal's segment before it (survives a power loss;
  // about 25 % slower on this machine).
  bool sync_writes = false;
  // Values of at least this many bytes in the blobs table go to RocksDB blob files.
  std::uint64_t blob_min_bytes = 4096;
  // Memory for memtables across all tables (tuned mode); bounds the data held before a flush.
  std::uint64_t memtable_budget_bytes = 512ull << 20;
  // Run the materializer thread. Off only in tests that look at the journal alone.
  bool materialize = true;
  // The most deltas the materializer coalesces into one round (one file per table).
  std::size_t materialize_group = 262144;
  // The materializer runs at the lowest CPU priority, behind the stream; when the journal holds
  // more than this beyond the tables, the replication adapters stop taking new batches until it
  // catches up (a subordinate withholds credit, a primary stops journaling and so Pump stops).
  // It also bounds the replay at start-up: 200-270 MB/s here (BM_StoreStartupReplay), so 4 GiB
  // is 15-20 s. At 1 GiB, a catch-up of 10M sessions (2.3 GB of frames) waited for the
  // materializer for its last half and ran at 530k records/s; at 4 GiB it runs at 840k/s
  // (docs/BENCHMARKS.md): a node is caught up, and can take over, sooner.
  std::uint64_t max_unmaterialized_bytes = 4ull << 30;
  // The materializer starts once this much of the journal is not in the tables yet, or once
  // the journal has had no append for `materialize_when_idle`, or when asked to
  // (WaitMaterialized, or a journal over its limits). 0: as soon as anything is appended.
  // Start-up replays at most what is not materialized (about 1M records/s).
  std::uint64_t materialize_after_bytes = 512ull << 20;
  std::chrono::milliseconds materialize_when_idle{1000};
  // The journal's frames are appended to segment files under `journal/`; a new segment starts
  // after this many bytes, and Trim frees the disk a whole segment at a time. The next segment's
  // blocks are reserved ahead of the appends: the journal holds one segment more on the disk
  // than its frames.
  std::uint64_t journal_segment_bytes = 64ull << 20;
  // The newest frames are also kept in memory, up to this much: reading them back (the
  // materializer, a subordinate slightly behind) does not go to the files.
  std::uint64_t journal_cache_bytes = 64ull << 20;
};

struct LoadStats {
  std::uint64_t records = 0;  // read from the tables
  std::uint64_t bytes = 0;
  std::uint64_t journal_batches = 0;  // replayed from the journal after them
  std::uint64_t journal_deltas = 0;
  double seconds = 0;
};

// One batch in the journal.
struct JournalBatch {
  Position first;  // of its first delta
  Position last;   // of its last delta
  TimePoint written;
  std::string frame;  // as it travels: a wire frame holding a DeltaBatch
};

struct JournalLimits {
  std::uint64_t max_bytes = 4ull << 30;
  std::chrono::milliseconds max_age = std::chrono::minutes(60);
};

struct JournalStats {
  Seq first_seq = 0;  // the first seq it still holds (0: empty)
  Seq last_seq = 0;
  std::uint64_t batches = 0;
  std::uint64_t bytes = 0;
};

// A quarantined delta: written by this node in an epoch that lost (its history left the
// primary's after the fork point), kept aside instead of dropped.
struct QuarantinedDelta {
  Position position;  // where it was in the losing history
  TableId table = TableId::kFwSessions;
  DeltaKind kind = DeltaKind::kUpsert;
  std::string key;
  std::string value;
  TimePoint quarantined;
  std::string reason;
};

// A consistent read of every table at the `materialized` position, for a snapshot.
class StoreSnapshot {
 public:
  virtual ~StoreSnapshot() = default;
  virtual Position position() const = 0;
  virtual std::uint64_t records_estimate() const = 0;
  virtual std::uint64_t bytes_estimate() const = 0;
  // Fills `out` with up to `max_bytes` of records (at least one while any is left); an empty
  // result means the end.
  struct Record {
    TableId table;
    std::string key;
    std::string value;
  };
  virtual Status Next(std::size_t max_bytes, std::vector<Record>* out) = 0;
};

// A blob of the blob lane as stored.
struct BlobInfo {
  std::uint64_t seq = 0;
  std::string blob_id;
  std::uint8_t kind = 0;  // fb::BlobKind
  std::string name;
  std::uint64_t size = 0;
  std::uint64_t xxh64 = 0;
};
struct BlobCursor {
  std::uint64_t seq = 1;  // the blob being received (blobs before it are complete)
  std::uint64_t offset = 0;
  auto operator<=>(const BlobCursor&) const = default;
};

// Sets the C library's allocator of this process to keep freed memory for reuse (glibc: no
// mmap below 32 MiB, no return to the kernel while under 1 GiB is free). Without it, every
// memtable block and large message is a fresh mapping whose pages fault in one by one and are
// handed back when freed: on the 2-vCPU machines of docs/BENCHMARKS.md that made the
// replication path 25-50 % slower. The cost is that the process keeps its peak heap (bounded by
// the store's memtable budget and the replication bounds). It changes the whole process, so
// it is the executable's choice: call it first thing in main(), before any thread starts
// (statesyncd and the benchmarks do). No-op where the C library is not glibc.
void TuneProcessAllocator();

class Store {
 public:
  // Opens or creates the store in options.dir.
  static Result<std::unique_ptr<Store>> Open(const StoreOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // ---- the journal ----
  // Appends one batch: its frame, the positions of its first and last delta, and the new head.
  // REQUIRES: first.epoch == last.epoch >= applied().epoch, first.seq == applied().seq + 1
  // (FailedPrecondition otherwise, and nothing is written).
  Status Append(Position first, Position last, std::span<const std::uint8_t> frame, TimePoint now);
  // The head: the position of the last delta made durable (journal or ApplyBatch).
  Position applied() const;
  // The position the tables hold, behind or at applied().
  Position materialized() const;
  // Waits until materialized() reaches `position`, or `timeout` passes; true if it did.
  bool WaitMaterialized(Position position, std::chrono::milliseconds timeout) const;
  // Reads the batches holding deltas after `after`, in order, up to about `max_bytes` (at least
  // one batch when there is one). NotFound when the journal no longer holds `after + 1`.
  // At most `max_batches` batches. Corruption when a frame fails its checksum.
  Status ReadJournal(Seq after, std::size_t max_bytes, std::vector<JournalBatch>* out,
                     std::size_t max_batches = SIZE_MAX) const;
  JournalStats journal() const;
  // Journal bytes after materialized(): what the materializer has yet to do. Writers bound it
  // (StoreOptions::max_unmaterialized_bytes) by slowing down.
  std::uint64_t unmaterialized_bytes() const;
  // More than max_unmaterialized_bytes waits for the materializer.
  bool materializer_behind() const;
  // Drops the oldest batches beyond the limits, but never one holding a delta after `keep_after`
  // (what a snapshot in progress or the materializer still needs). Returns batches dropped.
  Result<std::uint64_t> Trim(const JournalLimits& limits, TimePoint now, Seq keep_after);

  // ---- history ----
  // The replication id names the history this node holds; empty for a new or resetting store.
  std::string replication_id() const;
  Status SetReplicationId(std::string_view id);
  // (epoch, first seq) of every epoch in the history, oldest first; kept as batches arrive.
  std::vector<Position> history() const;
  // Records that a new epoch starts after the head (a promotion), before its first batch.
  Status StartEpoch(Epoch epoch);

  // ---- tables ----
  // Writes the deltas into the tables and moves applied and materialized to `applied`
  // atomically. REQUIRES: applied is after applied() and the journal is fully materialized.
  Status ApplyBatch(Position applied, std::span<const StoredDelta> deltas);
  Result<std::optional<std::string>> Get(TableId table, std::string_view key) const;
  // Reads every table into `table` (which must be empty and read-only), then replays the
  // journal; the table's position becomes applied().
  Status LoadInto(SessionTable& table, LoadStats* stats = nullptr) const;
  // The tables that have a column family.
  std::vector<TableId> tables() const;
  // A consistent view of the tables at materialized() (waits for the materializer to catch up
  // with the head first, so that the view is recent).
  Result<std::unique_ptr<StoreSnapshot>> OpenSnapshot();

  // ---- installing a snapshot (subordinate) ----
  // Empties every table and the journal, clears the replication id and the positions: from
  // here until FinishSnapshot a restart asks for a snapshot again.
  Status BeginSnapshot();
  Status AddSnapshotRecords(std::span<const StoredDelta> records);
  Status FinishSnapshot(std::string_view replication_id, Position position,
                        std::span<const Position> history);

  // ---- quarantine ----
  // Moves the journal's deltas after `common` into the quarantine, with `reason`; when the
  // journal no longer reaches back to `common`, every record of every table is quarantined
  // instead (what was written after the fork can no longer be told apart). Returns how many.
  Result<std::uint64_t> QuarantineAfter(Position common, std::string_view reason, TimePoint now);
  Status ScanQuarantine(const std::function<void(const QuarantinedDelta&)>& fn) const;

  // ---- the blob lane ----
  // A primary stores a new blob, complete, and gives it the next seq. `before_chunk`, when
  // given, is called with each chunk's size before the chunk is written (the primary paces the
  // blob lane there).
  Result<BlobInfo> PutBlob(std::string_view blob_id, std::uint8_t kind, std::string_view name,
                           std::string_view data, std::size_t chunk_bytes,
                           const std::function<void(std::size_t)>& before_chunk = {});
  // The next blob byte this node needs (subordinate) or will assign (primary: offset 0).
  BlobCursor blob_cursor() const;
  // Reads up to `max_bytes` of blob `seq` from `offset`; NotFound if there is no such blob.
  Status ReadBlob(std::uint64_t seq, std::uint64_t offset, std::size_t max_bytes, BlobInfo* info,
                  std::string* data) const;
  // A subordinate stores one received chunk at the cursor. When it completes the blob, the
  // whole blob's checksum is verified and the blob becomes visible; a mismatch drops the
  // blob's bytes and rewinds the cursor to its start (Corruption).
  Status AddBlobChunk(const BlobInfo& info, std::uint64_t offset, std::string_view data);
  // A complete, verified blob by its id.
  Result<std::optional<std::string>> GetBlob(std::string_view blob_id, BlobInfo* info) const;
  Status ScanBlobs(const std::function<void(const BlobInfo&)>& fn) const;

  // Writes the memtables to disk (tests and orderly shutdown).
  Status Flush();

 private:
  class Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace statesync
