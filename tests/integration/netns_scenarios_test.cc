// The failover scenarios that need a network fault (5, 6, 8 and 10 of tests/scenario/, and a
// primary cut off on every link), with each node in its own network namespace and links cut with
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

bool HasEvent(const NetnsPair& pair, const std::string& host, const std::string& text) {
  return pair.Events(host).find(text) != std::string::npos;
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

// Scenario 6: the data network fails while the heartbeat link works. Heartbeats alone would
// keep the pair as it is (scenario 5), but remote service monitoring on the secondary finds the
// primary's service unreachable from here: it tells the primary to go to FAILED and takes over.
// When the network returns the FAILED node's own checks pass ("remote problem recovered"): it
// rejoins as secondary and catches up, and the operator's restore-role gives the primary role
// back. No acknowledged record is lost on the way.
TEST(NetnsScenarios, RemoteServiceMonitoringFailsThePrimaryOverWhenTheNetworkFails) {
  NetnsPair pair({"ha1"});
  if (!pair.available()) GTEST_SKIP() << pair.why_unavailable();
  // The service checked is the replication listener on the data network (every data node has
  // one), plus a disabled HTTP check, which is reported but never probed.
  for (const char* host : {"a", "b"}) {
    pair.AddConfig(host, R"([monitor]
check_interval_ms = 200
check_timeout_ms = 150
check_fail_after = 2

[[remote_check]]
name = "REPLICATION"
kind = "tcp"
port = 7400

[[remote_check]]
name = "HTTP"
kind = "http"
port = 80
enabled = false)");
  }
  ASSERT_TRUE(pair.Start("a"));
  ASSERT_TRUE(pair.Start("b"));
  ASSERT_TRUE(WaitUntil([&] { return pair.Ready("a"); }, 30s)) << pair.Role("a");
  ASSERT_TRUE(pair.Load("a", "--sessions 10000 --wait-acked"));
  ASSERT_TRUE(WaitUntil([&] { return pair.DigestText("a") == pair.DigestText("b"); }));
  // b checks a, and finds it well.
  ASSERT_TRUE(WaitUntil([&] {
    auto s = pair.Status("b");
    if (!s || !s->contains("remote_checks")) return false;
    const auto& r = s->at("remote_checks").as_object();
    return r.at("target").as_string() == "a" && !r.at("checks").as_array().empty() &&
           r.at("checks").as_array()[0].as_object().at("state").as_string() == "OK";
  })) << json::serialize(*pair.Status("b"));
  const std::string before = pair.DigestText("a");

  pair.SetLink("data", false);
  ASSERT_TRUE(WaitUntil([&] { return pair.Ready("b"); }, 10s)) << pair.Role("b");
  EXPECT_EQ(pair.Role("a"), "failed");
  EXPECT_TRUE(HasEvent(pair, "b", "remote problem detected (REPLICATION=FAILED;HTTP=DISABLED)"))
      << pair.Events("b");
  EXPECT_TRUE(HasEvent(pair, "a", "'b' reports remote problem detected")) << pair.Events("a");
  EXPECT_EQ(pair.DigestText("b"), before);  // everything a had acknowledged
  // The new primary takes writes (async: it acknowledges alone while a is away).
  ASSERT_TRUE(pair.Load("b", "--sessions 3000 --start 500000 --wait-acked"));
  std::this_thread::sleep_for(1s);
  EXPECT_EQ(pair.Role("a"), "failed");  // its checks of b still fail

  pair.SetLink("data", true);
  ASSERT_TRUE(WaitUntil([&] { return pair.Role("a") == "secondary"; }, 10s)) << pair.Role("a");
  EXPECT_TRUE(HasEvent(pair, "a", "remote problem recovered")) << pair.Events("a");
  ASSERT_TRUE(WaitUntil([&] { return pair.DigestText("a") == pair.DigestText("b"); }, 60s))
      << pair.DigestText("a") << " vs " << pair.DigestText("b");
  EXPECT_TRUE(pair.Ready("b"));

  // The operator restores the configured roles: a is primary again, with every record.
  const CommandResult restore = pair.Ctl("b", "restore-role");
  ASSERT_EQ(restore.exit_code, 0) << restore.out;
  ASSERT_TRUE(WaitUntil([&] { return pair.Ready("a"); }, 10s)) << pair.Role("a");
  EXPECT_TRUE(WaitUntil([&] { return pair.Role("b") == "secondary"; }, 10s)) << pair.Role("b");
  const std::string after = pair.DigestText("a");
  EXPECT_EQ(after.substr(after.find('/') + 1), "13000");
  EXPECT_TRUE(WaitUntil([&] { return pair.DigestText("b") == after; }, 30s));
}

// Scenario 10: a monitored link fails on the primary. The secondary, with all its monitored
// links up, ranks higher and gets the primary role; the node with the failed link ranks lower
// afterwards, whatever its configured role: it does not take the role back while it has fewer
// links up, and gets it back when the other node has fewer.
TEST(NetnsScenarios, AMonitoredLinkFailsOnThePrimaryAndItRanksLowerAfterwards) {
  NetnsPair pair({"ha1"});
  if (!pair.available()) GTEST_SKIP() << pair.why_unavailable();
  for (const char* host : {"a", "b"}) {
    const std::string port = pair.AddPort(host);
    pair.AddConfig(host, "[monitor]\nlinks = [\"" + port + "\"]");
  }
  ASSERT_TRUE(pair.Start("a"));
  ASSERT_TRUE(pair.Start("b"));
  ASSERT_TRUE(WaitUntil([&] { return pair.Ready("a"); }, 30s)) << pair.Role("a");
  ASSERT_TRUE(pair.Load("a", "--sessions 10000 --wait-acked"));
  ASSERT_TRUE(WaitUntil([&] { return pair.DigestText("a") == pair.DigestText("b"); }));
  const std::string before = pair.DigestText("a");

  pair.SetPort("a", false);
  ASSERT_TRUE(WaitUntil([&] { return pair.Ready("b"); }, 10s)) << pair.Role("b");
  EXPECT_TRUE(WaitUntil([&] { return pair.Role("a") == "secondary"; }, 5s)) << pair.Role("a");
  EXPECT_TRUE(HasEvent(pair, "a", "monitored links and services: this node has 0 up, 'b' has 1"))
      << pair.Events("a");
  auto s = pair.Status("a");
  ASSERT_TRUE(s);
  EXPECT_FALSE(s->at("monitors").as_array()[0].as_object().at("up").as_bool());
  EXPECT_EQ(pair.DigestText("b"), before);

  // The link returns: equal again, and a (configured primary, override off) stays secondary.
  pair.SetPort("a", true);
  std::this_thread::sleep_for(1s);
  EXPECT_TRUE(pair.Ready("b"));
  EXPECT_EQ(pair.Role("a"), "secondary");

  // Now b's link fails: a has more up and gets the role back, with every record.
  ASSERT_TRUE(pair.Load("b", "--sessions 2000 --start 500000 --wait-acked"));
  pair.SetPort("b", false);
  ASSERT_TRUE(WaitUntil([&] { return pair.Ready("a"); }, 10s)) << pair.Role("a");
  EXPECT_TRUE(HasEvent(pair, "b", "monitored links and services: this node has 0 up, 'a' has 1"))
      << pair.Events("b");
  const std::string after = pair.DigestText("a");
  EXPECT_EQ(after.substr(after.find('/') + 1), "12000");
}

// A planned hand-over while the stream lags (the data link limited to a few Mbit/s): the new
// primary promotes only once it holds the last record the old one took, so every
// acknowledged record is carried over and nothing goes to the old primary's quarantine.
TEST(NetnsScenarios, APlannedHandOverWaitsForTheLastRecordWhileTheStreamLags) {
  NetnsPair pair({"ha1"});
  START_PAIR(pair);
  const fs::path acked = pair.dir() / "acked.txt";
  std::optional<json::object> summary;
  std::thread loader([&] {
    summary = pair.Load(
        "a", "--sessions 200000 --rate 20000 --give-up-after 2 --acked-keys " + acked.string());
  });
  // The link is narrowed until b falls behind: how fast `load` writes depends on the build
  // (a sanitizer build writes at about half the rate) and on what else the machine runs. The
  // take-over is asked for as soon as b is 500 records behind: the tail then takes the old
  // primary a few seconds at most to stream, even on the narrowest link.
  std::uint64_t lag = 0;
  std::this_thread::sleep_for(1s);  // the load under way
  for (const char* rate : {"36mbit", "12mbit", "4mbit", "1mbit"}) {
    pair.LimitLink("data", rate);
    const auto until = std::chrono::steady_clock::now() + 1500ms;
    while (lag < 500 && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(50ms);
      auto s = pair.Status("a");
      if (!s || s->at("peers").as_array().empty()) continue;
      lag = Num(s->at("peers").as_array()[0].as_object(), "lag_records");
    }
    if (lag >= 500) {
      std::cout << "b fell " << lag << " records behind on a " << rate << " link" << std::endl;
      break;
    }
  }
  EXPECT_GE(lag, 500u) << "the stream did not lag: the test shows nothing";
  const CommandResult takeover = pair.Ctl("b", "takeover");
  loader.join();
  ASSERT_EQ(takeover.exit_code, 0) << takeover.out;
  ASSERT_TRUE(WaitUntil([&] { return pair.Ready("b"); }, 10s)) << pair.Role("b");
  ASSERT_TRUE(summary);
  const auto acked_records = Num(*summary, "records_acked");
  std::cout << acked_records << " records acknowledged; b was " << lag
            << " records behind at the take-over\n";
  const CommandResult check = pair.Ctl("b", "sessions check --json --keys " + acked.string());
  auto checked = LastJson(check.out);
  ASSERT_TRUE(checked) << check.out;
  EXPECT_EQ(Num(*checked, "checked"), acked_records);
  EXPECT_EQ(Num(*checked, "missing"), 0u) << check.out;
  ASSERT_TRUE(WaitUntil([&] { return pair.Role("a") == "secondary"; }, 10s)) << pair.Role("a");
  EXPECT_EQ(Num(pair.Status("a")->at("replication").as_object(), "forks"), 0u);
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
  EXPECT_NE(pair.Events("b").find("no heartbeat from 'a' on 2 links for 500 ms"), std::string::npos)
      << pair.Events("b");
}

}  // namespace
}  // namespace statesync::testing
