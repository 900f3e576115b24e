#include "statesync/replication/store.h"

#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/memtablerep.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>

namespace statesync {
namespace {

constexpr char kMetaCf[] = "meta";
constexpr char kBacklogCf[] = "backlog";
constexpr char kAppliedKey[] = "applied";

const TableId kBuiltinTables[] = {TableId::kFwSessions, TableId::kCalls, TableId::kCdrs,
                                  TableId::kBlobs};

Status FromRocks(const rocksdb::Status& s, const std::string& what) {
  if (s.ok()) return Status::Ok();
  if (s.IsCorruption()) return Status::Corruption(what + ": " + s.ToString());
  if (s.IsNotFound()) return Status::NotFound(what + ": " + s.ToString());
  if (s.IsInvalidArgument()) return Status::InvalidArgument(what + ": " + s.ToString());
  return Status::IOError(what + ": " + s.ToString());
}

std::string EncodePosition(Position p) {
  std::string out(16, '\0');
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>(p.epoch >> (56 - 8 * i));
    out[8 + i] = static_cast<char>(p.seq >> (56 - 8 * i));
  }
  return out;
}

Result<Position> DecodePosition(std::string_view b) {
  if (b.size() != 16) {
    return Status::Corruption("the stored position has " + std::to_string(b.size()) +
                              " bytes, not 16");
  }
  Position p;
  for (int i = 0; i < 8; ++i) {
    p.epoch = (p.epoch << 8) | static_cast<std::uint8_t>(b[i]);
    p.seq = (p.seq << 8) | static_cast<std::uint8_t>(b[8 + i]);
  }
  return p;
}

std::optional<TableId> TableFromCfName(const std::string& name) {
  for (TableId t : kBuiltinTables) {
    if (name == TableName(t)) return t;
  }
  if (name.rfind("user_", 0) == 0) {
    try {
      const unsigned long id = std::stoul(name.substr(5));
      if (id >= static_cast<unsigned>(TableId::kFirstUser) && id <= 0xffff) {
        return static_cast<TableId>(id);
      }
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return std::nullopt;
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
  db.wal_bytes_per_sync = 0;
  db.max_total_wal_size = 2 * o.memtable_budget_bytes;
  db.avoid_unnecessary_blocking_io = true;
  db.allow_concurrent_memtable_write =
      false;  // the vector memtable does not support it; one writer anyway
  return db;
}

// Options for one table's column family. The write pattern is a stream of batches of mostly
// distinct keys, with point reads rare (start-up reads everything with an iterator). A profile
// of the default path puts most of the time in the skiplist insert, so the tuned memtable is a
// vector (an append; sorted once, in the background, when it is flushed). Eight 64 MiB
// memtables let the writer go on while earlier ones flush, and universal compaction rewrites
// each record fewer times than levelled compaction: on this 2-core machine flushes and
// compactions share one core, and what they cannot absorb turns into write stalls. Measured
// choices are in docs/BENCHMARKS.md.
rocksdb::ColumnFamilyOptions MakeCfOptions(const StoreOptions& o, std::optional<TableId> table) {
  rocksdb::ColumnFamilyOptions cf;
  if (!o.tuned) return cf;
  const bool is_table = table.has_value();
  constexpr int kMemtables = 8;
  cf.write_buffer_size = is_table ? o.memtable_budget_bytes / kMemtables : 16ull << 20;
  cf.max_write_buffer_number = kMemtables;
  cf.min_write_buffer_number_to_merge = 1;
  if (is_table) cf.memtable_factory = std::make_shared<rocksdb::VectorRepFactory>();
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
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(bbt));
  if (table == TableId::kBlobs) {
    cf.enable_blob_files = true;
    cf.min_blob_size = o.blob_min_bytes;
    cf.blob_file_size = 256ull << 20;
    cf.enable_blob_garbage_collection = true;
    cf.memtable_factory = std::make_shared<rocksdb::SkipListFactory>();
  }
  return cf;
}

}  // namespace

class Store::Impl {
 public:
  ~Impl() {
    for (auto* h : handles_) db_->DestroyColumnFamilyHandle(h);
    handles_.clear();
    if (db_) db_->Close();
  }

