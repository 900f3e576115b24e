#include "statesync/replication/store.h"

#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/options.h>
#include <rocksdb/sst_file_writer.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>
#include <xxhash.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <thread>

#include "blob_files.h"
#include "frame_ring.h"
#include "journal_files.h"
#include "statesync/common/idle_class.h"
#include "statesync/common/pi_mutex.h"
#include "statesync/schemas/codec.h"

namespace statesync {
namespace {

constexpr char kMetaCf[] = "meta";
// ReadJournal copies frames out of memory this much at a time under the state lock, so that an
// Append waits for at most one piece (about 0.1 ms) behind a reader.
constexpr std::size_t kJournalCopyPieceBytes = 1 << 20;
// The journal's index and epoch history live in a RocksDB instance of their own (under
// kJournalIndexDir): the materializer's IngestExternalFiles stops every write of the instance it
// ingests into for 5-120 ms on this disk, and the index is written on the stream's path.
constexpr char kJournalIndexDir[] = "journal-index";
constexpr char kBacklogIndexCf[] = "backlog_index";
constexpr char kBlobLaneCf[] = "blob_lane";
constexpr char kQuarantineCf[] = "quarantine";
// Written by earlier versions only; `applied` is now derived at open (ReadJournalIndex).
constexpr char kAppliedKey[] = "applied";
// Bumped by BeginSnapshot in both instances, tables' first: a crash between the two leaves them
// different, and the next open then empties the index's (its entries describe the old history).
constexpr char kJournalGenKey[] = "journal_gen";
constexpr char kMaterializedKey[] = "materialized";
constexpr char kReplicationIdKey[] = "replication_id";
constexpr char kHistoryKey[] = "history";
constexpr char kBlobCursorKey[] = "blob_cursor";
constexpr char kQuarantineCountKey[] = "quarantine_count";
// Files a materializer round writes before RocksDB ingests them (moved into the store then).
constexpr char kIngestPrefix[] = "materialize-round-";

const TableId kBuiltinTables[] = {TableId::kFwSessions, TableId::kCalls, TableId::kCdrs,
                                  TableId::kBlobs};

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  if (s.IsCorruption()) return Status::Corruption(what + ": " + s.ToString());
  if (s.IsNotFound()) return Status::NotFound(what + ": " + s.ToString());
  if (s.IsInvalidArgument()) return Status::InvalidArgument(what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

void PutU64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(v >> (56 - 8 * i)));
}
std::uint64_t GetU64(std::string_view b, std::size_t at) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<std::uint8_t>(b[at + i]);
  return v;
}
std::string EncodePosition(Position p) {
  std::string out;
  PutU64(out, p.epoch);
  PutU64(out, p.seq);
  return out;
}
std::string EncodeGen(std::uint64_t gen) {
  std::string out;
  PutU64(out, gen);
  return out;
}

// The journal generation stored in `cf` of `db`; 0 when absent.
Result<std::uint64_t> ReadGen(rocksdb::DB* db, rocksdb::ColumnFamilyHandle* cf) {
  std::string raw;
  rocksdb::Status s = db->Get(rocksdb::ReadOptions(), cf, kJournalGenKey, &raw);
  if (s.IsNotFound()) return std::uint64_t{0};
  if (!s.ok()) return FromRocks(s, "cannot read the journal generation");
  if (raw.size() != 8) return Status::Corruption("the stored journal generation is damaged");
  return GetU64(raw, 0);
}

Result<Position> DecodePosition(std::string_view b) {
  if (b.size() != 16) {
    return Status::Corruption("a stored position has " + std::to_string(b.size()) +
                              " bytes, not 16");
  }
  return Position{GetU64(b, 0), GetU64(b, 8)};
}
rocksdb::Slice ToSlice(std::string_view v) {
  return {v.data(), v.size()};
}
std::string_view ToView(const rocksdb::Slice& s) {
  return {s.data(), s.size()};
}

// Journal index keys: 'i' + first seq in the backlog_index family (last position, time written,
// frame size, the frame's segment file, offset and XXH3), so that opening a store reads only the
// index.
std::string JournalKey(char kind, Seq first) {
  std::string k(1, kind);
  PutU64(k, first);
  return k;
}
// A delta of a materializer round, pointing into the round's frames.
struct RoundItem {
  TableId table;
  DeltaKind kind;
  std::uint32_t order;  // arrival in the round: the last of a key wins
  // The key's first 16 bytes as two big-endian integers, zero-padded: in bytewise order.
  std::uint64_t prefix;
  std::uint64_t prefix2;
  std::string_view key;
  std::string_view value;
};

// Bytes [from, from + 8) of `key` as a big-endian integer, zero-padded.
std::uint64_t KeyPrefix(std::string_view key, std::size_t from) {
  std::uint64_t p = 0;
  for (std::size_t i = from; i < from + 8; ++i) {
    p = (p << 8) | (i < key.size() ? static_cast<std::uint8_t>(key[i]) : 0u);
  }
  return p;
}

struct JournalIndexEntry {
  Seq first = 0;
  Position last;
  std::int64_t written_ms = 0;
  std::uint64_t bytes = 0;
  detail::FramePlace place;
  std::uint64_t checksum = 0;  // XXH3 of the frame
};
constexpr std::size_t kIndexEntryBytes = 56;
std::string EncodeIndexEntry(const JournalIndexEntry& e) {
  std::string v = EncodePosition(e.last);
  PutU64(v, static_cast<std::uint64_t>(e.written_ms));
  PutU64(v, e.bytes);
  PutU64(v, e.place.segment);
  PutU64(v, e.place.offset);
  PutU64(v, e.checksum);
  return v;
}
// The entry under an index key, or nothing if the key or value is not one.
std::optional<JournalIndexEntry> DecodeIndexEntry(std::string_view key, std::string_view v) {
  if (key.size() != 9 || key[0] != 'i' || v.size() != kIndexEntryBytes) return std::nullopt;
  JournalIndexEntry e;
  e.first = GetU64(key, 1);
  e.last = {GetU64(v, 0), GetU64(v, 8)};
  e.written_ms = static_cast<std::int64_t>(GetU64(v, 16));
  e.bytes = GetU64(v, 24);
  e.place = {GetU64(v, 32), GetU64(v, 40)};
  e.checksum = GetU64(v, 48);
  return e;
}
JournalBatch BatchOf(const JournalIndexEntry& e, std::string_view frame) {
  JournalBatch b;
  b.first = {e.last.epoch, e.first};
  b.last = e.last;
  b.written = TimePoint(std::chrono::milliseconds(e.written_ms));
  b.frame.assign(frame.data(), frame.size());
  return b;
}

// Blob lane keys: 'm' + seq (the info of a complete blob), 'i' + blob id (its seq). The data is
// in files (BlobFiles); earlier versions kept it here, under 'c' + seq + offset.
constexpr char kOldChunkPrefix[] = "c";
std::string BlobInfoKey(std::uint64_t seq) {
  std::string k(1, 'm');
  PutU64(k, seq);
  return k;
}
std::string BlobIdKey(std::string_view id) {
  std::string k(1, 'i');
  k.append(id);
  return k;
}
void PutString(std::string& out, std::string_view s) {
  PutU64(out, s.size());
  out.append(s);
}
bool GetString(std::string_view b, std::size_t& at, std::string* out) {
  if (at + 8 > b.size()) return false;
  const std::uint64_t n = GetU64(b, at);
  at += 8;
  if (n > b.size() - at) return false;
  out->assign(b.substr(at, n));
  at += n;
  return true;
}
std::string EncodeBlobInfo(const BlobInfo& i) {
  std::string v;
  PutU64(v, i.seq);
  PutU64(v, i.size);
  PutU64(v, i.xxh64);
  v.push_back(static_cast<char>(i.kind));
  PutString(v, i.blob_id);
  PutString(v, i.name);
  return v;
}
Result<BlobInfo> DecodeBlobInfo(std::string_view b) {
  BlobInfo i;
  if (b.size() < 25) return Status::Corruption("a stored blob info is too short");
  i.seq = GetU64(b, 0);
  i.size = GetU64(b, 8);
  i.xxh64 = GetU64(b, 16);
  i.kind = static_cast<std::uint8_t>(b[24]);
  std::size_t at = 25;
  if (!GetString(b, at, &i.blob_id) || !GetString(b, at, &i.name)) {
    return Status::Corruption("a stored blob info is truncated");
  }
  return i;
}

std::string EncodeQuarantined(const QuarantinedDelta& q) {
  std::string v;
  PutU64(v, static_cast<std::uint64_t>(q.table));
  PutU64(v, static_cast<std::uint64_t>(q.kind));
  PutU64(v, static_cast<std::uint64_t>(q.quarantined.time_since_epoch().count()));
  PutString(v, q.key);
  PutString(v, q.value);
  PutString(v, q.reason);
  return v;
}
Result<QuarantinedDelta> DecodeQuarantined(std::string_view key, std::string_view v) {
  QuarantinedDelta q;
  if (key.size() < 16 || v.size() < 24) return Status::Corruption("a quarantine entry is short");
  q.position = {GetU64(key, 0), GetU64(key, 8)};
  q.table = static_cast<TableId>(GetU64(v, 0));
  q.kind = static_cast<DeltaKind>(GetU64(v, 8));
  q.quarantined = TimePoint(std::chrono::milliseconds(GetU64(v, 16)));
  std::size_t at = 24;
  if (!GetString(v, at, &q.key) || !GetString(v, at, &q.value) || !GetString(v, at, &q.reason)) {
    return Status::Corruption("a quarantine entry is truncated");
  }
  return q;
}

rocksdb::DBOptions MakeDbOptions(const StoreOptions& o) {
  rocksdb::DBOptions db;
  db.create_if_missing = true;
  db.create_missing_column_families = true;
  if (!o.tuned) return db;
  // Four background jobs and two subcompactions on a 2-core machine: while the writer waits
  // for a flush, flushes and compactions can use both cores (measured: +30 % at 10M records).
  db.max_background_jobs = 4;
  db.max_subcompactions = 2;
  db.bytes_per_sync = 1 << 20;
  // The WAL is written back to the disk as it grows, not all at once: each flush fsyncs the WAL
  // files it closes (several column families), and a whole file of dirty pages at once held
  // up the appends around it (lag spikes of 20-80 ms at every WAL rotation, measured).
  db.wal_bytes_per_sync = 4 << 20;
  db.max_total_wal_size = 2 * o.memtable_budget_bytes;
  db.avoid_unnecessary_blocking_io = true;
  db.allow_concurrent_memtable_write =
      false;  // the vector memtable does not support it; one writer anyway
  return db;
}

enum class CfKind { kTable, kBlobs, kBlobLane, kSmall };

