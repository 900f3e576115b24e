// Store tests on a real RocksDB in temporary directories. The crash tests run the writer in a
// child process (this same binary, started with --store-writer, --store-appender or --store-op)
// and kill it with SIGKILL, or let the store kill itself at a named point
// (STATESYNC_STORE_CRASH_AT).
#include "statesync/replication/store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <rocksdb/db.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <map>
#include <random>
#include <thread>

#include "statesync/replication/messages.h"
#include "statesync/schemas/codec.h"
#include "statesync/workload/workload.h"
#include "temp_dir.h"

namespace statesync {
namespace {

using testing::TempDir;

namespace fs = std::filesystem;
const TimePoint kT0{std::chrono::milliseconds(1'780'000'000'000)};
const char* g_self = nullptr;  // argv[0], to start the writer child

std::unique_ptr<Store> OpenOrDie(const fs::path& dir, bool tuned = true) {
  StoreOptions o;
  o.dir = dir;
  o.tuned = tuned;
  auto s = Store::Open(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

using Contents = std::map<std::pair<TableId, std::string>, std::string>;

Contents ReadAll(const SessionTable& t, const std::vector<TableId>& tables) {
  Contents out;
  for (TableId id : tables) {
    t.Scan(id, [&](std::string_view k, std::string_view v) { out[{id, std::string(k)}] = v; });
  }
  return out;
}

class StoreTest : public ::testing::TestWithParam<bool> {};

TEST_P(StoreTest, ReopenGivesTheSameContentAndAppliedPosition) {
  TempDir dir;
  Contents expected;
  Seq seq = 0;
  {
    auto store = OpenOrDie(dir.path(), GetParam());
    ASSERT_TRUE(store);
    EXPECT_EQ(store->applied(), (Position{}));
    std::mt19937_64 rng(5);
    for (int batch = 0; batch < 40; ++batch) {
      std::vector<std::string> keys, values;
      std::vector<StoredDelta> deltas;
      for (int j = 0; j < 50; ++j) {
        const std::uint64_t i = rng() % 1000;
        switch (rng() % 5) {
          case 0: {
            const CallSession c = workload::Call(i, kT0);
            keys.push_back(c.call_id);
            values.push_back(EncodeCallSession(c));
            deltas.push_back({TableId::kCalls, DeltaKind::kUpsert});
            break;
          }
          case 1: {
            keys.push_back("user-" + std::to_string(i));
            values.push_back(std::string(1 + rng() % 300, static_cast<char>(rng())));
            deltas.push_back({UserTable(4), DeltaKind::kUpsert});
            break;
          }
          case 2: {
            const FirewallSession s = workload::Ipv4Session(i, kT0);
            keys.push_back(FirewallKey(s.orig, s.zone));
            values.emplace_back();
            deltas.push_back({TableId::kFwSessions, DeltaKind::kDelete});
            break;
          }
          default: {
            FirewallSession s =
                i % 2 ? workload::Ipv4Session(i, kT0) : workload::Ipv6Session(i, kT0);
            s.orig_packets = rng();
            keys.push_back(FirewallKey(s.orig, s.zone));
            values.push_back(EncodeFirewallSession(s));
            deltas.push_back({TableId::kFwSessions, DeltaKind::kUpsert});
          }
        }
      }
      for (std::size_t j = 0; j < deltas.size(); ++j) {
        deltas[j].key = keys[j];
        deltas[j].value = values[j];
        if (deltas[j].kind == DeltaKind::kUpsert) {
          expected[{deltas[j].table, keys[j]}] = values[j];
        } else {
          expected.erase({deltas[j].table, keys[j]});
        }
      }
      seq += deltas.size();
      ASSERT_TRUE(store->ApplyBatch({3, seq}, deltas).ok());
    }
    if (GetParam()) {  // one run reopens from SST files, the other from the WAL
      ASSERT_TRUE(store->Flush().ok());
    }
  }
  auto store = OpenOrDie(dir.path(), GetParam());
  ASSERT_TRUE(store);
  EXPECT_EQ(store->applied(), (Position{3, seq}));
  SessionTable table(SessionTableOptions{.writable = false});
  LoadStats stats;
  ASSERT_TRUE(store->LoadInto(table, &stats).ok());
  EXPECT_EQ(stats.records, expected.size());
  EXPECT_EQ(table.last_position(), (Position{3, seq}));
  EXPECT_EQ(ReadAll(table, {TableId::kFwSessions, TableId::kCalls, UserTable(4)}), expected);
  EXPECT_EQ(store->LoadInto(table).code(), Status::Code::kFailedPrecondition)
      << "a second load into a filled table is refused";
  const auto& [first_key, first_value] = *expected.begin();
  EXPECT_EQ(store->Get(first_key.first, first_key.second).value(), first_value);
  auto tables = store->tables();
  EXPECT_NE(std::find(tables.begin(), tables.end(), UserTable(4)), tables.end());
}

TEST_P(StoreTest, ABatchMustMoveThePositionForward) {
  TempDir dir;
  auto store = OpenOrDie(dir.path(), GetParam());
  ASSERT_TRUE(store);
  ASSERT_TRUE(store->ApplyBatch({1, 10}, {}).ok());
  EXPECT_EQ(store->ApplyBatch({1, 10}, {}).code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(store->ApplyBatch({1, 9}, {}).code(), Status::Code::kFailedPrecondition);
  EXPECT_TRUE(store->ApplyBatch({2, 10}, {}).ok()) << "a new epoch at the same seq is after it";
  StoredDelta bad{static_cast<TableId>(9), DeltaKind::kUpsert, "k", "v"};
  EXPECT_EQ(store->ApplyBatch({2, 11}, std::span(&bad, 1)).code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store->applied(), (Position{2, 10})) << "a refused batch changes nothing";
}

INSTANTIATE_TEST_SUITE_P(TunedAndDefault, StoreTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Tuned" : "Default"; });

TEST(StoreBlobs, LargeBlobValuesLiveInBlobFiles) {
  TempDir dir;
  std::string chunk(256 << 10, '\0');
  std::mt19937_64 rng(1);
  for (auto& c : chunk) c = static_cast<char>(rng());
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store);
    for (int i = 0; i < 8; ++i) {
      chunk[0] = static_cast<char>(i);
      const std::string key = "recording-17/" + std::to_string(i);
      StoredDelta d{TableId::kBlobs, DeltaKind::kUpsert, key, chunk};
      ASSERT_TRUE(store->ApplyBatch({1, static_cast<Seq>(i + 1)}, std::span(&d, 1)).ok());
    }
    ASSERT_TRUE(store->Flush().ok());
  }
  std::size_t blob_files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    if (e.path().extension() == ".blob") ++blob_files;
  }
  EXPECT_GE(blob_files, 1u);
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store);
  chunk[0] = 5;
  EXPECT_EQ(store->Get(TableId::kBlobs, "recording-17/5").value(), chunk);
}

TEST(StoreErrors, AnUnusableDirectoryIsAClearError) {
  StoreOptions o;
  o.dir = "/proc/statesync-cannot-create-this";
  auto s = Store::Open(o);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("/proc/statesync-cannot-create-this"), std::string::npos);
}

// ---- crash test ----
constexpr int kRecordsPerBatch = 100;

// Starts this binary as a child with `args` (and STATESYNC_STORE_CRASH_AT=crash_at when given),
// and the write end of a pipe as its last argument; returns the pid and the read end.
std::pair<pid_t, int> StartChild(std::vector<std::string> args, const char* crash_at = nullptr) {
  int fds[2];
  if (::pipe(fds) != 0) return {-1, -1};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    if (crash_at) ::setenv("STATESYNC_STORE_CRASH_AT", crash_at, 1);
    args.push_back(std::to_string(fds[1]));
    std::vector<char*> argv{const_cast<char*>(g_self)};
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(g_self, argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  return {pid, fds[0]};
}

// Starts this binary as a child with `args` (StartChild), reads its reports (each the last
// position it acknowledged) until one reaches `until`, kills it with SIGKILL, then reads the
// reports still in flight into `acknowledged`.
void KillAfterReports(std::vector<std::string> args, std::uint64_t until,
                      std::uint64_t* acknowledged) {
  const std::string what = args.front();
  auto [pid, fd] = StartChild(std::move(args));
  ASSERT_GT(pid, 0);
  std::uint64_t b = 0;
  while (*acknowledged < until && ::read(fd, &b, sizeof(b)) == sizeof(b)) *acknowledged = b;
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFSIGNALED(status)) << what << ": the child exited by itself: " << status;
  while (::read(fd, &b, sizeof(b)) == sizeof(b)) *acknowledged = b;  // reports in flight
  ::close(fd);
}

std::string CrashKey(std::uint64_t batch, int j) {
  return "b" + std::to_string(batch) + "-" + std::to_string(j);
}

// The child: applies batch after batch; after each one is acknowledged (ApplyBatch returned),
// it writes the batch number to the pipe. Runs until killed.
int RunWriter(const char* dir, int report_fd) {
  StoreOptions o;
  o.dir = dir;
  auto store = Store::Open(o);
  if (!store.ok()) return 3;
  std::uint64_t batch = (*store)->applied().seq / kRecordsPerBatch;
  std::vector<std::string> keys(kRecordsPerBatch);
  const std::string value(200, 'v');
  std::vector<StoredDelta> deltas(kRecordsPerBatch);
  for (;;) {
    ++batch;
    for (int j = 0; j < kRecordsPerBatch; ++j) {
      keys[j] = CrashKey(batch, j);
      deltas[j] = {UserTable(1), DeltaKind::kUpsert, keys[j], value};
    }
    if (!(*store)->ApplyBatch({1, batch * kRecordsPerBatch}, deltas).ok()) return 4;
    if (::write(report_fd, &batch, sizeof(batch)) != sizeof(batch)) return 5;
  }
}

TEST(StoreCrash, SigkillMidStreamLeavesNoPartialBatchAndNoGap) {
  ASSERT_NE(g_self, nullptr);
  TempDir dir;
  std::uint64_t acknowledged = 0;
  std::mt19937_64 rng(8);
  for (int round = 0; round < 4; ++round) {
    // Let it write a while, a different while each round, then kill it mid-stream.
    const std::uint64_t until = acknowledged + 50 + rng() % 400;
    ASSERT_NO_FATAL_FAILURE(
        KillAfterReports({"--store-writer", dir.path().string()}, until, &acknowledged));

    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store);
    const Position applied = store->applied();
    ASSERT_EQ(applied.seq % kRecordsPerBatch, 0u) << "a partial batch";
    const std::uint64_t last = applied.seq / kRecordsPerBatch;
    EXPECT_GE(last, acknowledged) << "an acknowledged batch was lost";
    EXPECT_LE(last, acknowledged + 1) << "at most the batch in flight may be there unreported";
    // Every record of batches 1..last and none after: no gap, nothing partial.
    SessionTable table(SessionTableOptions{.writable = false});
    ASSERT_TRUE(store->LoadInto(table).ok());
    EXPECT_EQ(table.size(UserTable(1)), last * kRecordsPerBatch);
    for (std::uint64_t batch : {std::uint64_t{1}, last / 2 + 1, last}) {
      for (int j : {0, kRecordsPerBatch / 2, kRecordsPerBatch - 1}) {
        EXPECT_TRUE(table.Get(UserTable(1), CrashKey(batch, j)).has_value()) << batch << "/" << j;
      }
    }
    EXPECT_FALSE(table.Get(UserTable(1), CrashKey(last + 1, 0)).has_value());
    acknowledged = last;  // the next round continues from what is there
  }
}