  Status Open(const StoreOptions& options) {
    options_ = options;
    std::error_code ec;
    std::filesystem::create_directories(options.dir, ec);
    if (ec) return Status::IOError("cannot create " + options.dir.string() + ": " + ec.message());

    std::vector<std::string> names;
    rocksdb::Status ls =
        rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), options.dir.string(), &names);
    if (!ls.ok()) names.clear();  // a new store
    auto want = [&names](const std::string& n) {
      if (std::find(names.begin(), names.end(), n) == names.end()) names.push_back(n);
    };
    want(rocksdb::kDefaultColumnFamilyName);
    want(kMetaCf);
    want(kBacklogCf);
    for (TableId t : kBuiltinTables) want(TableName(t));

    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    descriptors.reserve(names.size());
    for (const auto& n : names) {
      descriptors.emplace_back(n, MakeCfOptions(options, TableFromCfName(n)));
    }
    rocksdb::DB* db = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(MakeDbOptions(options), options.dir.string(), descriptors,
                                          &handles_, &db);
    if (!s.ok()) return FromRocks(s, "cannot open the store in " + options.dir.string());
    db_.reset(db);
    for (std::size_t i = 0; i < names.size(); ++i) {
      if (names[i] == kMetaCf) meta_ = handles_[i];
      if (auto t = TableFromCfName(names[i])) tables_[*t] = handles_[i];
    }
    write_options_.sync = options.sync_writes;

