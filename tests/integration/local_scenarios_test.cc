// The failover scenarios that need no network faults (1-4, 7, 9, 11 of tests/scenario/), end to
// end: real statesyncd processes on 127.0.0.1, driven and observed through statesyncctl only.
// Each checks the roles through `status --json`, the data through `digest`, and that no
// acknowledged record is lost (`load --acked-keys`, then `sessions check` on the survivor).
#include <pthread.h>
#include <sched.h>
#include <sys/resource.h>

#include <fstream>
#include <map>
#include <random>

#include "cluster_harness.h"

namespace statesync::testing {
namespace {

std::uint64_t Num(const json::object& o, std::string_view key) {
  return o.at(key).to_number<std::uint64_t>();
}

// Scenarios 1 and 11: the primary fails (SIGKILL); the secondary takes over with every record
// and serves writes; the former primary comes back as a secondary (on_failure =
// become_secondary), catches up what it missed, and holds the same data.
TEST(LocalScenarios, PrimaryKilledThenRecoversAsSecondary) {
  LocalCluster c(2, false);
  ASSERT_TRUE(c.up());
  ASSERT_TRUE(c.MakePrimary("n1"));
  const fs::path acked = c.dir() / "acked-1.txt";
  auto load = c.Load("n1", "--sessions 40000 --calls 5000 --cdrs 5000 --wait-acked --acked-keys " +
                               acked.string());
  ASSERT_TRUE(load);
  EXPECT_EQ(Num(*load, "records_acked"), 50000u);
  ASSERT_TRUE(c.WaitSameDigest("n1", {"n2"}));
  const std::string before = c.DigestText("n1");

  ASSERT_EQ(c.Kill("n1").exit_code, 0);
  ASSERT_TRUE(c.WaitUntil([&] { return c.Ready("n2"); }, 10s)) << "n2 did not take over";
  EXPECT_EQ(c.Role("n2"), "primary");
  EXPECT_EQ(c.DigestText("n2"), before);
  const CommandResult check = c.Ctl("n2", "sessions check --json --keys " + acked.string());
  auto checked = LastJson(check.out);
  ASSERT_TRUE(checked) << check.out;
  EXPECT_EQ(Num(*checked, "checked"), 50000u);
  EXPECT_EQ(Num(*checked, "missing"), 0u) << check.out;
  // The new primary's epoch is newer, and it is the primary its own status names.
  auto s2 = c.Status("n2");
  ASSERT_TRUE(s2);
  EXPECT_EQ(s2->at("primary").as_string(), "n2");
  EXPECT_GT(Num(*s2, "epoch"), 64u);

  // Writes go on at the new primary while n1 is down.
  load = c.Load("n2", "--sessions 30000 --start 100000 --wait-acked");
  ASSERT_TRUE(load);
  EXPECT_EQ(Num(*load, "records_acked"), 30000u);

  ASSERT_TRUE(c.Start("n1"));
  ASSERT_TRUE(c.WaitRole("n1", "secondary")) << c.Role("n1");
  EXPECT_TRUE(c.WaitSameDigest("n2", {"n1"}));
  EXPECT_EQ(c.Role("n2"), "primary");
  auto s1 = c.Status("n1");
  ASSERT_TRUE(s1);
  EXPECT_EQ(s1->at("primary").as_string(), "n2");
  EXPECT_EQ(s1->at("sync").as_object().at("state").as_string(), "in_sync");
  EXPECT_EQ(Num(*s1, "sessions"), 80000u);
}

// Scenario 2: a planned restart (SIGTERM) of the primary. The secondary holds off instead of
// taking over; the primary comes back and is primary again, with its data.
TEST(LocalScenarios, PlannedRestartOfThePrimaryHoldsTheSecondaryOff) {
  LocalCluster c(2, false);
  ASSERT_TRUE(c.up());
  ASSERT_TRUE(c.MakePrimary("n1"));
  ASSERT_TRUE(c.Load("n1", "--sessions 20000 --wait-acked"));
  ASSERT_TRUE(c.WaitSameDigest("n1", {"n2"}));

  ASSERT_EQ(c.Kill("n1", "TERM").exit_code, 0);
  ASSERT_TRUE(c.WaitRole("n2", "hold_off", 10s)) << c.Role("n2");
  // Well past the loss time (1 s): still holding off, not primary.
  std::this_thread::sleep_for(2500ms);
  EXPECT_EQ(c.Role("n2"), "hold_off");
  EXPECT_EQ(c.Role("n1"), "down");

  ASSERT_TRUE(c.Start("n1"));
  ASSERT_TRUE(c.WaitUntil([&] { return c.Ready("n1"); }, 15s)) << c.Role("n1");
  EXPECT_TRUE(c.WaitRole("n2", "secondary", 10s)) << c.Role("n2");
  EXPECT_TRUE(c.WaitSameDigest("n1", {"n2"}));
  EXPECT_EQ(Num(*c.Digest("n1"), "records"), 20000u);
}

// A planned hand-over under write load (`takeover` on the secondary): the old primary stops
// taking writes, and the new one promotes only once it holds the last record the old one
// acknowledged. Every acknowledged record is on the new primary, and nothing went to the old
// one's quarantine (async mode: the primary acknowledges alone, so only the hand-over itself
// can carry the last records over).
TEST(LocalScenarios, APlannedHandOverUnderLoadCarriesEveryAcknowledgedRecordOver) {
  LocalCluster c(2, false);
  ASSERT_TRUE(c.up());
  ASSERT_TRUE(c.MakePrimary("n1"));
  const fs::path acked = c.dir() / "acked.txt";
  std::optional<json::object> summary;
  std::thread loader([&] {
    summary = c.Load(
        "n1", "--sessions 300000 --rate 100000 --give-up-after 2 --acked-keys " + acked.string());
  });
  // Well under way (the rate differs between builds): then n2 takes over.
  const bool under_way = c.WaitUntil(
      [&] {
        auto s = c.Status("n1");
        return s && Num(*s, "sessions") >= 20000;
      },
      30s);
  const CommandResult takeover = c.Ctl("n2", "takeover");
  loader.join();
  ASSERT_TRUE(under_way);
  ASSERT_EQ(takeover.exit_code, 0) << takeover.out;
  ASSERT_TRUE(c.WaitUntil([&] { return c.Ready("n2"); }, 10s)) << c.Role("n2");
  ASSERT_TRUE(summary);
  const auto acked_records = Num(*summary, "records_acked");
  std::cout << acked_records << " records acknowledged of 300000\n";
  EXPECT_GT(acked_records, 10000u);
  const CommandResult check = c.Ctl("n2", "sessions check --json --keys " + acked.string());
  auto checked = LastJson(check.out);
  ASSERT_TRUE(checked) << check.out;
  EXPECT_EQ(Num(*checked, "checked"), acked_records);
  EXPECT_EQ(Num(*checked, "missing"), 0u) << check.out;
  ASSERT_TRUE(c.WaitRole("n1", "secondary", 10s)) << c.Role("n1");
  EXPECT_TRUE(c.WaitSameDigest("n2", {"n1"}));
  EXPECT_EQ(Num(c.Status("n1")->at("replication").as_object(), "forks"), 0u);
}

// Scenario 3: the secondary fails (SIGKILL) and restarts. The primary keeps serving without a
// change of role; the secondary catches up what was written meanwhile.
TEST(LocalScenarios, SecondaryRestartsAndCatchesUp) {
  LocalCluster c(2, false);
  ASSERT_TRUE(c.up());
  ASSERT_TRUE(c.MakePrimary("n1"));
  ASSERT_TRUE(c.Load("n1", "--sessions 20000 --wait-acked"));
  const auto epoch = Num(*c.Status("n1"), "epoch");

  ASSERT_EQ(c.Kill("n2").exit_code, 0);
  ASSERT_TRUE(c.WaitUntil([&] {
    auto p = c.PeerSeen("n1", "n2");
    return p && p->at("state").as_string() == "lost";
  }));
  auto load = c.Load("n1", "--sessions 30000 --start 50000 --wait-acked");
  ASSERT_TRUE(load);
  EXPECT_EQ(Num(*load, "records_acked"), 30000u);
  EXPECT_TRUE(c.Ready("n1"));

  ASSERT_TRUE(c.Start("n2"));
  ASSERT_TRUE(c.WaitRole("n2", "secondary"));
  EXPECT_TRUE(c.WaitSameDigest("n1", {"n2"}));
  EXPECT_EQ(Num(*c.Digest("n2"), "records"), 50000u);
  EXPECT_EQ(Num(*c.Status("n1"), "epoch"), epoch) << "the primary's epoch changed";
  EXPECT_TRUE(c.Ready("n1"));
}

// Scenario 4: the secondary is shut down (SIGINT, no hold-off). The primary reports it lost and
// goes on alone.
TEST(LocalScenarios, SecondaryShutdownLeavesThePrimaryServing) {
  LocalCluster c(2, false);
  ASSERT_TRUE(c.up());
  ASSERT_TRUE(c.MakePrimary("n1"));
  ASSERT_EQ(c.Kill("n2", "INT").exit_code, 0);
  ASSERT_TRUE(c.WaitUntil([&] {
    auto p = c.PeerSeen("n1", "n2");
    return p && p->at("state").as_string() == "lost" && p->at("links_up").as_array().empty();
  }));
  EXPECT_TRUE(c.Ready("n1"));
  auto load = c.Load("n1", "--sessions 10000 --wait-acked");
  ASSERT_TRUE(load);
  EXPECT_EQ(Num(*load, "records_acked"), 10000u);
  // The shutdown is in n2's event log, and n1's log names the loss.
  const CommandResult events = c.Ctl("n1", "events --json --last 100");
  EXPECT_NE(events.out.find("heartbeat disappeared"), std::string::npos) << events.out;
}

// Scenario 7: with a witness, a promotion needs a majority. The primary dies; the secondary
// and the witness make two of three, and the secondary takes over with every record.
TEST(LocalScenarios, WitnessVotesTheSecondaryIn) {
  LocalCluster c(2, true);
  ASSERT_TRUE(c.up());
  ASSERT_TRUE(c.MakePrimary("n1"));
  EXPECT_EQ(c.Role("w"), "witness");
  const fs::path acked = c.dir() / "acked.txt";
  ASSERT_TRUE(c.Load("n1", "--sessions 20000 --wait-acked --acked-keys " + acked.string()));
  ASSERT_TRUE(c.WaitSameDigest("n1", {"n2"}));
  ASSERT_EQ(c.Kill("n1").exit_code, 0);
  ASSERT_TRUE(c.WaitUntil([&] { return c.Ready("n2"); }, 10s));
  EXPECT_EQ(c.Role("w"), "witness");
  auto checked = LastJson(c.Ctl("n2", "sessions check --json --keys " + acked.string()).out);
  ASSERT_TRUE(checked);
  EXPECT_EQ(Num(*checked, "missing"), 0u);

  // Without the witness as well, a lone node has no majority: it does not promote itself.
  ASSERT_EQ(c.Kill("w").exit_code, 0);
  ASSERT_EQ(c.Kill("n2").exit_code, 0);
  ASSERT_TRUE(c.Start("n1"));
  std::this_thread::sleep_for(2s);
  EXPECT_NE(c.Role("n1"), "primary");
  EXPECT_FALSE(c.Ready("n1"));
}

// Scenario 9: a device failure with several secondaries. The primary dies; one secondary takes
// over and the other follows it; both hold every record.
TEST(LocalScenarios, OneOfSeveralSecondariesTakesOverAndTheOtherFollows) {
  LocalCluster c(3, false);
  ASSERT_TRUE(c.up());
  ASSERT_TRUE(c.MakePrimary("n1"));
  ASSERT_TRUE(c.Load("n1", "--sessions 20000 --calls 2000 --wait-acked"));
  ASSERT_TRUE(c.WaitSameDigest("n1", {"n2", "n3"}));
  const std::string before = c.DigestText("n1");
  ASSERT_EQ(c.Kill("n1").exit_code, 0);
  std::string primary;
  ASSERT_TRUE(c.WaitUntil(
      [&] {
        primary = c.Ready("n2") ? "n2" : c.Ready("n3") ? "n3" : "";
        return !primary.empty();
      },
      10s));
  const std::string other = primary == "n2" ? "n3" : "n2";
  EXPECT_EQ(c.DigestText(primary), before);
  ASSERT_TRUE(c.WaitUntil([&] {
    auto s = c.Status(other);
    return s && s->at("effective_role").as_string() == "secondary" &&
           s->at("primary").as_string() == primary &&
           s->at("sync").as_object().at("state").as_string() == "in_sync";
  })) << c.Role(other);
  auto load = c.Load(primary, "--sessions 10000 --start 90000 --wait-acked");
  ASSERT_TRUE(load);
  EXPECT_TRUE(c.WaitSameDigest(primary, {other}));
  EXPECT_EQ(Num(*c.Digest(other), "records"), 32000u);
}

// The takeover hook runs on promotion, once the new primary is ready, and on demotion, with
// the event and the epoch as its arguments: here a script that appends them to a file.
TEST(LocalScenarios, TheTakeoverHookRunsOnPromotionAndOnDemotion) {
  TempDir hook_dir("statesync-hook");
  const fs::path hook = hook_dir.path() / "hook";
  const fs::path log = hook_dir.path() / "hook.log";
  {
    std::ofstream script(hook);
    script << "#!/bin/sh\necho \"$1 $2 $STATESYNC_EVENT $STATESYNC_EPOCH\" >> " << log.string()
           << "\n";
  }
  fs::permissions(hook, fs::perms::owner_all);
  LocalCluster c(2, false, "async", "--hook " + hook.string());
  ASSERT_TRUE(c.up());
  ASSERT_TRUE(c.MakePrimary("n1"));
  const auto lines = [&] { return RunCommand("cat " + log.string() + " 2>/dev/null").out; };
  const std::string e1 = std::to_string(Num(*c.Status("n1"), "epoch"));
  ASSERT_TRUE(WaitUntil([&] {
    return lines().find("promote " + e1 + " promote " + e1) != std::string::npos;
  })) << lines();

  // n1 hands the role over: it demotes, n2 promotes in a newer epoch.
  ASSERT_EQ(c.Ctl("n1", "set-role secondary").exit_code, 0);
  ASSERT_TRUE(WaitUntil([&] { return c.Ready("n2"); }, 10s));
  const std::string e2 = std::to_string(Num(*c.Status("n2"), "epoch"));
  EXPECT_NE(e1, e2);
  ASSERT_TRUE(WaitUntil([&] {
    const std::string l = lines();
    return l.find("demote ") != std::string::npos &&
           l.find("promote " + e2 + " promote " + e2) != std::string::npos;
  })) << lines();
  // Each run is in the nodes' event logs with its exit status.
  EXPECT_NE(c.Ctl("n2", "events --json").out.find("takeover hook 'promote' succeeded"),
            std::string::npos);
}

// Scheduling: a primary streaming at full speed must not delay its own heartbeats. Its stream's
// I/O threads run in SCHED_FIFO 10 (where permitted), which would hold the cores from a
// normal-class event loop for up to 950 ms in each second; so the event loop (the main thread)
// and the heartbeat links' ZeroMQ threads run in SCHED_FIFO 20, and what the loop starts does
// not inherit it.
TEST(LocalScenarios, TheHeartbeatPathRunsAboveTheStreamsRealtimeClass) {
  bool permitted = false;
  std::thread([&] {
    sched_param param{};
    param.sched_priority = 20;
    permitted = pthread_setschedparam(pthread_self(), SCHED_FIFO, &param) == 0;
  }).join();
  if (!permitted) GTEST_SKIP() << "this process may not use SCHED_FIFO (no CAP_SYS_NICE)";
  rlimit rttime{};
  if (::getrlimit(RLIMIT_RTTIME, &rttime) == 0 && rttime.rlim_cur != RLIM_INFINITY) {
    GTEST_SKIP() << "RLIMIT_RTTIME is set: statesyncd keeps the normal class by default";
  }
  LocalCluster c(2, false);
  ASSERT_TRUE(c.up());
  ASSERT_TRUE(c.MakePrimary("n1"));
  ASSERT_TRUE(c.Load("n1", "--sessions 2000 --wait-acked"));
  const auto pid = Num(*c.Status("n1"), "pid");
  // Each thread's name, scheduling policy and realtime priority, from /proc.
  std::multimap<std::string, std::pair<int, int>> threads;
  const fs::path tasks = "/proc/" + std::to_string(pid) + "/task";
  for (const auto& t : fs::directory_iterator(tasks)) {
    std::ifstream comm(t.path() / "comm");
    std::string name;
    std::getline(comm, name);
    const pid_t tid = std::stoi(t.path().filename().string());
    sched_param param{};
    ASSERT_EQ(::sched_getparam(tid, &param), 0);
    const int policy = ::sched_getscheduler(tid) & ~SCHED_RESET_ON_FORK;
    threads.emplace(tid == static_cast<pid_t>(pid) ? "main" : name,
                    std::pair{policy, param.sched_priority});
  }
  const auto count = [&](const std::string& name, int policy, int priority) {
    int n = 0;
    for (auto [it, end] = threads.equal_range(name); it != end; ++it) {
      if (it->second == std::pair{policy, priority}) ++n;
    }
    return n;
  };
  EXPECT_EQ(count("main", SCHED_FIFO, 20), 1) << "the event loop";
  EXPECT_GE(count("ZMQbg/IO/0", SCHED_FIFO, 20), 1) << "the heartbeat links' thread";
  EXPECT_GE(count("ZMQbg/IO/0", SCHED_FIFO, 10), 1) << "the stream's thread";
  EXPECT_EQ(count("ss-data", SCHED_OTHER, 0), 1) << "the ingest thread";
  EXPECT_EQ(count("ss-control", SCHED_OTHER, 0), 1) << "the control socket's thread";
}

}  // namespace
}  // namespace statesync::testing