// ---- the journal, killed ----

constexpr Seq kAppendDeltas = 50;                // per journal batch
constexpr std::uint64_t kBatchesPerEpoch = 100;  // the appender starts a new epoch this often

Epoch EpochOfSeq(Seq first) {
  return 1 + (first - 1) / kAppendDeltas / kBatchesPerEpoch;
}

std::string AppendKey(Seq seq) {
  return "a" + std::to_string(seq);
}

// The history the appender writes up to `head`: a new epoch every kBatchesPerEpoch batches.
std::vector<Position> AppendHistory(Position head) {
  std::vector<Position> out;
  for (Epoch e = 1; e <= head.epoch; ++e) {
    out.push_back({e, (e - 1) * kBatchesPerEpoch * kAppendDeltas + 1});
  }
  return out;
}

// Appends the journal batch after `head` (one user-table upsert per seq).
Status AppendNext(Store& store, Position head) {
  replication::DeltaBatchBuilder builder;
  const std::string value(100, 'v');
  std::vector<std::string> keys;
  keys.reserve(kAppendDeltas);
  const Seq first = head.seq + 1;
  for (Seq q = first; q < first + kAppendDeltas; ++q) {
    keys.push_back(AppendKey(q));
    builder.Add({{EpochOfSeq(first), q}, UserTable(1), DeltaKind::kUpsert, keys.back(), value});
  }
  const Position from = builder.first(), to = builder.last();
  const std::string frame = builder.Finish({7, "p1", EpochOfSeq(first)}, "rid-1");
  return store.Append(from, to, wire::AsBytes(frame), kT0);
}

