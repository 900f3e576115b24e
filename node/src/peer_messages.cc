#include "statesync/node/peer_messages.h"

#include <algorithm>

#include "statesync/schemas/codec.h"

namespace statesync::node {
namespace {

namespace fb = statesync::fb;
using failover::ConfiguredRole;
using failover::ControlKind;
using failover::EffectiveRole;

fb::Role ToWire(EffectiveRole r) {
  switch (r) {
    case EffectiveRole::kOff:
      return fb::Role::Off;
    case EffectiveRole::kPrimary:
      return fb::Role::Primary;
    case EffectiveRole::kSecondary:
      return fb::Role::Secondary;
    case EffectiveRole::kHoldOff:
      return fb::Role::HoldOff;
    case EffectiveRole::kFailed:
      return fb::Role::Failed;
    case EffectiveRole::kWitness:
      return fb::Role::Witness;
  }
  return fb::Role::Off;
}
fb::Role ToWire(ConfiguredRole r) {
  switch (r) {
    case ConfiguredRole::kPrimary:
      return fb::Role::Primary;
    case ConfiguredRole::kSecondary:
      return fb::Role::Secondary;
    case ConfiguredRole::kWitness:
      return fb::Role::Witness;
  }
  return fb::Role::Secondary;
}
fb::ControlCommand ToWire(ControlKind k) {
  switch (k) {
    case ControlKind::kHoldOff:
      return fb::ControlCommand::HoldOff;
    case ControlKind::kRelease:
      return fb::ControlCommand::Release;
    case ControlKind::kFailRequest:
      return fb::ControlCommand::FailRequest;
    case ControlKind::kSwitchRequest:
      return fb::ControlCommand::RoleSwitch;
    case ControlKind::kTakeOver:
      return fb::ControlCommand::TakeOver;
  }
  return fb::ControlCommand::Release;
}

// The Verifier checks offsets and sizes, not enum values: a hostile sender can put any byte there.
Result<EffectiveRole> EffectiveFromWire(fb::Role r) {
  switch (r) {
    case fb::Role::Off:
      return EffectiveRole::kOff;
    case fb::Role::Primary:
      return EffectiveRole::kPrimary;
    case fb::Role::Secondary:
      return EffectiveRole::kSecondary;
    case fb::Role::HoldOff:
      return EffectiveRole::kHoldOff;
    case fb::Role::Failed:
      return EffectiveRole::kFailed;
    case fb::Role::Witness:
      return EffectiveRole::kWitness;
  }
  return Status::InvalidArgument("a heartbeat's effective role " +
                                 std::to_string(static_cast<int>(r)) + " is not a role");
}
Result<ConfiguredRole> ConfiguredFromWire(fb::Role r) {
  switch (r) {
    case fb::Role::Primary:
      return ConfiguredRole::kPrimary;
    case fb::Role::Secondary:
      return ConfiguredRole::kSecondary;
    case fb::Role::Witness:
      return ConfiguredRole::kWitness;
    default:
      break;
  }
  return Status::InvalidArgument("a heartbeat's configured role " +
                                 std::to_string(static_cast<int>(r)) +
                                 " is not primary, secondary or witness");
}
Result<ControlKind> KindFromWire(fb::ControlCommand c) {
  switch (c) {
    case fb::ControlCommand::HoldOff:
      return ControlKind::kHoldOff;
    case fb::ControlCommand::Release:
      return ControlKind::kRelease;
    case fb::ControlCommand::FailRequest:
      return ControlKind::kFailRequest;
    case fb::ControlCommand::RoleSwitch:
      return ControlKind::kSwitchRequest;
    case fb::ControlCommand::TakeOver:
      return ControlKind::kTakeOver;
  }
  return Status::InvalidArgument("a control command " + std::to_string(static_cast<int>(c)) +
                                 " is not one of HoldOff, Release, FailRequest, RoleSwitch, "
                                 "TakeOver");
}

std::string_view Str(const flatbuffers::String* s) {
  return s ? s->string_view() : "";
}
// An unsigned count of milliseconds from the wire, at most a century: a huge value must not turn
// into a negative duration (or overflow the ranking's arithmetic).
failover::Millis ClampedMillis(std::uint64_t ms) {
  constexpr std::uint64_t kCentury = 100ull * 365 * 24 * 3600 * 1000;
  return failover::Millis(static_cast<std::int64_t>(std::min(ms, kCentury)));
}
Position FromWire(const fb::Position* p) {
  return p ? Position{p->epoch(), p->seq()} : Position{};
}

}  // namespace

std::string EncodePeerMessage(std::uint64_t cluster_id, const failover::NodeId& sender,
                              failover::LinkIndex link, const failover::Message& message) {
  flatbuffers::FlatBufferBuilder b(256);
  const auto from = b.CreateString(sender);
  fb::Body type = fb::Body::NONE;
  flatbuffers::Offset<void> body;
  Epoch epoch = 0;
  std::visit(
      [&](const auto& m) {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, failover::Heartbeat>) {
          type = fb::Body::Heartbeat;
          epoch = m.epoch;
          body =
              fb::CreateHeartbeatDirect(
                  b, sender.c_str(), m.epoch, m.applied.seq, ToWire(m.configured), ToWire(m.role),
                  m.priority, /*override_enabled=*/false, /*links_up=*/0,
                  static_cast<std::uint16_t>(m.monitors_up),
                  static_cast<std::uint64_t>(m.uptime.count()), m.serial.c_str(), link,
                  /*sent_ms=*/0, m.sequence, m.slot, m.applied.epoch, m.ready, m.following.c_str())
                  .Union();
        } else if constexpr (std::is_same_v<M, failover::Control>) {
          type = fb::Body::Control;
          epoch = m.epoch;
          const fb::Position final_position(m.final_position.epoch, m.final_position.seq);
          body = fb::CreateControlDirect(b, ToWire(m.kind),
                                         static_cast<std::uint64_t>(m.holdoff.count()),
                                         fb::Role::Off, m.reason.c_str(), m.epoch, &final_position)
                     .Union();
        } else if constexpr (std::is_same_v<M, failover::VoteRequest>) {
          type = fb::Body::VoteRequest;
          epoch = m.epoch;
          const fb::Position applied(m.applied.epoch, m.applied.seq);
          body = fb::CreateVoteRequest(b, m.epoch, &applied).Union();
        } else {
          static_assert(std::is_same_v<M, failover::Vote>);
          type = fb::Body::Vote;
          epoch = m.epoch;
          body = fb::CreateVoteDirect(b, m.epoch, m.granted, m.why_not.c_str()).Union();
        }
      },
      message);
  fb::EnvelopeBuilder e(b);
  e.add_schema_version(wire::kSchemaVersion);
  e.add_cluster_id(cluster_id);
  e.add_sender(from);
  e.add_body_type(type);
  e.add_body(body);
  e.add_epoch(epoch);
  fb::FinishEnvelopeBuffer(b, e.Finish());
  return wire::Frame(b);
}