// Options for one column family. The write pattern of a table is a stream of batches of mostly
// distinct keys, with point reads rare (start-up reads everything with an iterator). A profile
// of the default path puts most of the time in the skiplist insert, so the tuned memtable is a
// vector (an append; sorted once, in the background, when it is flushed). Eight 64 MiB
// memtables let the writer go on while earlier ones flush, and universal compaction rewrites
// each record fewer times than levelled compaction: on this 2-core machine flushes and
// compactions share one core, and what they cannot absorb turns into write stalls. The blobs
// table holds large values: they go to blob files so that compactions move only their small
// keys. Measured choices are in docs/BENCHMARKS.md.
rocksdb::ColumnFamilyOptions MakeCfOptions(const StoreOptions& o, CfKind kind) {
  rocksdb::ColumnFamilyOptions cf;
  if (!o.tuned) return cf;
  constexpr int kMemtables = 8;
  const bool is_table = kind == CfKind::kTable || kind == CfKind::kBlobs;
  if (is_table) {
    cf.write_buffer_size = o.memtable_budget_bytes / kMemtables;
    cf.max_write_buffer_number = kMemtables;
  } else if (kind == CfKind::kSmall) {
    cf.write_buffer_size = 16ull << 20;
    cf.max_write_buffer_number = kMemtables;
  } else {
    cf.max_write_buffer_number = 4;
  }
  cf.min_write_buffer_number_to_merge = 1;
  if (kind == CfKind::kTable) {
    cf.memtable_factory = std::make_shared<rocksdb::VectorRepFactory>();
    // Tables are read whole at start-up and for snapshots, never by point lookups on a hot
    // path: fewer, larger merges (more sorted runs before one) cost less CPU, and the reads
    // merge the runs cheaply.
    cf.compaction_options_universal.size_ratio = 20;
    cf.compaction_options_universal.min_merge_width = 4;
    cf.compaction_options_universal.max_size_amplification_percent = 300;
  }
  cf.compaction_style = rocksdb::kCompactionStyleUniversal;
  cf.level0_file_num_compaction_trigger = 4;
  cf.level0_slowdown_writes_trigger = 40;
  cf.level0_stop_writes_trigger = 64;
  cf.target_file_size_base = 128ull << 20;
  cf.compression_per_level = {rocksdb::kNoCompression,  rocksdb::kNoCompression,
                              rocksdb::kLZ4Compression, rocksdb::kLZ4Compression,
                              rocksdb::kLZ4Compression, rocksdb::kLZ4Compression,
                              rocksdb::kLZ4Compression};
  rocksdb::BlockBasedTableOptions bbt;
  bbt.filter_policy.reset(rocksdb::NewBloomFilterPolicy(10));
  bbt.block_size = 16 << 10;
  // XXH3 instead of CRC32C for block checksums: this RocksDB build computes CRC32C in software.
  bbt.checksum = rocksdb::kXXH3;
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(bbt));
  if (kind == CfKind::kBlobs) {
    cf.enable_blob_files = true;
    cf.min_blob_size = o.blob_min_bytes;
    cf.blob_file_size = 256ull << 20;
    cf.enable_blob_garbage_collection = true;
  }
  return cf;
}

CfKind KindOf(const std::string& name) {
  if (name == kBlobLaneCf) return CfKind::kBlobLane;
  if (name == TableName(TableId::kBlobs)) return CfKind::kBlobs;
  if (ParseTableName(name)) return CfKind::kTable;
  return CfKind::kSmall;
}

// The deltas of one journal frame, verified.
struct FrameDeltas {
  wire::Decoded decoded;
  const fb::DeltaBatch* batch = nullptr;
};
Status DecodeJournalFrame(std::string_view frame, FrameDeltas* out) {
  std::span<const std::uint8_t> payload;
  wire::DecodeLimits limits;
  limits.max_message_bytes = 1u << 30;
  out->decoded = wire::Unframe(wire::AsBytes(frame), limits, &payload);
  if (out->decoded.ok()) out->decoded = wire::VerifyEnvelope(payload, limits);
  if (!out->decoded.ok()) {
    return Status::Corruption("a journal frame does not decode: " + out->decoded.reason);
  }
  out->batch = out->decoded.envelope->body_as_DeltaBatch();
  if (out->batch == nullptr) return Status::Corruption("a journal frame holds no DeltaBatch");
  return Status::Ok();
}

// The blob cursor as the last writer left it, readable by any thread without waiting for that
// writer: the blob lane's threads move it from the idle scheduling class, and a lock they held
// while preempted would hold the stream's acks up behind every normal-class thread of the
// machine. Two slots and a version: a writer fills the slot the current version does not name,
// then publishes it; a reader retries only when a writer published during its read, never
// because one is stalled half-way. One writer at a time (the store's blob_mu_).
class BlobCursorCell {
 public:
  BlobCursor Load() const {
    for (;;) {
      const std::uint64_t version = version_.load(std::memory_order_acquire);
      const Slot& slot = slots_[version & 1];
      // Acquire: the version is read again only after the slot.
      const BlobCursor cursor{slot.seq.load(std::memory_order_acquire),
                              slot.offset.load(std::memory_order_acquire)};
      if (version_.load(std::memory_order_relaxed) == version) return cursor;
    }
  }
  void Store(BlobCursor cursor) {
    const std::uint64_t version = version_.load(std::memory_order_relaxed) + 1;
    // Release: the previous publication comes before this slot's new contents, so a reader that
    // sees any of them then sees the version move.
    Slot& slot = slots_[version & 1];
    slot.seq.store(cursor.seq, std::memory_order_release);
    slot.offset.store(cursor.offset, std::memory_order_release);
    version_.store(version, std::memory_order_release);
  }

 private:
  struct Slot {
    std::atomic<std::uint64_t> seq{BlobCursor{}.seq};
    std::atomic<std::uint64_t> offset{BlobCursor{}.offset};
  };
  std::array<Slot, 2> slots_;
  std::atomic<std::uint64_t> version_{0};
};

class SnapshotImpl;

}  // namespace

class Store::Impl {
 public:
  ~Impl() {
    {
      std::lock_guard lock(state_mu_);
      stop_ = true;
    }
    state_cv_.notify_all();
    if (materializer_.joinable()) materializer_.join();
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    handles_.clear();
    if (db_) db_->Close();
    if (journal_index_cf_ != nullptr) index_db_->DestroyColumnFamilyHandle(journal_index_cf_);
    if (index_meta_ != nullptr) index_db_->DestroyColumnFamilyHandle(index_meta_);
    if (index_db_) index_db_->Close();
  }