StoreOptions AppenderOptions(const char* dir) {
  StoreOptions o;
  o.dir = dir;
  // Materializer rounds all along: each syncs the index before it records `materialized`.
  o.materialize_after_bytes = 256 << 10;
  o.materialize_group = 4000;
  o.materialize_when_idle = std::chrono::milliseconds(20);
  o.journal_segment_bytes = 1 << 20;
  return o;
}

// The child: appends journal batch after batch, a new epoch every kBatchesPerEpoch; after each
// is acknowledged (Append returned) it writes the batch's last seq to the pipe. Runs until
// killed.
int RunAppender(const char* dir, int report_fd) {
  auto store = Store::Open(AppenderOptions(dir));
  if (!store.ok()) return 3;
  for (Position head = (*store)->applied();; head = (*store)->applied()) {
    if (!AppendNext(**store, head).ok()) return 4;
    const Seq last = head.seq + kAppendDeltas;
    if (::write(report_fd, &last, sizeof(last)) != sizeof(last)) return 5;
  }
}

TEST(StoreCrash, SigkillWhileAppendingLosesNoAcknowledgedBatchAndKeepsTheHistory) {
  ASSERT_NE(g_self, nullptr);
  TempDir dir;
  Seq acknowledged = 0;
  std::mt19937_64 rng(11);
  for (int round = 0; round < 5; ++round) {
    // A different while each round, across epoch changes (every 100 batches).
    const Seq until = acknowledged + (60 + rng() % 300) * kAppendDeltas;
    ASSERT_NO_FATAL_FAILURE(
        KillAfterReports({"--store-appender", dir.path().string()}, until, &acknowledged));
    ASSERT_GE(acknowledged, until) << "round " << round;

    StoreOptions o = AppenderOptions(dir.path().c_str());
    o.materialize = false;
    auto store = Store::Open(o);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    const Position applied = (*store)->applied();
    EXPECT_GE(applied.seq, acknowledged) << "an acknowledged batch was lost";
    EXPECT_LE(applied.seq, acknowledged + kAppendDeltas) << "more than the batch in flight";
    EXPECT_EQ(applied.seq % kAppendDeltas, 0u) << "a partial batch";
    EXPECT_EQ(applied.epoch, EpochOfSeq(applied.seq));
    EXPECT_EQ((*store)->history(), AppendHistory(applied));
    EXPECT_LE((*store)->materialized().seq, applied.seq);
    // The tables and the journal together: every seq once, none after the head.
    SessionTable table(SessionTableOptions{.writable = false});
    Status st = (*store)->LoadInto(table);
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_EQ(table.size(UserTable(1)), applied.seq);
    for (Seq q : {Seq{1}, applied.seq / 2 + 1, applied.seq}) {
      EXPECT_TRUE(table.Get(UserTable(1), AppendKey(q)).has_value()) << q;
    }
    EXPECT_FALSE(table.Get(UserTable(1), AppendKey(applied.seq + 1)).has_value());
    EXPECT_EQ(table.last_position(), applied);
    acknowledged = applied.seq;
  }
}

