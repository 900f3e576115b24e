// SessionTable: the in-memory, hot copy of every replicated table, and the source of the
// primary's delta stream.
//
// A mutation on a writable table (the primary's) is given a Position (epoch, seq) and its key
// is appended to a bounded change log; replication takes deltas out with Drain(). Until a key
// has been drained, further changes to it coalesce into the same log entry, which then
// carries the latest state (or a delete), so seq stays gap-free and one delta is sent per key.
// Expiry is by absolute deadline, driven by Tick(now); per-table SyncPolicy holds back young
// sessions (pickup_delay) and keeps connectionless or expected sessions local if asked.
// A subordinate's table is not writable: Apply() installs replicated deltas, no log is kept and
// nothing expires locally until it becomes writable (promotion).
//
// The table is pure: no sockets, clock, threads or randomness inside. Time arrives through
// Tick(now); mutations are stamped with the time of the latest Tick.
//
// Thread-safety: none. One thread owns a SessionTable (the node's event loop).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "statesync/common/page_supplier.h"
#include "statesync/common/status.h"
#include "statesync/sessiontable/records.h"
#include "statesync/sessiontable/types.h"

namespace statesync {

// What became of a mutation.
struct Mutation {
  enum class Replication : std::uint8_t {
    kQueued,     // in the change log at `position` (a new entry or coalesced into a pending one)
    kHeld,       // younger than pickup_delay: an upsert is replicated when it reaches that
                 // age; a delete of such a record is never sent (it died young)
    kLocalOnly,  // the table's policy keeps it on this node
    kNotFound,   // a delete of a key that does not exist: nothing changed
  };
  Replication replication = Replication::kQueued;
  Position position;  // valid when replication == kQueued
};

// One delta handed to replication. The views are valid only during the Drain callback.
struct DeltaView {
  Position position;
  TableId table = TableId::kFwSessions;
  DeltaKind kind = DeltaKind::kUpsert;
  std::string_view key;
  std::string_view value;  // the record's encoding; empty for kDelete and kExpire
};

// What became of a batch of mutations.
struct BatchResult {
  std::size_t applied = 0;  // the first `applied` items took effect
  Position last_queued;     // the highest position among them (zero if none was queued)
  Status status;            // why the batch stopped early (OK when all were applied)
};

// The digest of one table: how many records, and the sum (mod 2^64) of their hashes. It covers
// the replicated state: on a primary the deltas given out by Drain, on a subordinate the deltas
// applied or loaded. Two nodes at the same position hold the same data exactly when their
// digests are equal (up to 64-bit hash collisions). Order-independent and kept up to date at
// every change, so reading it costs O(1).
inline constexpr std::size_t kDigestBuckets = 256;
struct TableDigest {
  std::uint64_t records = 0;
  std::uint64_t sum = 0;
  bool operator==(const TableDigest&) const = default;
};
// The same per bucket of key hashes (the top 8 bits of a key's hash pick its bucket), for a
// drill-down: compare the buckets, then list the keys of the buckets that differ.
using DigestBuckets = std::array<std::uint64_t, kDigestBuckets>;

struct SessionTableOptions {
  // Most log entries waiting to be drained (at most 2^31). When full, a mutation that would need a
  // new entry fails with ResourceExhausted and changes nothing; changes to keys already pending
  // still coalesce; expiry and pickup releases wait for the next Tick.
  std::size_t change_log_capacity = 1u << 20;
  Position start;  // the position of the last delta already in the history (next seq = +1)
  bool writable = true;
  // Where the record chunks and index tables come from (null: mapped by the table itself). A
  // PrefaultedPages keeps first-touch page faults off the owner's thread.
  std::shared_ptr<PageSupplier> pages;
};

struct SessionTableStats {
  std::uint64_t upserts = 0;
  std::uint64_t deletes = 0;
  std::uint64_t expired = 0;
  std::uint64_t coalesced = 0;   // mutations folded into an entry already pending
  std::uint64_t held = 0;        // new records held back by pickup_delay
  std::uint64_t released = 0;    // held records that reached the pickup age and were queued
  std::uint64_t died_young = 0;  // held records deleted or expired before being sent
  std::uint64_t kept_local = 0;  // records kept local by connectionless/expectations
  std::uint64_t log_full_refusals = 0;
  std::uint64_t drained = 0;
  std::uint64_t applied = 0;  // replicated deltas installed by Apply
};

class SessionTable {
 public:
  explicit SessionTable(SessionTableOptions options = {});
  ~SessionTable();
  SessionTable(const SessionTable&) = delete;
  SessionTable& operator=(const SessionTable&) = delete;

