#include "statesync/node/data_dir.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "temp_dir.h"

namespace statesync::node {
namespace {

namespace fs = std::filesystem;
using failover::DurableState;
using failover::EffectiveRole;
using testing::TempDir;

TEST(DataDir, ASecondNodeOnTheSameDirectoryIsRefusedWithTheHoldersPid) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "node";  // created by Open
  {
    auto first = DataDir::Open(dir);
    ASSERT_TRUE(first.ok()) << first.status().ToString();
    auto second = DataDir::Open(dir);
    ASSERT_FALSE(second.ok());
    EXPECT_EQ(second.status().code(), Status::Code::kFailedPrecondition);
    EXPECT_NE(second.status().message().find("in use by another statesyncd (pid " +
                                             std::to_string(::getpid()) + ")"),
              std::string::npos)
        << second.status().message();
  }
  // Released with the first: the directory can be taken again.
  EXPECT_TRUE(DataDir::Open(dir).ok());
}

TEST(DataDir, AnotherProcessHoldingTheLockIsNamedAndItsDeathReleasesIt) {
  TempDir tmp;
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    auto d = DataDir::Open(tmp.path());
    const char ok = d.ok() ? 'y' : 'n';
    [[maybe_unused]] ssize_t n = ::write(ready[1], &ok, 1);
    ::pause();  // until killed, holding the lock
    ::_exit(0);
  }
  // Whatever happens below, the child goes with the test (it would hold ctest's output open).
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      if (pid <= 0) return;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reaper{child};
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  ASSERT_EQ(ok, 'y');
  auto refused = DataDir::Open(tmp.path());
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("(pid " + std::to_string(child) + ")"),
            std::string::npos)
      << refused.status().message();
  // SIGKILL: the kernel drops the lock with the process, no stale lock file to clean up.
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  reaper.pid = -1;  // reaped
  EXPECT_TRUE(DataDir::Open(tmp.path()).ok());
  ::close(ready[0]);
  ::close(ready[1]);
}

TEST(DataDir, TheDurableStateRoundTripsAndAFirstStartIsAllZero) {
  TempDir tmp;
  auto d = DataDir::Open(tmp.path());
  ASSERT_TRUE(d.ok());
  auto fresh = (*d)->LoadState();
  ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
  EXPECT_EQ(*fresh, DurableState{});
  const DurableState s{.epoch = 197,
                       .role = EffectiveRole::kPrimary,
                       .planned_stop = true,
                       .voted_round = 3,
                       .voted_for = "node-b",
                       .boots = 12,
                       .reserved_epoch = 257};
  ASSERT_TRUE((*d)->SaveState(s).ok());
  auto back = (*d)->LoadState();
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, s);
  // Replaced whole, and no temporary file left behind.
  DurableState next = s;
  next.epoch = 261;
  next.role = EffectiveRole::kSecondary;
  ASSERT_TRUE((*d)->SaveState(next).ok());
  EXPECT_EQ(*(*d)->LoadState(), next);
  EXPECT_FALSE(fs::exists(tmp.path() / "ha-state.new"));
}

// A save may leave its sync to the background thread (a promotion into a reserved epoch must
// not wait 100-300 ms for the disk): it is in the file at once, on the disk soon after.
TEST(DataDir, ASaveLeftToTheBackgroundIsReadBackAtOnceAndSyncedSoon) {
  TempDir tmp;
  const DurableState first{
      .epoch = 64, .role = EffectiveRole::kSecondary, .boots = 1, .reserved_epoch = 129};
  DurableState promoted = first;
  promoted.epoch = 129;
  promoted.role = EffectiveRole::kPrimary;
  {
    auto d = DataDir::Open(tmp.path());
    ASSERT_TRUE(d.ok());
    ASSERT_TRUE((*d)->SaveState(first).ok());
    EXPECT_TRUE((*d)->StateOnDisk());
    ASSERT_TRUE((*d)->SaveState(promoted, /*sync=*/false).ok());
    EXPECT_EQ(*(*d)->LoadState(), promoted);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!(*d)->StateOnDisk() && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_TRUE((*d)->StateOnDisk());
    // Left to the background again, and then closed at once: the stop lets the sync finish
    // (not observable here) and the next run reads the newest state.
    promoted.boots = 2;
    ASSERT_TRUE((*d)->SaveState(promoted, /*sync=*/false).ok());
  }
  auto again = DataDir::Open(tmp.path());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*(*again)->LoadState(), promoted);
}

// A state written before epochs were reserved has no reserved_epoch: it loads as 0.
TEST(DataDir, AStateFromBeforeReservationsLoadsWithNoneReserved) {
  TempDir tmp;
  std::ofstream(tmp.path() / "ha-state")
      << "{\"epoch\":129,\"role\":\"SECONDARY\",\"planned_stop\":false,\"voted_round\":0,"
         "\"voted_for\":\"\",\"boots\":4}";
  auto d = DataDir::Open(tmp.path());
  ASSERT_TRUE(d.ok());
  auto s = (*d)->LoadState();
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->epoch, 129u);
  EXPECT_EQ(s->reserved_epoch, 0u);
}