// ---- snapshot installs cut between their two instances' writes ----

// The child's operations, on a store the test prepared: it kills itself at the crash point.
int RunStoreOp(const char* dir, const std::string& op) {
  StoreOptions o;
  o.dir = dir;
  o.materialize = false;
  auto store = Store::Open(o);
  if (!store.ok()) return 3;
  if (op == "begin") {
    return (*store)->BeginSnapshot().ok() ? 0 : 4;
  }
  if (op == "begin-add-finish") {
    if (!(*store)->BeginSnapshot().ok()) return 4;
    const std::string value(100, 's');
    std::vector<StoredDelta> records = {{UserTable(1), DeltaKind::kUpsert, "s1", value}};
    if (!(*store)->AddSnapshotRecords(records).ok()) return 5;
    const Position history[] = {{9, 1}};
    return (*store)->FinishSnapshot("rid-2", {9, 1000}, history).ok() ? 0 : 6;
  }
  return op == "open" ? 0 : 7;
}

// Runs RunStoreOp in a child with the crash point set; expects it killed by SIGKILL.
void RunKilledAt(const fs::path& dir, const std::string& op, const char* crash_at) {
  auto [pid, fd] = StartChild({"--store-op", dir.string(), op}, crash_at);
  ASSERT_GT(pid, 0);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ::close(fd);
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
      << op << " did not stop at " << crash_at << ": status " << status;
}