  Status Open(const StoreOptions& options) {
    options_ = options;
    if (const char* at = std::getenv("STATESYNC_STORE_CRASH_AT")) crash_at_ = at;
    recent_frames_ = detail::FrameRing(options.journal_cache_bytes);
    std::error_code ec;
    std::filesystem::create_directories(options.dir, ec);
    if (ec) return Status::IOError("cannot create " + options.dir.string() + ": " + ec.message());
    // A materializer round cut before its ingestion left its file: the journal still holds it.
    for (const auto& entry : std::filesystem::directory_iterator(options.dir, ec)) {
      if (entry.path().filename().string().starts_with(kIngestPrefix)) {
        std::filesystem::remove(entry.path(), ec);
      }
    }

    std::vector<std::string> names;
    rocksdb::Status ls =
        rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), options.dir.string(), &names);
    if (!ls.ok()) names.clear();  // a new store
    // The index's instance first: created only with a new store, or to take an old layout's
    // index. A store that had it and lost it would open with an empty history.
    const bool new_store = !std::filesystem::exists(options.dir / "CURRENT");
    const bool legacy_layout =
        std::find(names.begin(), names.end(), kBacklogIndexCf) != names.end();
    if (Status st = OpenIndexDb(new_store || legacy_layout); !st.ok()) return st;
    auto want = [&names](const std::string& n) {
      if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
    };
    want(rocksdb::kDefaultColumnFamilyName);
    want(kMetaCf);
    want(kBlobLaneCf);
    want(kQuarantineCf);
    for (TableId t : kBuiltinTables) want(TableName(t));

    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    descriptors.reserve(names.size());
    for (const auto& n : names) descriptors.emplace_back(n, MakeCfOptions(options, KindOf(n)));
    rocksdb::DB* db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(MakeDbOptions(options), options.dir.string(), descriptors,
                                          &handles_, &db);
    if (!s.ok()) return FromRocks(s, "cannot open the store in " + options.dir.string());
    db_.reset(db);
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (names[i] == kMetaCf) meta_ = handles_[i];
      if (names[i] == kBacklogIndexCf) legacy_index_cf_ = handles_[i];
      if (names[i] == kBlobLaneCf) blob_cf_ = handles_[i];
      if (names[i] == kQuarantineCf) quarantine_cf_ = handles_[i];
      if (auto t = ParseTableName(names[i])) tables_[*t] = handles_[i];
    }
    write_options_.sync = options.sync_writes;
    synced_write_options_.sync = true;
    if (Status st = MoveLegacyIndex(); !st.ok()) return st;
    if (Status st = ReadMeta(); !st.ok()) return st;
    if (Status st = ReadJournalIndex(); !st.ok()) return st;
    if (Status st = OpenBlobFiles(); !st.ok()) return st;
    if (options.materialize) {
      // RocksDB's compactions also run below the stream's threads, in the idle class as the
      // materializer does.
      if (!rocksdb::Env::Default()
               ->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::LOW,
                                            rocksdb::CpuPriority::kIdle)
               .ok()) {
        rocksdb::Env::Default()->LowerThreadPoolCPUPriority(rocksdb::Env::Priority::LOW);
      }
      materializer_ = std::thread([this] { MaterializeLoop(); });
    }
    return Status::Ok();
  }

  // ---- the journal ----
  Status Append(Position first, Position last, std::span<const std::uint8_t> frame, TimePoint now) {
    std::lock_guard write_lock(write_mu_);
    const Position head = applied();
    if (first.epoch != last.epoch || first.seq > last.seq) {
      return Status::InvalidArgument("a journal batch runs from " + ToString(first) + " to " +
                                     ToString(last) + ": one epoch, increasing seq");
    }
    if (first.seq != head.seq + 1 || first.epoch < head.epoch) {
      return Status::FailedPrecondition("a batch starting at " + ToString(first) +
                                        " does not follow the head " + ToString(head));
    }
    // The frame goes to a segment file, never through RocksDB (JournalFiles says why); the
    // index entry that names it makes it part of the journal. A failure after the frame is
    // written leaves bytes no entry names: the next frame goes after them, and a reopen cuts
    // them off when they are at the end.
    if (tables_head_unsynced_) {
      // An ApplyBatch's `materialized` is the position this batch follows: on the disk first,
      // or a power loss could keep the batch and lose what it follows.
      if (Status st = FromRocks(db_->SyncWAL(), "cannot sync the tables' position"); !st.ok()) {
        return st;
      }
      tables_head_unsynced_ = false;
    }
    auto place = journal_files_->Append(frame);
    if (!place.ok()) return place.status();
    JournalIndexEntry e{first.seq,    last,   now.time_since_epoch().count(),
                        frame.size(), *place, XXH3_64bits(frame.data(), frame.size())};
    // The entry's `last` is the new head: `applied` is not written, but derived at open.
    rocksdb::WriteBatch batch;
    rocksdb::Status s =
        batch.Put(journal_index_cf_, JournalKey('i', first.seq), EncodeIndexEntry(e));
    std::vector<Position> history = this->history();
    const bool new_epoch = history.empty() || history.back().epoch < first.epoch;
    if (new_epoch) {
      history.push_back({first.epoch, first.seq});
      if (s.ok()) s = batch.Put(index_meta_, kHistoryKey, EncodeHistory(history));
    }
    if (!s.ok()) return FromRocks(s, "cannot build the journal write");
    s = index_db_->Write(write_options_, &batch);
    if (!s.ok()) return FromRocks(s, "cannot append a batch to the journal");
    {
      std::lock_guard lock(state_mu_);
      applied_ = last;
      if (new_epoch) history_ = std::move(history);
      journal_.push_back(e);
      recent_frames_.Put(first.seq, frame);
      journal_bytes_ += e.bytes;
      unmaterialized_bytes_ += e.bytes;
      last_append_ = std::chrono::steady_clock::now();
    }
    state_cv_.notify_all();
    return Status::Ok();
  }

  Position applied() const {
    std::lock_guard lock(state_mu_);
    return applied_;
  }
  Position materialized() const {
    std::lock_guard lock(state_mu_);
    return materialized_;
  }
  bool WaitMaterialized(Position p, std::chrono::milliseconds timeout) const {
    std::unique_lock lock(state_mu_);
    materialize_wanted_ = std::max(materialize_wanted_, p.seq);
    state_cv_.notify_all();
    return state_cv_.wait_for(lock, timeout, [&] { return materialized_ >= p; });
  }

  Status ReadJournal(Seq after, std::size_t max_bytes, std::vector<JournalBatch>* out,
                     std::size_t max_batches = SIZE_MAX) const {
    out->clear();
    Seq from = 0;
    std::size_t bytes = 0;
    for (;;) {
      std::lock_guard lock(state_mu_);
      // The batch holding after + 1: the last whose first seq is <= after + 1.
      auto it = std::upper_bound(journal_.begin(), journal_.end(), after + 1,
                                 [](Seq s, const JournalIndexEntry& e) { return s < e.first; });
      if (applied_.seq <= after) return Status::Ok();  // nothing after it
      if (journal_.empty() || it == journal_.begin()) {
        if (!out->empty()) return Status::Ok();  // trimmed since the last piece: what we have
        if (journal_.empty()) {
          return Status::NotFound("the journal is empty and the head is at seq " +
                                  std::to_string(applied_.seq));
        }
        return Status::NotFound("the journal starts at seq " +
                                std::to_string(journal_.front().first) + ", after " +
                                std::to_string(after + 1));
      }
      --it;
      if (it->last.seq <= after) {
        if (++it == journal_.end()) return Status::Ok();
      }
      from = it->first;
      if (recent_frames_.empty() || recent_frames_.oldest() > from) break;  // in the files only
      // Copied a piece at a time, each under the lock (which Append takes): a materializer
      // round reads tens of MB.
      std::size_t piece = 0;
      for (; it != journal_.end() && bytes < max_bytes && out->size() < max_batches &&
             piece < kJournalCopyPieceBytes;
           ++it) {
        const std::string_view frame = recent_frames_.Find(it->first);
        if (frame.empty()) {
          return Status::Corruption(
              "the journal's frames in memory do not follow its index at seq " +
              std::to_string(it->first));
        }
        out->push_back(BatchOf(*it, frame));
        bytes += frame.size();
        piece += frame.size();
        after = it->last.seq;
      }
      if (piece < kJournalCopyPieceBytes || bytes >= max_bytes || out->size() >= max_batches) {
        return Status::Ok();
      }
    }
    if (!out->empty()) return Status::Ok();  // the rest has left the ring: the next call reads it
    return ReadFramesFromFiles(from, max_bytes, max_batches, out);
  }

  // Reads the frames of the batches from `from` on out of the segment files.
  Status ReadFramesFromFiles(Seq from, std::size_t max_bytes, std::size_t max_batches,
                             std::vector<JournalBatch>* out) const {
    std::vector<JournalIndexEntry> entries;
    {
      std::lock_guard lock(state_mu_);
      auto it = std::lower_bound(journal_.begin(), journal_.end(), from,
                                 [](const JournalIndexEntry& e, Seq s) { return e.first < s; });
      for (std::size_t bytes = 0;
           it != journal_.end() && bytes < max_bytes && entries.size() < max_batches; ++it) {
        entries.push_back(*it);
        bytes += it->bytes;
      }
    }
    if (entries.empty() || entries.front().first != from) {
      return Status::NotFound("the journal no longer holds the batch at seq " +
                              std::to_string(from));
    }
    // Each frame straight into its batch: reading a span of frames and copying them out was
    // a third pass over the bytes, in fresh memory (the start-up replay's largest cost).
    detail::JournalFiles::ReadHandle segment;  // open while the frames are in one file
    for (const JournalIndexEntry& e : entries) {
      JournalBatch b = BatchOf(e, {});
      if (Status st = journal_files_->Read(e.place, e.bytes, &b.frame, &segment); !st.ok()) {
        // Dropped by a trim since the entries were copied: what was read is the answer.
        if (st.code() == Status::Code::kNotFound && !out->empty()) return Status::Ok();
        return st;
      }
      if (XXH3_64bits(b.frame.data(), b.frame.size()) != e.checksum) {
        return Status::Corruption(
            "the journal's frame of the batch at seq " + std::to_string(e.first) + " in " +
            journal_files_->SegmentPath(e.place.segment).string() + " fails its checksum");
      }
      out->push_back(std::move(b));
    }
    return Status::Ok();
  }

  std::uint64_t unmaterialized_bytes() const {
    std::lock_guard lock(state_mu_);
    return unmaterialized_bytes_;
  }
  bool materializer_behind() const {
    return options_.materialize && unmaterialized_bytes() > options_.max_unmaterialized_bytes;
  }

  JournalStats journal() const {
    std::lock_guard lock(state_mu_);
    JournalStats s;
    if (!journal_.empty()) {
      s.first_seq = journal_.front().first;
      s.last_seq = journal_.back().last.seq;
    }
    s.batches = journal_.size();
    s.bytes = journal_bytes_;
    return s;
  }

  Result<std::uint64_t> Trim(const JournalLimits& limits, TimePoint now, Seq keep_after) {
    auto dropped = TrimIndex(limits, now, keep_after);
    if (!dropped.ok()) return dropped;
    // Only when the journal lost batches, or was reset. Not on the caller's thread (the
    // replication I/O threads call this) but on the materializer's: removing a file waits for
    // the disk's discard on this machine's file system.
    {
      std::lock_guard lock(state_mu_);
      if (*dropped == 0 && !journal_reset_) return dropped;
      journal_reset_ = false;
      if (options_.materialize) {
        segment_drop_wanted_ = true;
        state_cv_.notify_all();
        return dropped;
      }
    }
    if (Status st = DropSegments(); !st.ok()) {
      return st;
    }
    return dropped;
  }

  Result<std::uint64_t> TrimIndex(const JournalLimits& limits, TimePoint now, Seq keep_after) {
    std::lock_guard write_lock(write_mu_);
    std::uint64_t dropped = 0;
    {
      std::lock_guard lock(state_mu_);
      keep_after = std::min(keep_after, materialized_.seq);
      std::uint64_t bytes = journal_bytes_;
      const std::int64_t oldest_ms = (now - limits.max_age).time_since_epoch().count();
      for (const auto& e : journal_) {
        const bool over = bytes > limits.max_bytes || e.written_ms < oldest_ms;
        if (over && e.last.seq > materialized_.seq) {
          // The journal's limits come first: what is not in the tables yet goes there now.
          materialize_wanted_ = std::max(materialize_wanted_, e.last.seq);
          state_cv_.notify_all();
        }
        if (!over || e.last.seq > keep_after) break;
        bytes -= e.bytes;
        ++dropped;
      }
    }
    if (dropped == 0) return std::uint64_t{0};
    if (Status st = DropOldestBatches(dropped); !st.ok()) return st;
    return dropped;
  }

  // Takes the `count` oldest batches out of the journal's index; the frames go with whole
  // segment files (DropSegments). REQUIRES: write_mu_ held, count <= journal_.size().
  Status DropOldestBatches(std::size_t count) {
    Seq cut = 0;  // drop the batches whose first seq < cut
    {
      std::lock_guard lock(state_mu_);
      cut = journal_[count - 1].first + 1;
    }
    rocksdb::Status s = index_db_->DeleteRange(write_options_, journal_index_cf_,
                                               JournalKey('i', 0), JournalKey('i', cut));
    if (!s.ok()) return FromRocks(s, "cannot trim the journal");
    std::lock_guard lock(state_mu_);
    for (std::size_t i = 0; i < count; ++i) {
      journal_bytes_ -= journal_.front().bytes;
      journal_.pop_front();
    }
    return Status::Ok();
  }

  // Removes the segment files that hold nothing from the oldest journal batch on.
  Status DropSegments() {
    std::uint64_t keep_from = journal_files_->current_segment();
    {
      std::lock_guard lock(state_mu_);
      if (!journal_.empty()) keep_from = journal_.front().place.segment;
    }
    return journal_files_->DropBefore(keep_from);
  }

  // ---- history ----
  std::string replication_id() const {
    std::lock_guard lock(state_mu_);
    return replication_id_;
  }
  Status SetReplicationId(std::string_view id) {
    std::lock_guard write_lock(write_mu_);
    // Synced: the appends that follow go to the index's instance, and after a power loss a
    // head above 0 with no id would look like another history to the primary (a FORK).
    rocksdb::Status s = db_->Put(synced_write_options_, meta_, kReplicationIdKey, ToSlice(id));
    if (!s.ok()) return FromRocks(s, "cannot store the replication id");
    std::lock_guard lock(state_mu_);
    replication_id_ = id;
    return Status::Ok();
  }
  std::vector<Position> history() const {
    std::lock_guard lock(state_mu_);
    return history_;
  }
  Status StartEpoch(Epoch epoch) {
    std::lock_guard write_lock(write_mu_);
    std::vector<Position> history = this->history();
    const Position head = applied();
    if (!history.empty() && history.back().epoch >= epoch) {
      return Status::StaleEpoch("epoch " + std::to_string(epoch) + " is not newer than " +
                                std::to_string(history.back().epoch));
    }
    history.push_back({epoch, head.seq + 1});
    rocksdb::Status s =
        index_db_->Put(write_options_, index_meta_, kHistoryKey, EncodeHistory(history));
    if (!s.ok()) return FromRocks(s, "cannot store the epoch history");
    std::lock_guard lock(state_mu_);
    history_ = std::move(history);
    return Status::Ok();
  }

  // ---- tables ----
  Status ApplyBatch(Position applied, std::span<const StoredDelta> deltas) {
    std::lock_guard write_lock(write_mu_);
    std::shared_lock tables_lock(tables_mu_);
    const Position current = this->applied();
    if (applied <= current) {
      return Status::FailedPrecondition("batch position " + ToString(applied) +
                                        " is not after the applied " + ToString(current));
    }
    if (materialized() != current) {
      return Status::FailedPrecondition("ApplyBatch with journal batches not yet materialized");
    }
    rocksdb::WriteBatch batch(deltas.size() * 192 + 64);
    if (Status st = AddToBatch(batch, deltas); !st.ok()) return st;
    // `materialized` is the head here: applied is derived from it at open.
    rocksdb::Status s = batch.Put(meta_, kMaterializedKey, EncodePosition(applied));
    if (!s.ok()) return FromRocks(s, "cannot build the write batch");
    s = db_->Write(write_options_, &batch);
    if (!s.ok()) return FromRocks(s, "cannot write a batch of " + std::to_string(deltas.size()));
    tables_head_unsynced_ = !options_.sync_writes;
    std::lock_guard lock(state_mu_);
    applied_ = materialized_ = applied;
    return Status::Ok();
  }

  Result<std::optional<std::string>> Get(TableId table, std::string_view key) const {
    std::shared_lock tables_lock(tables_mu_);
    auto it = tables_.find(table);
    if (it == tables_.end()) return std::optional<std::string>();
    std::string value;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), it->second, ToSlice(key), &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) return FromRocks(s, "cannot read a key of " + TableName(table));
    return std::optional<std::string>(std::move(value));
  }

  Status LoadInto(SessionTable& table, LoadStats* stats) const {
    if (table.total_size() != 0 || table.pending() != 0) {
      return Status::FailedPrecondition("LoadInto needs an empty session table");
    }
    if (table.writable()) return Status::FailedPrecondition("LoadInto needs a read-only table");
    const auto start = std::chrono::steady_clock::now();
    LoadStats local;
    std::shared_lock tables_lock(tables_mu_);
    // One snapshot for every table and the materialized position: a consistent point even if
    // the materializer writes meanwhile.
    const rocksdb::Snapshot* snapshot = db_->GetSnapshot();
    struct Release {
      rocksdb::DB* db;
      const rocksdb::Snapshot* s;
      ~Release() { db->ReleaseSnapshot(s); }
    } release{db_.get(), snapshot};
    auto at = ReadPosition(kMaterializedKey, snapshot);
    if (!at.ok()) return at.status();
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot;
    ro.fill_cache = false;
    ro.readahead_size = 4 << 20;
    ro.adaptive_readahead = true;
    for (const auto& [id, cf] : tables_) {
      std::uint64_t estimate = 0;
      if (db_->GetIntProperty(cf, "rocksdb.estimate-num-keys", &estimate) && estimate > 0) {
        table.Reserve(id, estimate);
      }
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        Status st = table.Load(id, ToView(it->key()), ToView(it->value()));
        if (!st.ok()) {
          return Status::Corruption("loading " + TableName(id) + " record " +
                                    std::to_string(local.records + 1) + ": " + st.ToString());
        }
        ++local.records;
        local.bytes += it->key().size() + it->value().size();
      }
      if (!it->status().ok()) return FromRocks(it->status(), "reading " + TableName(id));
    }
    if (Status st = table.ResetPosition(*at); !st.ok()) return st;
    // Then what the journal holds beyond the tables.
    Status replayed = ForEachJournalDelta(
        at->seq,
        [&](const DeltaView& v) {
          if (Status st = table.Apply(v); !st.ok()) {
            return Status::Corruption("replaying the journal at " + ToString(v.position) + ": " +
                                      st.ToString());
          }
          ++local.journal_deltas;
          return Status::Ok();
        },
        &local.journal_batches);
    if (!replayed.ok()) return replayed;
    local.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (stats) *stats = local;
    return Status::Ok();
  }

  std::vector<TableId> tables() const {
    std::shared_lock lock(tables_mu_);
    std::vector<TableId> out;
    for (const auto& [id, cf] : tables_) out.push_back(id);
    return out;
  }

  Result<std::unique_ptr<StoreSnapshot>> OpenSnapshot();

  // ---- snapshot install ----
  Status BeginSnapshot() {
    std::lock_guard materialize_lock(materialize_mu_);
    std::lock_guard write_lock(write_mu_);
    std::unique_lock tables_lock(tables_mu_);
    // First forget the history, so that a crash from here on asks for a snapshot again: the
    // tables' instance first, synced, with a new generation; then the index's. A crash between
    // the two leaves the generations different, and the next open empties the index.
    const std::uint64_t gen = journal_gen_ + 1;
    rocksdb::WriteBatch batch;
    rocksdb::Status s = batch.Put(meta_, kReplicationIdKey, "");
    if (s.ok()) s = batch.Put(meta_, kMaterializedKey, EncodePosition({}));
    if (s.ok()) s = batch.Put(meta_, kJournalGenKey, EncodeGen(gen));
    if (s.ok()) s = db_->Write(synced_write_options_, &batch);
    if (!s.ok()) return FromRocks(s, "cannot reset the store for a snapshot");
    CrashPoint("begin-snapshot-between");
    if (Status st = ResetIndex(gen); !st.ok()) return st;
    {
      std::lock_guard lock(state_mu_);
      replication_id_.clear();
      applied_ = materialized_ = Position{};
      history_.clear();
      journal_.clear();
      journal_reset_ = true;
      recent_frames_.Clear();
      journal_bytes_ = 0;
      unmaterialized_bytes_ = 0;
    }
    // Frames of the new history in a segment of their own: the old ones all go at the next trim.
    if (Status st = journal_files_->StartSegment(); !st.ok()) return st;
    // Then empty every table: dropping a column family is immediate whatever it holds.
    for (auto& [id, cf] : tables_) {
      const std::string name = cf->GetName();
      s = db_->DropColumnFamily(cf);
      if (!s.ok()) return FromRocks(s, "cannot drop " + name);
      auto old = std::find(handles_.begin(), handles_.end(), cf);
      db_->DestroyColumnFamilyHandle(cf);
      rocksdb::ColumnFamilyHandle* fresh = nullptr;
      s = db_->CreateColumnFamily(MakeCfOptions(options_, KindOf(name)), name, &fresh);
      if (!s.ok()) return FromRocks(s, "cannot create " + name);
      *old = fresh;
      cf = fresh;
    }
    return Status::Ok();
  }

  Status AddSnapshotRecords(std::span<const StoredDelta> records) {
    std::lock_guard write_lock(write_mu_);
    std::shared_lock tables_lock(tables_mu_);
    rocksdb::WriteBatch batch(records.size() * 192 + 64);
    if (Status st = AddToBatch(batch, records); !st.ok()) return st;
    // No WAL: until FinishSnapshot flushes the tables and records the position, a crash makes
    // the node ask for a new snapshot, so these writes need not survive one on their own.
    rocksdb::WriteOptions wo;
    wo.disableWAL = true;
    return FromRocks(db_->Write(wo, &batch), "cannot write snapshot records");
  }

  Status FinishSnapshot(std::string_view replication_id, Position position,
                        std::span<const Position> history) {
    std::lock_guard write_lock(write_mu_);
    {
      std::shared_lock tables_lock(tables_mu_);
      std::vector<rocksdb::ColumnFamilyHandle*> cfs;
      for (const auto& [id, cf] : tables_) cfs.push_back(cf);
      rocksdb::FlushOptions fo;
      fo.wait = true;
      rocksdb::Status s = db_->Flush(fo, cfs);
      if (!s.ok()) return FromRocks(s, "cannot flush the snapshot");
    }
    std::vector<Position> h(history.begin(), history.end());
    // The history first, synced: until the replication id is written the node asks for a
    // snapshot again, whatever the history says; an id with an older history would not.
    rocksdb::Status s =
        index_db_->Put(synced_write_options_, index_meta_, kHistoryKey, EncodeHistory(h));
    if (!s.ok()) return FromRocks(s, "cannot record the snapshot's history");
    CrashPoint("finish-snapshot-between");
    // Synced as well: the appends that follow go to the index's instance, and after a power
    // loss entries past `position` with no snapshot position under them would not load.
    rocksdb::WriteBatch batch;
    s = batch.Put(meta_, kReplicationIdKey, ToSlice(replication_id));
    if (s.ok()) s = batch.Put(meta_, kMaterializedKey, EncodePosition(position));
    if (s.ok()) s = db_->Write(synced_write_options_, &batch);
    if (!s.ok()) return FromRocks(s, "cannot record the snapshot's position");
    std::lock_guard lock(state_mu_);
    replication_id_ = replication_id;
    applied_ = materialized_ = position;
    history_ = std::move(h);
    return Status::Ok();
  }

  // ---- quarantine ----
  Result<std::uint64_t> QuarantineAfter(Position common, std::string_view reason, TimePoint now) {
    std::vector<QuarantinedDelta> out;
    const Position head = applied();
    if (head.seq <= common.seq) return std::uint64_t{0};
    const JournalStats js = journal();
    const bool journal_covers = js.batches > 0 && js.first_seq <= common.seq + 1;
    if (journal_covers) {
      Status st = ForEachJournalDelta(common.seq, [&](const DeltaView& v) {
        out.push_back({v.position, v.table, v.kind, std::string(v.key), std::string(v.value), now,
                       std::string(reason)});
        return Status::Ok();
      });
      if (!st.ok()) return st;
    } else {
      // The journal no longer reaches the fork: keep every record, marked with the head.
      const Position mat = materialized();
      if (mat != head) WaitMaterialized(head, std::chrono::minutes(5));
      std::shared_lock tables_lock(tables_mu_);
      for (const auto& [id, cf] : tables_) {
        std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), cf));
        for (it->SeekToFirst(); it->Valid(); it->Next()) {
          QuarantinedDelta q;
          q.position = head;
          q.table = id;
          q.key = ToView(it->key());
          q.value = ToView(it->value());
          q.quarantined = now;
          q.reason = std::string(reason) +
                     " (the journal no longer reaches the fork point: every record is kept)";
          out.push_back(std::move(q));
        }
      }
    }
    std::lock_guard write_lock(write_mu_);
    std::uint64_t count = 0;
    {
      std::string raw;
      if (db_->Get(rocksdb::ReadOptions(), meta_, kQuarantineCountKey, &raw).ok() &&
          raw.size() == 8) {
        count = GetU64(raw, 0);
      }
    }
    rocksdb::WriteBatch batch;
    for (const auto& q : out) {
      // Keyed by position, then a counter: the same position may be quarantined twice (a whole
      // table at one head, or a second fork), and nothing may overwrite an earlier entry.
      std::string key = EncodePosition(q.position);
      PutU64(key, ++count);
      rocksdb::Status s = batch.Put(quarantine_cf_, key, EncodeQuarantined(q));
      if (!s.ok()) return FromRocks(s, "cannot build the quarantine write");
    }
    std::string c;
    PutU64(c, count);
    rocksdb::Status s = batch.Put(meta_, kQuarantineCountKey, c);
    if (s.ok()) s = db_->Write(write_options_, &batch);
    if (!s.ok()) return FromRocks(s, "cannot write the quarantine");
    return static_cast<std::uint64_t>(out.size());
  }

  Status ScanQuarantine(const std::function<void(const QuarantinedDelta&)>& fn) const {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), quarantine_cf_));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      auto q = DecodeQuarantined(ToView(it->key()), ToView(it->value()));
      if (!q.ok()) return q.status();
      fn(*q);
    }
    return FromRocks(it->status(), "cannot read the quarantine");
  }

  // ---- the blob lane ----
  Result<BlobInfo> PutBlob(std::string_view blob_id, std::uint8_t kind, std::string_view name,
                           std::string_view data, std::size_t chunk_bytes,
                           const std::function<void(std::size_t)>& before_chunk) {
    if (blob_id.empty()) return Status::InvalidArgument("a blob needs an id");
    if (chunk_bytes == 0) return Status::InvalidArgument("chunk_bytes must be positive");
    // The blob lane has its own lock, and a blob goes in slices: the journal's appends (the
    // stream's durable point) never wait behind a large blob.
    std::lock_guard blob_lock(blob_mu_);
    BlobCursor cursor = blob_cursor();
    BlobInfo info;
    info.seq = cursor.seq;
    info.blob_id = blob_id;
    info.kind = kind;
    info.name = name;
    info.size = data.size();
    info.xxh64 = XXH3_64bits(data.data(), data.size());
    // The data goes to its own file first (starting it anew replaces a partial blob left at this
    // seq, received before this node was promoted). Until the info record below is written,
    // the blob is invisible, and a crash leaves the cursor at this seq, to be reused.
    Status st = blob_files_.WritePart(info.seq, 0, {});
    for (std::size_t off = 0; st.ok() && off < data.size(); off += chunk_bytes) {
      const std::string_view chunk = data.substr(off, chunk_bytes);
      if (before_chunk) before_chunk(chunk.size());
      st = blob_files_.WritePart(info.seq, off, chunk);
    }
    if (st.ok()) st = blob_files_.Publish(info.seq);
    if (!st.ok())
      return Status::IOError("cannot store blob " + std::string(blob_id) + ": " + st.message());
    const BlobCursor next{info.seq + 1, 0};
    if (Status recorded = RecordBlob(info, next); !recorded.ok()) return recorded;
    return info;
  }

  BlobCursor blob_cursor() const { return blob_cursor_.Load(); }

  Status ReadBlob(std::uint64_t seq, std::uint64_t offset, std::size_t max_bytes, BlobInfo* info,
                  std::string* data) const {
    std::string raw;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), blob_cf_, BlobInfoKey(seq), &raw);
    if (s.IsNotFound()) return Status::NotFound("no complete blob " + std::to_string(seq));
    if (!s.ok()) return FromRocks(s, "cannot read blob " + std::to_string(seq));
    auto decoded = DecodeBlobInfo(raw);
    if (!decoded.ok()) return decoded.status();
    *info = *decoded;
    return blob_files_.Read(seq, info->size, offset, max_bytes, data);
  }

  Status AddBlobChunk(const BlobInfo& info, std::uint64_t offset, std::string_view data) {
    std::lock_guard blob_lock(blob_mu_);
    const BlobCursor cursor = blob_cursor();
    if (info.seq != cursor.seq || offset != cursor.offset) {
      return Status::FailedPrecondition("blob chunk (" + std::to_string(info.seq) + ", " +
                                        std::to_string(offset) + ") is not at the cursor (" +
                                        std::to_string(cursor.seq) + ", " +
                                        std::to_string(cursor.offset) + ")");
    }
    if (offset + data.size() > info.size) {
      return Status::InvalidArgument("blob chunk runs past the blob's size");
    }
    BlobCursor next{info.seq, offset + data.size()};
    // The bytes first, then the cursor past them: after a crash the file holds at least what
    // the cursor says, and the next chunk overwrites anything beyond it.
    if (Status st = blob_files_.WritePart(info.seq, offset, data); !st.ok()) {
      return Status::IOError("cannot store a chunk of blob " + info.blob_id + ": " + st.message());
    }
    if (Status st = MoveBlobCursor(next, "cannot store a blob chunk"); !st.ok()) return st;
    if (next.offset < info.size) return Status::Ok();
    return CompleteBlob(info);
  }

  Result<std::optional<std::string>> GetBlob(std::string_view blob_id, BlobInfo* info) const {
    std::string raw;
    rocksdb::Status s = db_->Get(rocksdb::ReadOptions(), blob_cf_, BlobIdKey(blob_id), &raw);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok() || raw.size() != 8) return FromRocks(s, "cannot read the blob index");
    std::string data;
    BlobInfo local;
    if (Status st = ReadBlob(GetU64(raw, 0), 0, SIZE_MAX, &local, &data); !st.ok()) return st;
    // Checked against the checksum recorded with it: a file damaged on the disk (or cut short
    // by a power loss that kept the record) is an error, never wrong voice data.
    if (XXH3_64bits(data.data(), data.size()) != local.xxh64) {
      return Status::Corruption("blob " + std::string(blob_id) + " (" +
                                blob_files_.CompletePath(local.seq).string() +
                                ") does not match its checksum");
    }
    if (info) *info = local;
    return std::optional<std::string>(std::move(data));
  }

  Status ScanBlobs(const std::function<void(const BlobInfo&)>& fn) const {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), blob_cf_));
    for (it->Seek("m"); it->Valid() && it->key().starts_with("m"); it->Next()) {
      auto info = DecodeBlobInfo(ToView(it->value()));
      if (!info.ok()) return info.status();
      fn(*info);
    }
    return FromRocks(it->status(), "cannot list blobs");
  }

  Status Flush() {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    std::shared_lock lock(tables_mu_);
    if (Status st = FromRocks(index_db_->Flush(fo, journal_index_cf_), "cannot flush the index");
        !st.ok()) {
      return st;
    }
    return FromRocks(db_->Flush(fo, handles_), "cannot flush the store");
  }

  rocksdb::DB* db() const { return db_.get(); }
  rocksdb::ColumnFamilyHandle* meta() const { return meta_; }
  std::shared_mutex& tables_mu() const { return tables_mu_; }
  const std::map<TableId, rocksdb::ColumnFamilyHandle*>& table_handles() const { return tables_; }

 private:
  static std::string EncodeHistory(const std::vector<Position>& h) {
    std::string out;
    for (const Position& p : h) out += EncodePosition(p);
    return out;
  }

  // Visits every journal delta after seq `after`, in order; stops at the first error `fn` returns.
  Status ForEachJournalDelta(Seq after, const std::function<Status(const DeltaView&)>& fn,
                             std::uint64_t* batches_read = nullptr) const {
    std::vector<JournalBatch> batches;
    for (;;) {
      if (Status st = ReadJournal(after, 64 << 20, &batches); !st.ok()) return st;
      if (batches.empty()) return Status::Ok();
      for (const JournalBatch& b : batches) {
        FrameDeltas fd;
        if (Status st = DecodeJournalFrame(b.frame, &fd); !st.ok()) return st;
        for (const fb::Delta* d : *fd.batch->deltas()) {
          if (d->position()->seq() <= after) continue;
          DeltaView v;
          v.position = {d->position()->epoch(), d->position()->seq()};
          v.table = static_cast<TableId>(d->table_id());
          v.kind = static_cast<DeltaKind>(d->kind());
          if (d->key()) v.key = wire::AsChars({d->key()->data(), d->key()->size()});
          if (d->value()) v.value = wire::AsChars({d->value()->data(), d->value()->size()});
          if (Status st = fn(v); !st.ok()) return st;
          after = v.position.seq;
        }
        if (batches_read) ++*batches_read;
      }
    }
  }

  Status OpenIndexDb(bool create) {
    const std::filesystem::path dir = options_.dir / kJournalIndexDir;
    if (!create && !std::filesystem::exists(dir / "CURRENT")) {
      return Status::FailedPrecondition(
          "the store in " + options_.dir.string() + " has no journal index (" + dir.string() +
          "): it was removed or lost. Remove the store's directory and resynchronize from a "
          "primary");
    }
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
        {rocksdb::kDefaultColumnFamilyName, MakeCfOptions(options_, CfKind::kSmall)},
        {kBacklogIndexCf, MakeCfOptions(options_, CfKind::kSmall)}};
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* db = nullptr;
    rocksdb::Status s =
        rocksdb::DB::Open(MakeDbOptions(options_), dir.string(), descriptors, &handles, &db);
    if (!s.ok()) return FromRocks(s, "cannot open the journal's index in " + dir.string());
    index_db_.reset(db);
    index_meta_ = handles[0];
    journal_index_cf_ = handles[1];
    return Status::Ok();
  }

  // A store written before the index had an instance of its own keeps it in the tables' one:
  // copied over (synced), then removed there. Run again whole if cut: nothing appends before
  // Open returns, so the copy is the same each time.
  Status MoveLegacyIndex() {
    if (legacy_index_cf_ == nullptr) return Status::Ok();
    rocksdb::WriteBatch batch;
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), legacy_index_cf_));
    std::uint64_t entries = 0;
    rocksdb::Status s;
    for (it->SeekToFirst(); it->Valid() && s.ok(); it->Next(), ++entries) {
      // A journal older still is left as it is, for the version that wrote it.
      if (Status st = CheckIndexFormat(ToView(it->value())); !st.ok()) return st;
      s = batch.Put(journal_index_cf_, it->key(), it->value());
    }
    if (s.ok()) s = it->status();
    it.reset();
    std::string history;
    const bool has_history = db_->Get(rocksdb::ReadOptions(), meta_, kHistoryKey, &history).ok();
    if (s.ok() && has_history) s = batch.Put(index_meta_, kHistoryKey, history);
    if (s.ok()) s = index_db_->Write(synced_write_options_, &batch);
    if (!s.ok()) {
      return FromRocks(s, "cannot move the journal's index to " + std::string(kJournalIndexDir));
    }
    CrashPoint("move-index-between");
    rocksdb::WriteBatch drop;
    s = drop.Delete(meta_, kHistoryKey);
    if (s.ok()) s = drop.Delete(meta_, kAppliedKey);
    if (s.ok()) s = db_->Write(synced_write_options_, &drop);
    if (s.ok()) s = db_->DropColumnFamily(legacy_index_cf_);
    if (!s.ok()) return FromRocks(s, "cannot remove the journal's old index");
    auto at = std::find(handles_.begin(), handles_.end(), legacy_index_cf_);
    handles_.erase(at);
    db_->DestroyColumnFamilyHandle(legacy_index_cf_);
    legacy_index_cf_ = nullptr;
    std::fprintf(stderr, "statesync store: moved the journal's index (%llu entries) to %s\n",
                 static_cast<unsigned long long>(entries),
                 (options_.dir / kJournalIndexDir).c_str());
    return Status::Ok();
  }

  // Index entries of 32 or 40 bytes are of journals that kept their frames in RocksDB.
  Status CheckIndexFormat(std::string_view entry) const {
    if (entry.size() != 32 && entry.size() != 40) return Status::Ok();
    return Status::FailedPrecondition(
        "the store in " + options_.dir.string() +
        " has a journal written by an earlier version of statesync (frames in " +
        (entry.size() == 32 ? "the 'backlog' column family" : "RocksDB's WAL") +
        "; this version keeps them in files under journal/). Let that version materialize "
        "it and trim the journal, or remove the directory and resynchronize from a primary");
  }

  // Empties the index and the history, and records `gen`. REQUIRES: write_mu_ held, or open.
  Status ResetIndex(std::uint64_t gen) {
    rocksdb::WriteBatch batch;
    rocksdb::Status s = batch.DeleteRange(journal_index_cf_, "i", "j");
    if (s.ok()) s = batch.Put(index_meta_, kHistoryKey, "");
    if (s.ok()) s = batch.Put(index_meta_, kJournalGenKey, EncodeGen(gen));
    if (s.ok()) s = index_db_->Write(write_options_, &batch);
    if (!s.ok()) return FromRocks(s, "cannot reset the journal's index");
    journal_gen_ = gen;
    return Status::Ok();
  }

  // Tests kill the process at a named point (STATESYNC_STORE_CRASH_AT) to check what a crash
  // between two writes leaves.
  void CrashPoint(std::string_view name) const {
    if (crash_at_ == name) ::raise(SIGKILL);
  }

  Status ReadMeta() {
    auto materialized = ReadPosition(kMaterializedKey, nullptr);
    if (!materialized.ok()) return materialized.status();
    // No `materialized` key yet means no materializer round has finished: the tables hold
    // nothing from the journal. The journal's last entry can take `applied_` further.
    std::string raw;
    applied_ = *materialized;
    materialized_ = *materialized;
    if (db_->Get(rocksdb::ReadOptions(), meta_, kReplicationIdKey, &raw).ok()) {
      replication_id_ = raw;
    }
    auto gen = ReadGen(db_.get(), meta_);
    if (!gen.ok()) return gen.status();
    auto index_gen = ReadGen(index_db_.get(), index_meta_);
    if (!index_gen.ok()) return index_gen.status();
    journal_gen_ = *gen;
    if (*index_gen != *gen) {
      // BeginSnapshot was cut between its two writes: the index and history are the old ones.
      std::fprintf(stderr,
                   "statesync store: a snapshot install was cut before the journal's index "
                   "was reset; resetting it now\n");
      if (Status st = ResetIndex(*gen); !st.ok()) return st;
    }
    if (index_db_->Get(rocksdb::ReadOptions(), index_meta_, kHistoryKey, &raw).ok()) {
      if (raw.size() % 16 != 0) return Status::Corruption("the stored epoch history is damaged");
      for (std::size_t i = 0; i < raw.size(); i += 16) {
        history_.push_back(*DecodePosition(std::string_view(raw).substr(i, 16)));
      }
    }
    if (db_->Get(rocksdb::ReadOptions(), meta_, kBlobCursorKey, &raw).ok()) {
      auto c = DecodePosition(raw);
      if (!c.ok()) return c.status();
      blob_cursor_.Store({c->epoch, c->seq});
    }
    return Status::Ok();
  }

  Status OpenBlobFiles() {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), blob_cf_));
    it->Seek(kOldChunkPrefix);
    if (it->Valid() && it->key().starts_with(kOldChunkPrefix)) {
      return Status::FailedPrecondition(
          "the store in " + options_.dir.string() +
          " holds blob data written by an earlier version of statesync (in the 'blob_lane' "
          "column family; this version keeps it in files under blob-lane/). Remove the "
          "directory and resynchronize from a primary");
    }
    if (!it->status().ok()) return FromRocks(it->status(), "cannot read the blob lane");
    blob_files_ = detail::BlobFiles(options_.dir / "blob-lane", options_.sync_writes);
    return blob_files_.Open();
  }

  Status ReadJournalIndex() {
    std::unique_ptr<rocksdb::Iterator> it(
        index_db_->NewIterator(rocksdb::ReadOptions(), journal_index_cf_));
    for (it->Seek("i"); it->Valid(); it->Next()) {
      const std::string_view key = ToView(it->key());
      if (key.size() != 9 || key[0] != 'i') break;
      const std::string_view v = ToView(it->value());
      if (Status st = CheckIndexFormat(v); !st.ok()) return st;
      const std::optional<JournalIndexEntry> e = DecodeIndexEntry(key, v);
      if (!e) return Status::Corruption("a journal index entry is damaged");
      journal_.push_back(*e);
      journal_bytes_ += e->bytes;
      if (e->last.seq > materialized_.seq) unmaterialized_bytes_ += e->bytes;
    }
    if (!it->status().ok()) return FromRocks(it->status(), "cannot read the journal index");
    if (!journal_.empty()) applied_ = std::max(applied_, journal_.back().last);
    journal_files_.emplace(options_.dir / "journal", options_.journal_segment_bytes,
                           options_.sync_writes);
    if (Status st = DropBatchesWithoutFrames(); !st.ok()) return st;
    std::optional<detail::FramePlace> end;
    if (!journal_.empty()) {
      end = {journal_.back().place.segment, journal_.back().place.offset + journal_.back().bytes};
    }
    return journal_files_->ResumeAt(end);
  }

  // After a power loss the index can name frames that never reached the disk (RocksDB's WAL and
  // the segments are written back by the kernel in no set order, unless sync_writes), at its end
  // or before a segment that did reach it. Every entry's frame is checked against its segment's
  // size. From the first lost frame not yet materialized, the batches are dropped: the store
  // goes back to the batch before it, as it would with RocksDB's own WAL. Lost frames already in
  // the tables only shorten the backlog: the journal then starts after the last of them.
  Status DropBatchesWithoutFrames() {
    std::map<std::uint64_t, std::uint64_t> sizes;  // segment -> size on the disk
    std::size_t first_lost = journal_.size();      // the first lost frame not materialized
    std::size_t materialized_lost = 0;             // entries up to the last lost materialized one
    for (std::size_t i = 0; i < journal_.size(); ++i) {
      const JournalIndexEntry& e = journal_[i];
      auto size = sizes.find(e.place.segment);
      if (size == sizes.end()) {
        auto got = journal_files_->SegmentSize(e.place.segment);
        if (!got.ok()) return got.status();
        size = sizes.emplace(e.place.segment, *got).first;
      }
      if (size->second >= e.place.offset + e.bytes) continue;
      if (e.last.seq > materialized_.seq) {
        first_lost = i;
        break;
      }
      materialized_lost = i + 1;
    }
    const std::size_t keep = first_lost;
    if (keep < journal_.size()) {
      const Position applied = keep > materialized_lost
                                   ? std::max(journal_[keep - 1].last, materialized_)
                                   : materialized_;
      std::vector<Position> history = history_;
      while (!history.empty() && history.back().seq > applied.seq) history.pop_back();
      rocksdb::WriteBatch batch;
      rocksdb::Status s = batch.DeleteRange(
          journal_index_cf_, JournalKey('i', journal_[keep].first), JournalKey('i', UINT64_MAX));
      if (s.ok()) s = batch.Put(index_meta_, kHistoryKey, EncodeHistory(history));
      if (s.ok()) s = index_db_->Write(write_options_, &batch);
      if (!s.ok()) return FromRocks(s, "cannot drop the journal batches whose frames are lost");
      std::fprintf(stderr,
                   "statesync store: the frames of the journal's batches from seq %llu to %llu "
                   "never reached the disk; the store goes back to %s\n",
                   static_cast<unsigned long long>(journal_[keep].first),
                   static_cast<unsigned long long>(applied_.seq), ToString(applied).c_str());
      while (journal_.size() > keep) {
        journal_bytes_ -= journal_.back().bytes;
        unmaterialized_bytes_ -= journal_.back().bytes;
        journal_.pop_back();
      }
      applied_ = applied;
      history_ = std::move(history);
    }
    if (materialized_lost > 0) {
      std::fprintf(stderr,
                   "statesync store: the frames of the journal's batches up to seq %llu never "
                   "reached the disk (their records are in the tables); the backlog starts after "
                   "them\n",
                   static_cast<unsigned long long>(journal_[materialized_lost - 1].last.seq));
      std::lock_guard write_lock(write_mu_);
      if (Status st = DropOldestBatches(materialized_lost); !st.ok()) return st;
    }
    return Status::Ok();
  }

  // The position stored under `key` in `meta` (zero when absent), as of `snapshot` (null: now).
  Result<Position> ReadPosition(const char* key, const rocksdb::Snapshot* snapshot) const {
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot;
    std::string raw;
    rocksdb::Status s = db_->Get(ro, meta_, key, &raw);
    if (s.IsNotFound()) return Position{};
    if (!s.ok()) return FromRocks(s, std::string("cannot read the ") + key + " position");
    return DecodePosition(raw);
  }

  // REQUIRES: tables_mu_ held (shared).
  Status AddToBatch(rocksdb::WriteBatch& batch, std::span<const StoredDelta> deltas) {
    for (const StoredDelta& d : deltas) {
      auto cf = Handle(d.table);
      if (!cf.ok()) return cf.status();
      rocksdb::Status s = d.kind == DeltaKind::kUpsert
                              ? batch.Put(*cf, ToSlice(d.key), ToSlice(d.value))
                              : batch.Delete(*cf, ToSlice(d.key));
      if (!s.ok()) return FromRocks(s, "cannot build the write batch");
    }
    return Status::Ok();
  }

  // The column family of a table, created on first use for a user table.
  // REQUIRES: tables_mu_ held (shared is enough: creation takes create_mu_).
  Result<rocksdb::ColumnFamilyHandle*> Handle(TableId table) {
    std::lock_guard lock(create_mu_);
    auto it = tables_.find(table);
    if (it != tables_.end()) return it->second;
    if (!IsUserTable(table)) {
      return Status::InvalidArgument("table id " + std::to_string(static_cast<int>(table)) +
                                     " is neither built in nor a user table");
    }
    rocksdb::ColumnFamilyHandle* h = nullptr;
    rocksdb::Status s =
        db_->CreateColumnFamily(MakeCfOptions(options_, CfKind::kTable), TableName(table), &h);
    if (!s.ok()) return FromRocks(s, "cannot create the column family of " + TableName(table));
    handles_.push_back(h);
    tables_[table] = h;
    return h;
  }

  Status CompleteBlob(const BlobInfo& info) {
    // REQUIRES: blob_mu_ held. Verifies the whole blob from what is stored.
    std::string data;
    if (Status st = blob_files_.ReadWhole(info.seq, &data); !st.ok()) return st;
    const bool good =
        data.size() == info.size && XXH3_64bits(data.data(), data.size()) == info.xxh64;
    if (good) {
      if (Status st = blob_files_.Publish(info.seq); !st.ok()) return st;
      return RecordBlob(info, {info.seq + 1, 0});
    }
    if (Status st = blob_files_.RemovePart(info.seq); !st.ok()) return st;
    if (Status st = MoveBlobCursor({info.seq, 0}, "cannot rewind the blob cursor"); !st.ok()) {
      return st;
    }
    return Status::Corruption("blob " + info.blob_id + " does not match its checksum after " +
                              std::to_string(data.size()) + " bytes; it is received again");
  }

  // REQUIRES: blob_mu_ held. Moves the cursor alone (`what` says why, for the error).
  Status MoveBlobCursor(BlobCursor next, const char* what) {
    rocksdb::Status s =
        db_->Put(write_options_, meta_, kBlobCursorKey, EncodePosition({next.seq, next.offset}));
    if (!s.ok()) return FromRocks(s, what);
    blob_cursor_.Store(next);
    return Status::Ok();
  }

  // REQUIRES: blob_mu_ held, and the blob's file published. Makes the blob visible (its info and
  // its id) and moves the cursor to `next`, in one write.
  Status RecordBlob(const BlobInfo& info, BlobCursor next) {
    rocksdb::WriteBatch batch;
    rocksdb::Status s = batch.Put(blob_cf_, BlobInfoKey(info.seq), EncodeBlobInfo(info));
    std::string seq_bytes;
    PutU64(seq_bytes, info.seq);
    if (s.ok()) s = batch.Put(blob_cf_, BlobIdKey(info.blob_id), seq_bytes);
    if (s.ok()) s = batch.Put(meta_, kBlobCursorKey, EncodePosition({next.seq, next.offset}));
    if (s.ok()) s = db_->Write(write_options_, &batch);
    if (!s.ok()) return FromRocks(s, "cannot record blob " + info.blob_id);
    blob_cursor_.Store(next);
    return Status::Ok();
  }

  // ---- the materializer ----
  void MaterializeLoop() {
    pthread_setname_np(pthread_self(), "ss-materialize");
    // Behind the journal, at the lowest CPU priority: the stream comes first, and the lag is
    // bounded (max_unmaterialized_bytes) by the callers' flow control, not by this thread.
    // Rounds start only once materialize_after_bytes have gathered, the journal has been idle
    // for materialize_when_idle, or someone waits for them (WaitMaterialized, the journal's
    // limits in Trim): a burst is then not slowed by materializing, and a longer window
    // coalesces more updates of the same keys.
    EnterIdleClass();
    std::vector<JournalBatch> batches;
    Seq target = 0;  // once a round is due: materialize at least up to here
    for (;;) {
      bool drop_segments = false;
      bool waited_for = false;  // someone waits for this chunk (WaitMaterialized, Trim)
      {
        std::unique_lock lock(state_mu_);
        for (;;) {
          if (stop_) return;
          if (segment_drop_wanted_) {
            segment_drop_wanted_ = false;
            drop_segments = true;
            break;
          }
          if (materialized_.seq < target) break;
          if (applied_.seq <= materialized_.seq) {
            state_cv_.wait(lock);
            continue;
          }
          const auto idle_at = last_append_ + options_.materialize_when_idle;
          if (unmaterialized_bytes_ >= options_.materialize_after_bytes ||
              materialize_wanted_ > materialized_.seq ||
              std::chrono::steady_clock::now() >= idle_at) {
            target = applied_.seq;
            break;
          }
          state_cv_.wait_until(lock, idle_at);
        }
        waited_for = materialize_wanted_ > materialized_.seq;
      }
      if (drop_segments) {
        if (Status st = DropSegments(); !st.ok()) {
          std::fprintf(stderr, "statesync store: removing the journal's old segments failed: %s\n",
                       st.ToString().c_str());
        }
        continue;
      }
      // A round someone waits for (WaitMaterialized: a stop, a snapshot, a test) runs in the
      // normal class where permitted: in the idle class, a machine kept busy by other processes
      // would keep the waiter waiting for as long.
      const bool left_idle = waited_for && LeaveIdleClass();
      Status st = MaterializeOnce(batches);
      if (left_idle) EnterIdleClass();
      if (!st.ok()) {
        // Nothing is lost (the journal still holds it); try again a little later.
        std::fprintf(stderr, "statesync store: materializing the journal failed, retrying: %s\n",
                     st.ToString().c_str());
        std::unique_lock lock(state_mu_);
        state_cv_.wait_for(lock, std::chrono::milliseconds(200), [&] { return stop_; });
        if (stop_) return;
      }
    }
  }

  // Writes a round's records as one sorted SST file per table and ingests them together, so
  // that materializing costs neither a WAL write nor a memtable sort and flush: those were half
  // of both processes' CPU in a profile of case (a). The position is written after the
  // ingestion; a crash in between replays the round from the journal, which gives the same
  // state (deltas carry whole values).
  Status IngestRound(std::vector<RoundItem>& items) {
    if (items.empty()) return Status::Ok();
    // Sorted by table, key and order of arrival; of each key only the last delta stays (the
    // round coalesces). The first 16 bytes of a key, as two integers, decide the comparisons
    // without reading the keys again: all of a firewall key (IPv4), where the first 8 alone
    // (family, protocol, zone, source address) often tie, and memcmp took 30 % of the
    // materializer in a profile of a 10M catch-up.
    std::sort(items.begin(), items.end(), [](const RoundItem& a, const RoundItem& b) {
      if (a.table != b.table) return a.table < b.table;
      if (a.prefix != b.prefix) return a.prefix < b.prefix;
      if (a.prefix2 != b.prefix2) return a.prefix2 < b.prefix2;
      if (a.key.size() > 16 || b.key.size() > 16) {
        if (const int c = a.key.compare(b.key); c != 0) return c < 0;
      } else if (a.key.size() != b.key.size()) {
        return a.key.size() < b.key.size();  // equal up to the shorter one's end
      }
      return a.order < b.order;
    });
    std::size_t kept = 0;
    for (std::size_t i = 0; i < items.size(); ++i) {
      const bool last_of_key = i + 1 == items.size() || items[i + 1].table != items[i].table ||
                               items[i + 1].key != items[i].key;
      if (last_of_key) items[kept++] = items[i];
    }
    items.resize(kept);
    std::shared_lock tables_lock(tables_mu_);
    std::vector<rocksdb::IngestExternalFileArg> args;
    for (std::size_t first = 0; first < items.size();) {
      std::size_t last = first;
      while (last < items.size() && items[last].table == items[first].table) ++last;
      auto cf = Handle(items[first].table);
      if (!cf.ok()) return cf.status();
      // Level-0 files are not compressed here either (see MakeCfOptions).
      rocksdb::Options file_options(db_->GetDBOptions(), db_->GetOptions(*cf));
      file_options.compression = rocksdb::kNoCompression;
      file_options.compression_per_level.clear();
      file_options.bottommost_compression = rocksdb::kDisableCompressionOption;
      rocksdb::SstFileWriter writer(rocksdb::EnvOptions(), file_options, *cf);
      const std::string path =
          (options_.dir / (std::string(kIngestPrefix) + std::to_string(++ingest_files_) + ".sst"))
              .string();
      rocksdb::Status s = writer.Open(path);
      for (std::size_t i = first; i < last && s.ok(); ++i) {
        s = items[i].kind == DeltaKind::kUpsert
                ? writer.Put(ToSlice(items[i].key), ToSlice(items[i].value))
                : writer.Delete(ToSlice(items[i].key));
      }
      if (s.ok()) s = writer.Finish();
      if (!s.ok()) {
        std::error_code ec;
        std::filesystem::remove(path, ec);
        for (const auto& a : args) std::filesystem::remove(a.external_files.front(), ec);
        return FromRocks(s, "cannot write the materialized records of a round");
      }
      rocksdb::IngestExternalFileArg arg;
      arg.column_family = *cf;
      arg.external_files = {path};
      arg.options.move_files = true;
      arg.options.allow_blocking_flush = true;  // when a snapshot's records are in a memtable
      args.push_back(std::move(arg));
      first = last;
    }
    rocksdb::Status s = db_->IngestExternalFiles(args);
    if (!s.ok()) {
      std::error_code ec;
      for (const auto& a : args) std::filesystem::remove(a.external_files.front(), ec);
      return FromRocks(s, "cannot ingest the materialized records of a round");
    }
    return Status::Ok();
  }

  // One round: the journal's batches after `materialized`, coalesced by key (the last delta of a
  // key wins), written with the new `materialized` position in one WriteBatch.
  Status MaterializeOnce(std::vector<JournalBatch>& batches) {
    std::lock_guard materialize_lock(materialize_mu_);
    const Position from = materialized();
    if (Status st = ReadJournal(from.seq, options_.materialize_group * 192, &batches); !st.ok()) {
      return st;
    }
    if (batches.empty()) return Status::Ok();
    std::vector<RoundItem> items;
    items.reserve(options_.materialize_group + 512);
    std::vector<FrameDeltas> frames(batches.size());
    Position to = from;
    for (std::size_t b = 0; b < batches.size(); ++b) {
      if (Status st = DecodeJournalFrame(batches[b].frame, &frames[b]); !st.ok()) return st;
      for (const fb::Delta* d : *frames[b].batch->deltas()) {
        if (d->position()->seq() <= from.seq) continue;
        RoundItem it;
        it.table = static_cast<TableId>(d->table_id());
        it.kind = static_cast<DeltaKind>(d->kind());
        it.key = d->key() ? wire::AsChars({d->key()->data(), d->key()->size()}) : "";
        it.value = d->value() ? wire::AsChars({d->value()->data(), d->value()->size()}) : "";
        it.order = static_cast<std::uint32_t>(items.size());
        it.prefix = KeyPrefix(it.key, 0);
        it.prefix2 = KeyPrefix(it.key, 8);
        items.push_back(it);
      }
      to = batches[b].last;
      if (items.size() >= options_.materialize_group) break;
    }
    if (Status st = IngestRound(items); !st.ok()) return st;
    // The index up to `to` on the disk before `materialized` is: after a power loss the two
    // instances' WALs may have reached it in any order, and a `materialized` past the index and
    // history it came from would break both (SIGKILL alone cannot cause this).
    if (!options_.sync_writes) {
      if (Status st = FromRocks(index_db_->SyncWAL(), "cannot sync the journal's index");
          !st.ok()) {
        return st;
      }
    }
    // And `materialized` on the disk before Trim may delete the entries up to it.
    rocksdb::Status s =
        db_->Put(synced_write_options_, meta_, kMaterializedKey, EncodePosition(to));
    if (!s.ok()) return FromRocks(s, "cannot record the materialized position");
    {
      std::lock_guard lock(state_mu_);
      materialized_ = to;
      unmaterialized_bytes_ = 0;
      for (auto it = journal_.rbegin(); it != journal_.rend() && it->last.seq > to.seq; ++it) {
        unmaterialized_bytes_ += it->bytes;
      }
    }
    state_cv_.notify_all();
    return Status::Ok();
  }

  StoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  // The journal's index instance: the default column family holds the history and the
  // generation, journal_index_cf_ the entries.
  std::unique_ptr<rocksdb::DB> index_db_;
  rocksdb::ColumnFamilyHandle* index_meta_ = nullptr;
  rocksdb::ColumnFamilyHandle* journal_index_cf_ = nullptr;
  rocksdb::ColumnFamilyHandle* legacy_index_cf_ = nullptr;  // in db_, until MoveLegacyIndex
  std::uint64_t journal_gen_ = 0;                           // REQUIRES: write_mu_ or open
  bool tables_head_unsynced_ = false;  // under write_mu_: an ApplyBatch's position not synced
  std::string crash_at_;
  rocksdb::ColumnFamilyHandle* blob_cf_ = nullptr;
  detail::BlobFiles blob_files_;
  rocksdb::ColumnFamilyHandle* quarantine_cf_ = nullptr;
  // Lock order: materialize_mu_, write_mu_, tables_mu_, create_mu_, state_mu_ (blob_mu_ before
  // state_mu_).
  std::mutex materialize_mu_;            // one materializer round or a snapshot reset at a time
  std::mutex write_mu_;                  // one writer of positions at a time
  std::mutex blob_mu_;                   // one writer of the blob lane at a time
  mutable std::shared_mutex tables_mu_;  // exclusive only while tables are dropped (snapshot)
  std::mutex create_mu_;                 // creation of user-table column families
  std::map<TableId, rocksdb::ColumnFamilyHandle*> tables_;
  rocksdb::WriteOptions write_options_;
  // For the writes that order the two instances (and the replication id): synced whatever
  // sync_writes says.
  rocksdb::WriteOptions synced_write_options_;

  // Priority inheritance: the stream's I/O threads (realtime by default) take it on every
  // append and ack, and the materializer (idle class) takes it to read frames.
  mutable PriorityInheritanceMutex state_mu_;
  mutable std::condition_variable_any state_cv_;
  Position applied_;
  Position materialized_;
  std::string replication_id_;
  std::vector<Position> history_;
  std::deque<JournalIndexEntry> journal_;
  // The newest frames, also in memory (StoreOptions::journal_cache_bytes).
  detail::FrameRing recent_frames_{0};
  // The frames (appends under write_mu_).
  std::optional<detail::JournalFiles> journal_files_;
  bool segment_drop_wanted_ = false;  // under state_mu_: Trim asks the materializer
  bool journal_reset_ = true;         // under state_mu_: segments of an older history may remain
  std::uint64_t journal_bytes_ = 0;
  std::uint64_t unmaterialized_bytes_ = 0;
  std::chrono::steady_clock::time_point last_append_;
  mutable Seq materialize_wanted_ = 0;  // asked for by WaitMaterialized and Trim
  BlobCursorCell blob_cursor_;          // written under blob_mu_, read by anyone without a lock
  bool stop_ = false;
  std::thread materializer_;
  std::uint64_t ingest_files_ = 0;  // names the round files; REQUIRES materialize_mu_
};

