#include "statesync/node/peer_messages.h"

#include <gtest/gtest.h>

#include "statesync/schemas/codec.h"

namespace statesync::node {
namespace {

namespace fb = statesync::fb;
using failover::ConfiguredRole;
using failover::ControlKind;
using failover::EffectiveRole;
using failover::Millis;

constexpr std::uint64_t kCluster = 0xC1u;

PeerMessage RoundTrip(const failover::Message& m, failover::LinkIndex link = 0) {
  const std::string frame = EncodePeerMessage(kCluster, "node-a", link, m);
  auto back = DecodePeerMessage(wire::AsBytes(frame), kCluster);
  EXPECT_TRUE(back.ok()) << back.status().ToString();
  return back.ok() ? *back : PeerMessage{};
}

// A frame built by hand, as a hostile or foreign sender could: `body` makes the message.
template <typename Body>
std::string HandMadeFrame(fb::Body type, Body&& body) {
  flatbuffers::FlatBufferBuilder b;
  auto sender = b.CreateString("node-x");
  auto offset = body(b);
  fb::EnvelopeBuilder e(b);
  e.add_schema_version(wire::kSchemaVersion);
  e.add_cluster_id(kCluster);
  e.add_sender(sender);
  e.add_body_type(type);
  e.add_body(offset);
  fb::FinishEnvelopeBuffer(b, e.Finish());
  return wire::Frame(b);
}

TEST(PeerMessages, AHeartbeatCarriesEverythingTheRankingNeeds) {
  failover::Heartbeat hb;
  hb.sequence = (4ull << 32) + 99;
  hb.slot = 3;
  hb.epoch = 195;
  hb.role = EffectiveRole::kHoldOff;
  hb.configured = ConfiguredRole::kSecondary;
  hb.applied = {131, 123'456'789};
  hb.monitors_up = 2;
  hb.priority = 250;
  hb.uptime = Millis(86'400'123);
  hb.serial = "FGT-0042";
  hb.ready = true;
  hb.following = "node-c";
  const PeerMessage got = RoundTrip(hb, 1);
  EXPECT_EQ(got.from, "node-a");
  ASSERT_TRUE(got.link.has_value());
  EXPECT_EQ(*got.link, 1);
  const auto* back = std::get_if<failover::Heartbeat>(&got.message);
  ASSERT_NE(back, nullptr);
  EXPECT_EQ(back->sequence, hb.sequence);
  EXPECT_EQ(back->slot, hb.slot);
  EXPECT_EQ(back->epoch, hb.epoch);
  EXPECT_EQ(back->role, hb.role);
  EXPECT_EQ(back->configured, hb.configured);
  EXPECT_EQ(back->applied, hb.applied);
  EXPECT_EQ(back->monitors_up, hb.monitors_up);
  EXPECT_EQ(back->priority, hb.priority);
  EXPECT_EQ(back->uptime, hb.uptime);
  EXPECT_EQ(back->serial, hb.serial);
  EXPECT_EQ(back->ready, hb.ready);
  EXPECT_EQ(back->following, hb.following);
}

TEST(PeerMessages, EveryControlVoteAndVoteRequestRoundTrips) {
  for (ControlKind kind : {ControlKind::kHoldOff, ControlKind::kRelease, ControlKind::kFailRequest,
                           ControlKind::kSwitchRequest, ControlKind::kTakeOver}) {
    failover::Control c;
    c.kind = kind;
    c.epoch = 67;
    c.holdoff = Millis(300'000);
    c.reason = "planned restart";
    c.final_position = {67, 5000};
    const PeerMessage got = RoundTrip(c);
    const auto* back = std::get_if<failover::Control>(&got.message);
    ASSERT_NE(back, nullptr);
    EXPECT_EQ(back->kind, kind);
    EXPECT_EQ(back->epoch, 67u);
    EXPECT_EQ(back->holdoff, Millis(300'000));
    EXPECT_EQ(back->reason, "planned restart");
    EXPECT_EQ(back->final_position, (Position{67, 5000}));
  }
  const PeerMessage asked = RoundTrip(failover::VoteRequest{130, {66, 42}});
  const auto* request = std::get_if<failover::VoteRequest>(&asked.message);
  ASSERT_NE(request, nullptr);
  EXPECT_EQ(request->epoch, 130u);
  EXPECT_EQ(request->applied, (Position{66, 42}));
  for (bool granted : {true, false}) {
    const PeerMessage answer =
        RoundTrip(failover::Vote{130, granted, granted ? "" : "voted for node-b"});
    const auto* vote = std::get_if<failover::Vote>(&answer.message);
    ASSERT_NE(vote, nullptr);
    EXPECT_EQ(vote->epoch, 130u);
    EXPECT_EQ(vote->granted, granted);
    EXPECT_EQ(vote->why_not, granted ? "" : "voted for node-b");
  }
}

// A frame the codec accepts may still hold an enum value no role has: refused, with the reason.
TEST(PeerMessages, ARoleOrCommandOutOfRangeIsRefused) {
  auto frame_with = [](fb::Role effective, fb::Role configured) {
    return HandMadeFrame(fb::Body::Heartbeat, [&](auto& b) {
      return fb::CreateHeartbeatDirect(b, "node-x", 1, 1, configured, effective).Union();
    });
  };
  auto bad = DecodePeerMessage(
      wire::AsBytes(frame_with(static_cast<fb::Role>(77), fb::Role::Secondary)), kCluster);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("effective role 77 is not a role"), std::string::npos)
      << bad.status().message();
  bad =
      DecodePeerMessage(wire::AsBytes(frame_with(fb::Role::Primary, fb::Role::HoldOff)), kCluster);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("configured role 3 is not primary, secondary or witness"),
            std::string::npos)
      << bad.status().message();
  EXPECT_TRUE(
      DecodePeerMessage(wire::AsBytes(frame_with(fb::Role::Primary, fb::Role::Primary)), kCluster)
          .ok());
  bad = DecodePeerMessage(
      wire::AsBytes(HandMadeFrame(
          fb::Body::Control,
          [](auto& b) {
            return fb::CreateControlDirect(b, static_cast<fb::ControlCommand>(9)).Union();
          })),
      kCluster);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("a control command 9 is not one of"), std::string::npos)
      << bad.status().message();
}

TEST(PeerMessages, AnotherClusterOrADamagedFrameOrAReplicationMessageIsRefused) {
  const std::string frame = EncodePeerMessage(kCluster, "node-a", 0, failover::Vote{1, true, ""});
  auto other = DecodePeerMessage(wire::AsBytes(frame), kCluster + 1);
  ASSERT_FALSE(other.ok());
  EXPECT_NE(other.status().message().find("wrong_cluster"), std::string::npos)
      << other.status().message();
  std::string damaged = frame;
  damaged[damaged.size() - 3] ^= 0x10;
  auto bad = DecodePeerMessage(wire::AsBytes(damaged), kCluster);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("checksum_mismatch"), std::string::npos)
      << bad.status().message();
  // A replication message on a heartbeat link.
  auto fork = DecodePeerMessage(
      wire::AsBytes(HandMadeFrame(fb::Body::Fork,
                                  [](auto& b) { return fb::CreateForkDirect(b, "rid").Union(); })),
      kCluster);
  ASSERT_FALSE(fork.ok());
  EXPECT_NE(fork.status().message().find("a Fork is not a message between failover cores"),
            std::string::npos)
      << fork.status().message();
}

}  // namespace
}  // namespace statesync::node
