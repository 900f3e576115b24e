#include "statesync/sessiontable/session_table.h"

#include <gtest/gtest.h>

#include <map>
#include <random>
#include <set>
#include <vector>

#include "statesync/schemas/codec.h"
#include "statesync/workload/workload.h"

namespace statesync {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Rep = Mutation::Replication;

const TimePoint kT0{milliseconds(1'780'000'000'000)};

struct Drained {
  Position position;
  TableId table;
  DeltaKind kind;
  std::string key;
  std::string value;
};

std::vector<Drained> DrainAll(SessionTable& t, std::size_t max = SIZE_MAX) {
  std::vector<Drained> out;
  t.Drain(max, [&out](const DeltaView& d) {
    out.push_back({d.position, d.table, d.kind, std::string(d.key), std::string(d.value)});
  });
  return out;
}

std::string KeyOf(const FirewallSession& s) {
  return FirewallKey(s.orig, s.zone);
}

FirewallSession Session(std::uint64_t i, TimePoint expiry_at = kT0 + seconds(300)) {
  FirewallSession s = workload::Ipv4Session(i, kT0);
  s.expiry = expiry_at;
  return s;
}

class SessionTableTest : public ::testing::Test {
 protected:
  SessionTableTest() { table_.Tick(kT0); }
  SessionTable table_;
};

// A table's name (a column family's, a `--table` option's) reads back as its id; a name that is
// no table's does not.
TEST(TableNames, ParseTableNameIsTableNameBackwards) {
  for (TableId t : {TableId::kFwSessions, TableId::kCalls, TableId::kCdrs, TableId::kBlobs,
                    UserTable(0), static_cast<TableId>(0xffff)}) {
    EXPECT_EQ(ParseTableName(TableName(t)), t) << TableName(t);
  }
  for (const char* bad : {"", "nope", "user_", "user_15", "user_x", "user_65536", "FW_SESSIONS"}) {
    EXPECT_FALSE(ParseTableName(bad).has_value()) << bad;
  }
}

TEST_F(SessionTableTest, SeqIsGapFreeAndFollowsMutationOrder) {
  for (std::uint64_t i = 0; i < 100; ++i) {
    auto m = table_.UpsertFirewall(Session(i));
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(m->replication, Rep::kQueued);
    EXPECT_EQ(m->position, (Position{0, i + 1}));
  }
  auto deltas = DrainAll(table_);
  ASSERT_EQ(deltas.size(), 100u);
  for (std::uint64_t i = 0; i < 100; ++i) {
    EXPECT_EQ(deltas[i].position.seq, i + 1);
    EXPECT_EQ(deltas[i].kind, DeltaKind::kUpsert);
    EXPECT_EQ(deltas[i].key, KeyOf(Session(i)));
    auto decoded = DecodeFirewallSession(wire::AsBytes(deltas[i].value));
    ASSERT_TRUE(decoded.ok());
    EXPECT_EQ(*decoded, Session(i));
  }
  // The next mutation carries on from the last seq given out.
  auto m = table_.Delete(TableId::kFwSessions, KeyOf(Session(5)));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->position.seq, 101u);
  EXPECT_EQ(table_.last_position().seq, 101u);
}

TEST_F(SessionTableTest, ChangesToAPendingKeyCoalesceIntoOneDelta) {
  FirewallSession a = Session(1);
  ASSERT_EQ(table_.UpsertFirewall(a)->position.seq, 1u);
  ASSERT_EQ(table_.UpsertFirewall(Session(2))->position.seq, 2u);
  a.orig_packets = 999;
  a.tcp_state = TcpState::FinWait;
  auto m = table_.UpsertFirewall(a);
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->position.seq, 1u) << "the update rides on the pending entry of its key";
  auto deltas = DrainAll(table_);
  ASSERT_EQ(deltas.size(), 2u);
  EXPECT_EQ(*DecodeFirewallSession(wire::AsBytes(deltas[0].value)), a) << "latest state sent";
  EXPECT_EQ(table_.stats().coalesced, 1u);
}