namespace {

class SnapshotImpl final : public StoreSnapshot {
 public:
  SnapshotImpl(rocksdb::DB* db, std::vector<std::pair<TableId, rocksdb::ColumnFamilyHandle*>> cfs,
               const rocksdb::Snapshot* snapshot, Position position, std::uint64_t records,
               std::uint64_t bytes)
      : db_(db),
        cfs_(std::move(cfs)),
        snapshot_(snapshot),
        position_(position),
        records_(records),
        bytes_(bytes) {}
  ~SnapshotImpl() override {
    it_.reset();
    db_->ReleaseSnapshot(snapshot_);
  }
  Position position() const override { return position_; }
  std::uint64_t records_estimate() const override { return records_; }
  std::uint64_t bytes_estimate() const override { return bytes_; }

  Status Next(std::size_t max_bytes, std::vector<Record>* out) override {
    out->clear();
    std::size_t bytes = 0;
    while (bytes < max_bytes) {
      if (!it_) {
        if (next_cf_ == cfs_.size()) break;
        rocksdb::ReadOptions ro;
        ro.snapshot = snapshot_;
        ro.fill_cache = false;
        ro.readahead_size = 4 << 20;
        table_ = cfs_[next_cf_].first;
        it_.reset(db_->NewIterator(ro, cfs_[next_cf_].second));
        ++next_cf_;
        it_->SeekToFirst();
      }
      if (!it_->Valid()) {
        if (!it_->status().ok()) return FromRocks(it_->status(), "cannot read the snapshot");
        it_.reset();
        continue;
      }
      out->push_back({table_, it_->key().ToString(), it_->value().ToString()});
      bytes += it_->key().size() + it_->value().size();
      it_->Next();
    }
    return Status::Ok();
  }

