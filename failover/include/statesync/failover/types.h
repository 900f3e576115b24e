// The failover core's vocabulary: roles, cluster configuration, the messages nodes exchange, the
// facts an adapter feeds in and the actions the core hands back.
//
// Time is a value: an Instant is milliseconds since an origin the adapter chooses (a monotonic
// clock in the daemon, the simulated clock in tests). The core never reads a clock.
//
// Thread-safety: plain values.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "statesync/common/status.h"
#include "statesync/sessiontable/types.h"

namespace statesync::failover {

using Millis = std::chrono::milliseconds;
using Instant = std::chrono::milliseconds;  // since the adapter's origin
using NodeId = std::string;
using LinkIndex = std::uint16_t;  // index into ClusterConfig::links

// Epochs are numbered so that two nodes can never take the same one, even when they promote at
// the same moment on two sides of a cut link: a node takes only epochs whose remainder modulo
// kEpochSlots is its own slot. Replication names a history by (epoch, seq), so two primaries in
// one epoch would make two different histories look alike.
inline constexpr std::uint64_t kEpochSlots = 64;
// The first epoch above `highest_seen` that belongs to `slot`.
// Example: highest_seen 130 (round 2, slot 2), slot 5 -> round 3 -> 3 * 64 + 5 = 197.
inline Epoch NextEpochFor(Epoch highest_seen, std::uint32_t slot) {
  return (highest_seen / kEpochSlots + 1) * kEpochSlots + slot;
}

enum class ConfiguredRole : std::uint8_t { kPrimary, kSecondary, kWitness };
// kWitness is the only effective role of a configured witness, and never of a data node.
enum class EffectiveRole : std::uint8_t { kOff, kPrimary, kSecondary, kHoldOff, kFailed, kWitness };
// What a primary that failed (crashed, lost power, was shut down without a hold-off) does when it
// comes back.
enum class OnFailure : std::uint8_t {
  kSwitchOff,        // stays off until an operator acts
  kRestoreRole,      // rejoins as secondary, catches up, then takes the primary role back
  kBecomeSecondary,  // rejoins as secondary and stays there
};

// "PRIMARY", "SECONDARY", "HOLD_OFF", "FAILED", "OFF", "WITNESS": the words alerts quote.
std::string_view RoleName(EffectiveRole role);
std::string_view ConfiguredRoleName(ConfiguredRole role);  // "primary", "secondary", "witness"
std::string_view OnFailureName(
    OnFailure policy);  // "switch_off", "restore_role", "become_secondary"
Result<ConfiguredRole> ParseConfiguredRole(std::string_view text);
Result<OnFailure> ParseOnFailure(std::string_view text);

struct Member {
  NodeId id;
  ConfiguredRole role = ConfiguredRole::kSecondary;
  std::uint16_t priority = 100;
  std::string serial;  // the last tie-breaker of the ranking: the higher serial wins
};

struct ClusterConfig {
  NodeId self;
  // Every node including self and witnesses, in the same order on every node: the index is the
  // node's slot, which makes its epochs its own (heartbeats carry it; a mismatch is ignored).
  std::vector<Member> members;
  std::vector<std::string> links;  // heartbeat links, e.g. {"ha1", "ha2"}
  Millis heartbeat_interval{100};
  int lost_threshold = 3;         // heartbeats missed on every link before a peer counts as lost
  bool override_enabled = false;  // priority outranks freshness and uptime; a higher-priority
                                  // former primary preempts after preempt_delay
  OnFailure on_failure = OnFailure::kBecomeSecondary;
  Millis holdoff_max{300'000};
  Millis uptime_margin{300'000};  // uptimes closer than this count as equal
  Millis preempt_delay{30'000};
  int flap_max_changes = 4;  // voluntary role changes (preempt, restore) allowed per flap_window
  Millis flap_window{60'000};
  // A step of the clock beyond this (or backwards) is a jump: observed, not acted on. Below
  // LostAfter(), so that a stall long enough to lose every peer is always seen as one.
  Millis max_tick_gap{200};

  Millis LostAfter() const { return heartbeat_interval * lost_threshold; }
  // Promotion needs a majority of the members once there are three or more.
  bool QuorumRequired() const { return members.size() >= 3; }
  // Checks the configuration; the message names the key and the reason.
  Status Validate() const;
};

// What the adapter keeps on disk for the core and hands back at start.
struct DurableState {
  Epoch epoch = 0;  // the node's epoch: the newest it has taken or followed
  EffectiveRole role = EffectiveRole::kOff;  // the role when the node last ran
  bool planned_stop = false;      // it stopped through PlannedRestart (peers were told to hold off)
  std::uint64_t voted_round = 0;  // the election round (epoch / kEpochSlots) of its last vote
  NodeId voted_for;
  std::uint64_t boots = 0;  // how many times the core started; orders heartbeats across restarts
  // The epoch this node's next promotion without a vote will take, made durable ahead of it: a
  // node never takes an epoch at or below it after a restart (a power loss included), so that
  // promotion need not wait for the disk (FailoverCore::Persist).
  Epoch reserved_epoch = 0;
  bool operator==(const DurableState&) const = default;
};

// ---- Messages between nodes (the adapter maps them onto wire.fbs) ----

struct Heartbeat {
  std::uint64_t sequence = 0;  // (boots << 32) + count: a receiver drops older ones (reordering)
  std::uint32_t slot = 0;      // the sender's index in members: all nodes must agree
  Epoch epoch = 0;
  EffectiveRole role = EffectiveRole::kOff;
  ConfiguredRole configured = ConfiguredRole::kSecondary;
  Position applied;     // replication freshness
  int monitors_up = 0;  // monitored links and services that are up
  std::uint16_t priority = 100;
  Millis uptime{0};
  std::string serial;
  bool ready = false;  // a primary whose state is applied and that serves
  NodeId following;    // the primary it hears (itself for a primary), empty if none
};

enum class ControlKind : std::uint8_t {
  kHoldOff,        // primary -> peers: a planned restart, do not take over for `holdoff`
  kRelease,        // primary -> peers: back again, resume monitoring
  kFailRequest,    // secondary -> primary: its services fail from here, go to FAILED
  kSwitchRequest,  // secondary -> primary: hand the primary role to me
  kTakeOver,       // primary -> secondary: I stepped down, take over from `final_position`
};
struct Control {
  ControlKind kind = ControlKind::kRelease;
  Epoch epoch = 0;  // the sender's epoch: a control from another epoch is stale and ignored
  Millis holdoff{0};
  std::string reason;
  Position final_position;  // kTakeOver: the last position the old primary wrote
};

struct VoteRequest {
  Epoch epoch = 0;  // the epoch the candidate will take
  Position applied;
};
struct Vote {
  Epoch epoch = 0;
  bool granted = false;
  std::string why_not;
};

using Message = std::variant<Heartbeat, Control, VoteRequest, Vote>;

// ---- Facts fed in by adapters ----

enum class ServiceState : std::uint8_t { kOk, kFailed, kDisabled };
std::string_view ServiceStateName(ServiceState state);  // "OK", "FAILED", "DISABLED"
struct ServiceCheck {
  std::string name;  // "SIP_UDP", "HTTP", ...
  ServiceState state = ServiceState::kOk;
};

enum class OperatorCommand : std::uint8_t {
  kRestoreRole,     // return to the configured role (coordinated with the current primary)
  kSetPrimary,      // take the primary role (from the current primary if there is one)
  kSetSecondary,    // leave the primary role to the best secondary
  kSetOff,          // stop taking part until the next command
  kPlannedRestart,  // a primary tells its peers to hold off, then the node stops
  kShutdown,        // the node stops; peers see it disappear
};

// ---- Actions handed back to the adapters, to be carried out in order ----

struct SendMessage {
  NodeId to;                      // a member id
  std::optional<LinkIndex> link;  // absent: on every link (receivers tolerate duplicates)
  Message message;
};
struct PersistState {  // write before carrying out the actions that follow
  DurableState state;
  // false: in the file is enough before going on (it survives a crash of the process); what a
  // power loss must keep of it is on the disk already (a reserved epoch). Sync it soon, off the
  // critical path. true: on the disk before going on.
  bool sync = true;
};
struct RoleChange {
  EffectiveRole from = EffectiveRole::kOff;
  EffectiveRole to = EffectiveRole::kOff;
  Epoch epoch = 0;
  std::string reason;
  std::string AlertText() const;  // "<reason>\nthe state changed from 'SECONDARY' to 'PRIMARY'"
};
struct Alert {
  std::string text;
};
// The node was promoted: apply everything received up to `up_to`, then report StateApplied.
struct AwaitState {
  Position up_to;
};
struct ClaimService {  // ready: claim the service address and run the takeover hook
  Epoch epoch = 0;
};
struct ReleaseService {};  // stop accepting writes, let the address go
struct Follow {            // replicate from this primary (empty: from nobody)
  NodeId primary;
};
// The writes this node made in `epoch` after the fork point are divergent: quarantine them
// when it rejoins the winner's history.
struct Quarantine {
  Epoch epoch = 0;
};

using Action = std::variant<SendMessage, PersistState, RoleChange, Alert, AwaitState, ClaimService,
                            ReleaseService, Follow, Quarantine>;
using Actions = std::vector<Action>;

}  // namespace statesync::failover