TEST_F(SessionTableTest, UpsertThenDeleteLeavesOneDeleteAndDeleteThenUpsertOneUpsert) {
  const FirewallSession a = Session(1);
  const FirewallSession b = Session(2);
  ASSERT_TRUE(table_.UpsertFirewall(a).ok());
  ASSERT_TRUE(table_.UpsertFirewall(b).ok());
  DrainAll(table_);

  // a: update then delete, before a drain: one delete.
  FirewallSession a2 = a;
  a2.mark = 7;
  ASSERT_TRUE(table_.UpsertFirewall(a2).ok());
  ASSERT_EQ(table_.Delete(TableId::kFwSessions, KeyOf(a))->position.seq, 3u);
  // b: delete then upsert again, before a drain: one upsert with the new state.
  FirewallSession b2 = b;
  b2.mark = 9;
  ASSERT_EQ(table_.Delete(TableId::kFwSessions, KeyOf(b))->position.seq, 4u);
  EXPECT_FALSE(table_.GetFirewall(b.orig, b.zone).has_value());
  ASSERT_EQ(table_.UpsertFirewall(b2)->position.seq, 4u);
  EXPECT_EQ(table_.size(TableId::kFwSessions), 1u);

  auto deltas = DrainAll(table_);
  ASSERT_EQ(deltas.size(), 2u);
  EXPECT_EQ(deltas[0].kind, DeltaKind::kDelete);
  EXPECT_EQ(deltas[0].key, KeyOf(a));
  EXPECT_TRUE(deltas[0].value.empty());
  EXPECT_EQ(deltas[1].kind, DeltaKind::kUpsert);
  EXPECT_EQ(*DecodeFirewallSession(wire::AsBytes(deltas[1].value)), b2);
  EXPECT_FALSE(table_.GetFirewall(a.orig, a.zone).has_value());
  EXPECT_EQ(*table_.GetFirewall(b.orig, b.zone), b2);
}

TEST_F(SessionTableTest, DeleteOfAnUnknownKeyChangesNothing) {
  auto m = table_.Delete(TableId::kFwSessions, KeyOf(Session(42)));
  ASSERT_TRUE(m.ok());
  EXPECT_EQ(m->replication, Rep::kNotFound);
  EXPECT_EQ(table_.pending(), 0u);
  auto bad = table_.Delete(TableId::kFwSessions, "short");
  EXPECT_EQ(bad.status().code(), Status::Code::kInvalidArgument);
}

TEST_F(SessionTableTest, ExpiresExactlyAtTheAbsoluteDeadline) {
  const FirewallSession a = Session(1, kT0 + milliseconds(1500));
  const FirewallSession b = Session(2, kT0 + milliseconds(2700));
  ASSERT_TRUE(table_.UpsertFirewall(a).ok());
  ASSERT_TRUE(table_.UpsertFirewall(b).ok());
  DrainAll(table_);

  EXPECT_EQ(table_.Tick(kT0 + milliseconds(1499)), 0u);
  EXPECT_TRUE(table_.GetFirewall(a.orig, a.zone).has_value());
  EXPECT_EQ(table_.Tick(kT0 + milliseconds(1500)), 1u);
  EXPECT_FALSE(table_.GetFirewall(a.orig, a.zone).has_value());
  EXPECT_TRUE(table_.GetFirewall(b.orig, b.zone).has_value());
  auto deltas = DrainAll(table_);
  ASSERT_EQ(deltas.size(), 1u);
  EXPECT_EQ(deltas[0].kind, DeltaKind::kExpire);
  EXPECT_EQ(deltas[0].key, KeyOf(a));

  EXPECT_EQ(table_.Tick(kT0 + milliseconds(2699)), 0u);
  EXPECT_EQ(table_.Tick(kT0 + milliseconds(2700)), 1u);
  EXPECT_EQ(table_.size(TableId::kFwSessions), 0u);
  EXPECT_EQ(table_.stats().expired, 2u);
}

TEST_F(SessionTableTest, ADeadlineMovedLaterOrEarlierIsHonoured) {
  FirewallSession a = Session(1, kT0 + seconds(2));
  FirewallSession b = Session(2, kT0 + seconds(50));
  ASSERT_TRUE(table_.UpsertFirewall(a).ok());
  ASSERT_TRUE(table_.UpsertFirewall(b).ok());
  a.expiry = kT0 + seconds(10);  // refreshed by traffic
  b.expiry = kT0 + seconds(5);   // moved earlier (a FIN seen)
  ASSERT_TRUE(table_.UpsertFirewall(a).ok());
  ASSERT_TRUE(table_.UpsertFirewall(b).ok());
  DrainAll(table_);
  for (int s = 1; s <= 4; ++s) EXPECT_EQ(table_.Tick(kT0 + seconds(s)), 0u) << s;
  EXPECT_EQ(table_.Tick(kT0 + seconds(5)), 1u);
  EXPECT_FALSE(table_.GetFirewall(b.orig, b.zone).has_value());
  for (int s = 6; s <= 9; ++s) EXPECT_EQ(table_.Tick(kT0 + seconds(s)), 0u) << s;
  EXPECT_EQ(table_.Tick(kT0 + seconds(10)), 1u);
  EXPECT_EQ(table_.size(TableId::kFwSessions), 0u);
}