  // ---- time and policy ----
  // Advances time: expires records whose deadline is <= now and queues held records that
  // reached their pickup age. Returns how many deltas it queued. A `now` earlier than the
  // previous one is treated as the previous one (time never runs backwards in here).
  std::size_t Tick(TimePoint now);
  TimePoint now() const;
  void SetPolicy(TableId table, const SyncPolicy& policy);
  SyncPolicy policy(TableId table) const;

  // ---- mutations on a writable table ----
  // REQUIRES: writable(); otherwise FailedPrecondition.
  Result<Mutation> UpsertFirewall(const FirewallSession& session);
  // Upserts in order and stops at the first failure (for instance a full change log: drain,
  // then retry from `applied`). Faster than one call each: it fetches the index entries and
  // records of later items while it works on the current one.
  BatchResult UpsertFirewallBatch(std::span<const FirewallSession> sessions);
  Result<Mutation> UpsertCall(const CallSession& call);
  Result<Mutation> UpsertCdr(const Cdr& cdr);
  // Any table by key and encoded value; for built-in tables the value is verified and, for
  // fw_sessions, must match the key.
  Result<Mutation> Upsert(TableId table, std::string_view key, std::string_view value);
  Result<Mutation> Delete(TableId table, std::string_view key);

  // ---- reading ----
  std::optional<FirewallSession> GetFirewall(const Tuple& orig, std::uint16_t zone) const;
  std::optional<CallSession> GetCall(std::string_view call_id) const;
  std::optional<Cdr> GetCdr(std::string_view id) const;
  std::optional<std::string> Get(TableId table, std::string_view key) const;
  // Visits every live record of `table` whose key is in [from, to) (an empty `to` means no
  // upper bound), in no particular order.
  void Scan(TableId table,
            const std::function<void(std::string_view key, std::string_view value)>& fn,
            std::string_view from = {}, std::string_view to = {}) const;
  std::size_t size(TableId table) const;
  std::size_t total_size() const;

  // ---- digests (see TableDigest) ----
  TableDigest Digest(TableId table) const;
  DigestBuckets Buckets(TableId table) const;
  // Visits the records of one digest bucket with the hash each contributes.
  void ScanBucket(
      TableId table, std::size_t bucket,
      const std::function<void(std::string_view key, std::uint64_t record_hash)>& fn) const;
  // Every table that has held a record on this node.
  std::vector<TableId> tables() const;

  // ---- the change log ----
  // Hands up to `max` pending deltas, in seq order, to `fn`, and forgets them. REQUIRES: `fn`
  // does not call back into this table (the views point into buffers the next delta reuses).
  std::size_t Drain(std::size_t max, const std::function<void(const DeltaView&)>& fn);
  std::size_t pending() const;
  std::size_t change_log_capacity() const;
  // The position of the last delta given out (assigned), i.e. the head of the history.
  Position last_position() const;

  // ---- the subordinate side and start-up ----
  // Installs a replicated delta without logging it. REQUIRES: position follows the table's.
  Status Apply(const DeltaView& delta);
  // Apply of each delta in order, stopping at the first that fails (those before it stay
  // applied). Firewall keys are hashed and their index entries requested a group ahead, so the
  // cache misses of a batch overlap.
  Status Apply(std::span<const DeltaView> deltas);
  // Makes room for `records` more records of `table` (spares rehashing during a load).
  void Reserve(TableId table, std::size_t records);
  // Installs a record read from the store at start-up (no log, no position change).
  Status Load(TableId table, std::string_view key, std::string_view value);
  // Sets the position of the history after a load or a snapshot. REQUIRES: nothing pending.
  Status ResetPosition(Position last);

  // ---- roles ----
  // A writable table accepts local mutations and expires records; promotion makes a table
  // writable in a new epoch. REQUIRES: epoch greater than the current one, nothing pending.
  Status BecomeWritable(Epoch epoch);
  // REQUIRES: nothing pending (FailedPrecondition otherwise: what was never sent must be
  // drained or quarantined by the caller first).
  Status BecomeReadOnly();
  bool writable() const;

  const SessionTableStats& stats() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace statesync