 private:
  rocksdb::DB* db_;
  // Column families are never dropped on a node that serves snapshots (only a subordinate that
  // installs one drops them), so the handles stay valid.
  std::vector<std::pair<TableId, rocksdb::ColumnFamilyHandle*>> cfs_;
  const rocksdb::Snapshot* snapshot_;
  Position position_;
  std::uint64_t records_;
  std::uint64_t bytes_;
  std::size_t next_cf_ = 0;
  TableId table_ = TableId::kFwSessions;
  std::unique_ptr<rocksdb::Iterator> it_;
};

}  // namespace

Result<std::unique_ptr<StoreSnapshot>> Store::Impl::OpenSnapshot() {
  std::shared_lock tables_lock(tables_mu_);
  const rocksdb::Snapshot* snapshot = db_->GetSnapshot();
  auto at = ReadPosition(kMaterializedKey, snapshot);
  if (!at.ok()) {
    db_->ReleaseSnapshot(snapshot);
    return at.status();
  }
  std::uint64_t records = 0, bytes = 0;
  std::vector<std::pair<TableId, rocksdb::ColumnFamilyHandle*>> cfs;
  for (const auto& [id, cf] : tables_) {
    std::uint64_t n = 0, b = 0;
    if (db_->GetIntProperty(cf, "rocksdb.estimate-num-keys", &n)) records += n;
    if (db_->GetIntProperty(cf, "rocksdb.estimate-live-data-size", &b)) bytes += b;
    cfs.emplace_back(id, cf);
  }
  return std::unique_ptr<StoreSnapshot>(
      new SnapshotImpl(db_.get(), std::move(cfs), snapshot, *at, records, bytes));
}

