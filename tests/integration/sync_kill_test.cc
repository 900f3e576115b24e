// Sync mode under a crash: records are written with --wait-acked while the primary is killed
// with SIGKILL at a random moment. Every record the primary acknowledged (persisted by the
// secondary first) must be on the promoted node: compared against the acknowledged set, key by
// key, not against a count.
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
                     "--sessions 160000 --calls 20000 --cdrs 20000 --rate 100000 --wait-acked "
                     "--give-up-after 3 --acked-keys " +
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
  std::cout << "killed after " << delay.count() << " ms; " << acked_records
            << " records acknowledged of 200000\n";
  ASSERT_TRUE(WaitUntil([&] { return c.Ready("n2"); }, 15s)) << c.Role("n2");

  const CommandResult check = c.Ctl("n2", "sessions check --json --keys " + acked.string());
  auto checked = LastJson(check.out);
  ASSERT_TRUE(checked) << check.out;
  EXPECT_EQ(checked->at("checked").to_number<std::uint64_t>(), acked_records);
  EXPECT_EQ(checked->at("missing").to_number<std::uint64_t>(), 0u) << check.out;
  // The promoted node holds at least every acknowledged record (and possibly some whose
  // acknowledgement was still on the way).
  EXPECT_GE(c.Digest("n2")->at("records").to_number<std::uint64_t>(), acked_records);
}

}  // namespace
}  // namespace statesync::testing
