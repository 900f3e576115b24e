// The failover scenarios that need a network fault (5 and 8 of tests/scenario/, and a primary
// cut off on every link), with each node in its own network namespace and links cut with
// `ip link set … down`. Skipped, with the reason, where namespaces cannot be created.
#include "netns_harness.h"

namespace statesync::testing {
namespace {

std::uint64_t Num(const json::object& o, std::string_view key) {
  return o.at(key).to_number<std::uint64_t>();
}

std::vector<std::string> LinksDown(const NetnsPair& pair, const std::string& host,
                                   const std::string& peer) {
  std::vector<std::string> down;
  auto s = pair.Status(host);
  if (!s) return down;
  for (const auto& p : s->at("peers").as_array()) {
    if (p.as_object().at("id").as_string() != peer) continue;
    for (const auto& l : p.as_object().at("links_down").as_array()) {
      down.emplace_back(l.as_string());
    }
  }
  return down;
}

#define START_PAIR(pair)                                             \
  if (!(pair).available()) GTEST_SKIP() << (pair).why_unavailable(); \
  ASSERT_TRUE((pair).Start("a"));                                    \
  ASSERT_TRUE((pair).Start("b"));                                    \
  ASSERT_TRUE(WaitUntil([&] { return (pair).Ready("a"); }, 30s)) << (pair).Role("a")

// Scenario 5: one of two heartbeat links fails. Both nodes report it, nobody fails over, and
// the link's return is reported. Then the data network fails: heartbeats go on over their own
// links, so still no failover; replication resumes when it returns and catches up.
TEST(NetnsScenarios, AHeartbeatLinkOrTheDataNetworkFailsWithoutAFailover) {
  NetnsPair pair({"ha1", "ha2"});
  START_PAIR(pair);
  ASSERT_TRUE(pair.Load("a", "--sessions 20000 --wait-acked"));
  ASSERT_TRUE(WaitUntil([&] { return pair.DigestText("a") == pair.DigestText("b"); }));

  pair.SetLink("ha1", false);
  ASSERT_TRUE(WaitUntil([&] {
    return LinksDown(pair, "b", "a") == std::vector<std::string>{"ha1"};
  })) << pair.Events("b");
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(pair.Ready("a"));
  EXPECT_EQ(pair.Role("b"), "secondary");
  EXPECT_NE(pair.Events("b").find("heartbeat link 'ha1' to 'a' lost: 1 of 2 links up, no failover"),
            std::string::npos);
  pair.SetLink("ha1", true);
  ASSERT_TRUE(WaitUntil([&] { return LinksDown(pair, "b", "a").empty(); }));
  EXPECT_NE(pair.Events("b").find("heartbeat link 'ha1' to 'a' restored"), std::string::npos);

  pair.SetLink("data", false);
  auto load = pair.Load("a", "--sessions 20000 --start 100000 --wait-acked");
  ASSERT_TRUE(load);
  EXPECT_EQ(Num(*load, "records_acked"), 20000u);  // async: the primary acknowledges alone
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(pair.Ready("a"));
  EXPECT_EQ(pair.Role("b"), "secondary");
  EXPECT_NE(pair.DigestText("a"), pair.DigestText("b"));
  pair.SetLink("data", true);
  EXPECT_TRUE(WaitUntil([&] { return pair.DigestText("a") == pair.DigestText("b"); }, 60s))
      << pair.DigestText("a") << " vs " << pair.DigestText("b");
  EXPECT_TRUE(pair.Ready("a"));
}

// Scenario 8: no witness, and the only heartbeat link fails together with the data network:
// each node is alone, so both are primary and both take writes (split brain). When the links
// return the two primaries meet and fix it deterministically ("2 devices with same mode"):
// one steps down, its divergent writes go to its quarantine, and both hold the winner's data.
TEST(NetnsScenarios, NoWitnessTheInternalLinkFailsSplitBrainIsResolvedWhenItReturns) {
  NetnsPair pair({"ha1"});
  START_PAIR(pair);
  ASSERT_TRUE(pair.Load("a", "--sessions 10000 --wait-acked"));
  ASSERT_TRUE(WaitUntil([&] { return pair.DigestText("a") == pair.DigestText("b"); }));

  pair.SetLink("ha1", false);
  pair.SetLink("data", false);
  ASSERT_TRUE(WaitUntil([&] { return pair.Ready("b"); }, 10s)) << pair.Role("b");
  EXPECT_TRUE(pair.Ready("a"));  // both primary: nothing tells them apart yet
  ASSERT_TRUE(pair.Load("a", "--sessions 3000 --start 500000 --wait-acked"));
  ASSERT_TRUE(pair.Load("b", "--sessions 2000 --start 800000 --wait-acked"));

  pair.SetLink("ha1", true);
  pair.SetLink("data", true);
  std::string winner;
  ASSERT_TRUE(WaitUntil(
      [&] {
        const bool a = pair.Ready("a");
        const bool b = pair.Ready("b");
        if (a == b) return false;
        winner = a ? "a" : "b";
        return pair.Role(a ? "b" : "a") == "secondary";
      },
      30s))
      << pair.Role("a") << " " << pair.Role("b");
  const std::string loser = winner == "a" ? "b" : "a";
  EXPECT_NE(pair.Events(loser).find("2 devices with same mode, fixing"), std::string::npos)
      << pair.Events(loser);
  // The loser's own writes of the split are in its quarantine, and it holds the winner's data.
  EXPECT_TRUE(WaitUntil([&] { return pair.DigestText("a") == pair.DigestText("b"); }, 60s));
  auto s = pair.Status(loser);
  ASSERT_TRUE(s);
  EXPECT_GE(Num(s->at("replication").as_object(), "forks"), 1u);
  const std::uint64_t expected = winner == "a" ? 13000u : 12000u;
  EXPECT_EQ(pair.DigestText(winner).substr(pair.DigestText(winner).find('/') + 1),
            std::to_string(expected));
}

// A silent failure: the primary is cut off on every link (data, ha1, ha2), so its connections
// do not close: the secondary notices only when the heartbeats stop for the loss time, takes
// over, and holds every record.
TEST(NetnsScenarios, APrimaryCutOffOnEveryLinkIsReplacedAfterTheLossTime) {
  NetnsPair pair({"ha1", "ha2"});
  START_PAIR(pair);
  ASSERT_TRUE(pair.Load("a", "--sessions 20000 --wait-acked"));
  ASSERT_TRUE(WaitUntil([&] { return pair.DigestText("a") == pair.DigestText("b"); }));
  const std::string before = pair.DigestText("a");
  for (const char* link : {"data", "ha1", "ha2"}) pair.SetLink(link, false);
  ASSERT_TRUE(WaitUntil([&] { return pair.Ready("b"); }, 10s));
  EXPECT_EQ(pair.DigestText("b"), before);
  EXPECT_NE(pair.Events("b").find("no heartbeat from 'a' on 2 links for 300 ms"), std::string::npos)
      << pair.Events("b");
}

}  // namespace
}  // namespace statesync::testing
