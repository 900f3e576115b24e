// Store: the durable copy of every table, in RocksDB. One column family per table (created on
// first use for user tables) plus `meta` (the applied position) and `backlog` (the primary's
// recent deltas, used by replication). A batch of deltas and the position it brings the node
// to are written in one WriteBatch, so a crash (SIGKILL included) leaves either the whole batch
// and its position or neither: never a partial batch, a gap or a duplicate.
//
// Large values (blob chunks) go to RocksDB blob files so that they do not churn the LSM tree.
// The WAL is always on; without `sync_writes` a write survives the death of the process (it is
// in the kernel's page cache) but not a power loss.
//
// Thread-safety: ApplyBatch, LoadInto and Flush from one thread at a time; Get and applied()
// from any thread.
#pragma once

#include <cstdint>
#include <filesystem>
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
  // fsync the WAL at every batch (survives a power loss; about 25 % slower on this machine).
  bool sync_writes = false;
  // Values of at least this many bytes in the blobs table are kept in blob files.
  std::uint64_t blob_min_bytes = 4096;
  // Memory for memtables across all tables (tuned mode); bounds the data held before a flush.
  std::uint64_t memtable_budget_bytes = 512ull << 20;
};

struct LoadStats {
  std::uint64_t records = 0;
  std::uint64_t bytes = 0;
  double seconds = 0;
};

class Store {
 public:
  // Opens or creates the store in options.dir.
  static Result<std::unique_ptr<Store>> Open(const StoreOptions& options);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Writes the deltas and `applied` atomically. REQUIRES: applied is after applied().
  Status ApplyBatch(Position applied, std::span<const StoredDelta> deltas);
  Position applied() const;

  Result<std::optional<std::string>> Get(TableId table, std::string_view key) const;
  // Reads every table into `table` (which must be empty) and sets its position to applied().
  Status LoadInto(SessionTable& table, LoadStats* stats = nullptr) const;
  // The tables that have a column family.
  std::vector<TableId> tables() const;
  // Writes the memtables to disk (tests and orderly shutdown).
  Status Flush();

 private:
  class Impl;
  explicit Store(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace statesync