TEST_F(SessionTableTest, ExpiryWorksAcrossTurnsOfTheWheelAndLongJumps) {
  // 5 days (a TCP established timeout) and 2 hours: both beyond one turn of the wheel.
  const FirewallSession far = Session(1, kT0 + seconds(432000));
  const FirewallSession mid = Session(2, kT0 + seconds(7200));
  ASSERT_TRUE(table_.UpsertFirewall(far).ok());
  ASSERT_TRUE(table_.UpsertFirewall(mid).ok());
  DrainAll(table_);
  for (int minute = 1; minute < 120; ++minute) {
    ASSERT_EQ(table_.Tick(kT0 + seconds(60 * minute)), 0u) << minute;
  }
  EXPECT_EQ(table_.Tick(kT0 + seconds(7200)), 1u);
  // A clock jump of days in one Tick.
  EXPECT_EQ(table_.Tick(kT0 + seconds(431999)), 0u);
  EXPECT_EQ(table_.Tick(kT0 + seconds(432000)), 1u);
}

TEST_F(SessionTableTest, TimeNeverRunsBackwards) {
  ASSERT_TRUE(table_.UpsertFirewall(Session(1, kT0 + seconds(3))).ok());
  table_.Tick(kT0 + seconds(2));
  table_.Tick(kT0 + seconds(1));  // an earlier time is taken as the previous one
  EXPECT_EQ(table_.now(), kT0 + seconds(2));
  EXPECT_EQ(table_.size(TableId::kFwSessions), 1u);
}

TEST_F(SessionTableTest, PickupDelayHoldsYoungSessionsAndNeverSendsThoseThatDieYoung) {
  table_.SetPolicy(TableId::kFwSessions, SyncPolicy{.pickup_delay = seconds(2)});
  FirewallSession lives = Session(1);
  const FirewallSession dies = Session(2);
  const FirewallSession expires_young = Session(3, kT0 + seconds(1));
  EXPECT_EQ(table_.UpsertFirewall(lives)->replication, Rep::kHeld);
  EXPECT_EQ(table_.UpsertFirewall(dies)->replication, Rep::kHeld);
  EXPECT_EQ(table_.UpsertFirewall(expires_young)->replication, Rep::kHeld);
  EXPECT_EQ(table_.pending(), 0u);
  EXPECT_EQ(table_.Tick(kT0 + seconds(1)), 0u);  // expires_young dies here, unsent
  EXPECT_EQ(table_.Delete(TableId::kFwSessions, KeyOf(dies))->replication, Rep::kHeld);
  lives.orig_packets = 12345;
  EXPECT_EQ(table_.UpsertFirewall(lives)->replication, Rep::kHeld);
  EXPECT_EQ(table_.Tick(kT0 + milliseconds(1999)), 0u);
  EXPECT_EQ(table_.Tick(kT0 + seconds(2)), 1u);
  auto deltas = DrainAll(table_);
  ASSERT_EQ(deltas.size(), 1u);
  EXPECT_EQ(deltas[0].position.seq, 1u);
  EXPECT_EQ(*DecodeFirewallSession(wire::AsBytes(deltas[0].value)), lives);
  EXPECT_EQ(table_.stats().died_young, 2u);
  // Once released, it replicates like any other session.
  lives.orig_packets = 1;
  EXPECT_EQ(table_.UpsertFirewall(lives)->replication, Rep::kQueued);
}

TEST_F(SessionTableTest, AHeldSessionWhoseDeadlineComesBeforeItsPickupAgeIsNeverSent) {
  table_.SetPolicy(TableId::kFwSessions, SyncPolicy{.pickup_delay = seconds(5)});
  const FirewallSession short_lived = Session(1, kT0 + seconds(1));
  const FirewallSession long_lived = Session(2, kT0 + seconds(7));
  ASSERT_EQ(table_.UpsertFirewall(short_lived)->replication, Rep::kHeld);
  ASSERT_EQ(table_.UpsertFirewall(long_lived)->replication, Rep::kHeld);
  // One Tick past both the pickup age and the first deadline, and past the second deadline
  // too: the first died young (never sent); the second lived to its pickup age, so it is sent
  // and then expires (the two coalesce into one expire delta).
  EXPECT_EQ(table_.Tick(kT0 + seconds(8)), 1u);
  auto deltas = DrainAll(table_);
  ASSERT_EQ(deltas.size(), 1u);
  EXPECT_EQ(deltas[0].key, KeyOf(long_lived));
  EXPECT_EQ(deltas[0].kind, DeltaKind::kExpire);
  EXPECT_EQ(table_.stats().died_young, 1u);
  EXPECT_EQ(table_.size(TableId::kFwSessions), 0u);
}

TEST_F(SessionTableTest, ConnectionlessOffKeepsUdpAndIcmpLocal) {
  table_.SetPolicy(TableId::kFwSessions, SyncPolicy{.connectionless = false});
  FirewallSession udp = Session(7);  // every 8th workload session is UDP
  ASSERT_EQ(udp.orig.proto, kProtoUdp);
  FirewallSession icmp = Session(9);
  icmp.orig.proto = icmp.reply.proto = kProtoIcmp;
  const FirewallSession tcp = Session(1);
  EXPECT_EQ(table_.UpsertFirewall(udp)->replication, Rep::kLocalOnly);
  EXPECT_EQ(table_.UpsertFirewall(icmp)->replication, Rep::kLocalOnly);
  EXPECT_EQ(table_.UpsertFirewall(tcp)->replication, Rep::kQueued);
  EXPECT_TRUE(table_.GetFirewall(udp.orig, udp.zone).has_value()) << "kept, just not sent";
  EXPECT_EQ(table_.Delete(TableId::kFwSessions, KeyOf(udp))->replication, Rep::kLocalOnly);
  auto deltas = DrainAll(table_);
  ASSERT_EQ(deltas.size(), 1u);
  EXPECT_EQ(deltas[0].key, KeyOf(tcp));
}