// A store with a journal over two epochs and a replication id.
void PrepareJournal(const fs::path& dir, int batches) {
  StoreOptions o;
  o.dir = dir;
  o.materialize = false;
  auto store = Store::Open(o);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ASSERT_TRUE((*store)->SetReplicationId("rid-1").ok());
  for (int i = 0; i < batches; ++i) {
    Status st = AppendNext(**store, (*store)->applied());
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
}

TEST(StoreCrash, ASnapshotResetCutBetweenItsTwoWritesLeavesNoOldIndexOrHistory) {
  ASSERT_NE(g_self, nullptr);
  TempDir dir;
  // Twice: the generation goes from 0 to 1, then from 1 to 2.
  for (int round = 0; round < 2; ++round) {
    PrepareJournal(dir.path(), 150);
    RunKilledAt(dir.path(), "begin", "begin-snapshot-between");
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store);
    // The tables' instance was reset, the index's not: the open resets it. Without that, the
    // old index would make the head 7500 again under an empty replication id and no history.
    EXPECT_EQ(store->replication_id(), "") << round;
    EXPECT_EQ(store->applied(), Position{}) << round;
    EXPECT_TRUE(store->history().empty()) << round;
    EXPECT_EQ(store->journal().batches, 0u) << round;
    // And the journal takes a new history from the start.
    ASSERT_TRUE(AppendNext(*store, {}).ok());
    EXPECT_EQ(store->applied(), (Position{1, kAppendDeltas}));
    store.reset();
    // Back to an empty journal for the next round, through a whole reset.
    ASSERT_EQ(RunStoreOp(dir.path().c_str(), "begin"), 0);
  }
}

TEST(StoreCrash, ASnapshotCutAfterItsHistoryIsWrittenIsAskedForAgain) {
  ASSERT_NE(g_self, nullptr);
  TempDir dir;
  PrepareJournal(dir.path(), 20);
  RunKilledAt(dir.path(), "begin-add-finish", "finish-snapshot-between");
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store);
    EXPECT_EQ(store->replication_id(), "") << "a half-installed snapshot must be asked for again";
    EXPECT_EQ(store->applied(), Position{});
    EXPECT_EQ(store->journal().batches, 0u);
  }
  // Done again whole, it holds.
  ASSERT_EQ(RunStoreOp(dir.path().c_str(), "begin-add-finish"), 0);
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store);
  EXPECT_EQ(store->replication_id(), "rid-2");
  EXPECT_EQ(store->applied(), (Position{9, 1000}));
  EXPECT_EQ(store->history(), (std::vector<Position>{{9, 1}}));
}

// ---- a store of the earlier layout: the index in the tables' instance ----

// A RocksDB instance of a store opened directly, with all its column families and RocksDB's
// default options: to read what the store left, or to write a layout it no longer writes.
struct RawDb {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<std::string> names;
  std::vector<rocksdb::ColumnFamilyHandle*> handles;

  RawDb(const fs::path& dir, bool read_only) {
    EXPECT_TRUE(rocksdb::DB::ListColumnFamilies(rocksdb::DBOptions(), dir.string(), &names).ok())
        << dir;
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
    for (const auto& n : names) descriptors.emplace_back(n, rocksdb::ColumnFamilyOptions());
    rocksdb::DB* raw = nullptr;
    const rocksdb::Status s =
        read_only
            ? rocksdb::DB::OpenForReadOnly(rocksdb::DBOptions(), dir.string(), descriptors,
                                           &handles, &raw)
            : rocksdb::DB::Open(rocksdb::DBOptions(), dir.string(), descriptors, &handles, &raw);
    EXPECT_TRUE(s.ok()) << dir << ": " << s.ToString();
    db.reset(raw);
  }
  ~RawDb() {
    for (auto* h : handles) db->DestroyColumnFamilyHandle(h);
  }
  // The column family `name`, or null.
  rocksdb::ColumnFamilyHandle* cf(const std::string& name) const {
    for (std::size_t i = 0; i < names.size() && i < handles.size(); ++i) {
      if (names[i] == name) return handles[i];
    }
    return nullptr;
  }
  bool has(const std::string& name, const std::string& key) const {
    std::string v;
    return cf(name) != nullptr && db->Get(rocksdb::ReadOptions(), cf(name), key, &v).ok();
  }
};

