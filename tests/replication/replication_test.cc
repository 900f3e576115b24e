// The replication engine end to end: a primary and subordinates on real ZeroMQ sockets on
// 127.0.0.1, each with a real RocksDB store in a temporary directory. Tests that kill or stop a
// subordinate run it as a child process (this binary, started with --subordinate).
#include <signal.h>
#include <sys/wait.h>

#include <fstream>

#include "harness.h"

namespace statesync::testing {
namespace {

using replication::Primary;
using replication::Subordinate;
using replication::SyncState;

const char* g_self = nullptr;

// The digest of every table, and that two tables hold the same records.
void ExpectSameData(const SessionTable& a, const SessionTable& b) {
  for (TableId t : kAllTables) {
    EXPECT_EQ(a.Digest(t), b.Digest(t)) << TableName(t);
    EXPECT_EQ(a.size(t), b.size(t)) << TableName(t);
  }
}

TEST(Replication, StreamsAMillionMixedDeltasAndTheDigestsAgree) {
  TempDir pdir, sdir;
  PrimaryNode p;
  p.Start(pdir.path(), 1);
  auto sstore = OpenStore(sdir.path());
  auto sub = Subordinate::Start(SubOptions("s1", p.primary->endpoint()), *sstore,
                                LoadTable(*sstore));
  ASSERT_TRUE(sub.ok()) << sub.status().ToString();
  Mix mix(1);
  mix.Run(p, 1'000'000);
  const Position head = p.table->last_position();
  ASSERT_TRUE(WaitFor([&] { return (*sub)->status().applied == head; }, 120s))
      << "subordinate at " << (*sub)->status().applied.seq << " of " << head.seq;
  EXPECT_EQ((*sub)->status().state, SyncState::kInSync);
  (*sub)->Read([&](const SessionTable& t) {
    ExpectSameData(*p.table, t);
    // Record by record on a sample.
    std::mt19937_64 rng(9);
    int compared = 0;
    p.table->Scan(TableId::kFwSessions, [&](std::string_view k, std::string_view v) {
      if (rng() % 500 != 0) return;
      ++compared;
      EXPECT_EQ(t.Get(TableId::kFwSessions, k), std::optional<std::string>(v));
    });
    EXPECT_GT(compared, 50);
  });
  EXPECT_EQ((*sub)->status().input.total(), 0u);
  // The subordinate's store holds the same: reload it after a stop.
  auto table = (*sub)->Stop();
  ASSERT_TRUE(sstore->WaitMaterialized(head, 60s));
  auto reloaded = LoadTable(*sstore);
  ExpectSameData(*p.table, *reloaded);
  EXPECT_EQ(reloaded->last_position(), head);
}

}  // namespace
}  // namespace statesync::testing

int main(int argc, char** argv) {
  statesync::testing::g_self = argv[0];
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
