#include "statesync/failover/types.h"

#include <set>
#include <string>

namespace statesync::failover {

std::string_view ServiceStateName(ServiceState state) {
  switch (state) {
    case ServiceState::kOk:
      return "OK";
    case ServiceState::kFailed:
      return "FAILED";
    case ServiceState::kDisabled:
      return "DISABLED";
  }
  return "UNKNOWN";
}

std::string_view RoleName(EffectiveRole role) {
  switch (role) {
    case EffectiveRole::kOff:
      return "OFF";
    case EffectiveRole::kPrimary:
      return "PRIMARY";
    case EffectiveRole::kSecondary:
      return "SECONDARY";
    case EffectiveRole::kHoldOff:
      return "HOLD_OFF";
    case EffectiveRole::kFailed:
      return "FAILED";
    case EffectiveRole::kWitness:
      return "WITNESS";
  }
  return "UNKNOWN";
}

std::string_view ConfiguredRoleName(ConfiguredRole role) {
  switch (role) {
    case ConfiguredRole::kPrimary:
      return "primary";
    case ConfiguredRole::kSecondary:
      return "secondary";
    case ConfiguredRole::kWitness:
      return "witness";
  }
  return "unknown";
}

std::string_view OnFailureName(OnFailure policy) {
  switch (policy) {
    case OnFailure::kSwitchOff:
      return "switch_off";
    case OnFailure::kRestoreRole:
      return "restore_role";
    case OnFailure::kBecomeSecondary:
      return "become_secondary";
  }
  return "unknown";
}

Result<ConfiguredRole> ParseConfiguredRole(std::string_view text) {
  for (ConfiguredRole r :
       {ConfiguredRole::kPrimary, ConfiguredRole::kSecondary, ConfiguredRole::kWitness}) {
    if (text == ConfiguredRoleName(r)) return r;
  }
  return Status::InvalidArgument("role: '" + std::string(text) +
                                 "' is not one of primary, secondary, witness");
}

Result<OnFailure> ParseOnFailure(std::string_view text) {
  for (OnFailure p :
       {OnFailure::kSwitchOff, OnFailure::kRestoreRole, OnFailure::kBecomeSecondary}) {
    if (text == OnFailureName(p)) return p;
  }
  return Status::InvalidArgument("on_failure: '" + std::string(text) +
                                 "' is not one of switch_off, restore_role, become_secondary");
}

Status ClusterConfig::Validate() const {
  if (members.empty()) return Status::InvalidArgument("members: the cluster has no members");
  if (members.size() > kEpochSlots) {
    return Status::InvalidArgument("members: at most " + std::to_string(kEpochSlots) +
                                   " members, got " + std::to_string(members.size()));
  }
  std::set<NodeId> ids;
  bool self_found = false;
  std::size_t data_nodes = 0;
  for (const Member& m : members) {
    if (m.id.empty()) return Status::InvalidArgument("members: a member has an empty id");
    if (!ids.insert(m.id).second) {
      return Status::InvalidArgument("members: the id '" + m.id + "' appears twice");
    }
    self_found |= m.id == self;
    if (m.role != ConfiguredRole::kWitness) ++data_nodes;
  }
  if (!self_found) {
    return Status::InvalidArgument("node_id: '" + self + "' is not among the members");
  }
  if (data_nodes == 0) return Status::InvalidArgument("members: no data node (all witnesses)");
  if (links.empty()) return Status::InvalidArgument("links: at least one heartbeat link");
  if (heartbeat_interval <= Millis{0}) {
    return Status::InvalidArgument("heartbeat_interval: must be positive");
  }
  if (lost_threshold < 1) return Status::InvalidArgument("lost_threshold: must be at least 1");
  if (holdoff_max <= Millis{0}) return Status::InvalidArgument("holdoff_max: must be positive");
  if (flap_max_changes < 1) return Status::InvalidArgument("flap_max_changes: at least 1");
  if (max_tick_gap <= heartbeat_interval || max_tick_gap >= LostAfter()) {
    return Status::InvalidArgument(
        "max_tick_gap: must lie between heartbeat_interval (" +
        std::to_string(heartbeat_interval.count()) +
        " ms) and heartbeat_interval x "
        "lost_threshold (" +
        std::to_string(LostAfter().count()) +
        " ms): above the first so that ticking normally is not a jump, below the second so "
        "that a stall is not taken for lost peers");
  }
  return Status::Ok();
}

std::string RoleChange::AlertText() const {
  return reason + "\nthe state changed from '" + std::string(RoleName(from)) + "' to '" +
         std::string(RoleName(to)) + "'";
}

}  // namespace statesync::failover
