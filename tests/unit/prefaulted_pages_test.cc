#include "statesync/common/prefaulted_pages.h"

#include <gtest/gtest.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "resident_memory.h"
#include "statesync/sessiontable/session_table.h"
#include "statesync/workload/workload.h"

namespace statesync {
namespace {

using testing::ResidentBytes;

constexpr std::size_t kMiB = std::size_t{1} << 20;
const TimePoint kT0{std::chrono::milliseconds(1'780'000'000'000)};

bool AllZero(const detail::LargeBuffer& b, std::size_t bytes) {
  const auto* p = b.as<const std::uint8_t>();
  for (std::size_t i = 0; i < bytes; ++i) {
    if (p[i] != 0) return false;
  }
  return true;
}

// How many of the pages of [p, p + bytes) are in memory (mincore).
std::size_t ResidentPages(const void* p, std::size_t bytes) {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  std::vector<unsigned char> in((bytes + page - 1) / page);
  if (::mincore(const_cast<void*>(p), bytes, in.data()) != 0) return 0;
  std::size_t n = 0;
  for (unsigned char c : in) n += c & 1;
  return n;
}

TEST(PrefaultedPages, AnnouncedBlockIsWrittenAheadAndTakenReady) {
  PrefaultedPages pages;
  pages.Expect(4 * kMiB);
  pages.WaitPrepared();
  PrefaultedPages::Stats s = pages.stats();
  EXPECT_EQ(s.prepared_bytes, 4 * kMiB);
  EXPECT_EQ(s.ready_bytes, 4 * kMiB);

  detail::LargeBuffer b = pages.Take(4 * kMiB);
  // Every page is there before the taker writes anything: the faults were the thread's.
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  EXPECT_EQ(ResidentPages(b.as<void>(), 4 * kMiB), 4 * kMiB / page);
  EXPECT_TRUE(AllZero(b, 4 * kMiB)) << "a block is handed out zeroed";
  s = pages.stats();
  EXPECT_EQ(s.ready_takes, 1u);
  EXPECT_EQ(s.cold_takes, 0u);
  EXPECT_EQ(s.ready_bytes, 0u);
  std::memset(b.as<void>(), 0xab, 4 * kMiB);  // and it is the caller's to write
}

TEST(PrefaultedPages, UnannouncedOrOtherSizeIsMappedFreshAndStillZeroed) {
  PrefaultedPages pages;
  pages.Expect(2 * kMiB);
  pages.WaitPrepared();
  detail::LargeBuffer other = pages.Take(3 * kMiB);  // not the size announced
  EXPECT_TRUE(AllZero(other, 3 * kMiB));
  detail::LargeBuffer first = pages.Take(2 * kMiB);
  detail::LargeBuffer second = pages.Take(2 * kMiB);  // announced once, taken twice
  EXPECT_TRUE(AllZero(second, 2 * kMiB));
  const PrefaultedPages::Stats s = pages.stats();
  EXPECT_EQ(s.ready_takes, 1u);
  EXPECT_EQ(s.cold_takes, 2u);
}

TEST(PrefaultedPages, HoldsNoMoreThanItsBound) {
  PrefaultedPages pages(8 * kMiB);
  pages.Expect(4 * kMiB);
  pages.Expect(4 * kMiB);
  pages.Expect(4 * kMiB);  // would hold 12 MiB
  pages.Expect(0);         // nothing to prepare
  pages.WaitPrepared();
  PrefaultedPages::Stats s = pages.stats();
  EXPECT_EQ(s.ignored_expects, 2u);
  EXPECT_EQ(s.ready_bytes, 8 * kMiB);
  detail::LargeBuffer b = pages.Take(4 * kMiB);
  pages.Expect(4 * kMiB);  // room again once one is taken
  pages.WaitPrepared();
  s = pages.stats();
  EXPECT_EQ(s.ignored_expects, 2u);
  EXPECT_EQ(s.ready_bytes, 8 * kMiB);
}

TEST(PrefaultedPages, StopsWithBlocksQueuedAndUntakenAndUnmapsThem) {
  // Destroyed with work queued and blocks never taken: the thread stops and every block it
  // wrote is unmapped: the memory they held is given back.
  const std::size_t before = ResidentBytes();
  auto pages = std::make_unique<PrefaultedPages>();
  for (int i = 0; i < 8; ++i) pages->Expect(16 * kMiB);
  while (pages->stats().prepared_bytes < 32 * kMiB) std::this_thread::yield();
  EXPECT_GE(ResidentBytes(), before + 32 * kMiB);
  pages.reset();
  EXPECT_LT(ResidentBytes(), before + 16 * kMiB);
}

TEST(PrefaultedPages, CancelGivesBackWhatWasPreparedAndMakesRoom) {
  PrefaultedPages pages(16 * kMiB);
  pages.Expect(16 * kMiB);
  pages.WaitPrepared();
  pages.Expect(16 * kMiB);  // no room
  EXPECT_EQ(pages.stats().ignored_expects, 1u);
  const std::size_t resident = ResidentBytes();
  pages.Cancel(16 * kMiB);
  PrefaultedPages::Stats s = pages.stats();
  EXPECT_EQ(s.ready_bytes, 0u);
  EXPECT_EQ(s.withdrawn, 1u);
  EXPECT_LT(ResidentBytes() + 8 * kMiB, resident) << "the block is unmapped";
  pages.Expect(16 * kMiB);  // room again
  pages.WaitPrepared();
  s = pages.stats();
  EXPECT_EQ(s.ignored_expects, 1u);
  EXPECT_EQ(s.ready_bytes, 16 * kMiB);
  pages.Cancel(4 * kMiB);  // never announced: nothing to withdraw
  EXPECT_EQ(pages.stats().withdrawn, 1u);
}

// A Take that finds no block ready answers the announcement anyway: whether it was still queued
// (dropped) or being written (unmapped when done), nothing of that size is left behind.
TEST(PrefaultedPages, AColdTakeWithdrawsTheAnnouncementItAnswers) {
  PrefaultedPages pages(80 * kMiB);
  pages.Expect(64 * kMiB);  // written first, which takes a while
  pages.Expect(2 * kMiB);
  pages.Expect(4 * kMiB);
  detail::LargeBuffer small = pages.Take(2 * kMiB);
  detail::LargeBuffer big = pages.Take(64 * kMiB);
  pages.WaitPrepared();
  PrefaultedPages::Stats s = pages.stats();
  EXPECT_EQ(s.ready_takes + s.cold_takes, 2u);
  EXPECT_EQ(s.withdrawn, s.cold_takes) << "each cold Take withdrew its announcement";
  EXPECT_EQ(s.ready_bytes, 4 * kMiB) << "only the block nobody has taken yet";
  pages.Expect(76 * kMiB);  // all the room but that block's is free again
  EXPECT_EQ(pages.stats().ignored_expects, 0u);
  EXPECT_TRUE(AllZero(small, 2 * kMiB));
}

// A session table given a supplier takes its record chunks and index tables from it, and
// announces the next chunk as it starts one: once the supplier has written it, growing into it
// is a ready Take and not a fault on the owner's thread. The records are all there, and a table
// destroyed withdraws what it had announced.
TEST(PrefaultedPages, SessionTableGrowsIntoPreparedMemory) {
  auto pages = std::make_shared<PrefaultedPages>();
  auto table = std::make_unique<SessionTable>(
      SessionTableOptions{.change_log_capacity = 1 << 20, .pages = pages});
  table->Tick(kT0);
  ASSERT_TRUE(table->BecomeWritable(1).ok());
  constexpr std::uint64_t kChunkSlots = 1 << 16;  // a firewall partition's chunk
  std::uint64_t next = 0;
  auto insert = [&](std::uint64_t n) {
    std::vector<FirewallSession> batch;
    for (std::uint64_t i = 0; i < n; ++i) batch.push_back(workload::Ipv4Session(next++, kT0));
    const BatchResult r = table->UpsertFirewallBatch(batch);
    ASSERT_TRUE(r.status.ok()) << r.status.ToString();
    ASSERT_EQ(r.applied, batch.size());
  };
  insert(1000);  // the first chunk, and the second announced
  pages->WaitPrepared();
  const PrefaultedPages::Stats before = pages->stats();
  EXPECT_GT(before.ready_bytes, 0u);
  insert(kChunkSlots);  // into the second chunk, and the index grows meanwhile
  EXPECT_GT(pages->stats().ready_takes, before.ready_takes);
  for (std::uint64_t i = 0; i < next; i += 997) {
    const FirewallSession s = workload::Ipv4Session(i, kT0);
    ASSERT_TRUE(table->GetFirewall(s.orig, s.zone).has_value()) << "session " << i;
  }
  EXPECT_EQ(table->size(TableId::kFwSessions), next);
  table.reset();
  pages->WaitPrepared();
  EXPECT_EQ(pages->stats().ready_bytes, 0u) << "nothing held for a table that is gone";
}

}  // namespace
}  // namespace statesync