TEST_F(SessionTableTest, ExpectationsOffKeepsExpectedSessionsLocal) {
  table_.SetPolicy(TableId::kFwSessions, SyncPolicy{.expectations = false});
  const FirewallSession control = Session(1);
  FirewallSession data = Session(2);
  data.expectation_parent = control.orig;
  EXPECT_EQ(table_.UpsertFirewall(control)->replication, Rep::kQueued);
  EXPECT_EQ(table_.UpsertFirewall(data)->replication, Rep::kLocalOnly);
  EXPECT_EQ(table_.GetFirewall(data.orig, data.zone)->expectation_parent, control.orig);
  EXPECT_EQ(DrainAll(table_).size(), 1u);

  table_.SetPolicy(TableId::kFwSessions, SyncPolicy{.expectations = true});
  FirewallSession data2 = Session(3);
  data2.expectation_parent = control.orig;
  EXPECT_EQ(table_.UpsertFirewall(data2)->replication, Rep::kQueued);
  auto deltas = DrainAll(table_);
  ASSERT_EQ(deltas.size(), 1u);
  EXPECT_EQ(DecodeFirewallSession(wire::AsBytes(deltas[0].value))->expectation_parent,
            control.orig);
}

TEST(SessionTableOverflow, AFullChangeLogRefusesNewEntriesChangesNothingAndRecovers) {
  SessionTable t(SessionTableOptions{.change_log_capacity = 4});
  t.Tick(kT0);
  for (std::uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(t.UpsertFirewall(Session(i)).ok());
  // A new key needs a new entry: refused, and the table is unchanged.
  auto refused = t.UpsertFirewall(Session(4));
  EXPECT_EQ(refused.status().code(), Status::Code::kResourceExhausted);
  EXPECT_FALSE(t.GetFirewall(Session(4).orig, 0).has_value());
  EXPECT_EQ(t.size(TableId::kFwSessions), 4u);
  EXPECT_EQ(t.last_position().seq, 4u);
  // Keys already pending still take changes: they coalesce.
  FirewallSession s1 = Session(1);
  s1.mark = 77;
  EXPECT_EQ(t.UpsertFirewall(s1)->position.seq, 2u);
  EXPECT_EQ(t.Delete(TableId::kFwSessions, KeyOf(Session(3)))->position.seq, 4u);
  // A batch stops at the first refusal and says how far it got.
  std::vector<FirewallSession> batch = {s1, Session(5), Session(6)};
  BatchResult r = t.UpsertFirewallBatch(batch);
  EXPECT_EQ(r.applied, 1u);
  EXPECT_EQ(r.status.code(), Status::Code::kResourceExhausted);
  EXPECT_EQ(t.stats().log_full_refusals, 2u);
  // Drained, the log takes new entries again with the next seq.
  EXPECT_EQ(DrainAll(t, 2).size(), 2u);
  EXPECT_EQ(t.UpsertFirewall(Session(4))->position.seq, 5u);
  r = t.UpsertFirewallBatch(std::span(batch).subspan(1));
  EXPECT_EQ(r.applied, 1u);
  EXPECT_EQ(r.last_queued.seq, 6u);
  auto rest = DrainAll(t);
  ASSERT_EQ(rest.size(), 4u);
  EXPECT_EQ(rest[0].position.seq, 3u);
  EXPECT_EQ(rest[1].kind, DeltaKind::kDelete);
  EXPECT_EQ(rest[3].position.seq, 6u);
}

TEST(SessionTableOverflow, ExpiryAndPickupWaitForRoomInTheLog) {
  SessionTable t(SessionTableOptions{.change_log_capacity = 2});
  t.Tick(kT0);
  ASSERT_TRUE(t.UpsertFirewall(Session(1, kT0 + seconds(1))).ok());
  ASSERT_TRUE(t.UpsertFirewall(Session(2, kT0 + seconds(1))).ok());
  DrainAll(t);
  ASSERT_TRUE(t.UpsertFirewall(Session(3)).ok());
  ASSERT_TRUE(t.UpsertFirewall(Session(4)).ok());  // the log is full
  EXPECT_EQ(t.Tick(kT0 + seconds(2)), 0u);
  EXPECT_EQ(t.size(TableId::kFwSessions), 4u) << "expiry deferred, not lost";
  EXPECT_EQ(DrainAll(t).size(), 2u);
  EXPECT_EQ(t.Tick(kT0 + seconds(2)), 2u);
  auto deltas = DrainAll(t);
  ASSERT_EQ(deltas.size(), 2u);
  EXPECT_EQ(deltas[0].kind, DeltaKind::kExpire);
  EXPECT_EQ(deltas[1].kind, DeltaKind::kExpire);
}

TEST(SessionTableRoles, AReadOnlyTableRefusesLocalWritesAndAppliesDeltasInOrder) {
  SessionTable replica(SessionTableOptions{.writable = false});
  replica.Tick(kT0);
  EXPECT_EQ(replica.UpsertFirewall(Session(1)).status().code(), Status::Code::kFailedPrecondition);
  const FirewallSession s = Session(1, kT0 + seconds(1));
  const std::string key = KeyOf(s);
  const std::string value = EncodeFirewallSession(s);
  DeltaView d{{1, 1}, TableId::kFwSessions, DeltaKind::kUpsert, key, value};
  ASSERT_TRUE(replica.Apply(d).ok());
  EXPECT_EQ(*replica.GetFirewall(s.orig, s.zone), s);
  // A gap or a replay is refused.
  d.position = {1, 3};
  EXPECT_EQ(replica.Apply(d).code(), Status::Code::kFailedPrecondition);
  d.position = {1, 1};
  EXPECT_EQ(replica.Apply(d).code(), Status::Code::kFailedPrecondition);
  // A subordinate does not expire on its own: the primary's expire delta does it.
  replica.Tick(kT0 + seconds(5));
  EXPECT_TRUE(replica.GetFirewall(s.orig, s.zone).has_value());
  // Promotion: a new epoch, seq carries on, and overdue sessions expire at the first Tick.
  EXPECT_EQ(replica.BecomeWritable(1).code(), Status::Code::kStaleEpoch);
  ASSERT_TRUE(replica.BecomeWritable(2).ok());
  EXPECT_EQ(replica.Tick(kT0 + seconds(5)), 1u);
  auto deltas = DrainAll(replica);
  ASSERT_EQ(deltas.size(), 1u);
  EXPECT_EQ(deltas[0].position, (Position{2, 2}));
  EXPECT_EQ(deltas[0].kind, DeltaKind::kExpire);
}

TEST(SessionTableRoles, APrimaryWithUndrainedDeltasCannotBecomeReadOnly) {
  SessionTable t;
  t.Tick(kT0);
  ASSERT_TRUE(t.UpsertFirewall(Session(1)).ok());
  EXPECT_EQ(t.BecomeReadOnly().code(), Status::Code::kFailedPrecondition);
  EXPECT_TRUE(t.writable());
  DrainAll(t);
  EXPECT_TRUE(t.BecomeReadOnly().ok());
  EXPECT_FALSE(t.writable());
}

TEST(SessionTableRoles, ABatchAppliesAsDeltaByDeltaAndStopsAtTheFirstThatDoesNotFollow) {
  SessionTable primary;
  primary.Tick(kT0);
  for (std::uint64_t i = 0; i < 300; ++i) {
    const FirewallSession s = i % 3 ? workload::Ipv4Session(i, kT0) : workload::Ipv6Session(i, kT0);
    ASSERT_TRUE(primary.UpsertFirewall(s).ok());
    ASSERT_TRUE(primary.Upsert(UserTable(3), "u" + std::to_string(i), std::to_string(i)).ok());
  }
  std::vector<Drained> first = DrainAll(primary);
  for (std::uint64_t i = 0; i < 300; i += 7) {
    const FirewallSession s = i % 3 ? workload::Ipv4Session(i, kT0) : workload::Ipv6Session(i, kT0);
    ASSERT_TRUE(primary.Delete(TableId::kFwSessions, KeyOf(s)).ok());
  }
  std::vector<Drained> second = DrainAll(primary);
  auto views = [](const std::vector<Drained>& ds) {
    std::vector<DeltaView> out;
    for (const Drained& d : ds) out.push_back({d.position, d.table, d.kind, d.key, d.value});
    return out;
  };
  SessionTable one_by_one(SessionTableOptions{.writable = false});
  for (const DeltaView& v : views(first)) ASSERT_TRUE(one_by_one.Apply(v).ok());
  for (const DeltaView& v : views(second)) ASSERT_TRUE(one_by_one.Apply(v).ok());
  SessionTable batched(SessionTableOptions{.writable = false});
  ASSERT_TRUE(batched.Apply(views(first)).ok());
  ASSERT_TRUE(batched.Apply(views(second)).ok());
  for (TableId t : {TableId::kFwSessions, UserTable(3)}) {
    EXPECT_EQ(batched.Digest(t), primary.Digest(t));
    EXPECT_EQ(batched.Digest(t), one_by_one.Digest(t));
  }
  EXPECT_EQ(batched.Digest(TableId::kFwSessions).records, 300u - 43u);
  EXPECT_EQ(batched.last_position(), primary.last_position());

  // A batch with a gap: what comes before the gap is applied, the rest is not.
  SessionTable gapped(SessionTableOptions{.writable = false});
  std::vector<DeltaView> with_gap = views(first);
  with_gap.erase(with_gap.begin() + 100);
  EXPECT_EQ(gapped.Apply(with_gap).code(), Status::Code::kFailedPrecondition);
  EXPECT_EQ(gapped.last_position(), with_gap[99].position);
  EXPECT_EQ(gapped.stats().applied, 100u);
}

TEST(SessionTableRecords, CallsCdrsIpv6AndUserTablesRoundTrip) {
  SessionTable t;
  t.Tick(kT0);
  const CallSession call = workload::Call(3, kT0);
  const Cdr cdr = workload::CallRecord(3, kT0);
  FirewallSession v6 = workload::Ipv6Session(5, kT0);
  v6.expectation_parent = workload::Ipv6Session(6, kT0).orig;
  ASSERT_TRUE(t.UpsertCall(call).ok());
  ASSERT_TRUE(t.UpsertCdr(cdr).ok());
  ASSERT_TRUE(t.UpsertFirewall(v6).ok());
  ASSERT_TRUE(t.Upsert(UserTable(1), "alice", std::string("\0\1binary", 8)).ok());
  EXPECT_EQ(*t.GetCall(call.call_id), call);
  EXPECT_EQ(*t.GetCdr(cdr.id), cdr);
  EXPECT_EQ(*t.GetFirewall(v6.orig, v6.zone), v6);
  EXPECT_EQ(*t.Get(UserTable(1), "alice"), std::string("\0\1binary", 8));
  EXPECT_EQ(t.total_size(), 4u);
  // A fw value whose key does not match, and garbage for a typed table, are refused.
  EXPECT_EQ(t.Upsert(TableId::kFwSessions, KeyOf(Session(1)), EncodeFirewallSession(Session(2)))
                .status()
                .code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(t.Upsert(TableId::kCalls, "x", "garbage").status().code(), Status::Code::kCorruption);
  FirewallSession mixed = Session(1);
  mixed.reply.family = L3Family::IPv6;
  EXPECT_EQ(t.UpsertFirewall(mixed).status().code(), Status::Code::kInvalidArgument);

  auto deltas = DrainAll(t);
  ASSERT_EQ(deltas.size(), 4u);
  EXPECT_EQ(deltas[0].table, TableId::kCalls);
  EXPECT_EQ(deltas[1].table, TableId::kCdrs);
  EXPECT_EQ(deltas[2].table, TableId::kFwSessions);
  EXPECT_EQ(deltas[2].key.size(), kFwKeyV6Bytes);
  EXPECT_EQ(deltas[3].table, UserTable(1));
}

TEST(SessionTableRecords, ScanVisitsLiveRecordsInAKeyRange) {
  SessionTable t;
  t.Tick(kT0);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(t.Upsert(UserTable(2), "k" + std::to_string(i), "v").ok());
  }
  ASSERT_TRUE(t.Delete(UserTable(2), "k5").ok());
  std::vector<std::string> keys;
  t.Scan(
      UserTable(2), [&](std::string_view k, std::string_view) { keys.emplace_back(k); }, "k3",
      "k7");
  std::sort(keys.begin(), keys.end());
  EXPECT_EQ(keys, (std::vector<std::string>{"k3", "k4", "k6"}));
  std::size_t fw = 0;
  ASSERT_TRUE(t.UpsertFirewall(Session(1)).ok());
  t.Scan(TableId::kFwSessions, [&](std::string_view k, std::string_view v) {
    ++fw;
    EXPECT_EQ(k, KeyOf(Session(1)));
    EXPECT_EQ(*DecodeFirewallSession(wire::AsBytes(v)), Session(1));
  });
  EXPECT_EQ(fw, 1u);
}

// The contract that matters for replication: the primary holds what a plain map says it should
// (inserts, updates, deletes, coalescing, expiry), and a replica that applies every drained delta
// holds exactly what the primary holds, whatever the drain sizes and however full the log gets.
TEST(SessionTableModel, PrimaryMatchesAReferenceModelAndAReplicaConvergesToIt) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    // Odd seeds run with a log that is often full, even seeds with a roomy one.
    constexpr std::uint64_t kFwKeys = 100;
    const bool small_log = seed % 2 == 1;
    const std::size_t capacity = small_log ? 128 : 4096;
    SessionTable primary(SessionTableOptions{.change_log_capacity = capacity});
    SessionTable replica(SessionTableOptions{.writable = false});
    std::map<std::string, std::string> model_fw;  // key -> encoded session
    std::map<std::string, TimePoint> deadline;
    std::map<std::string, std::string> model_user;
    std::size_t deferred = 0;
    TimePoint now = kT0;
    primary.Tick(now);
    auto drain_into_replica = [&](std::size_t max) {
      primary.Drain(max, [&](const DeltaView& d) {
        Status st = replica.Apply(d);
        ASSERT_TRUE(st.ok()) << st.ToString();
      });
    };
    for (int step = 0; step < 3000; ++step) {
      const std::uint64_t key = rng() % 200;
      const int op = static_cast<int>(rng() % 100);
      if (op < 50) {
        FirewallSession s = Session(key % kFwKeys, now + milliseconds(100 + rng() % 5000));
        s.orig_packets = rng();
        auto m = primary.UpsertFirewall(s);
        if (m.ok()) {
          model_fw[KeyOf(s)] = EncodeFirewallSession(s);
          deadline[KeyOf(s)] = s.expiry;
        } else {
          ASSERT_EQ(m.status().code(), Status::Code::kResourceExhausted);
        }
      } else if (op < 65) {
        const std::string k = KeyOf(Session(key % kFwKeys));
        auto m = primary.Delete(TableId::kFwSessions, k);
        if (m.ok()) {
          EXPECT_EQ(m->replication == Rep::kNotFound, model_fw.count(k) == 0) << "seed " << seed;
          model_fw.erase(k);
        } else {
          ASSERT_EQ(m.status().code(), Status::Code::kResourceExhausted);
        }
      } else if (op < 85) {
        const std::string k = "u" + std::to_string(key);
        const std::string v = std::to_string(rng());
        auto m = primary.Upsert(UserTable(3), k, v);
        if (m.ok()) model_user[k] = v;
      } else if (op < 88) {
        now += milliseconds(rng() % 1500);
        primary.Tick(now);
        for (auto it = model_fw.begin(); it != model_fw.end();) {
          if (deadline[it->first] > now) {
            ++it;
            continue;
          }
          Tuple orig;
          std::uint16_t zone = 0;
          ASSERT_TRUE(ParseFirewallKey(it->first, &orig, &zone).ok());
          if (primary.GetFirewall(orig, zone).has_value()) {
            // Due but still there: allowed only while a full log defers its expiry.
            ASSERT_EQ(primary.pending(), capacity) << "seed " << seed;
            ++deferred;
            ++it;
          } else {
            it = model_fw.erase(it);
          }
        }
      } else {
        drain_into_replica(rng() % (small_log ? 4 : 100));
        if (primary.pending() == 0) {
          // Whenever the replica is at the primary's position, the digests agree.
          ASSERT_EQ(primary.Digest(TableId::kFwSessions), replica.Digest(TableId::kFwSessions));
          ASSERT_EQ(primary.Digest(UserTable(3)), replica.Digest(UserTable(3)));
        }
      }
    }
    if (small_log) {
      EXPECT_GT(primary.stats().log_full_refusals, 0u) << "seed " << seed;
      EXPECT_GT(deferred, 0u) << "seed " << seed;
    }
    drain_into_replica(SIZE_MAX);
    ASSERT_EQ(replica.last_position(), primary.last_position()) << "seed " << seed;
    auto contents = [](const SessionTable& t, TableId table) {
      std::map<std::string, std::string> out;
      t.Scan(table, [&](std::string_view k, std::string_view v) { out.emplace(k, v); });
      return out;
    };
    ASSERT_EQ(contents(primary, TableId::kFwSessions), model_fw) << "seed " << seed;
    ASSERT_EQ(contents(primary, UserTable(3)), model_user) << "seed " << seed;
    ASSERT_EQ(contents(replica, TableId::kFwSessions), model_fw) << "seed " << seed;
    ASSERT_EQ(contents(replica, UserTable(3)), model_user) << "seed " << seed;
    // The digest is kept incrementally; a table loaded from scratch with the same records (in
    // another order) has the same one.
    SessionTable fresh(SessionTableOptions{.writable = false});
    for (auto it = model_fw.rbegin(); it != model_fw.rend(); ++it) {
      ASSERT_TRUE(fresh.Load(TableId::kFwSessions, it->first, it->second).ok());
    }
    for (const auto& [k, v] : model_user) ASSERT_TRUE(fresh.Load(UserTable(3), k, v).ok());
    for (TableId t : {TableId::kFwSessions, UserTable(3)}) {
      EXPECT_EQ(primary.Digest(t), replica.Digest(t)) << "seed " << seed;
      EXPECT_EQ(fresh.Digest(t), primary.Digest(t)) << "seed " << seed;
      EXPECT_EQ(fresh.Buckets(t), primary.Buckets(t)) << "seed " << seed;
    }
    EXPECT_EQ(primary.Digest(TableId::kFwSessions).records, model_fw.size());
  }
}

