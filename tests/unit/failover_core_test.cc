// Unit tests of the failover core's parts that the scenario traces do not pin down one by one:
// the ranking's order, the epoch numbering, config validation, clock jumps, flap dampening,
// and that the simulator's safety and liveness checks do catch what they look for.
#include <gtest/gtest.h>

#include <map>
#include <memory>

#include "sim_cluster.h"
#include "statesync/failover/core.h"
#include "statesync/failover/ranking.h"

namespace statesync::failover {
namespace {

Candidate Base(const char* id) {
  return Candidate{id, 2, 100, {64, 10}, Millis{1'000}, "SN1"};
}

TEST(Ranking, EachStepDecidesOnlyWhenTheEarlierOnesTie) {
  const RankingOptions plain;
  Candidate a = Base("a");
  Candidate b = Base("b");
  // 6. serial, then id.
  b.serial = "SN2";
  EXPECT_GT(Compare(a, b, plain).order, 0);
  EXPECT_NE(Compare(a, b, plain).criterion.find("serial"), std::string::npos);
  // 5. priority beats serial.
  a.priority = 150;
  EXPECT_LT(Compare(a, b, plain).order, 0);
  // 4. uptime beyond the margin beats priority; within the margin it does not count.
  b.uptime = a.uptime + Millis{299'000};
  EXPECT_LT(Compare(a, b, plain).order, 0);
  b.uptime = a.uptime + Millis{301'000};
  EXPECT_GT(Compare(a, b, plain).order, 0);
  // 3. freshness beats uptime, unless two primaries compare (freshness off).
  a.applied = {64, 11};
  EXPECT_LT(Compare(a, b, plain).order, 0);
  EXPECT_GT(Compare(a, b, RankingOptions{false, Millis{300'000}, false}).order, 0);
  // 2. with override, priority beats freshness.
  b.priority = 200;
  EXPECT_LT(Compare(a, b, plain).order, 0);
  EXPECT_GT(Compare(a, b, RankingOptions{true, Millis{300'000}, true}).order, 0);
  // 1. monitored links and services up beat everything.
  a.monitors_up = 3;
  EXPECT_LT(Compare(a, b, RankingOptions{true, Millis{300'000}, true}).order, 0);
  // Symmetric, and total.
  EXPECT_EQ(Compare(a, b, plain).order, -Compare(b, a, plain).order);
  EXPECT_NE(Compare(Base("x"), Base("y"), plain).order, 0);
}

TEST(Epochs, TwoNodesNeverTakeTheSameEpoch) {
  EXPECT_EQ(NextEpochFor(0, 0), 64u);
  EXPECT_EQ(NextEpochFor(130, 5), 197u);
  for (Epoch seen = 0; seen < 1000; seen += 7) {
    for (std::uint32_t a = 0; a < kEpochSlots; ++a) {
      EXPECT_GT(NextEpochFor(seen, a), seen);
      EXPECT_EQ(NextEpochFor(seen, a) % kEpochSlots, a);
    }
  }
}

ClusterConfig TwoNodes() {
  ClusterConfig c;
  c.members = {{"p1", ConfiguredRole::kPrimary, 200, "A"},
               {"s2", ConfiguredRole::kSecondary, 100, "B"}};
  c.links = {"ha1"};
  c.self = "p1";
  return c;
}

TEST(Config, ValidateNamesTheKey) {
  ClusterConfig c = TwoNodes();
  EXPECT_TRUE(c.Validate().ok());
  c.self = "x";
  EXPECT_NE(c.Validate().message().find("node_id"), std::string::npos);
  c = TwoNodes();
  c.members.push_back(c.members[0]);
  EXPECT_NE(c.Validate().message().find("appears twice"), std::string::npos);
  c = TwoNodes();
  c.links.clear();
  EXPECT_NE(c.Validate().message().find("links"), std::string::npos);
  c = TwoNodes();
  c.lost_threshold = 0;
  EXPECT_NE(c.Validate().message().find("lost_threshold"), std::string::npos);
  EXPECT_FALSE(ParseOnFailure("restore").ok());
  EXPECT_EQ(ParseOnFailure("restore_role").value(), OnFailure::kRestoreRole);
}

std::vector<RoleChange> RoleChanges(const Actions& actions) {
  std::vector<RoleChange> out;
  for (const Action& a : actions) {
    if (const auto* rc = std::get_if<RoleChange>(&a)) out.push_back(*rc);
  }
  return out;
}

// The secondary's process stalls for 5 s (a paused VM), and the primary dies during the stall.
// On the secondary's clock the primary has been silent for 5 s at the first step after the
// stall. That step must observe, not promote; the primary gets a fresh detection window (300
// ms) from then on, and only after it does the secondary take over. A backward jump is observed
// the same way.
TEST(Clock, AJumpIsObservedAndGivesPeersAFreshWindow) {
  ClusterConfig config = TwoNodes();
  config.self = "s2";
  std::uint64_t n = 0;
  FailoverCore s2(config, DurableState{}, [&n] { return n++; });
  Heartbeat hb;
  hb.sequence = 1;
  hb.slot = 0;
  hb.epoch = 64;
  hb.role = EffectiveRole::kPrimary;
  hb.ready = true;
  hb.priority = 200;
  Instant now{0};
  for (; now < Instant{1'000}; now += Millis{10}) {
    if (now.count() % 100 == 0) {
      ++hb.sequence;
      (void)s2.Receive(now, "p1", 0, hb);
    }
    (void)s2.Tick(now);
  }
  ASSERT_EQ(s2.role(), EffectiveRole::kSecondary);
  ASSERT_EQ(s2.primary(), "p1");

  now += Millis{5'000};
  const Actions jumped = s2.Tick(now);
  EXPECT_TRUE(RoleChanges(jumped).empty());
  bool alerted = false;
  for (const Action& a : jumped) {
    if (const auto* alert = std::get_if<Alert>(&a)) {
      alerted |= alert->text.find("clock jumped forward by 5010 ms") != std::string::npos;
    }
  }
  EXPECT_TRUE(alerted);
  const Instant jump_at = now;
  std::optional<Instant> promoted_at;
  for (now += Millis{10}; now < jump_at + Millis{2'000} && !promoted_at; now += Millis{10}) {
    for (const RoleChange& rc : RoleChanges(s2.Tick(now))) {
      if (rc.to == EffectiveRole::kPrimary) promoted_at = now;
    }
  }
  ASSERT_TRUE(promoted_at.has_value());
  // The last heartbeat was heard 90 ms before the stall on the old clock, which the jump
  // carried along: detection needs the rest of the 300 ms window after the jump, then the
  // election jitter (under 100 ms).
  EXPECT_GE(*promoted_at - jump_at, Millis{200});
  EXPECT_LE(*promoted_at - jump_at, Millis{400});

  EXPECT_TRUE(RoleChanges(s2.Tick(now - Millis{3'000})).empty());
}

// A secondary that asked the primary for the role (`takeover`) hears the primary's heartbeat
// saying it stepped down before the TAKE_OVER itself (the old primary holds it for the last
// record it took; another link may be faster). It waits for the TAKE_OVER rather than elect
// itself from its own older position, and promotes gated on the handed-over position.
TEST(HandOver, TheNodeThatAskedWaitsForTheTakeOverRatherThanElectItself) {
  ClusterConfig config = TwoNodes();
  config.self = "s2";
  config.members[0].priority = 100;  // s2 outranks p1 by its serial once p1 is no longer ahead
  std::uint64_t n = 0;
  FailoverCore s2(config, DurableState{}, [&n] { return n++; });
  Heartbeat hb;
  hb.sequence = 1;
  hb.epoch = 64;
  hb.role = EffectiveRole::kPrimary;
  hb.ready = true;
  hb.priority = 100;
  hb.applied = {64, 1000};
  hb.following = "p1";
  Instant now{0};
  for (; now < Instant{1'000}; now += Millis{10}) {
    if (now.count() % 100 == 0) {
      ++hb.sequence;
      (void)s2.Receive(now, "p1", 0, hb);
    }
    (void)s2.ReplicationProgress(now, {64, 900}, true);
    (void)s2.Tick(now);
  }
  ASSERT_EQ(s2.primary(), "p1");
  bool asked = false;
  for (const Action& a : s2.Command(now, OperatorCommand::kSetPrimary)) {
    if (const auto* m = std::get_if<SendMessage>(&a)) {
      const auto* c = std::get_if<Control>(&m->message);
      asked |= c != nullptr && c->kind == ControlKind::kSwitchRequest;
    }
  }
  ASSERT_TRUE(asked);
  // p1 steps down: its heartbeats say secondary, and for 250 ms no TAKE_OVER comes.
  hb.role = EffectiveRole::kSecondary;
  hb.ready = false;
  hb.following.clear();
  hb.applied = {64, 900};  // as last reported (the rest is on its way): no fresher than s2
  const Instant stepped_down = now + Millis{20};
  for (now = stepped_down; now < stepped_down + Millis{250}; now += Millis{10}) {
    if ((now - stepped_down).count() % 100 == 0) {
      ++hb.sequence;
      (void)s2.Receive(now, "p1", 0, hb);
    }
    for (const RoleChange& rc : RoleChanges(s2.Tick(now))) {
      ADD_FAILURE() << "changed role to " << RoleName(rc.to) << " at +"
                    << (now - stepped_down).count() << " ms: " << rc.reason;
    }
  }
  Control takeover;
  takeover.kind = ControlKind::kTakeOver;
  takeover.epoch = 64;
  takeover.final_position = {64, 1000};
  takeover.reason = "SECONDARY asks us to switch roles (operator requested takeover)";
  const Actions took = s2.Receive(now, "p1", 0, takeover);
  ASSERT_EQ(RoleChanges(took).size(), 1u);
  EXPECT_EQ(RoleChanges(took)[0].to, EffectiveRole::kPrimary);
  bool gated = false;
  for (const Action& a : took) {
    if (const auto* w = std::get_if<AwaitState>(&a)) gated = w->up_to == Position{64, 1000};
  }
  EXPECT_TRUE(gated) << "the promotion waits for the record the old primary handed over";

  // Had no TAKE_OVER come, s2 would have elected itself once the loss time passed.
  FailoverCore again(config, DurableState{}, [&n] { return n++; });
  hb.role = EffectiveRole::kPrimary;
  hb.applied = {64, 1000};
  hb.following = "p1";
  for (now = Instant{0}; now < Instant{1'000}; now += Millis{10}) {
    if (now.count() % 100 == 0) {
      ++hb.sequence;
      (void)again.Receive(now, "p1", 0, hb);
    }
    (void)again.ReplicationProgress(now, {64, 900}, true);
    (void)again.Tick(now);
  }
  (void)again.Command(now, OperatorCommand::kSetPrimary);
  hb.role = EffectiveRole::kSecondary;
  hb.following.clear();
  hb.applied = {64, 900};
  std::optional<Millis> promoted_after;
  for (now += Millis{20}; now < Instant{3'000} && !promoted_after; now += Millis{10}) {
    if (now.count() % 100 == 0) {
      ++hb.sequence;
      (void)again.Receive(now, "p1", 0, hb);
    }
    for (const RoleChange& rc : RoleChanges(again.Tick(now))) {
      if (rc.to == EffectiveRole::kPrimary) promoted_after = now - Instant{1'020};
    }
  }
  ASSERT_TRUE(promoted_after.has_value());
  EXPECT_GE(*promoted_after, Millis{300});
  EXPECT_LE(*promoted_after, Millis{500});
}

// A preempting former primary stops switching back once flap_max_changes role changes
// happened within flap_window, and says so.
TEST(Flap, VoluntarySwitchesAreDampened) {
  ClusterConfig config = TwoNodes();
  config.override_enabled = true;
  config.preempt_delay = Millis{500};
  config.flap_max_changes = 2;
  config.flap_window = Millis{60'000};
  sim::SimCluster cluster(config, {"port1"}, sim::SimOptions{});
  int dampened = 0;
  cluster.SetObserver([&](Millis, const NodeId&, const Action& a) {
    if (const auto* alert = std::get_if<Alert>(&a)) {
      dampened += alert->text.find("dampened") != std::string::npos ? 1 : 0;
    }
  });
  cluster.Boot("p1");
  cluster.Boot("s2");
  cluster.Run(Millis{1'000});
  ASSERT_EQ(cluster.View("p1").role, EffectiveRole::kPrimary);
  // A flapping monitored link on p1: each time it fails p1 hands over to s2; each time it
  // returns p1 would preempt s2 again after 500 ms.
  for (int i = 0; i < 3; ++i) {
    cluster.SetMonitor("p1", "port1", false);
    cluster.Run(Millis{1'000});
    cluster.SetMonitor("p1", "port1", true);
    cluster.Run(Millis{2'000});
  }
  EXPECT_GE(dampened, 1);
  // Dampened: s2 stays primary although p1 outranks it with override on.
  EXPECT_EQ(cluster.View("s2").role, EffectiveRole::kPrimary);
  EXPECT_EQ(cluster.View("p1").role, EffectiveRole::kSecondary);
}

ClusterConfig PairWithTwoLinks() {
  ClusterConfig c = TwoNodes();
  c.links = {"ha1", "ha2"};
  return c;
}

ClusterConfig ThreeNodesTwoLinks() {
  ClusterConfig c;
  c.members = {{"p1", ConfiguredRole::kPrimary, 100, "A"},
               {"s2", ConfiguredRole::kSecondary, 100, "B"},
               {"s3", ConfiguredRole::kSecondary, 100, "C"}};
  c.links = {"ha1", "ha2"};
  return c;
}

// How long after `fault` (run at 1 s) some node other than `victim` is a ready primary.
// Every member of `config` booted and run for `run_for` (past the start-up), in 1 ms steps.
std::unique_ptr<sim::SimCluster> StartedCluster(const ClusterConfig& config,
                                                sim::SimOptions options = {},
                                                Millis run_for = Millis{1'000}) {
  options.step = Millis{1};
  auto cluster = std::make_unique<sim::SimCluster>(config, std::vector<std::string>{}, options);
  for (const auto& m : config.members) cluster->Boot(m.id);
  cluster->Run(run_for);
  return cluster;
}

std::optional<Millis> TakeoverTime(const ClusterConfig& config, std::uint64_t seed,
                                   const NodeId& victim,
                                   const std::function<void(sim::SimCluster&)>& fault) {
  sim::SimOptions options;
  options.seed = seed;
  auto cluster =
      StartedCluster(config, options, Millis{1'000} + Millis{static_cast<Millis::rep>(seed % 100)});
  EXPECT_TRUE(cluster->View(victim).ready);
  const Millis at = cluster->now();
  fault(*cluster);
  while (cluster->now() - at < Millis{3'000}) {
    cluster->Step();
    for (const auto& v : cluster->Views()) {
      if (v.id != victim && v.ready) return cluster->now() - at;
    }
  }
  return std::nullopt;
}

// The kernel closes a dead process's connections at once: seen on every link, that is a crash,
// and the take-over need not wait for lost_threshold missed heartbeats.
TEST(CrashFast, ConnectionsClosedOnEveryLinkMakeTheTakeOverQuick) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    const auto killed =
        TakeoverTime(ThreeNodesTwoLinks(), seed, "p1", [](sim::SimCluster& c) { c.Kill("p1"); });
    const auto silent =
        TakeoverTime(ThreeNodesTwoLinks(), seed, "p1", [](sim::SimCluster& c) { c.Crash("p1"); });
    ASSERT_TRUE(killed && silent) << "seed " << seed;
    // Detection at once, a jitter of 5-10 ms, a vote round: well under one heartbeat interval.
    EXPECT_LE(*killed, Millis{30}) << "seed " << seed;
    // Silence is only noticed after the loss time.
    EXPECT_GE(*silent, Millis{300}) << "seed " << seed;
  }
}

// With no rival left (a pair whose primary went silent), the secondary campaigns as soon as it
// notices: the jitter that keeps rivals apart would only delay the take-over.
TEST(CrashFast, ALoneSecondaryTakesOverAsSoonAsItNoticesTheSilence) {
  const ClusterConfig config = PairWithTwoLinks();
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    const auto silent = TakeoverTime(config, seed, "p1", [](sim::SimCluster& c) { c.Crash("p1"); });
    ASSERT_TRUE(silent);
    // Heard at most one interval before the crash: noticed 200-300 ms after it, ready at once.
    EXPECT_GE(*silent, Millis{200}) << "seed " << seed;
    EXPECT_LE(*silent, Millis{305}) << "seed " << seed;
  }
}

// A connection closed on one link alone is never enough: the peer is alive on the other.
TEST(CrashFast, AClosedConnectionOnOneLinkIsNotACrash) {
  auto cluster = StartedCluster(ThreeNodesTwoLinks());
  ASSERT_TRUE(cluster->View("p1").ready);
  cluster->CloseConnection(0, "p1", "s2");
  cluster->CloseConnection(0, "p1", "s3");
  cluster->Run(Millis{250});
  // Later the other link's connection closes too, but heartbeats have come over link 0 since
  // (the peer is alive): the first close is no longer current, so this is one link again.
  cluster->CloseConnection(1, "p1", "s2");
  cluster->CloseConnection(1, "p1", "s3");
  cluster->Run(Millis{2'000});
  EXPECT_EQ(cluster->View("p1").role, EffectiveRole::kPrimary);
  EXPECT_TRUE(cluster->View("p1").ready);
  EXPECT_EQ(cluster->View("s2").following, "p1");
  EXPECT_EQ(cluster->View("s3").following, "p1");
}

// A secondary that was stalled (SIGSTOP, a paused VM) finds on waking that the primary closed
// its connections to it on every link: it had stopped answering. That is no crash of the
// primary, which is alive and heard again within the loss time.
TEST(CrashFast, ClosesFoundAfterThisNodeStalledAreNotACrash) {
  auto cluster = StartedCluster(PairWithTwoLinks());
  ASSERT_TRUE(cluster->View("p1").ready);
  const Epoch epoch = cluster->View("p1").epoch;
  bool s2_promoted = false;
  cluster->SetObserver([&](Millis, const NodeId& node, const Action& action) {
    const auto* change = std::get_if<RoleChange>(&action);
    if (change && node == "s2" && change->to == EffectiveRole::kPrimary) s2_promoted = true;
  });
  cluster->ClockJump("s2", Millis{2'000});
  cluster->CloseConnection(0, "p1", "s2");
  cluster->CloseConnection(1, "p1", "s2");
  cluster->Run(Millis{2'000});
  EXPECT_EQ(cluster->View("s2").role, EffectiveRole::kSecondary);
  EXPECT_EQ(cluster->View("s2").following, "p1");
  EXPECT_FALSE(s2_promoted);
  EXPECT_EQ(cluster->View("p1").role, EffectiveRole::kPrimary);
  EXPECT_EQ(cluster->View("p1").epoch, epoch);  // no take-over, no split brain to resolve
}

// With a single heartbeat link, a close is one link's word: the take-over waits for the timer.
TEST(CrashFast, WithOneLinkAKillWaitsForTheHeartbeatTimer) {
  ClusterConfig config = ThreeNodesTwoLinks();
  config.links = {"ha1"};
  for (std::uint64_t seed = 1; seed <= 5; ++seed) {
    const auto killed = TakeoverTime(config, seed, "p1", [](sim::SimCluster& c) { c.Kill("p1"); });
    ASSERT_TRUE(killed);
    EXPECT_GE(*killed, Millis{200}) << "seed " << seed;
  }
}

// What one node persisted, in order.
struct Saves {
  std::vector<PersistState> all;
  const PersistState* Promotion() const {  // the last save that made the node primary
    for (auto it = all.rbegin(); it != all.rend(); ++it) {
      if (it->state.role == EffectiveRole::kPrimary) return &*it;
    }
    return nullptr;
  }
  const PersistState* LastSyncedBefore(const PersistState* save) const {
    const PersistState* synced = nullptr;
    for (const PersistState& p : all) {
      if (&p == save) break;
      if (p.sync) synced = &p;
    }
    return synced;
  }
};

void Record(sim::SimCluster& cluster, const NodeId& who, Saves& saves) {
  cluster.SetObserver([&saves, who](Millis, const NodeId& node, const Action& action) {
    const auto* persist = std::get_if<PersistState>(&action);
    if (persist != nullptr && node == who) saves.all.push_back(*persist);
  });
}

// A secondary of a pair reserves, in its synced saves, the epoch it would take if it promoted
// alone, so that the crash take-over's save does not wait for the disk (a sync waits 100-300 ms
// for the store's write-back on a busy disk). A power loss right after that promotion takes the
// unsynced save with it; the node then starts from the synced state and must take a newer
// epoch, not the one it already served in.
TEST(PowerLoss, ALonePromotionUsesTheReservedEpochAndAPowerLossNeverMakesItReuseIt) {
  auto cluster = StartedCluster(PairWithTwoLinks());
  ASSERT_TRUE(cluster->View("p1").ready);
  const Epoch before = cluster->View("s2").epoch;
  Saves saves;
  Record(*cluster, "s2", saves);
  // The reservation was made before the crash (in the start-up's saves); it is looked for in
  // the state the core hands back.
  cluster->Kill("p1");
  cluster->Run(Millis{100});
  ASSERT_TRUE(cluster->View("s2").ready);
  const PersistState* promotion = saves.Promotion();
  ASSERT_NE(promotion, nullptr);
  EXPECT_FALSE(promotion->sync);
  const Epoch served = promotion->state.epoch;
  EXPECT_GT(served, before);
  EXPECT_EQ(served, promotion->state.reserved_epoch);

  cluster->PowerLoss("s2");
  EXPECT_EQ(cluster->View("s2").epoch, before);  // the unsynced promotion is gone
  saves.all.clear();
  // Its store kept what it wrote in that epoch: it starts from that epoch, as a primary that
  // failed (ReconcileWithStore), not as the secondary its HA state says it was.
  ASSERT_EQ(cluster->View("s2").applied.epoch, served);
  ClusterConfig s2_config = PairWithTwoLinks();
  s2_config.self = "s2";
  std::string why;
  const DurableState reconciled = ReconcileWithStore(s2_config, DurableState{.epoch = before},
                                                     cluster->View("s2").applied, &why);
  EXPECT_EQ(reconciled.epoch, served);
  EXPECT_EQ(reconciled.role, EffectiveRole::kPrimary);
  EXPECT_NE(why.find("power loss"), std::string::npos);
  cluster->Boot("s2");
  EXPECT_EQ(cluster->View("s2").epoch, served);
  cluster->Run(Millis{3'000});  // alone: it promotes again after the start-up window
  ASSERT_TRUE(cluster->View("s2").ready);
  EXPECT_GT(cluster->View("s2").epoch, served);
  promotion = saves.Promotion();
  ASSERT_NE(promotion, nullptr);
  // The start-up's synced save reserved the next epoch, so this promotion was not synced
  // either, and what was synced before it covers it.
  EXPECT_FALSE(promotion->sync);
  const PersistState* synced = saves.LastSyncedBefore(promotion);
  ASSERT_NE(synced, nullptr);
  EXPECT_GE(synced->state.reserved_epoch, promotion->state.epoch);
}

// With three members the candidate's vote for itself, synced before the vote request goes out,
// already names the epoch's round: its promotion's save need not wait for the disk. A voter's
// vote is synced.
TEST(PowerLoss, AnElectedCandidatesPromotionIsCoveredByItsSyncedVote) {
  auto cluster = StartedCluster(ThreeNodesTwoLinks());
  ASSERT_TRUE(cluster->View("p1").ready);
  std::map<NodeId, Saves> saves;
  cluster->SetObserver([&saves](Millis, const NodeId& node, const Action& action) {
    if (const auto* persist = std::get_if<PersistState>(&action))
      saves[node].all.push_back(*persist);
  });
  cluster->Kill("p1");
  cluster->Run(Millis{200});
  NodeId winner;
  for (const NodeId id : {"s2", "s3"}) {
    if (cluster->View(id).ready) winner = id;
  }
  ASSERT_FALSE(winner.empty());
  const NodeId voter = winner == "s2" ? "s3" : "s2";
  const PersistState* promotion = saves[winner].Promotion();
  ASSERT_NE(promotion, nullptr);
  EXPECT_FALSE(promotion->sync);
  const PersistState* vote = saves[winner].LastSyncedBefore(promotion);
  ASSERT_NE(vote, nullptr);
  EXPECT_EQ(vote->state.voted_round, promotion->state.epoch / kEpochSlots);
  EXPECT_EQ(vote->state.voted_for, winner);
  bool voter_synced_its_vote = false;
  for (const PersistState& p : saves[voter].all) {
    voter_synced_its_vote |= p.state.voted_for == winner && p.sync;
  }
  EXPECT_TRUE(voter_synced_its_vote);
}

sim::NodeView View(const char* id, EffectiveRole role, Epoch epoch, bool ready,
                   ConfiguredRole configured = ConfiguredRole::kSecondary) {
  sim::NodeView v;
  v.id = id;
  v.configured = configured;
  v.running = true;
  v.role = role;
  v.epoch = epoch;
  v.ready = ready;
  v.following = role == EffectiveRole::kPrimary ? id : "p";
  return v;
}

TEST(SimChecks, SafetyCatchesEachViolation) {
  {
    sim::SafetyChecker safety;
    EXPECT_EQ(safety.Check(Millis{0}, {View("a", EffectiveRole::kPrimary, 64, true),
                                       View("b", EffectiveRole::kSecondary, 64, false)}),
              "");
    EXPECT_NE(safety.Check(Millis{10}, {View("a", EffectiveRole::kSecondary, 64, false),
                                        View("b", EffectiveRole::kPrimary, 64, true)}),
              "");  // the same epoch, a second writer, even later
  }
  {
    sim::SafetyChecker safety;
    EXPECT_EQ(safety.Check(Millis{0}, {View("a", EffectiveRole::kSecondary, 129, false)}), "");
    EXPECT_NE(safety.Check(Millis{10}, {View("a", EffectiveRole::kSecondary, 64, false)}), "");
  }
  {
    sim::SafetyChecker safety;
    EXPECT_NE(safety.Check(Millis{0}, {View("w", EffectiveRole::kPrimary, 64, false,
                                            ConfiguredRole::kWitness)}),
              "");
  }
  {
    // A power loss may take a node's epoch back to what was synced, but it must not serve in
    // an epoch again in a later run.
    sim::SafetyChecker safety;
    sim::NodeView a = View("a", EffectiveRole::kPrimary, 129, true);
    a.boots = 1;
    EXPECT_EQ(safety.Check(Millis{0}, {a}), "");
    sim::NodeView after = View("a", EffectiveRole::kSecondary, 64, false);
    after.boots = 2;
    after.power_losses = 1;
    EXPECT_EQ(safety.Check(Millis{10}, {after}), "");
    after.role = EffectiveRole::kPrimary;
    after.epoch = 129;
    after.ready = true;
    EXPECT_NE(safety.Check(Millis{20}, {after}).find("in two of its runs"), std::string::npos);
  }
}

TEST(SimChecks, LivenessWantsExactlyOneReadyPrimaryFollowedByAll) {
  sim::NodeView p = View("p", EffectiveRole::kPrimary, 64, true);
  sim::NodeView s = View("s", EffectiveRole::kSecondary, 64, false);
  EXPECT_EQ(sim::CheckOnePrimary({p, s}), "");
  sim::NodeView not_ready = p;
  not_ready.ready = false;
  EXPECT_NE(sim::CheckOnePrimary({not_ready, s}), "");
  EXPECT_NE(sim::CheckOnePrimary({p, View("q", EffectiveRole::kPrimary, 129, true)}), "");
  sim::NodeView lost = s;
  lost.following = "";
  EXPECT_NE(sim::CheckOnePrimary({p, lost}), "");
}

}  // namespace
}  // namespace statesync::failover
