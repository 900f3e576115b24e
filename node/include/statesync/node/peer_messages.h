// PeerMessages: the failover core's messages (Heartbeat, Control, VoteRequest, Vote) on the wire,
// both ways: a wire.fbs Envelope inside a codec frame (docs/wire-protocol.md). Decoding runs the
// codec's checks (frame, checksum, Verifier, version, cluster) and then the core's: an enum value
// out of range, a sender without a name, a message of another kind are refused with the reason.
//
// Thread-safety: stateless functions.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "statesync/common/status.h"
#include "statesync/failover/types.h"

namespace statesync::node {

// `link` goes into a Heartbeat (a receiver checks it against the link it arrived on).
std::string EncodePeerMessage(std::uint64_t cluster_id, const failover::NodeId& sender,
                              failover::LinkIndex link, const failover::Message& message);

struct PeerMessage {
  failover::NodeId from;
  failover::Message message;
  std::optional<failover::LinkIndex> link;  // a Heartbeat's: the link it was sent on
};
Result<PeerMessage> DecodePeerMessage(std::span<const std::uint8_t> frame,
                                      std::uint64_t cluster_id);

}  // namespace statesync::node