TEST(SessionTableDigest, FollowsTheReplicatedStateAndTheDrillDownFindsTheDifferingKeys) {
  SessionTable primary;
  SessionTable replica(SessionTableOptions{.writable = false});
  primary.Tick(kT0);
  for (std::uint64_t i = 0; i < 5000; ++i) ASSERT_TRUE(primary.UpsertFirewall(Session(i)).ok());
  // Not drained yet: not in the digest.
  EXPECT_EQ(primary.Digest(TableId::kFwSessions).records, 0u);
  primary.Drain(SIZE_MAX, [&](const DeltaView& d) { ASSERT_TRUE(replica.Apply(d).ok()); });
  EXPECT_EQ(primary.Digest(TableId::kFwSessions).records, 5000u);
  EXPECT_EQ(primary.Digest(TableId::kFwSessions), replica.Digest(TableId::kFwSessions));

  // A third node that missed one update and holds one record too many.
  SessionTable other(SessionTableOptions{.writable = false});
  primary.Scan(TableId::kFwSessions, [&](std::string_view k, std::string_view v) {
    ASSERT_TRUE(other.Load(TableId::kFwSessions, k, v).ok());
  });
  FirewallSession changed = Session(77);
  changed.orig_packets = 12345;
  ASSERT_TRUE(primary.UpsertFirewall(changed).ok());
  primary.Drain(SIZE_MAX, [&](const DeltaView& d) { ASSERT_TRUE(replica.Apply(d).ok()); });
  const FirewallSession extra = Session(999'999);
  ASSERT_TRUE(other.Load(TableId::kFwSessions, KeyOf(extra), EncodeFirewallSession(extra)).ok());
  EXPECT_NE(primary.Digest(TableId::kFwSessions), other.Digest(TableId::kFwSessions));

  std::map<std::string, std::uint64_t> mine, theirs;
  const DigestBuckets a = primary.Buckets(TableId::kFwSessions);
  const DigestBuckets b = other.Buckets(TableId::kFwSessions);
  int differing_buckets = 0;
  for (std::size_t i = 0; i < kDigestBuckets; ++i) {
    if (a[i] == b[i]) continue;
    ++differing_buckets;
    primary.ScanBucket(TableId::kFwSessions, i,
                       [&](std::string_view k, std::uint64_t h) { mine.emplace(k, h); });
    other.ScanBucket(TableId::kFwSessions, i,
                     [&](std::string_view k, std::uint64_t h) { theirs.emplace(k, h); });
  }
  EXPECT_LE(differing_buckets, 2);
  std::set<std::string> differing;
  for (const auto& [k, h] : mine) {
    auto it = theirs.find(k);
    if (it == theirs.end() || it->second != h) differing.insert(k);
  }
  for (const auto& [k, h] : theirs) {
    if (!mine.count(k)) differing.insert(k);
  }
  EXPECT_EQ(differing, (std::set<std::string>{KeyOf(changed), KeyOf(extra)}));

  // Deletes and expiries leave the digest once drained or applied.
  ASSERT_TRUE(primary.Delete(TableId::kFwSessions, KeyOf(changed)).ok());
  primary.Tick(kT0 + seconds(301));  // every session expires
  primary.Drain(SIZE_MAX, [&](const DeltaView& d) { ASSERT_TRUE(replica.Apply(d).ok()); });
  EXPECT_EQ(primary.Digest(TableId::kFwSessions), TableDigest{});
  EXPECT_EQ(replica.Digest(TableId::kFwSessions), TableDigest{});
}

// A promoted replica re-encodes records from its own slots when it sends them on; the bytes
// must be those it received, or the digest of a node it feeds would differ for the same data.
TEST(SessionTableDigest, APromotedReplicaReencodesTheBytesItReceived) {
  SessionTable primary;
  SessionTable replica(SessionTableOptions{.writable = false});
  primary.Tick(kT0);
  for (std::uint64_t i = 0; i < 1000; ++i) {
    auto make = [](std::uint64_t n) { return n % 2 ? workload::Ipv6Session(n, kT0) : Session(n); };
    FirewallSession s = make(i);
    if (i % 7 == 0) s.expectation_parent = make(i + 2).orig;
    ASSERT_TRUE(primary.UpsertFirewall(s).ok());
  }
  primary.Drain(SIZE_MAX, [&](const DeltaView& d) { ASSERT_TRUE(replica.Apply(d).ok()); });
  const TableDigest before = replica.Digest(TableId::kFwSessions);
  ASSERT_TRUE(replica.BecomeWritable(2).ok());
  replica.Tick(kT0);
  std::vector<FirewallSession> all;
  replica.Scan(TableId::kFwSessions, [&](std::string_view, std::string_view v) {
    all.push_back(*DecodeFirewallSession(wire::AsBytes(v)));
  });
  for (const auto& s : all) ASSERT_TRUE(replica.UpsertFirewall(s).ok());
  EXPECT_EQ(replica.Drain(SIZE_MAX, [](const DeltaView&) {}), 1000u);
  EXPECT_EQ(replica.Digest(TableId::kFwSessions), before);
}

}  // namespace
}  // namespace statesync
