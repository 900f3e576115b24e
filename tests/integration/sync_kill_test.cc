// Sync mode under a crash: records and voice-data blobs are written with --wait-acked while the
// primary is killed with SIGKILL at a random moment. Every record and blob the primary
// acknowledged (persisted by the secondary first) must be on the promoted node: compared
// against the acknowledged set, key by key and blob by blob, not against a count.
#include <random>

#include "cluster_harness.h"

namespace statesync::testing {
namespace {

TEST(SyncMode, EveryAcknowledgedRecordSurvivesAPrimaryKilledAtARandomMoment) {
  LocalCluster c(2, false, "sync");
  ASSERT_TRUE(c.up());
  ASSERT_TRUE(c.MakePrimary("n1"));
  const fs::path acked = c.dir() / "acked.txt";
  std::optional<json::object> summary;
  std::thread loader([&] {
    summary = c.Load("n1",
                     "--sessions 160000 --calls 20000 --cdrs 20000 --blobs 300 --blob-size 32768 "
                     "--rate 100000 --wait-acked --give-up-after 3 --acked-keys " +
                         acked.string());
  });
  std::random_device seed;
  std::mt19937 rng(seed());
  const auto delay = std::chrono::milliseconds(std::uniform_int_distribution<int>(200, 1800)(rng));
  std::this_thread::sleep_for(delay);
  ASSERT_EQ(c.Kill("n1").exit_code, 0);
  loader.join();
  ASSERT_TRUE(summary);
  const auto acked_records = summary->at("records_acked").to_number<std::uint64_t>();
  const auto acked_blobs = summary->at("blobs_acked").to_number<std::uint64_t>();
  std::cout << "killed after " << delay.count() << " ms; " << acked_records
            << " records of 200000 and " << acked_blobs << " blobs of 300 acknowledged\n";
  ASSERT_TRUE(WaitUntil([&] { return c.Ready("n2"); }, 15s)) << c.Role("n2");

  const CommandResult check = c.Ctl("n2", "sessions check --json --keys " + acked.string());
  auto checked = LastJson(check.out);
  ASSERT_TRUE(checked) << check.out;
  EXPECT_EQ(checked->at("checked").to_number<std::uint64_t>(), acked_records + acked_blobs);
  EXPECT_EQ(checked->at("missing").to_number<std::uint64_t>(), 0u) << check.out;
  // The promoted node holds at least every acknowledged record (and possibly some whose
  // acknowledgement was still on the way).
  EXPECT_GE(c.Digest("n2")->at("records").to_number<std::uint64_t>(), acked_records);
  EXPECT_GE(c.Digest("n2")->at("blobs").to_number<std::uint64_t>(), acked_blobs);
}

// A blob counts in sync mode only once the subordinate holds it whole: with the secondary hung
// (SIGSTOP) nothing is acknowledged; once it resumes, the blob lane delivers what the primary
// stored.
TEST(SyncMode, ABlobIsAcknowledgedOnlyOnceTheSubordinateHoldsIt) {
  // The default loss time (300 ms): the primary gives the hung secondary up and closes its
  // connections well within the hang, which the secondary must not take for a crash.
  LocalCluster c(2, false, "sync", "--lost-threshold 3");
  ASSERT_TRUE(c.up());
  ASSERT_TRUE(c.MakePrimary("n1"));
  auto first = c.Load("n1", "--blobs 2 --blob-size 100000 --wait-acked");
  ASSERT_TRUE(first);
  ASSERT_EQ(first->at("blobs_acked").to_number<std::uint64_t>(), 2u);
  ASSERT_TRUE(c.WaitSameDigest("n1", {"n2"}));

  ASSERT_EQ(c.Kill("n2", "STOP").exit_code, 0);
  const CommandResult r =
      c.Ctl("n1", "load --blobs 3 --start 100 --blob-size 100000 --give-up-after 1 --quiet");
  auto summary = LastJson(r.out);
  ASSERT_TRUE(summary) << r.out;
  EXPECT_EQ(summary->at("blobs_sent").to_number<std::uint64_t>(), 3u);
  EXPECT_EQ(summary->at("blobs_acked").to_number<std::uint64_t>(), 0u) << r.out;
  EXPECT_NE(r.exit_code, 0);

  // The node stores what it took in order, each once the one before is acknowledged: all 3
  // arrive, one after the other.
  ASSERT_EQ(c.Kill("n2", "CONT").exit_code, 0);
  EXPECT_TRUE(c.WaitUntil([&] {
    auto d = c.Digest("n2");
    return d && d->at("blobs").to_number<std::uint64_t>() == 5;
  }));
  EXPECT_TRUE(c.WaitSameDigest("n1", {"n2"})) << c.DigestText("n1") << " vs " << c.DigestText("n2");
  // A hung secondary that resumes stays secondary: its peer closed the connections while it
  // did not answer, which is no crash of the primary.
  EXPECT_TRUE(c.Ready("n1"));
  EXPECT_EQ(c.Role("n2"), "secondary");
}

}  // namespace
}  // namespace statesync::testing