    auto applied = ReadApplied(nullptr);
    if (!applied.ok()) return applied.status();
    applied_ = *applied;
    return Status::Ok();
  }

  Status ApplyBatch(Position applied, std::span<const StoredDelta> deltas) {
    const Position current = this->applied();
    if (applied <= current) {
      return Status::FailedPrecondition(
          "batch position (" + std::to_string(applied.epoch) + ", " + std::to_string(applied.seq) +
          ") is not after the applied (" + std::to_string(current.epoch) + ", " +
          std::to_string(current.seq) + ")");
    }
    rocksdb::WriteBatch batch(deltas.size() * 192 + 64);
    for (const StoredDelta& d : deltas) {
      auto cf = Handle(d.table);
      if (!cf.ok()) return cf.status();
      rocksdb::Status s = d.kind == DeltaKind::kUpsert
                              ? batch.Put(*cf, rocksdb::Slice(d.key.data(), d.key.size()),
                                          rocksdb::Slice(d.value.data(), d.value.size()))
                              : batch.Delete(*cf, rocksdb::Slice(d.key.data(), d.key.size()));
      if (!s.ok()) return FromRocks(s, "cannot build the write batch");
    }
    const std::string pos = EncodePosition(applied);
    rocksdb::Status s = batch.Put(meta_, kAppliedKey, pos);
    if (!s.ok()) return FromRocks(s, "cannot build the write batch");
    s = db_->Write(write_options_, &batch);
    if (!s.ok()) return FromRocks(s, "cannot write a batch of " + std::to_string(deltas.size()));
    std::lock_guard lock(applied_mu_);
    applied_ = applied;
    return Status::Ok();
  }

  Position applied() const {
    std::lock_guard lock(applied_mu_);
    return applied_;
  }

  Result<std::optional<std::string>> Get(TableId table, std::string_view key) const {
    rocksdb::ColumnFamilyHandle* cf = nullptr;
    {
      std::lock_guard lock(tables_mu_);
      auto it = tables_.find(table);
      if (it == tables_.end()) return std::optional<std::string>();
      cf = it->second;
    }
    std::string value;
    rocksdb::Status s =
        db_->Get(rocksdb::ReadOptions(), cf, rocksdb::Slice(key.data(), key.size()), &value);
    if (s.IsNotFound()) return std::optional<std::string>();
    if (!s.ok()) return FromRocks(s, "cannot read a key of " + TableName(table));
    return std::optional<std::string>(std::move(value));
  }

  Status LoadInto(SessionTable& table, LoadStats* stats) const {
    if (table.total_size() != 0 || table.pending() != 0) {
      return Status::FailedPrecondition("LoadInto needs an empty session table");
    }
    const auto start = std::chrono::steady_clock::now();
    LoadStats local;
    // One snapshot for every table and the position: a consistent point even if a batch is
    // being applied meanwhile.
    const rocksdb::Snapshot* snapshot = db_->GetSnapshot();
    struct Release {
      rocksdb::DB* db;
      const rocksdb::Snapshot* s;
      ~Release() { db->ReleaseSnapshot(s); }
    } release{db_.get(), snapshot};
    auto at = ReadApplied(snapshot);
    if (!at.ok()) return at.status();
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot;
    ro.fill_cache = false;
    ro.readahead_size = 4 << 20;
    ro.adaptive_readahead = true;
    std::map<TableId, rocksdb::ColumnFamilyHandle*> tables;
    {
      std::lock_guard lock(tables_mu_);
      tables = tables_;
    }
    for (const auto& [id, cf] : tables) {
      std::uint64_t estimate = 0;
      if (db_->GetIntProperty(cf, "rocksdb.estimate-num-keys", &estimate) && estimate > 0) {
        table.Reserve(id, estimate);
      }
      std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(ro, cf));
      for (it->SeekToFirst(); it->Valid(); it->Next()) {
        const rocksdb::Slice k = it->key();
        const rocksdb::Slice v = it->value();
        Status st = table.Load(id, std::string_view(k.data(), k.size()),
                               std::string_view(v.data(), v.size()));
        if (!st.ok()) {
          return Status::Corruption("loading " + TableName(id) + " record " +
                                    std::to_string(local.records + 1) + ": " + st.ToString());
        }
        ++local.records;
        local.bytes += k.size() + v.size();
      }
      if (!it->status().ok()) return FromRocks(it->status(), "reading " + TableName(id));
    }
    if (Status st = table.ResetPosition(*at); !st.ok()) return st;
    local.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (stats) *stats = local;
    return Status::Ok();
  }

  std::vector<TableId> tables() const {
    std::lock_guard lock(tables_mu_);
    std::vector<TableId> out;
    for (const auto& [id, cf] : tables_) out.push_back(id);
    return out;
  }

  Status Flush() {
    rocksdb::FlushOptions fo;
    fo.wait = true;
    return FromRocks(db_->Flush(fo, handles_), "cannot flush the store");
  }

 private:
  // The applied position stored in `meta` (zero for a new store), as of `snapshot` (null: now).
  Result<Position> ReadApplied(const rocksdb::Snapshot* snapshot) const {
    rocksdb::ReadOptions ro;
    ro.snapshot = snapshot;
    std::string raw;
    rocksdb::Status s = db_->Get(ro, meta_, kAppliedKey, &raw);
    if (s.IsNotFound()) return Position{};
    if (!s.ok()) return FromRocks(s, "cannot read the applied position");
    return DecodePosition(raw);
  }

  Result<rocksdb::ColumnFamilyHandle*> Handle(TableId table) {
    std::lock_guard lock(tables_mu_);
    auto it = tables_.find(table);
    if (it != tables_.end()) return it->second;
    if (!IsUserTable(table)) {
      return Status::InvalidArgument("table id " + std::to_string(static_cast<int>(table)) +
                                     " is neither built in nor a user table");
    }
    rocksdb::ColumnFamilyHandle* h = nullptr;
    rocksdb::Status s =
        db_->CreateColumnFamily(MakeCfOptions(options_, table), TableName(table), &h);
    if (!s.ok()) return FromRocks(s, "cannot create the column family of " + TableName(table));
    handles_.push_back(h);
    tables_[table] = h;
    return h;
  }

  StoreOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  rocksdb::ColumnFamilyHandle* meta_ = nullptr;
  mutable std::mutex tables_mu_;
  std::map<TableId, rocksdb::ColumnFamilyHandle*> tables_;
  rocksdb::WriteOptions write_options_;
  mutable std::mutex applied_mu_;
  Position applied_;
};

Store::Store(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Store::~Store() = default;

Result<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  auto impl = std::make_unique<Impl>();
  if (Status st = impl->Open(options); !st.ok()) return st;
  return std::unique_ptr<Store>(new Store(std::move(impl)));
}
Status Store::ApplyBatch(Position applied, std::span<const StoredDelta> deltas) {
  return impl_->ApplyBatch(applied, deltas);
}
Position Store::applied() const {
  return impl_->applied();
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
Status Store::Flush() {
  return impl_->Flush();
}

}  // namespace statesync