// A damaged state file stops the node with the file named: starting from epoch 0 would let it
// take an epoch it already used.
TEST(DataDir, ADamagedStateIsRefusedNotTakenForAFirstStart) {
  TempDir tmp;
  auto d = DataDir::Open(tmp.path());
  ASSERT_TRUE(d.ok());
  for (const std::string bad :
       {"{\"epoch\": 5, \"role\": \"PRI", "{\"epoch\": \"five\"}", "[1,2]",
        "{\"epoch\":5,\"role\":\"CAPTAIN\",\"planned_stop\":false,\"voted_round\":0,"
        "\"voted_for\":\"\",\"boots\":1}"}) {
    std::ofstream(tmp.path() / "ha-state", std::ios::trunc) << bad;
    auto s = (*d)->LoadState();
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), Status::Code::kCorruption) << bad;
    EXPECT_NE(s.status().message().find((tmp.path() / "ha-state").string()), std::string::npos);
  }
  // A temporary file left by a crash during SaveState is not read: the state is the last whole one.
  const DurableState s{.epoch = 7, .role = EffectiveRole::kSecondary, .boots = 2};
  ASSERT_TRUE((*d)->SaveState(s).ok());
  std::ofstream(tmp.path() / "ha-state.new", std::ios::trunc) << "{\"epo";
  EXPECT_EQ(*(*d)->LoadState(), s);
}

// Later saves overwrite one of two checksummed slots in place: a save torn by a crash leaves the
// one before it readable; with both copies damaged the node refuses to start.
TEST(DataDir, ATornSaveLeavesThePreviousStateAndTwoDamagedCopiesAreRefused) {
  TempDir tmp;
  const fs::path file = tmp.path() / "ha-state";
  const DurableState first{.epoch = 64, .role = EffectiveRole::kSecondary, .boots = 1};
  DurableState second = first;
  second.epoch = 128;
  second.voted_round = 2;
  second.voted_for = "b";
  {
    auto d = DataDir::Open(tmp.path());
    ASSERT_TRUE(d.ok());
    ASSERT_TRUE((*d)->SaveState(first).ok());
    ASSERT_TRUE((*d)->SaveState(second).ok());
    EXPECT_EQ(*(*d)->LoadState(), second);
  }
  const auto corrupt = [&](std::size_t offset) {
    std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(offset));
    f.put('\x5a');
  };
  // Save n goes to slot n % 2: the second save is in slot 0. Torn, the first save is read.
  auto d = DataDir::Open(tmp.path());
  ASSERT_TRUE(d.ok());
  ASSERT_EQ(fs::file_size(file), 8192u);
  corrupt(100);
  auto after = (*d)->LoadState();
  ASSERT_TRUE(after.ok()) << after.status().ToString();
  EXPECT_EQ(*after, first);
  corrupt(4096 + 100);
  auto none = (*d)->LoadState();
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), Status::Code::kCorruption);
  EXPECT_NE(none.status().message().find("neither of its two copies"), std::string::npos);
}

// A save goes on from the newest copy across a restart: the generation is read back, so the
// next save does not overwrite the newest copy.
TEST(DataDir, SavesAfterARestartKeepTheNewestCopy) {
  TempDir tmp;
  DurableState s{.epoch = 64, .role = EffectiveRole::kPrimary, .boots = 1};
  for (int run = 0; run < 3; ++run) {
    auto d = DataDir::Open(tmp.path());
    ASSERT_TRUE(d.ok());
    auto loaded = (*d)->LoadState();
    ASSERT_TRUE(loaded.ok());
    if (run > 0) {
      EXPECT_EQ(*loaded, s);
    }
    for (int i = 0; i < 3; ++i) {
      s.epoch += 64;
      ++s.boots;
      ASSERT_TRUE((*d)->SaveState(s).ok());
      EXPECT_EQ(*(*d)->LoadState(), s);
    }
  }
}

TEST(DataDir, TheEventLogKeepsTheNewestAcrossARotation) {
  TempDir tmp;
  auto d = DataDir::Open(tmp.path(), /*max_event_log_bytes=*/150);
  ASSERT_TRUE(d.ok());
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE((*d)->AppendEvent("{\"n\":" + std::to_string(i) + "}").ok());
  }
  EXPECT_TRUE(fs::exists(tmp.path() / "events.log.1"));
  EXPECT_LE(fs::file_size(tmp.path() / "events.log"), 150u);
  auto last = (*d)->RecentEvents(5);
  ASSERT_TRUE(last.ok());
  EXPECT_EQ(*last, (std::vector<std::string>{"{\"n\":35}", "{\"n\":36}", "{\"n\":37}", "{\"n\":38}",
                                             "{\"n\":39}"}));
  // Across the two files, oldest first, in order.
  auto more = (*d)->RecentEvents(30);
  ASSERT_TRUE(more.ok());
  ASSERT_GT(more->size(), 5u);
  for (std::size_t i = 1; i < more->size(); ++i) {
    EXPECT_LT(std::stoi((*more)[i - 1].substr(5)), std::stoi((*more)[i].substr(5)));
  }
  EXPECT_EQ(more->back(), "{\"n\":39}");
  // A line cut by a crash mid-write is not an event.
  std::ofstream(tmp.path() / "events.log", std::ios::app) << "{\"n\":4";
  EXPECT_EQ((*d)->RecentEvents(1)->back(), "{\"n\":39}");
  // And the next event starts a line of its own.
  ASSERT_TRUE((*d)->AppendEvent("{\"n\":40}").ok());
  EXPECT_EQ(*(*d)->RecentEvents(2), (std::vector<std::string>{"{\"n\":4", "{\"n\":40}"}));
}

}  // namespace
}  // namespace statesync::node