Result<PeerMessage> DecodePeerMessage(std::span<const std::uint8_t> frame,
                                      std::uint64_t cluster_id) {
  const wire::Decoded d = wire::Decode(frame, cluster_id);
  if (!d.ok()) {
    return Status::InvalidArgument(std::string(wire::DecodeErrorName(d.error)) + ": " + d.reason);
  }
  const fb::Envelope& e = *d.envelope;
  PeerMessage out;
  out.from = std::string(Str(e.sender()));
  if (out.from.empty()) return Status::InvalidArgument("a peer message without a sender");
  switch (e.body_type()) {
    case fb::Body::Heartbeat: {
      const fb::Heartbeat& m = *e.body_as_Heartbeat();
      failover::Heartbeat hb;
      auto role = EffectiveFromWire(m.effective_role());
      if (!role.ok()) return role.status();
      auto configured = ConfiguredFromWire(m.configured_role());
      if (!configured.ok()) return configured.status();
      hb.sequence = m.sequence();
      hb.slot = m.slot();
      hb.epoch = m.epoch();
      hb.role = *role;
      hb.configured = *configured;
      hb.applied = {m.applied_epoch(), m.applied_seq()};
      hb.monitors_up = m.monitors_up();
      hb.priority = m.priority();
      hb.uptime = ClampedMillis(m.uptime_ms());
      hb.serial = std::string(Str(m.serial()));
      hb.ready = m.ready();
      hb.following = std::string(Str(m.following()));
      out.message = std::move(hb);
      out.link = m.link_id();
      return out;
    }
    case fb::Body::Control: {
      const fb::Control& m = *e.body_as_Control();
      auto kind = KindFromWire(m.command());
      if (!kind.ok()) return kind.status();
      failover::Control c;
      c.kind = *kind;
      c.epoch = m.epoch();
      c.holdoff = ClampedMillis(m.holdoff_ms());
      c.reason = std::string(Str(m.reason()));
      c.final_position = FromWire(m.final_position());
      out.message = std::move(c);
      return out;
    }
    case fb::Body::VoteRequest: {
      const fb::VoteRequest& m = *e.body_as_VoteRequest();
      out.message = failover::VoteRequest{m.epoch(), FromWire(m.applied())};
      return out;
    }
    case fb::Body::Vote: {
      const fb::Vote& m = *e.body_as_Vote();
      out.message = failover::Vote{m.epoch(), m.granted(), std::string(Str(m.why_not()))};
      return out;
    }
    default:
      return Status::InvalidArgument("a " + std::string(fb::EnumNameBody(e.body_type())) +
                                     " is not a message between failover cores");
  }
}

}  // namespace statesync::node
