// The store's journal, materializer, snapshots, quarantine and blob lane, and the protocol's
// fork arithmetic, on a real RocksDB in temporary directories.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "blob_files.h"
#include "statesync/common/idle_class.h"
#include "statesync/replication/messages.h"
#include "statesync/replication/store.h"
#include "statesync/workload/workload.h"
#include "temp_dir.h"

namespace statesync {
namespace {

using testing::TempDir;

namespace fs = std::filesystem;
using replication::DeltaBatchBuilder;
using replication::EnvelopeHeader;
using std::chrono::milliseconds;

const TimePoint kT0{milliseconds(1'780'000'000'000)};

std::unique_ptr<Store> OpenOrDie(const fs::path& dir, bool materialize = true,
                                 const std::function<void(StoreOptions&)>& tune = {}) {
  StoreOptions o;
  o.dir = dir;
  o.materialize = materialize;
  o.memtable_budget_bytes = 64 << 20;
  if (tune) tune(o);
  auto s = Store::Open(o);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

// A primary's table with a stream of upserts, updates and deletes, journaled batch by batch.
struct Source {
  SessionTable table;
  std::mt19937_64 rng{42};
  DeltaBatchBuilder builder;
  EnvelopeHeader header{7, "p1", 1};

  Source() {
    table.Tick(kT0);
    EXPECT_TRUE(table.BecomeWritable(1).ok());
  }
  // Makes `n` random changes and journals them in batches of about 100.
  void Write(Store& store, int n, TimePoint now = kT0) {
    for (int i = 0; i < n; ++i) {
      const std::uint64_t k = rng() % 3000;
      if (rng() % 5 == 0) {
        const FirewallSession s = workload::Ipv4Session(k, kT0);
        ASSERT_TRUE(table.Delete(TableId::kFwSessions, FirewallKey(s.orig, s.zone)).ok());
      } else if (rng() % 4 == 0) {
        ASSERT_TRUE(
            table.Upsert(UserTable(2), "u" + std::to_string(k), std::to_string(rng())).ok());
      } else {
        FirewallSession s = workload::Ipv4Session(k, kT0);
        s.orig_packets = rng();
        ASSERT_TRUE(table.UpsertFirewall(s).ok());
      }
    }
    while (table.pending() > 0) {
      table.Drain(100, [&](const DeltaView& d) { builder.Add(d); });
      const Position first = builder.first(), last = builder.last();
      const std::string frame = builder.Finish(header, "rid-1");
      ASSERT_TRUE(store.Append(first, last, wire::AsBytes(frame), now).ok());
    }
  }
};

TableDigest LoadedDigest(const Store& store, TableId t, Position* at = nullptr) {
  SessionTable loaded(SessionTableOptions{.writable = false});
  Status st = store.LoadInto(loaded);
  EXPECT_TRUE(st.ok()) << st.ToString();
  if (at) *at = loaded.last_position();
  return loaded.Digest(t);
}

TEST(Journal, AppendedBatchesAreMaterializedAndSurviveAReopen) {
  TempDir dir;
  Source src;
  {
    auto store = OpenOrDie(dir.path());
    src.Write(*store, 20000);
    EXPECT_EQ(store->applied(), src.table.last_position());
    ASSERT_TRUE(store->WaitMaterialized(store->applied(), std::chrono::seconds(30)));
    EXPECT_EQ(store->history(), (std::vector<Position>{{1, 1}}));
  }
  auto store = OpenOrDie(dir.path());
  Position at;
  EXPECT_EQ(LoadedDigest(*store, TableId::kFwSessions, &at),
            src.table.Digest(TableId::kFwSessions));
  EXPECT_EQ(LoadedDigest(*store, UserTable(2)), src.table.Digest(UserTable(2)));
  EXPECT_EQ(at, src.table.last_position());
}

TEST(Journal, KeysThatDifferOnlyAfterSixteenBytesOrInTrailingZerosMaterializeApart) {
  // The materializer sorts a round by the keys' first 16 bytes as integers, zero-padded: keys
  // equal there (a prefix padded with zeros, a shared 16-byte start) must still come out in
  // bytewise order, each with its last value.
  TempDir dir;
  Source src;
  using namespace std::string_literals;
  const std::vector<std::string> keys = {"a",
                                         "a\0"s,
                                         "a\0\0"s,
                                         "0123456789abcdef",
                                         "0123456789abcdef\0"s,
                                         "0123456789abcdef0",
                                         "0123456789abcde",
                                         "01234567zzzzzzzz",
                                         "01234567aaaaaaaa",
                                         std::string(16, '\0'),
                                         std::string(15, '\0')};
  auto store = OpenOrDie(dir.path());
  for (int round = 0; round < 3; ++round) {
    for (std::size_t k = 0; k < keys.size(); ++k) {
      const std::size_t at = (k * 5 + static_cast<std::size_t>(round)) % keys.size();
      ASSERT_TRUE(src.table.Upsert(UserTable(3), keys[at], "v" + std::to_string(round)).ok());
    }
    src.Write(*store, 0);
  }
  ASSERT_TRUE(store->WaitMaterialized(store->applied(), std::chrono::seconds(30)));
  EXPECT_EQ(LoadedDigest(*store, UserTable(3)), src.table.Digest(UserTable(3)));
  for (const std::string& key : keys) {
    EXPECT_EQ(store->Get(UserTable(3), key).value(), "v2") << "key of " << key.size() << " bytes";
  }
}

TEST(Journal, StartUpReplaysWhatWasNotMaterialized) {
  TempDir dir;
  Source src;
  {
    auto store = OpenOrDie(dir.path(), /*materialize=*/false);
    src.Write(*store, 5000);
    EXPECT_EQ(store->materialized(), (Position{}));
  }
  auto store = OpenOrDie(dir.path(), false);
  LoadStats stats;
  SessionTable loaded(SessionTableOptions{.writable = false});
  ASSERT_TRUE(store->LoadInto(loaded, &stats).ok());
  EXPECT_EQ(stats.records, 0u);
  EXPECT_EQ(stats.journal_deltas, src.table.last_position().seq);
  EXPECT_EQ(loaded.Digest(TableId::kFwSessions), src.table.Digest(TableId::kFwSessions));
  // A materializer that starts on such a store (no round ever finished: the state of a node
  // killed early) materializes the whole journal. A bug once took "no position recorded" for
  // "all of it done", and the replication SIGKILL test lost records to it.
  store.reset();
  store = OpenOrDie(dir.path(), true);
  ASSERT_TRUE(store->WaitMaterialized(store->applied(), std::chrono::seconds(30)));
  SessionTable again(SessionTableOptions{.writable = false});
  ASSERT_TRUE(store->LoadInto(again, &stats).ok());
  EXPECT_EQ(stats.journal_deltas, 0u);
  EXPECT_EQ(again.Digest(TableId::kFwSessions), src.table.Digest(TableId::kFwSessions));
}

TEST(Journal, AppendRefusesAGapAnOlderEpochAndAMixedBatch) {
  TempDir dir;
  auto store = OpenOrDie(dir.path());
  const std::string frame = "x";
  EXPECT_EQ(store->Append({1, 2}, {1, 3}, wire::AsBytes(frame), kT0).code(),
            Status::Code::kFailedPrecondition);
  ASSERT_TRUE(store->Append({2, 1}, {2, 1}, wire::AsBytes(frame), kT0).ok());
  EXPECT_EQ(store->Append({1, 2}, {1, 2}, wire::AsBytes(frame), kT0).code(),
            Status::Code::kFailedPrecondition);
  EXPECT_EQ(store->Append({2, 2}, {3, 4}, wire::AsBytes(frame), kT0).code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(store->applied(), (Position{2, 1}));
}

TEST(Journal, ReadsFromAnyPointAndTrimsBySizeAndAgeButKeepsWhatIsNeeded) {
  TempDir dir;
  Source src;
  auto store = OpenOrDie(dir.path());
  src.Write(*store, 3000, kT0);
  const Seq middle = store->applied().seq;
  src.Write(*store, 3000, kT0 + std::chrono::minutes(30));
  ASSERT_TRUE(store->WaitMaterialized(store->applied(), std::chrono::seconds(30)));
  std::vector<JournalBatch> batches;
  ASSERT_TRUE(store->ReadJournal(middle - 10, 1, &batches).ok());
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_LE(batches[0].first.seq, middle - 9);
  EXPECT_GE(batches[0].last.seq, middle - 9);

  // Age: the first half is older than 20 minutes, but a snapshot still needs seq 100 onwards.
  JournalLimits limits{.max_bytes = 1ull << 40, .max_age = std::chrono::minutes(20)};
  const TimePoint now = kT0 + std::chrono::minutes(35);
  auto dropped = store->Trim(limits, now, 100);
  ASSERT_TRUE(dropped.ok());
  EXPECT_LE(store->journal().first_seq, 101u);
  dropped = store->Trim(limits, now, UINT64_MAX);
  ASSERT_TRUE(dropped.ok());
  EXPECT_GT(*dropped, 0u);
  EXPECT_EQ(store->journal().first_seq, middle + 1);
  EXPECT_EQ(store->ReadJournal(10, 1 << 20, &batches).code(), Status::Code::kNotFound);
  ASSERT_TRUE(store->ReadJournal(middle, 1 << 20, &batches).ok());
  EXPECT_EQ(batches.at(0).first.seq, middle + 1);
  // Size: keep at most one batch's worth.
  limits = {.max_bytes = 1, .max_age = std::chrono::hours(10)};
  ASSERT_TRUE(store->Trim(limits, now, UINT64_MAX).ok());
  EXPECT_EQ(store->journal().batches, 0u);
  ASSERT_TRUE(store->ReadJournal(store->applied().seq, 1 << 20, &batches).ok());
  EXPECT_TRUE(batches.empty()) << "nothing after the head";
  // The tables still hold everything.
  EXPECT_EQ(LoadedDigest(*store, TableId::kFwSessions), src.table.Digest(TableId::kFwSessions));
}

TEST(Journal, ASnapshotInstalledElsewhereGivesTheSameData) {
  TempDir a_dir, b_dir;
  Source src;
  auto a = OpenOrDie(a_dir.path());
  src.Write(*a, 10000);
  ASSERT_TRUE(a->WaitMaterialized(a->applied(), std::chrono::seconds(30)));
  auto snap = a->OpenSnapshot();
  ASSERT_TRUE(snap.ok());
  src.Write(*a, 1000);  // writes after the snapshot do not show in it
  auto b = OpenOrDie(b_dir.path());
  Source other;
  other.Write(*b, 500);  // whatever b held before goes
  ASSERT_TRUE(b->BeginSnapshot().ok());
  EXPECT_EQ(b->applied(), (Position{}));
  std::vector<StoreSnapshot::Record> records;
  std::uint64_t n = 0;
  for (;;) {
    ASSERT_TRUE((*snap)->Next(64 << 10, &records).ok());
    if (records.empty()) break;
    std::vector<StoredDelta> deltas;
    for (const auto& r : records) deltas.push_back({r.table, DeltaKind::kUpsert, r.key, r.value});
    ASSERT_TRUE(b->AddSnapshotRecords(deltas).ok());
    n += records.size();
  }
  const Position at = (*snap)->position();
  ASSERT_TRUE(b->FinishSnapshot("rid-1", at, a->history()).ok());
  EXPECT_GT(n, 1000u);
  EXPECT_EQ(b->replication_id(), "rid-1");
  EXPECT_EQ(b->applied(), at);
  // b continues from the snapshot's position with a's journal.
  std::vector<JournalBatch> batches;
  Seq after = at.seq;
  for (;;) {
    ASSERT_TRUE(a->ReadJournal(after, 1 << 20, &batches).ok());
    if (batches.empty()) break;
    for (const auto& jb : batches) {
      ASSERT_EQ(jb.first.seq, after + 1) << "snapshots are taken at batch boundaries";
      ASSERT_TRUE(b->Append(jb.first, jb.last, wire::AsBytes(jb.frame), kT0).ok());
      after = jb.last.seq;
    }
  }
  b.reset();
  b = OpenOrDie(b_dir.path());
  EXPECT_EQ(LoadedDigest(*b, TableId::kFwSessions), src.table.Digest(TableId::kFwSessions));
  EXPECT_EQ(LoadedDigest(*b, UserTable(2)), src.table.Digest(UserTable(2)));
}

TEST(Journal, QuarantineKeepsTheDivergentTail) {
  TempDir dir;
  Source src;
  auto store = OpenOrDie(dir.path());
  src.Write(*store, 2000);
  const Position head = store->applied();
  auto moved = store->QuarantineAfter({1, head.seq - 300}, "lost the election in epoch 2", kT0);
  ASSERT_TRUE(moved.ok()) << moved.status().ToString();
  EXPECT_EQ(*moved, 300u);
  std::vector<QuarantinedDelta> kept;
  ASSERT_TRUE(store->ScanQuarantine([&](const QuarantinedDelta& q) { kept.push_back(q); }).ok());
  ASSERT_EQ(kept.size(), 300u);
  EXPECT_EQ(kept.front().position, (Position{1, head.seq - 299}));
  EXPECT_EQ(kept.back().position, head);
  EXPECT_EQ(kept.back().reason, "lost the election in epoch 2");

  // With the journal trimmed past the fork, every record is kept instead.
  ASSERT_TRUE(store->WaitMaterialized(head, std::chrono::seconds(30)));
  ASSERT_TRUE(
      store->Trim({.max_bytes = 1, .max_age = std::chrono::hours(1)}, kT0, UINT64_MAX).ok());
  moved = store->QuarantineAfter({1, 5}, "second fork", kT0);
  ASSERT_TRUE(moved.ok());
  EXPECT_EQ(*moved, src.table.total_size());
  std::size_t total = 0;
  ASSERT_TRUE(store->ScanQuarantine([&](const QuarantinedDelta&) { ++total; }).ok());
  EXPECT_EQ(total, 300u + src.table.total_size()) << "a second quarantine overwrites nothing";
}

TEST(Journal, BlobsAreVisibleOnlyWhenCompleteAndVerified) {
  TempDir a_dir, b_dir;
  auto a = OpenOrDie(a_dir.path());
  auto b = OpenOrDie(b_dir.path());
  std::string data(300'000, '\0');
  std::mt19937_64 rng(3);
  for (auto& c : data) c = static_cast<char>(rng());
  auto info = a->PutBlob("vm/1001/msg0001", 1, "msg0001.wav", data, 64 << 10);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->seq, 1u);
  EXPECT_EQ(a->blob_cursor(), (BlobCursor{2, 0}));
  // Copy it to b in 50 000-byte pieces (not the stored chunk size).
  BlobInfo got;
  std::string piece;
  while (b->blob_cursor().seq == 1) {
    const BlobCursor c = b->blob_cursor();
    ASSERT_TRUE(a->ReadBlob(1, c.offset, 50'000, &got, &piece).ok());
    EXPECT_FALSE(b->GetBlob("vm/1001/msg0001", nullptr)->has_value()) << "visible before complete";
    ASSERT_TRUE(b->AddBlobChunk(got, c.offset, piece).ok());
  }
  BlobInfo seen;
  auto copy = b->GetBlob("vm/1001/msg0001", &seen);
  ASSERT_TRUE(copy.ok() && copy->has_value());
  EXPECT_EQ(**copy, data);
  EXPECT_EQ(seen.name, "msg0001.wav");
  // Reopened, it is still there and the cursor is past it.
  b.reset();
  b = OpenOrDie(b_dir.path());
  EXPECT_EQ(b->blob_cursor(), (BlobCursor{2, 0}));
  EXPECT_EQ(**b->GetBlob("vm/1001/msg0001", nullptr), data);

  // A damaged copy is refused as a whole and received again from the start.
  auto info2 = a->PutBlob("fax/7", 4, "page1.tiff", data.substr(0, 1000), 64 << 10);
  ASSERT_TRUE(info2.ok());
  std::string bad = data.substr(0, 1000);
  bad[500] ^= 1;
  EXPECT_EQ(b->AddBlobChunk(*info2, 0, bad).code(), Status::Code::kCorruption);
  EXPECT_EQ(b->blob_cursor(), (BlobCursor{2, 0}));
  EXPECT_FALSE(b->GetBlob("fax/7", nullptr)->has_value());
  EXPECT_EQ(b->AddBlobChunk(*info2, 10, "x").code(), Status::Code::kFailedPrecondition);
}

std::string RandomBytes(std::size_t n, std::uint64_t seed) {
  std::string data(n, '\0');
  std::mt19937_64 rng(seed);
  for (auto& c : data) c = static_cast<char>(rng());
  return data;
}

std::string FileContents(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(Journal, ABlobsBytesLiveInAFileOfTheirOwn) {
  TempDir dir;
  auto a = OpenOrDie(dir.path());
  const std::string data = RandomBytes(200'000, 5);
  ASSERT_TRUE(a->PutBlob("rec/1", 2, "rec1.wav", data, 64 << 10).ok());
  const fs::path file = dir.path() / "blob-lane" / "0000000000000001";
  EXPECT_EQ(FileContents(file), data);
  EXPECT_FALSE(fs::exists(dir.path() / "blob-lane" / "0000000000000001.part"));
  // A damaged file is refused, not returned.
  {
    std::fstream f(file, std::ios::binary | std::ios::in | std::ios::out);
    f.seekp(123'456);
    f.put(static_cast<char>(data[123'456] ^ 1));
  }
  const auto damaged = a->GetBlob("rec/1", nullptr);
  EXPECT_EQ(damaged.status().code(), Status::Code::kCorruption);
  EXPECT_NE(damaged.status().message().find(file.string()), std::string::npos);
  // A blob whose file is gone is a clear error, not a crash or a short read.
  fs::remove(file);
  BlobInfo info;
  std::string piece;
  const Status st = a->ReadBlob(1, 0, 1000, &info, &piece);
  EXPECT_EQ(st.code(), Status::Code::kCorruption);
  EXPECT_NE(st.message().find(file.string()), std::string::npos) << st.ToString();
}

TEST(BlobFiles, TheCompletingEmptyChunkAfterACrashFindsThePublishedFile) {
  // A subordinate killed after its blob's file was published and before the store recorded it
  // restarts with the cursor at the blob's end; the primary then sends an empty chunk there.
  TempDir dir;
  detail::BlobFiles files(dir.path() / "blob-lane", false);
  ASSERT_TRUE(files.Open().ok());
  ASSERT_TRUE(files.WritePart(4, 0, "voice").ok());
  ASSERT_TRUE(files.Publish(4).ok());
  ASSERT_TRUE(files.WritePart(4, 5, "").ok());
  EXPECT_FALSE(fs::exists(files.PartPath(4)));
  std::string whole;
  ASSERT_TRUE(files.ReadWhole(4, &whole).ok());
  EXPECT_EQ(whole, "voice");
  EXPECT_TRUE(files.Publish(4).ok());  // published already: nothing to do
  EXPECT_EQ(FileContents(files.CompletePath(4)), "voice");
}

TEST(Journal, AReceivedBlobResumesAtItsCursorAfterACrash) {
  TempDir a_dir, b_dir;
  auto a = OpenOrDie(a_dir.path());
  auto b = OpenOrDie(b_dir.path());
  const std::string data = RandomBytes(300'000, 6);
  ASSERT_TRUE(a->PutBlob("vm/7", 1, "msg.wav", data, 64 << 10).ok());
  BlobInfo got;
  std::string piece;
  auto copy_piece = [&] {
    const BlobCursor c = b->blob_cursor();
    ASSERT_TRUE(a->ReadBlob(1, c.offset, 50'000, &got, &piece).ok());
    ASSERT_TRUE(b->AddBlobChunk(got, c.offset, piece).ok());
  };
  copy_piece();
  copy_piece();
  b.reset();
  // The crash came after a chunk's bytes reached the file and before its cursor was recorded:
  // the file runs past the cursor, with bytes that the next chunk must overwrite.
  const fs::path part = b_dir.path() / "blob-lane" / "0000000000000001.part";
  ASSERT_EQ(fs::file_size(part), 100'000u);
  {
    std::ofstream out(part, std::ios::binary | std::ios::app);
    out << std::string(30'000, 'x');
  }
  b = OpenOrDie(b_dir.path());
  EXPECT_EQ(b->blob_cursor(), (BlobCursor{1, 100'000}));
  while (b->blob_cursor().seq == 1) copy_piece();
  auto copy = b->GetBlob("vm/7", nullptr);
  ASSERT_TRUE(copy.ok() && copy->has_value());
  EXPECT_EQ(**copy, data);
}

TEST(Fork, FindsTheLastSharedPosition) {
  using replication::FindFork;
  const std::vector<Position> mine{{1, 1}, {3, 101}};
  // A subordinate that followed epoch 1 to seq 80: a prefix of mine.
  auto f = FindFork(mine, 150, std::vector<Position>{{1, 1}}, {1, 80});
  EXPECT_FALSE(f.diverged);
  EXPECT_EQ(f.common, (Position{1, 80}));
  // It followed epoch 1 to 120, but epoch 1 ended at 100 here: 101..120 diverge.
  f = FindFork(mine, 150, std::vector<Position>{{1, 1}}, {1, 120});
  EXPECT_TRUE(f.diverged);
  EXPECT_EQ(f.common, (Position{1, 100}));
  // A former primary that wrote epoch 2 from seq 91 (see the worked example in FindFork).
  f = FindFork(mine, 150, std::vector<Position>{{1, 1}, {2, 91}}, {2, 120});
  EXPECT_TRUE(f.diverged);
  EXPECT_EQ(f.common, (Position{1, 90}));
  // Ahead of me in my own epoch.
  f = FindFork(mine, 150, mine, {3, 170});
  EXPECT_TRUE(f.diverged);
  EXPECT_EQ(f.common, (Position{3, 150}));
  // Up to date, and empty.
  EXPECT_FALSE(FindFork(mine, 150, mine, {3, 150}).diverged);
  EXPECT_FALSE(FindFork(mine, 150, {}, {}).diverged);
}

}  // namespace
}  // namespace statesync

namespace statesync {
namespace {
TEST(Journal, ManyReopensKeepEverythingMaterialized) {
  TempDir dir;
  Source src;
  for (int round = 0; round < 4; ++round) {
    auto store = OpenOrDie(dir.path());
    ASSERT_TRUE(store->WaitMaterialized(store->applied(), std::chrono::seconds(30)));
    src.Write(*store, 30000);
    ASSERT_TRUE(store->WaitMaterialized(store->applied(), std::chrono::seconds(30)));
    EXPECT_EQ(LoadedDigest(*store, TableId::kFwSessions), src.table.Digest(TableId::kFwSessions))
        << "round " << round;
  }
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(LoadedDigest(*store, TableId::kFwSessions), src.table.Digest(TableId::kFwSessions));
}

// Polls the materialized position without asking for it (WaitMaterialized would).
bool MaterializesUnasked(const Store& store, std::chrono::seconds within) {
  const auto until = std::chrono::steady_clock::now() + within;
  while (std::chrono::steady_clock::now() < until) {
    if (store.materialized() == store.applied()) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return false;
}

TEST(Journal, TheMaterializerWaitsForEnoughBytesAnIdleJournalOrARequest) {
  const auto never = [](StoreOptions& o) {
    o.materialize_after_bytes = 1ull << 40;
    o.materialize_when_idle = std::chrono::hours(1);
  };
  {  // Nothing starts it: the tables stay behind until someone waits for them.
    TempDir dir;
    Source src;
    auto store = OpenOrDie(dir.path(), true, never);
    src.Write(*store, 3000);
    std::this_thread::sleep_for(milliseconds(300));
    EXPECT_EQ(store->materialized(), Position{});
    ASSERT_TRUE(store->WaitMaterialized(store->applied(), std::chrono::seconds(30)));
    EXPECT_EQ(LoadedDigest(*store, TableId::kFwSessions), src.table.Digest(TableId::kFwSessions));
  }
  {  // An idle journal.
    TempDir dir;
    Source src;
    auto store = OpenOrDie(dir.path(), true, [&](StoreOptions& o) {
      never(o);
      o.materialize_when_idle = milliseconds(100);
    });
    src.Write(*store, 3000);
    EXPECT_TRUE(MaterializesUnasked(*store, std::chrono::seconds(30)));
  }
  {  // Enough bytes gathered.
    TempDir dir;
    Source src;
    auto store = OpenOrDie(dir.path(), true, [&](StoreOptions& o) {
      never(o);
      o.materialize_after_bytes = 1;
    });
    src.Write(*store, 3000);
    EXPECT_TRUE(MaterializesUnasked(*store, std::chrono::seconds(30)));
  }
  {  // A journal over its limits: Trim cannot drop what the tables lack, and asks for it.
    TempDir dir;
    Source src;
    auto store = OpenOrDie(dir.path(), true, never);
    src.Write(*store, 3000);
    const JournalLimits tiny{.max_bytes = 1, .max_age = std::chrono::hours(1)};
    auto dropped = store->Trim(tiny, kT0, UINT64_MAX);
    ASSERT_TRUE(dropped.ok());
    EXPECT_EQ(*dropped, 0u) << "dropped what the tables did not hold yet";
    EXPECT_TRUE(MaterializesUnasked(*store, std::chrono::seconds(30)));
    dropped = store->Trim(tiny, kT0, UINT64_MAX);
    ASSERT_TRUE(dropped.ok());
    EXPECT_GT(*dropped, 0u);
    EXPECT_EQ(LoadedDigest(*store, TableId::kFwSessions), src.table.Digest(TableId::kFwSessions));
  }
}

// Bytes in the store's directory with this extension, archive/ included.
std::uint64_t BytesOf(const fs::path& dir, const std::string& extension) {
  std::uint64_t bytes = 0;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    std::error_code ec;  // a compaction or a trim may remove a file meanwhile
    const std::uintmax_t size = e.file_size(ec);
    if (e.path().extension() == extension && !ec) bytes += size;
  }
  return bytes;
}

// Trimming frees the disk: the frames are in segment files, and Trim removes the segments that
// hold no batch it kept; the tables hold one copy of the records. The disk stays bounded while
// far more than the limit goes through.
TEST(Journal, TrimmedFramesLeaveTheDisk) {
  TempDir dir;
  Source src;
  auto store = OpenOrDie(dir.path(), true, [](StoreOptions& o) {
    o.journal_segment_bytes = 4 << 20;
    o.journal_cache_bytes = 0;  // every read from the files
  });
  const JournalLimits limits{.max_bytes = 8 << 20, .max_age = std::chrono::hours(1)};
  std::uint64_t written = 0;
  while (written < (160u << 20)) {
    const std::uint64_t before = store->journal().bytes;
    src.Write(*store, 20000);
    written += store->journal().bytes - before;
    ASSERT_TRUE(store->WaitMaterialized(store->applied(), std::chrono::seconds(30)));
    ASSERT_TRUE(store->Trim(limits, kT0, UINT64_MAX).ok());
  }
  ASSERT_TRUE(store->Flush().ok());
  ASSERT_TRUE(store->Trim(limits, kT0, UINT64_MAX).ok());
  EXPECT_LE(store->journal().bytes, 8u << 20);
  // The segments go on the materializer's thread, a moment after Trim asks.
  std::uint64_t segment_bytes = 0;
  for (int i = 0; i < 300; ++i) {
    segment_bytes = BytesOf(dir.path() / "journal", ".seg");
    if (segment_bytes < (16u << 20)) break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  // The journal's 8 MB, plus the segments that hold its oldest and newest batches.
  EXPECT_LT(segment_bytes, 16u << 20) << "after " << (written >> 20) << " MB through the journal";
  EXPECT_LT(BytesOf(dir.path(), ".log"), 8u << 20);  // RocksDB's WAL: index entries only
  EXPECT_LT(BytesOf(dir.path(), ".sst"), 72u << 20);
  // What the journal kept reads back from the segments.
  std::vector<JournalBatch> batches;
  const JournalStats js = store->journal();
  ASSERT_TRUE(store->ReadJournal(js.first_seq - 1, 64 << 20, &batches).ok());
  ASSERT_FALSE(batches.empty());
  EXPECT_EQ(batches.front().first.seq, js.first_seq);
  EXPECT_EQ(batches.back().last.seq, js.last_seq);
  EXPECT_EQ(LoadedDigest(*store, TableId::kFwSessions), src.table.Digest(TableId::kFwSessions));
}

// The frames are read back from the segments, across many of them, from any point, in small
// reads, while the materializer ingests, and after a reopen.
TEST(Journal, FramesReadBackFromTheSegmentsFromAnyPointAndAfterAReopen) {
  TempDir dir;
  Source src;
  std::vector<JournalBatch> all;
  {
    auto store = OpenOrDie(dir.path(), true, [](StoreOptions& o) {
      o.journal_segment_bytes = 1 << 20;
      o.journal_cache_bytes = 0;      // every read from the files
      o.materialize_after_bytes = 0;  // materialize often, reading as it goes
    });
    for (int round = 0; round < 20; ++round) {
      src.Write(*store, 2000);
      ASSERT_TRUE(store->WaitMaterialized(store->applied(), std::chrono::seconds(30)));
    }
    ASSERT_TRUE(store->ReadJournal(0, 1ull << 30, &all).ok());
    ASSERT_FALSE(all.empty());
    EXPECT_EQ(all.back().last, store->applied());
    for (std::size_t i = 1; i < all.size(); ++i) {
      ASSERT_EQ(all[i].first.seq, all[i - 1].last.seq + 1) << "a gap at batch " << i;
    }
    // From the middle, in small reads.
    Seq after = all[all.size() / 3].last.seq;
    std::size_t index = all.size() / 3 + 1;
    std::vector<JournalBatch> part;
    while (index < all.size()) {
      ASSERT_TRUE(store->ReadJournal(after, 1, &part, 3).ok());
      ASSERT_FALSE(part.empty());
      for (const auto& b : part) {
        ASSERT_EQ(b.first, all[index].first);
        ASSERT_EQ(b.frame, all[index].frame);
        ++index;
        after = b.last.seq;
      }
    }
  }
  auto store = OpenOrDie(dir.path());
  std::vector<JournalBatch> again;
  ASSERT_TRUE(store->ReadJournal(0, 1ull << 30, &again).ok());
  ASSERT_EQ(again.size(), all.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_EQ(again[i].first, all[i].first);
    EXPECT_EQ(again[i].last, all[i].last);
    EXPECT_EQ(again[i].frame, all[i].frame);
  }
}
std::uint64_t FileSize(const fs::path& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  return ec ? 0 : size;
}

// The segments' sorted paths.
// The journal's segments that hold frames, oldest first (not the next one, which ss-journal-io
// creates empty to reserve its blocks).
std::vector<fs::path> Segments(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir / "journal")) {
    if (e.path().extension() == ".seg" && fs::file_size(e.path()) > 0) out.push_back(e.path());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// A store in `dir` whose journal holds batches 1..n, each one `frame` (epoch 1, not
// materialized).
void JournalFrames(const fs::path& dir, Seq n, const std::string& frame,
                   const std::function<void(StoreOptions&)>& tune = {}) {
  auto store = OpenOrDie(dir, false, tune);
  for (Seq s = 1; s <= n; ++s) {
    ASSERT_TRUE(store->Append({1, s}, {1, s}, wire::AsBytes(frame), kT0).ok());
  }
}

// An append killed after its frame was written and before its index entry leaves bytes no entry
// names: the store cuts them off when it opens, and the next frame goes where they began.
TEST(Journal, AnUnindexedTailIsCutOffWhenTheStoreOpens) {
  TempDir dir;
  const std::string frame(1000, 'f');
  JournalFrames(dir.path(), 3, frame);
  const fs::path segment = Segments(dir.path()).back();
  ASSERT_EQ(FileSize(segment), 3000u);
  {
    std::ofstream(segment, std::ios::app) << std::string(700, 'x');  // the killed append
  }
  {
    auto store = OpenOrDie(dir.path(), false, [](StoreOptions& o) { o.journal_cache_bytes = 0; });
    EXPECT_EQ(FileSize(segment), 3000u);
    EXPECT_EQ(store->applied(), (Position{1, 3}));
    const std::string next(500, 'n');
    ASSERT_TRUE(store->Append({1, 4}, {1, 4}, wire::AsBytes(next), kT0).ok());
    std::vector<JournalBatch> batches;
    ASSERT_TRUE(store->ReadJournal(0, 1 << 20, &batches).ok());
    ASSERT_EQ(batches.size(), 4u);
    EXPECT_EQ(batches[2].frame, frame);
    EXPECT_EQ(batches[3].frame, next);
  }
}

// A power loss can lose a segment's tail while a later segment reached the disk. Lost frames not
// yet in the tables take the store back to the batch before the first of them; lost frames whose
// records are in the tables only shorten the backlog. Either way the store opens.
TEST(Journal, FramesLostBeforeALaterSegmentAreFoundWhenTheStoreOpens) {
  {
    TempDir dir;
    const std::string frame(1000, 'f');
    JournalFrames(dir.path(), 6, frame, [](StoreOptions& o) {
      o.journal_segment_bytes = 2500;  // two frames a segment
    });
    const auto segments = Segments(dir.path());
    ASSERT_EQ(segments.size(), 3u);
    fs::resize_file(segments[1], 1500);  // batch 4 lost, batches 5 and 6 on the disk
    auto store = OpenOrDie(dir.path(), false, [](StoreOptions& o) { o.journal_cache_bytes = 0; });
    EXPECT_EQ(store->applied(), (Position{1, 3}));
    EXPECT_EQ(Segments(dir.path()).size(), 2u);  // the later segment's frames went with them
    ASSERT_TRUE(store->Append({1, 4}, {1, 4}, wire::AsBytes(frame), kT0).ok());
    std::vector<JournalBatch> batches;
    ASSERT_TRUE(store->ReadJournal(0, 1 << 20, &batches).ok());
    ASSERT_EQ(batches.size(), 4u);
  }
  TempDir dir;
  Source src;
  Position head;
  {
    auto store = OpenOrDie(dir.path(), true, [](StoreOptions& o) {
      o.journal_segment_bytes = 4096;  // a segment per frame
      o.materialize_after_bytes = 1ull << 40;
      o.materialize_when_idle = std::chrono::hours(1);
    });
    src.Write(*store, 1000);
    ASSERT_TRUE(store->WaitMaterialized(store->applied(), std::chrono::seconds(30)));
    src.Write(*store, 300);  // not materialized
    head = store->applied();
    ASSERT_GT(head.seq, store->materialized().seq);
  }
  const auto segments = Segments(dir.path());
  ASSERT_GE(segments.size(), 4u);
  fs::resize_file(segments[1], 10);  // a materialized frame lost
  auto store = OpenOrDie(dir.path());
  EXPECT_EQ(store->applied(), head);
  EXPECT_GT(store->journal().first_seq, 1u);
  EXPECT_EQ(LoadedDigest(*store, TableId::kFwSessions), src.table.Digest(TableId::kFwSessions));
}

// With sync_writes each frame is synced before its index entry, and each new segment's
// directory entry too; the frames read back across segments and a reopen.
TEST(Journal, SyncedFramesReadBackAcrossSegmentsAndAReopen) {
  TempDir dir;
  const auto options = [](StoreOptions& o) {
    o.sync_writes = true;
    o.journal_segment_bytes = 2500;  // two 1000-byte frames a segment
    o.journal_cache_bytes = 0;
  };
  std::vector<std::string> frames;
  {
    auto store = OpenOrDie(dir.path(), false, options);
    for (Seq s = 1; s <= 5; ++s) {
      frames.push_back(std::string(1000, static_cast<char>('a' + s)));
      ASSERT_TRUE(store->Append({1, s}, {1, s}, wire::AsBytes(frames.back()), kT0).ok());
    }
  }
  EXPECT_EQ(Segments(dir.path()).size(), 3u);
  auto store = OpenOrDie(dir.path(), false, options);
  std::vector<JournalBatch> batches;
  ASSERT_TRUE(store->ReadJournal(0, 1 << 20, &batches).ok());
  ASSERT_EQ(batches.size(), frames.size());
  for (std::size_t i = 0; i < frames.size(); ++i) EXPECT_EQ(batches[i].frame, frames[i]);
}

// The next segment's blocks are reserved ahead of the appends (by ss-journal-io, past the
// file's size, so the size still ends at the last frame), and the frames written into them read
// back, also after a reopen. Where the file system cannot reserve blocks, appends allocate as
// they go and only the first part is skipped.
TEST(Journal, TheNextSegmentIsReservedAheadOfTheAppends) {
  TempDir dir;
  const auto options = [](StoreOptions& o) {
    o.journal_segment_bytes = 1 << 20;
    o.journal_cache_bytes = 0;
  };
  const std::string frame(100'000, 'r');
  const auto segment = [&](std::uint64_t n) {
    char name[32];
    std::snprintf(name, sizeof(name), "%016llx.seg", static_cast<unsigned long long>(n));
    return dir.path() / "journal" / name;
  };
  const auto reserved_bytes = [](const fs::path& path) -> std::uint64_t {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0 ? static_cast<std::uint64_t>(st.st_blocks) * 512 : 0;
  };
  bool can_reserve = false;
  {
    const fs::path probe = dir.path() / "probe";
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    ASSERT_GE(fd, 0);
    can_reserve = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, 1 << 20) == 0;
    ::close(fd);
    fs::remove(probe);
  }
  {
    auto store = OpenOrDie(dir.path(), false, options);
    ASSERT_TRUE(store->Append({1, 1}, {1, 1}, wire::AsBytes(frame), kT0).ok());
    if (can_reserve) {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (reserved_bytes(segment(2)) < (1u << 20) &&
             std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      EXPECT_GE(reserved_bytes(segment(2)), 1u << 20) << "segment 2 was not reserved";
      EXPECT_EQ(fs::file_size(segment(2)), 0u);  // reserved past its size: no frame yet
    }
    for (Seq s = 2; s <= 25; ++s) {  // into segments 2 and 3
      ASSERT_TRUE(store->Append({1, s}, {1, s}, wire::AsBytes(frame), kT0).ok());
    }
    EXPECT_EQ(fs::file_size(segment(2)), 10 * frame.size());
  }
  auto store = OpenOrDie(dir.path(), false, options);
  EXPECT_EQ(store->applied(), (Position{1, 25}));
  std::vector<JournalBatch> batches;
  ASSERT_TRUE(store->ReadJournal(0, 64 << 20, &batches).ok());
  ASSERT_EQ(batches.size(), 25u);
  for (const auto& b : batches) EXPECT_EQ(b.frame, frame);
  ASSERT_TRUE(store->Append({1, 26}, {1, 26}, wire::AsBytes(frame), kT0).ok());
}

// After a power loss the index can name a frame the disk never got: the store goes back to the
// newest batch whose frame is whole. A frame damaged on the disk is reported, never served.
TEST(Journal, AFrameLostOrDamagedOnTheDiskIsNeverServed) {
  TempDir dir;
  const std::string frame(1000, 'f');
  JournalFrames(dir.path(), 4, frame);
  const fs::path segment = Segments(dir.path()).back();
  fs::resize_file(segment, 3500);  // the fourth frame half written back
  {
    auto store = OpenOrDie(dir.path(), false, [](StoreOptions& o) { o.journal_cache_bytes = 0; });
    EXPECT_EQ(store->applied(), (Position{1, 3}));
    EXPECT_EQ(store->journal().last_seq, 3u);
    EXPECT_EQ(FileSize(segment), 3000u);
    // The batch goes on from there, as if the lost one had never been written.
    ASSERT_TRUE(store->Append({1, 4}, {1, 4}, wire::AsBytes(frame), kT0).ok());
  }
  {
    std::fstream f(segment, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1500);
    f.put('X');  // one byte of the second frame
  }
  auto store = OpenOrDie(dir.path(), false, [](StoreOptions& o) { o.journal_cache_bytes = 0; });
  std::vector<JournalBatch> batches;
  const Status st = store->ReadJournal(0, 1 << 20, &batches);
  EXPECT_EQ(st.code(), Status::Code::kCorruption) << st.ToString();
  EXPECT_NE(st.message().find("checksum"), std::string::npos) << st.ToString();
  ASSERT_TRUE(store->ReadJournal(2, 1 << 20, &batches).ok());  // the frames after it are whole
  ASSERT_EQ(batches.size(), 2u);
  EXPECT_EQ(batches[0].frame, frame);
}
// A round someone waits for runs in the normal class (where permitted), the others in the idle
// class: in the idle class, a machine kept busy by other processes would keep the waiter waiting
// for as long (one such wait ran out its 60 s in a fresh-debian ASan run beside other builds).
TEST(Journal, AWaitedRoundLeavesTheIdleClassAndComesBack) {
  bool permitted = false;
  std::thread([&] {
    EnterIdleClass();
    permitted = LeaveIdleClass();
  }).join();
  if (!permitted) GTEST_SKIP() << "leaving SCHED_IDLE needs CAP_SYS_NICE here";
  auto materializer_policy = [] {
    for (const auto& e : fs::directory_iterator("/proc/self/task")) {
      std::ifstream comm(e.path() / "comm");
      std::string name;
      std::getline(comm, name);
      if (name == "ss-materialize") {
        return ::sched_getscheduler(std::stoi(e.path().filename().string()));
      }
    }
    return -1;
  };
  TempDir dir;
  Source src;
  // No round of its own accord (an idle journal, enough bytes): only the one waited for.
  auto store = OpenOrDie(dir.path(), true,
                         [](StoreOptions& o) { o.materialize_when_idle = std::chrono::hours(1); });
  src.Write(*store, 100000);
  EXPECT_EQ(materializer_policy(), SCHED_IDLE);  // waiting for work, in the idle class
  std::atomic<bool> done{false};
  std::set<int> seen;
  std::thread sampler([&] {
    while (!done) {
      seen.insert(materializer_policy());
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  const bool materialized = store->WaitMaterialized(store->applied(), std::chrono::seconds(120));
  done = true;
  sampler.join();
  EXPECT_TRUE(materialized);
  EXPECT_EQ(seen.count(SCHED_OTHER), 1u) << "the waited round never ran in the normal class";
  // And back after it (the thread returns to the class just after it publishes the position).
  for (int i = 0; i < 1000 && materializer_policy() != SCHED_IDLE; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(materializer_policy(), SCHED_IDLE);
}

}  // namespace
}  // namespace statesync
