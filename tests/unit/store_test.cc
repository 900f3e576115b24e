// Store tests on a real RocksDB in temporary directories. The crash test runs the writer in a
// child process (this same binary, started with --store-writer) and kills it with SIGKILL.
#include "statesync/replication/store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <map>
#include <random>

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
    int fds[2];
    ASSERT_EQ(::pipe(fds), 0);
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::close(fds[0]);
      const std::string fd = std::to_string(fds[1]);
      ::execl(g_self, g_self, "--store-writer", dir.path().c_str(), fd.c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::close(fds[1]);
    // Let it write a while, a different while each round, then kill it mid-stream.
    const std::uint64_t until = acknowledged + 50 + rng() % 400;
    std::uint64_t b = 0;
    while (acknowledged < until && ::read(fds[0], &b, sizeof(b)) == sizeof(b)) acknowledged = b;
    ASSERT_EQ(::kill(pid, SIGKILL), 0);
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status)) << "the writer exited by itself: " << status;
    while (::read(fds[0], &b, sizeof(b)) == sizeof(b)) acknowledged = b;  // reports in flight
    ::close(fds[0]);

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

}  // namespace
}  // namespace statesync

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[1]) == "--store-writer") {
    return statesync::RunWriter(argv[2], std::atoi(argv[3]));
  }
  statesync::g_self = argv[0];
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