// Rewrites a store into the layout of earlier versions: the index and the history in the
// tables' instance ('backlog_index' and 'meta'), with the `applied` key, and no journal-index/.

void MakeLegacyLayout(const fs::path& dir, Position applied, bool frames_in_rocksdb = false) {
  const fs::path index_dir = dir / "journal-index";
  {
    RawDb tables(dir, /*read_only=*/false);
    RawDb journal(index_dir, /*read_only=*/true);
    ASSERT_TRUE(tables.db && journal.db);
    rocksdb::ColumnFamilyHandle* meta = tables.cf("meta");
    ASSERT_NE(meta, nullptr);
    rocksdb::ColumnFamilyHandle* index = nullptr;
    ASSERT_TRUE(
        tables.db->CreateColumnFamily(rocksdb::ColumnFamilyOptions(), "backlog_index", &index)
            .ok());
    tables.handles.push_back(index);
    tables.names.push_back("backlog_index");
    rocksdb::WriteBatch batch;
    std::unique_ptr<rocksdb::Iterator> it(
        journal.db->NewIterator(rocksdb::ReadOptions(), journal.cf("backlog_index")));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      // An older journal still: 32-byte entries naming frames in a column family.
      batch.Put(index, it->key(),
                frames_in_rocksdb ? std::string(32, 'o') : it->value().ToString());
    }
    it.reset();
    std::string history;
    ASSERT_TRUE(journal.db
                    ->Get(rocksdb::ReadOptions(), journal.cf(rocksdb::kDefaultColumnFamilyName),
                          "history", &history)
                    .ok());
    batch.Put(meta, "history", history);
    std::string pos(16, '\0');
    for (int i = 0; i < 8; ++i) {
      pos[i] = static_cast<char>(applied.epoch >> (56 - 8 * i));
      pos[8 + i] = static_cast<char>(applied.seq >> (56 - 8 * i));
    }
    batch.Put(meta, "applied", pos);
    ASSERT_TRUE(tables.db->Write(rocksdb::WriteOptions(), &batch).ok());
  }
  fs::remove_all(index_dir);
}

TEST(StoreCrash, AnIndexOfTheEarlierLayoutIsMovedWholeEvenWhenTheMoveIsCut) {
  ASSERT_NE(g_self, nullptr);
  TempDir dir;
  PrepareJournal(dir.path(), 150);
  Position head;
  std::vector<JournalBatch> before;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store);
    head = store->applied();
    ASSERT_TRUE(store->ReadJournal(0, 1 << 30, &before).ok());
  }
  ASSERT_EQ(head, (Position{2, 150 * kAppendDeltas}));
  ASSERT_EQ(before.size(), 150u);
  MakeLegacyLayout(dir.path(), head);
  // Cut after the copy, before the old index is removed; then opened again.
  RunKilledAt(dir.path(), "open", "move-index-between");
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store);
  EXPECT_EQ(store->applied(), head);
  EXPECT_EQ(store->history(), AppendHistory(head));
  EXPECT_EQ(store->replication_id(), "rid-1");
  std::vector<JournalBatch> after;
  ASSERT_TRUE(store->ReadJournal(0, 1 << 30, &after).ok());
  ASSERT_EQ(after.size(), before.size());
  for (std::size_t i = 0; i < after.size(); ++i) {
    EXPECT_EQ(after[i].first, before[i].first);
    EXPECT_EQ(after[i].last, before[i].last);
    EXPECT_EQ(after[i].frame, before[i].frame);
  }
  // The old index, history and head are gone from the tables' instance.
  store.reset();
  {
    const RawDb raw(dir.path(), /*read_only=*/true);
    EXPECT_EQ(raw.cf("backlog_index"), nullptr);
    EXPECT_FALSE(raw.has("meta", "history"));
    EXPECT_FALSE(raw.has("meta", "applied"));
  }
  // And it appends on from there.
  store = OpenOrDie(dir.path());
  ASSERT_TRUE(AppendNext(*store, head).ok());
  EXPECT_EQ(store->applied().seq, head.seq + kAppendDeltas);
}