void TuneProcessAllocator() {
#if defined(__GLIBC__)
  // Setting either value turns off glibc's own adjustment of both, so both are set: the trim
  // threshold alone measured 2x slower than the default (every block mapped afresh).
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
}

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  auto impl = std::make_unique<Impl>();
  if (Status st = impl->Open(options); !st.ok()) return st;
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}
Status Store::Append(Position first, Position last, std::span<const std::uint8_t> frame,
                     TimePoint now) {
  return impl_->Append(first, last, frame, now);
}
Position Store::applied() const {
  return impl_->applied();
}
Position Store::materialized() const {
  return impl_->materialized();
}
bool Store::WaitMaterialized(Position p, std::chrono::milliseconds timeout) const {
  return impl_->WaitMaterialized(p, timeout);
}
Status Store::ReadJournal(Seq after, std::size_t max_bytes, std::vector<JournalBatch>* out,
                          std::size_t max_batches) const {
  return impl_->ReadJournal(after, max_bytes, out, max_batches);
}
JournalStats Store::journal() const {
  return impl_->journal();
}
std::uint64_t Store::unmaterialized_bytes() const {
  return impl_->unmaterialized_bytes();
}
bool Store::materializer_behind() const {
  return impl_->materializer_behind();
}
Result<std::uint64_t> Store::Trim(const JournalLimits& limits, TimePoint now, Seq keep_after) {
  return impl_->Trim(limits, now, keep_after);
}
std::string Store::replication_id() const {
  return impl_->replication_id();
}
Status Store::SetReplicationId(std::string_view id) {
  return impl_->SetReplicationId(id);
}
std::vector<Position> Store::history() const {
  return impl_->history();
}
Status Store::StartEpoch(Epoch epoch) {
  return impl_->StartEpoch(epoch);
}
Status Store::ApplyBatch(Position applied, std::span<const StoredDelta> deltas) {
  return impl_->ApplyBatch(applied, deltas);
}
Result<std::optional<std::string>> Store::Get(TableId table, std::string_view key) const {
  return impl_->Get(table, key);
}
Status Store::LoadInto(SessionTable& table, LoadStats* stats) const {
  return impl_->LoadInto(table, stats);
}
std::vector<TableId> Store::tables() const {
  return impl_->tables();
}
Result<std::unique_ptr<StoreSnapshot>> Store::OpenSnapshot() {
  return impl_->OpenSnapshot();
}
Status Store::BeginSnapshot() {
  return impl_->BeginSnapshot();
}
Status Store::AddSnapshotRecords(std::span<const StoredDelta> records) {
  return impl_->AddSnapshotRecords(records);
}
Status Store::FinishSnapshot(std::string_view replication_id, Position position,
                             std::span<const Position> history) {
  return impl_->FinishSnapshot(replication_id, position, history);
}
Result<std::uint64_t> Store::QuarantineAfter(Position common, std::string_view reason,
                                             TimePoint now) {
  return impl_->QuarantineAfter(common, reason, now);
}
Status Store::ScanQuarantine(const std::function<void(const QuarantinedDelta&)>& fn) const {
  return impl_->ScanQuarantine(fn);
}
Result<BlobInfo> Store::PutBlob(std::string_view blob_id, std::uint8_t kind, std::string_view name,
                                std::string_view data, std::size_t chunk_bytes,
                                const std::function<void(std::size_t)>& before_chunk) {
  return impl_->PutBlob(blob_id, kind, name, data, chunk_bytes, before_chunk);
}
BlobCursor Store::blob_cursor() const {
  return impl_->blob_cursor();
}
Status Store::ReadBlob(std::uint64_t seq, std::uint64_t offset, std::size_t max_bytes,
                       BlobInfo* info, std::string* data) const {
  return impl_->ReadBlob(seq, offset, max_bytes, info, data);
}
Status Store::AddBlobChunk(const BlobInfo& info, std::uint64_t offset, std::string_view data) {
  return impl_->AddBlobChunk(info, offset, data);
}
Result<std::optional<std::string>> Store::GetBlob(std::string_view blob_id, BlobInfo* info) const {
  return impl_->GetBlob(blob_id, info);
}
Status Store::ScanBlobs(const std::function<void(const BlobInfo&)>& fn) const {
  return impl_->ScanBlobs(fn);
}
Status Store::Flush() {
  return impl_->Flush();
}

}  // namespace statesync