TEST(StoreCrash, AnOlderJournalStillIsRefusedAndLeftAsItWas) {
  TempDir dir;
  PrepareJournal(dir.path(), 5);
  Position head;
  {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store);
    head = store->applied();
  }
  MakeLegacyLayout(dir.path(), head, /*frames_in_rocksdb=*/true);
  StoreOptions o;
  o.dir = dir.path();
  auto store = Store::Open(o);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("earlier version"), std::string::npos)
      << store.status().ToString();
  // Nothing moved: the version that wrote it can still materialize it.
  const RawDb raw(dir.path(), /*read_only=*/true);
  EXPECT_NE(raw.cf("backlog_index"), nullptr);
  EXPECT_TRUE(raw.has("meta", "history"));
  EXPECT_TRUE(raw.has("meta", "applied"));
}

// The blob cursor is read without a lock by the stream's acks while the blob lane moves it: a
// reader never sees a value the cursor did not hold (a torn read of a blob's seq with another
// blob's offset would show as the cursor moving back).
TEST(StoreTest, TheBlobCursorIsReadWhileBlobsAreStoredAndNeverMovesBack) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  ASSERT_TRUE(store);
  constexpr std::uint64_t kBlobs = 300;
  constexpr std::size_t kSize = 16 << 10, kChunk = 1 << 10;
  std::atomic<bool> done{false};
  std::atomic<std::uint64_t> reads{0};
  std::string problem;
  std::thread reader([&] {
    BlobCursor last = store->blob_cursor();
    while (!done.load()) {
      const BlobCursor now = store->blob_cursor();
      if (now < last || now.offset > kSize) {
        problem = "(" + std::to_string(now.seq) + ", " + std::to_string(now.offset) + ") after (" +
                  std::to_string(last.seq) + ", " + std::to_string(last.offset) + ")";
        return;
      }
      last = now;
      reads.fetch_add(1);
    }
  });
  std::string data(kSize, 'v');
  for (std::uint64_t b = 0; b < kBlobs; ++b) {
    data[0] = static_cast<char>(b);
    BlobInfo info;
    info.seq = store->blob_cursor().seq;
    info.blob_id = "rec/" + std::to_string(b);
    info.kind = 2;
    info.name = "rec.wav";
    info.size = kSize;
    info.xxh64 = XXH3_64bits(data.data(), data.size());
    for (std::size_t off = 0; off < kSize; off += kChunk) {
      ASSERT_TRUE(store->AddBlobChunk(info, off, std::string_view(data).substr(off, kChunk)).ok());
    }
  }
  done = true;
  reader.join();
  EXPECT_EQ(problem, "");
  EXPECT_GT(reads.load(), 0u);
  EXPECT_EQ(store->blob_cursor(), (BlobCursor{kBlobs + 1, 0}));
}

TEST(StoreTest, AStoreWhoseJournalIndexWasRemovedDoesNotOpen) {
  TempDir dir;
  PrepareJournal(dir.path(), 3);
  fs::remove_all(dir.path() / "journal-index");
  StoreOptions o;
  o.dir = dir.path();
  auto store = Store::Open(o);
  ASSERT_FALSE(store.ok()) << "it would open with an empty history";
  EXPECT_EQ(store.status().code(), Status::Code::kFailedPrecondition);
  EXPECT_NE(store.status().message().find("journal-index"), std::string::npos)
      << store.status().ToString();
  EXPECT_FALSE(fs::exists(dir.path() / "journal-index")) << "the open must not create it";
}

}  // namespace
}  // namespace statesync

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--store-writer") {
    return statesync::RunWriter(argv[2], std::atoi(argv[3]));
  }
  if (argc == 4 && std::string(argv[1]) == "--store-appender") {
    return statesync::RunAppender(argv[2], std::atoi(argv[3]));
  }
  if (argc == 5 && std::string(argv[1]) == "--store-op") {
    return statesync::RunStoreOp(argv[2], argv[3]);
  }
  statesync::g_self = argv[0];
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
