#include "statesync/failover/core.h"

#include <algorithm>
#include <string>
#include <utility>

namespace statesync::failover {
namespace {

std::string Seconds(Millis d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + " s";
  return std::to_string(d.count()) + " ms";
}

std::string Quote(const std::string& id) {
  return "'" + id + "'";
}

bool LegalTransition(EffectiveRole from, EffectiveRole to) {
  using R = EffectiveRole;
  switch (from) {
    case R::kOff:
      return to == R::kSecondary;
    case R::kSecondary:
      return to == R::kPrimary || to == R::kHoldOff || to == R::kOff;
    case R::kHoldOff:
      return to == R::kSecondary || to == R::kOff;
    case R::kPrimary:
      return to == R::kSecondary || to == R::kFailed || to == R::kOff;
    case R::kFailed:
      return to == R::kSecondary || to == R::kOff;
    case R::kWitness:
      return false;
  }
  return false;
}

}  // namespace

DurableState ReconcileWithStore(const ClusterConfig& config, DurableState durable, Position stored,
                                std::string* why) {
  why->clear();
  if (stored.epoch <= durable.epoch) return durable;
  const auto self = std::find_if(config.members.begin(), config.members.end(),
                                 [&](const Member& m) { return m.id == config.self; });
  const auto slot = static_cast<std::uint64_t>(self - config.members.begin());
  *why = "the store holds epoch " + std::to_string(stored.epoch) + " at " + ToString(stored) +
         ", newer than the HA state's " + std::to_string(durable.epoch) +
         " (its last save was lost, in a power loss): the node takes it";
  durable.epoch = stored.epoch;
  if (stored.epoch % kEpochSlots == slot) {
    durable.role = EffectiveRole::kPrimary;
    durable.planned_stop = false;
    *why += ", and was primary in it";
  }
  return durable;
}

FailoverCore::FailoverCore(ClusterConfig config, DurableState durable, RandomSource random)
    : config_(std::move(config)), durable_(std::move(durable)), random_(std::move(random)) {
  STATESYNC_CHECK(config_.Validate().ok(), "FailoverCore needs a valid ClusterConfig");
  STATESYNC_CHECK(random_ != nullptr, "FailoverCore needs a random source");
  for (std::uint32_t i = 0; i < config_.members.size(); ++i) {
    const Member& m = config_.members[i];
    if (m.id == config_.self) {
      self_ = m;
      slot_ = i;
      continue;
    }
    Peer peer;
    peer.member = m;
    peer.slot = i;
    peer.heard_on_link.resize(config_.links.size());
    peer.link_up.assign(config_.links.size(), false);
    peer.link_lost_reported.assign(config_.links.size(), false);
    peer.connection_closed_at.resize(config_.links.size());
    peers_.push_back(std::move(peer));
  }
  highest_epoch_seen_ = FloorAfterRestart(durable_);
  synced_floor_ = highest_epoch_seen_;
  epoch_at_boot_ = durable_.epoch;
  recovered_from_failure_ = durable_.role == EffectiveRole::kPrimary && !durable_.planned_stop;
  returning_from_planned_ = durable_.role == EffectiveRole::kPrimary && durable_.planned_stop;
  durable_.planned_stop = false;
  ++durable_.boots;
  if (self_.role == ConfiguredRole::kWitness) {
    role_ = EffectiveRole::kWitness;
    booting_ = false;
  }
}

NodeId FailoverCore::primary() const {
  if (role_ == EffectiveRole::kPrimary) return config_.self;
  return following_;
}

std::vector<PeerView> FailoverCore::peers() const {
  std::vector<PeerView> views;
  views.reserve(peers_.size());
  for (const Peer& p : peers_) {
    PeerView v;
    v.member = p.member;
    v.alive = p.alive;
    v.links_up = p.link_up;
    if (p.last) v.since_heard = last_now_ - p.last_accepted;
    v.last = p.last;
    views.push_back(std::move(v));
  }
  return views;
}

// ---- Entry points ----

Actions FailoverCore::Tick(Instant now) {
  Actions out;
  Observe(now, out);
  SendHeartbeats(now, out);
  UpdateLiveness(now, out);
  if (booting_) {
    if (now - boot_time_ < config_.LostAfter() && AlivePrimary() == nullptr) return out;
    FinishStartup(now, out);
  }
  switch (role_) {
    case EffectiveRole::kSecondary:
      StepSecondary(now, out);
      break;
    case EffectiveRole::kPrimary:
      StepPrimary(now, out);
      break;
    case EffectiveRole::kHoldOff:
      StepHoldOff(now, out);
      break;
    case EffectiveRole::kFailed: {
      // FAILED hands the service to a healthier node. With no primary left at all, serving
      // from here beats serving from nowhere: rejoin and take part in the election. Not within
      // two detection windows of failing, nor while the node it handed over to is still heard:
      // that node's promotion may be on its way.
      const Peer* handed = handed_over_to_.empty() ? nullptr : FindPeer(handed_over_to_);
      if (AlivePrimary() == nullptr && !clock_jumped_this_step_ && failed_since_ &&
          now - *failed_since_ > config_.LostAfter() * 2 && (handed == nullptr || !handed->alive)) {
        ChangeRole(now, EffectiveRole::kSecondary,
                   "no primary left in the cluster: leaving FAILED to take part in the election",
                   out);
        StartElectionWait(now, "no primary in the cluster");
      }
      break;
    }
    default:
      break;
  }
  return out;
}

Actions FailoverCore::Receive(Instant now, const NodeId& from, LinkIndex link,
                              const Message& message) {
  Actions out;
  Observe(now, out);
  Peer* peer = FindPeer(from);
  if (peer == nullptr || link >= config_.links.size()) {
    out.push_back(Alert{"ignored a message from " + Quote(from) + " on link " +
                        std::to_string(link) + ": not a member of this cluster or no such link"});
    return out;
  }
  if (peer->slot_mismatch_reported && !std::holds_alternative<Heartbeat>(message)) {
    return out;  // a peer that numbers the members differently: not to be acted on
  }
  std::visit(
      [&](const auto& m) {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, Heartbeat>) {
          OnHeartbeat(now, *peer, link, m, out);
        } else if constexpr (std::is_same_v<M, Control>) {
          OnControl(now, *peer, m, out);
        } else if constexpr (std::is_same_v<M, VoteRequest>) {
          OnVoteRequest(now, *peer, m, out);
        } else {
          OnVote(now, *peer, m, out);
        }
      },
      message);
  return out;
}

Actions FailoverCore::ConnectionChanged(Instant now, const NodeId& peer_id, LinkIndex link,
                                        bool up) {
  Actions out;
  Observe(now, out);
  Peer* peer = FindPeer(peer_id);
  if (peer == nullptr || link >= config_.links.size()) return out;
  if (up) {
    peer->connection_closed_at[link].reset();
    return out;
  }
  if (closes_ignored_until_ && now < *closes_ignored_until_) {
    // This node was stalled (its clock jumped): a peer may have closed its connections to it
    // because it stopped answering, which says nothing about the peer's health. Heartbeats
    // decide until they have had the loss time to show who is alive.
    return out;
  }
  peer->connection_closed_at[link] = now;
  UpdateLiveness(now, out);
  if (role_ == EffectiveRole::kSecondary && !following_.empty() && AlivePrimary() == nullptr) {
    // The primary crashed: say so now rather than at the next heartbeat, since a candidate
    // waits while a peer still claims to follow the primary it lost.
    SetFollowing("", out);
    Announce(now, out);
  }
  return out;
}

Actions FailoverCore::MonitorChanged(Instant now, const std::string& name, bool up) {
  Actions out;
  Observe(now, out);
  auto it = std::find_if(monitors_.begin(), monitors_.end(),
                         [&](const auto& m) { return m.first == name; });
  const bool known = it != monitors_.end();
  if (!known) {
    monitors_.emplace_back(name, up);
  } else if (it->second == up) {
    return out;
  } else {
    it->second = up;
  }
  if (known || !up) {
    out.push_back(Alert{"monitored link or service '" + name + "' " + (up ? "up" : "down") + ": " +
                        std::to_string(MonitorsUp()) + " of " + std::to_string(monitors_.size()) +
                        " up"});
  }
  return out;
}

Actions FailoverCore::RemoteChecks(Instant now, std::span<const ServiceCheck> checks) {
  Actions out;
  Observe(now, out);
  std::string summary;
  bool failed = false;
  bool any_ok = false;
  for (const ServiceCheck& c : checks) {
    if (!summary.empty()) summary += ';';
    summary += c.name + "=" + std::string(ServiceStateName(c.state));
    any_ok = any_ok || c.state == ServiceState::kOk;
    failed = failed || c.state == ServiceState::kFailed;
  }
  if (role_ == EffectiveRole::kSecondary && AlivePrimary() != nullptr) {
    const bool was_failing = !remote_failure_.empty();
    remote_failure_ = failed ? summary : std::string();
    if (failed && !was_failing) switch_request_sent_.reset();
    if (failed) RequestFail(now, out);
  } else if (role_ == EffectiveRole::kFailed && !failed && any_ok) {
    ChangeRole(now, EffectiveRole::kSecondary, "remote problem recovered (" + summary + ")", out);
    if (config_.on_failure == OnFailure::kRestoreRole && self_.role == ConfiguredRole::kPrimary) {
      PlanRestore("recovery after a remote problem", true);
    }
  }
  return out;
}

Actions FailoverCore::ReplicationProgress(Instant now, Position applied, bool in_sync) {
  Actions out;
  Observe(now, out);
  const bool moved = applied != applied_;
  applied_ = applied;
  in_sync_ = in_sync;
  if (moved && role_ == EffectiveRole::kSecondary && election_since_ && !campaign_ &&
      now - last_progress_announce_ >= config_.heartbeat_interval / 4) {
    last_progress_announce_ = now;
    // Candidates rank each other by the positions their heartbeats carry: while an election
    // is pending, a position that moved is news now, not at the next heartbeat, or two
    // candidates would each see the other as behind and both campaign.
    Announce(now, out);
  }
  return out;
}

Actions FailoverCore::StateApplied(Instant now, Position applied) {
  Actions out;
  Observe(now, out);
  applied_ = std::max(applied_, applied);
  if (role_ != EffectiveRole::kPrimary || !awaiting_state_) return out;
  awaiting_state_ = false;
  ready_ = true;
  out.push_back(ClaimService{durable_.epoch});
  Announce(now, out);
  std::string text = "ready to serve as primary in epoch " + std::to_string(durable_.epoch) +
                     ": state applied up to " + ToString(applied_);
  if (applied_ < awaited_) {
    // The adapter could get no further: the rest went down with the old primary.
    text += ", short of the old primary's last position " + ToString(awaited_);
  }
  out.push_back(Alert{text});
  return out;
}

Actions FailoverCore::Command(Instant now, OperatorCommand command, Millis holdoff) {
  Actions out;
  Observe(now, out);
  if (self_.role == ConfiguredRole::kWitness) {
    out.push_back(Alert{"a witness takes no role commands"});
    return out;
  }
  booting_ = false;
  const auto to_secondary = [&](const std::string& reason) {
    if (role_ == EffectiveRole::kOff || role_ == EffectiveRole::kFailed ||
        role_ == EffectiveRole::kHoldOff) {
      off_latched_ = false;
      holdoff_until_.reset();
      ChangeRole(now, EffectiveRole::kSecondary, reason, out);
    }
  };
  switch (command) {
    case OperatorCommand::kRestoreRole: {
      const std::string reason = "operator restored the configured role";
      if (self_.role == ConfiguredRole::kPrimary) {
        to_secondary(reason);
        if (role_ == EffectiveRole::kPrimary) {
          out.push_back(Alert{"restore-role: already in the configured role 'primary'"});
        } else {
          PlanRestore(reason, false);
          if (AlivePrimary() == nullptr) StartCampaign(now, reason, out);
        }
      } else if (role_ == EffectiveRole::kPrimary) {
        const Peer* target = nullptr;
        for (const Peer& p : peers_) {
          if (p.alive && p.member.role == ConfiguredRole::kPrimary && p.last &&
              p.last->role == EffectiveRole::kSecondary) {
            target = &p;
            break;
          }
        }
        if (target == nullptr) {
          out.push_back(
              Alert{"restore-role: no configured primary is alive and secondary to "
                    "hand the primary role to; staying primary"});
        } else {
          HandOver(now, *target, "operator restored the configured roles", out);
        }
      } else {
        to_secondary(reason);
      }
      break;
    }
    case OperatorCommand::kSetPrimary: {
      const std::string reason = "operator requested takeover";
      to_secondary(reason);
      if (role_ != EffectiveRole::kSecondary) break;
      if (AlivePrimary() != nullptr) {
        switch_request_sent_.reset();
        RequestSwitch(now, reason, out);
      } else {
        StartCampaign(now, reason, out);
      }
      break;
    }
    case OperatorCommand::kSetSecondary: {
      const std::string reason = "operator set the role to secondary";
      if (role_ == EffectiveRole::kPrimary) {
        if (const Peer* best = BestSecondaryPeer(false)) {
          HandOver(now, *best, reason, out);
        } else {
          StepDown(now, EffectiveRole::kSecondary, reason + " (no secondary to hand over to)", out);
          handover_wait_until_ = now + config_.LostAfter() * 2;
        }
      } else {
        to_secondary(reason);
      }
      break;
    }
    case OperatorCommand::kSetOff: {
      const std::string reason = "operator set the role to off";
      if (role_ == EffectiveRole::kPrimary) {
        const Epoch epoch = durable_.epoch;
        const Peer* best = BestSecondaryPeer(false);
        StepDown(now, EffectiveRole::kOff, reason, out);
        if (best != nullptr) SendTakeOver(best->member.id, epoch, reason, out);
      } else if (role_ != EffectiveRole::kOff) {
        ChangeRole(now, EffectiveRole::kOff, reason, out);
      }
      off_latched_ = true;
      break;
    }
    case OperatorCommand::kPlannedRestart: {
      const bool was_primary = role_ == EffectiveRole::kPrimary;
      out.push_back(Alert{"the system is rebooting!"});
      if (was_primary) {
        const Millis asked =
            holdoff > Millis{0} ? std::min(holdoff, config_.holdoff_max) : config_.holdoff_max;
        for (const Peer& p : peers_) {
          Send(p.member.id,
               Control{ControlKind::kHoldOff, durable_.epoch, asked, "planned restart", applied_},
               out);
        }
        ChangeRole(now, EffectiveRole::kOff,
                   "planned restart: peers told to hold off for up to " + Seconds(asked), out);
        ready_ = false;
        out.push_back(ReleaseService{});
      } else if (role_ != EffectiveRole::kOff) {
        ChangeRole(now, EffectiveRole::kOff, "planned restart", out);
      }
      durable_.role = was_primary ? EffectiveRole::kPrimary : role_;
      durable_.planned_stop = true;
      Persist(out);
      off_latched_ = true;
      break;
    }
    case OperatorCommand::kShutdown: {
      const bool was_primary = role_ == EffectiveRole::kPrimary;
      out.push_back(Alert{"the system is shutting down!"});
      if (role_ != EffectiveRole::kOff) {
        ChangeRole(now, EffectiveRole::kOff, "shutdown", out);
      }
      if (was_primary) out.push_back(ReleaseService{});
      ready_ = false;
      // A primary that goes away without a hold-off is, to its peers, a failed primary; it
      // applies its on-failure policy when it comes back.
      durable_.role = was_primary ? EffectiveRole::kPrimary : EffectiveRole::kOff;
      durable_.planned_stop = false;
      Persist(out);
      off_latched_ = true;
      break;
    }
  }
  return out;
}

// ---- Time ----

void FailoverCore::Observe(Instant now, Actions& out) {
  clock_jumped_this_step_ = false;
  if (!started_) {
    started_ = true;
    boot_time_ = now;
    last_now_ = now;
    next_heartbeat_ = now;
    Persist(out);  // the new boot count
    return;
  }
  const Millis step = now - last_now_;
  if (step < Millis{0} || step > config_.max_tick_gap) {
    // Every deadline moves with the jump, so the time the clock skipped (or repeated) counts
    // for nothing: a peer silent only because we were stalled gets a fresh window.
    ShiftTimes(step);
    out.push_back(Alert{std::string("the clock jumped ") + (step < Millis{0} ? "back" : "forward") +
                        " by " + std::to_string(std::abs(step.count())) +
                        " ms: observing, no promotion in this step"});
    clock_jumped_this_step_ = true;
    closes_ignored_until_ = now + config_.LostAfter();
  }
  last_now_ = now;
}

void FailoverCore::ShiftTimes(Millis delta) {
  boot_time_ += delta;
  next_heartbeat_ += delta;
  for (Peer& p : peers_) {
    for (auto& heard : p.heard_on_link) {
      if (heard) *heard += delta;
    }
    for (auto& closed : p.connection_closed_at) {
      if (closed) *closed += delta;
    }
  }
  last_progress_announce_ += delta;
  for (std::optional<Instant>* t :
       {&election_since_, &switch_request_sent_, &preempt_eligible_since_, &handover_wait_until_,
        &failed_since_, &holdoff_until_}) {
    if (*t) **t += delta;
  }
  if (campaign_) campaign_->deadline += delta;
  for (Instant& t : role_changes_) t += delta;
}

// ---- Heartbeats and liveness ----

Heartbeat FailoverCore::MakeHeartbeat(Instant now) const {
  Heartbeat hb;
  hb.sequence = (durable_.boots << 32) + heartbeats_sent_;
  hb.slot = slot_;
  hb.epoch = durable_.epoch;
  hb.role = role_;
  hb.configured = self_.role;
  hb.applied = applied_;
  hb.monitors_up = MonitorsUp();
  hb.priority = self_.priority;
  hb.uptime = now - boot_time_;
  hb.serial = self_.serial;
  hb.ready = ready();
  hb.following = primary();
  return hb;
}

void FailoverCore::SendHeartbeats(Instant now, Actions& out) {
  if (now < next_heartbeat_) return;
  Announce(now, out);
}

void FailoverCore::Announce(Instant now, Actions& out) {
  ++heartbeats_sent_;
  const Heartbeat hb = MakeHeartbeat(now);
  for (LinkIndex link = 0; link < config_.links.size(); ++link) {
    for (const Peer& p : peers_) out.push_back(SendMessage{p.member.id, link, hb});
  }
  next_heartbeat_ = now + config_.heartbeat_interval;
}

void FailoverCore::UpdateLiveness(Instant now, Actions& out) {
  const Millis lost_after = config_.LostAfter();
  // One link is never enough to call a peer dead before its time: its connection may have
  // closed for a reason of the link's own.
  const bool closes_count = config_.links.size() >= 2;
  for (Peer& p : peers_) {
    int up = 0;
    int closed = 0;
    std::vector<bool> link_up(config_.links.size());
    for (std::size_t l = 0; l < config_.links.size(); ++l) {
      link_up[l] = p.heard_on_link[l] && now - *p.heard_on_link[l] <= lost_after;
      if (closes_count && p.connection_closed_at[l] && link_up[l]) {
        link_up[l] = false;
        ++closed;
      }
      up += link_up[l] ? 1 : 0;
    }
    const bool alive = up > 0;
    // Lost because every link's connection closed, before the heartbeat timer ran out.
    const bool crashed = !alive && closed > 0 &&
                         std::all_of(p.connection_closed_at.begin(), p.connection_closed_at.end(),
                                     [](const std::optional<Instant>& c) { return c.has_value(); });
    const std::string role_name = std::string(RoleName(p.last_active_role));
    if (alive && p.alive && config_.links.size() > 1) {
      for (std::size_t l = 0; l < config_.links.size(); ++l) {
        if (link_up[l] == p.link_up[l]) continue;
        const std::string what =
            "heartbeat link '" + config_.links[l] + "' to " + Quote(p.member.id);
        const std::string count =
            std::to_string(up) + " of " + std::to_string(config_.links.size()) + " links up";
        if (!link_up[l]) {
          out.push_back(Alert{what + " lost: " + count + ", no failover"});
          p.link_lost_reported[l] = true;
        } else if (p.link_lost_reported[l]) {
          out.push_back(Alert{what + " restored: " + count});
          p.link_lost_reported[l] = false;
        }
      }
    }
    p.link_up = std::move(link_up);
    if (alive == p.alive) continue;
    p.alive = alive;
    if (!alive) {
      p.was_lost = true;
      std::fill(p.link_lost_reported.begin(), p.link_lost_reported.end(), false);
      if (role_ == EffectiveRole::kHoldOff && p.member.id == holdoff_from_) {
        out.push_back(Alert{"PRIMARY " + Quote(p.member.id) +
                            " went quiet for its planned restart: holding off"});
        continue;
      }
      const std::string text =
          crashed ? role_name + " heartbeat disappeared: the connections to " + Quote(p.member.id) +
                        " closed on all " + std::to_string(config_.links.size()) + " links"
                  : role_name + " heartbeat disappeared: no heartbeat from " + Quote(p.member.id) +
                        " on " + std::to_string(config_.links.size()) +
                        (config_.links.size() == 1 ? " link" : " links") + " for " +
                        Seconds(lost_after);
      out.push_back(Alert{text});
      if (role_ == EffectiveRole::kSecondary && following_ == p.member.id) {
        StartElectionWait(now, text, crashed);
      }
    } else if (p.was_lost) {
      out.push_back(Alert{role_name + " heartbeat appeared from " + Quote(p.member.id)});
    }
  }
}

// ---- Start-up ----

void FailoverCore::FinishStartup(Instant now, Actions& out) {
  booting_ = false;
  if (off_latched_ || self_.role == ConfiguredRole::kWitness) return;
  const Peer* primary = AlivePrimary();
  if (primary != nullptr) {
    if (recovered_from_failure_ || returning_from_planned_) {
      ApplyRecoveryPolicy(now, *primary, out);
    } else {
      ChangeRole(now, EffectiveRole::kSecondary,
                 "joined the cluster: " + Quote(primary->member.id) + " is primary in epoch " +
                     std::to_string(primary->last->epoch),
                 out);
      SetFollowing(primary->member.id, out);
    }
    return;
  }
  if (recovered_from_failure_ && config_.on_failure == OnFailure::kSwitchOff) {
    off_latched_ = true;
    out.push_back(
        Alert{"recovered after a failure; on_failure is switch_off: staying OFF "
              "until an operator acts"});
    return;
  }
  std::string reason = "started: no primary heard for " + Seconds(config_.LostAfter());
  if (returning_from_planned_) reason = "back from a planned restart";
  if (recovered_from_failure_) reason = "recovered after a failure, no primary in the cluster";
  ChangeRole(now, EffectiveRole::kSecondary, reason, out);
  StartElectionWait(now, reason);
  if (recovered_from_failure_ && config_.on_failure == OnFailure::kRestoreRole) {
    PlanRestore("recovery after a restart", true);
  }
  // The configured primary of a new cluster (nothing persisted yet) starts as primary. Later
  // starts go through the ranking, so the freshest node wins after a whole-cluster outage.
  if (returning_from_planned_ || (self_.role == ConfiguredRole::kPrimary && durable_.epoch == 0)) {
    StartCampaign(now,
                  returning_from_planned_ ? reason
                                          : "configured primary starting: no primary in "
                                            "the cluster",
                  out);
  }
}

void FailoverCore::ApplyRecoveryPolicy(Instant now, const Peer& primary, Actions& out) {
  const std::string who =
      Quote(primary.member.id) + " is primary in epoch " + std::to_string(primary.last->epoch);
  const std::string was = returning_from_planned_
                              ? "back from a planned restart after the hold-off ran out"
                              : "recovered after a failure";
  // What this node wrote after the new primary's history left ours is divergent.
  if (epoch_at_boot_ < primary.last->epoch) out.push_back(Quarantine{epoch_at_boot_});
  switch (config_.on_failure) {
    case OnFailure::kSwitchOff:
      off_latched_ = true;
      out.push_back(Alert{was + ": " + who +
                          "; on_failure is switch_off: staying OFF until an operator acts"});
      return;
    case OnFailure::kRestoreRole:
      ChangeRole(now, EffectiveRole::kSecondary,
                 was + ": " + who +
                     "; on_failure is restore_role: taking the role back once "
                     "caught up",
                 out);
      PlanRestore("recovery after a restart", true);
      break;
    case OnFailure::kBecomeSecondary:
      ChangeRole(now, EffectiveRole::kSecondary,
                 was + ": " + who + "; on_failure is become_secondary", out);
      break;
  }
  SetFollowing(primary.member.id, out);
}

// ---- Per-role steps ----

void FailoverCore::StepSecondary(Instant now, Actions& out) {
  const Peer* primary = AlivePrimary();
  if (primary == nullptr) {
    if (switch_request_sent_ && !following_.empty()) {
      // The primary this node asked for the role stepped down (it is heard, not primary): its
      // TAKE_OVER, naming its last record, is on the way, and may come after the heartbeat
      // that says it is secondary (the node holds it for that record; another link may be
      // faster). Electing itself meanwhile would promote this node from its own, older,
      // position and leave the tail behind (seen under ASan: 31 ms after the step-down).
      const Peer* asked = FindPeer(following_);
      if (asked != nullptr && asked->alive && asked->last &&
          asked->last->role != EffectiveRole::kPrimary && !handover_wait_until_) {
        handover_wait_until_ = now + config_.LostAfter();
        takeover_expected_from_ = following_;
      }
    }
    if (!takeover_expected_from_.empty()) {
      // No TAKE_OVER comes from a node that is gone meanwhile: elect at once.
      const Peer* asked = FindPeer(takeover_expected_from_);
      if (asked == nullptr || !asked->alive) handover_wait_until_.reset();
      if (!handover_wait_until_) takeover_expected_from_.clear();
    }
    SetFollowing("", out);
    RunElection(now, out);
    return;
  }
  election_since_.reset();
  campaign_.reset();
  handover_wait_until_.reset();
  takeover_expected_from_.clear();
  SetFollowing(primary->member.id, out);
  if (switch_request_sent_ && now - *switch_request_sent_ > config_.LostAfter()) {
    switch_request_sent_.reset();  // lost or refused: ask again below if still wanted
  }
  if (!remote_failure_.empty()) {
    RequestFail(now, out);
    return;
  }
  if (restore_pending_) {
    if (!in_sync_ || (restore_voluntary_ && Dampened(now, out))) return;
    RequestSwitch(now, restore_reason_, out);
    return;
  }
  const Heartbeat& p = *primary->last;
  const bool may_preempt = config_.override_enabled && self_.priority > p.priority &&
                           MonitorsUp() >= p.monitors_up && in_sync_;
  if (!may_preempt) {
    preempt_eligible_since_.reset();
    return;
  }
  if (!preempt_eligible_since_) preempt_eligible_since_ = now;
  if (now - *preempt_eligible_since_ < config_.preempt_delay || Dampened(now, out)) return;
  RequestSwitch(now,
                "preempting: priority " + std::to_string(self_.priority) + " > " +
                    std::to_string(p.priority) + " with override on, caught up, waited " +
                    Seconds(config_.preempt_delay),
                out);
}

void FailoverCore::StepHoldOff(Instant now, Actions& out) {
  const Peer* primary = AlivePrimary();
  if (primary != nullptr && primary->member.id != holdoff_from_) {
    holdoff_until_.reset();
    ChangeRole(now, EffectiveRole::kSecondary,
               "a new primary appeared: " + Quote(primary->member.id), out);
    return;
  }
  if (holdoff_until_ && now < *holdoff_until_) return;
  holdoff_until_.reset();
  const std::string reason = "hold-off expired: PRIMARY " + Quote(holdoff_from_) +
                             " did not return within " + Seconds(config_.holdoff_max);
  ChangeRole(now, EffectiveRole::kSecondary, reason, out);
  if (primary == nullptr) {
    StartElectionWait(now, reason);
    StepSecondary(now, out);
  }
}

void FailoverCore::StepPrimary(Instant now, Actions& out) {
  const bool quorum = config_.QuorumRequired();
  // 1. Two primaries meet: resolve it the same way on both sides.
  for (const Peer& p : peers_) {
    if (!p.alive || !p.last || p.last->role != EffectiveRole::kPrimary) continue;
    std::string why;
    bool lose = false;
    if (quorum) {
      lose = p.last->epoch > durable_.epoch;
      why = lose ? Quote(p.member.id) + " holds the newer epoch " + std::to_string(p.last->epoch) +
                       ", elected by a majority"
                 : Quote(p.member.id) + " holds the older epoch " + std::to_string(p.last->epoch);
    } else {
      const Ranked r = Compare(SelfCandidate(now), PeerCandidate(p), SplitBrainOptions());
      lose = r.order > 0;
      why = (lose ? Quote(p.member.id) + " ranks higher: " : "this node ranks higher: ") +
            r.criterion;
    }
    if (lose) {
      const Epoch lost_epoch = durable_.epoch;
      StepDown(now, EffectiveRole::kSecondary, "2 devices with same mode, fixing: " + why, out);
      out.push_back(Quarantine{lost_epoch});
      split_brain_alerted_.clear();
      return;
    }
    if (split_brain_alerted_ != p.member.id) {
      split_brain_alerted_ = p.member.id;
      out.push_back(Alert{"2 devices with same mode, fixing: keeping the primary role, " +
                          Quote(p.member.id) + " steps down (" + why + ")"});
    }
  }
  // 2. With three or more members, a primary that no longer hears a majority steps down: the
  // majority may already have elected another, and then what this node wrote since the fork is
  // divergent. Replication quarantines only what lies beyond the fork point, so marking too
  // much loses nothing.
  if (quorum && AliveMembers() * 2 <= config_.members.size()) {
    out.push_back(Quarantine{durable_.epoch});
    StepDown(now, EffectiveRole::kSecondary,
             "lost contact with the majority: " + std::to_string(AliveMembers()) + " of " +
                 std::to_string(config_.members.size()) + " members heard",
             out);
    return;
  }
  // 3. A primary stays ahead of every epoch it sees, so that its peers can follow it.
  Epoch newest = 0;
  NodeId newest_on;
  for (const Peer& p : peers_) {
    if (p.alive && p.last && p.last->epoch > newest) {
      newest = p.last->epoch;
      newest_on = p.member.id;
    }
  }
  if (newest > durable_.epoch) {
    if (quorum) {
      out.push_back(Quarantine{durable_.epoch});
      StepDown(now, EffectiveRole::kSecondary,
               Quote(newest_on) + " holds the newer epoch " + std::to_string(newest), out);
      return;
    }
    TakeNewEpoch(newest, newest_on, out);
  }
  // 4. A node with more monitored links and services up makes a better primary.
  if (const Peer* better = BestSecondaryPeer(true)) {
    HandOver(now, *better,
             "monitored links and services: this node has " + std::to_string(MonitorsUp()) +
                 " up, " + Quote(better->member.id) + " has " +
                 std::to_string(better->last->monitors_up),
             out);
  }
}

// ---- Elections ----

void FailoverCore::RunElection(Instant now, Actions& out) {
  if (clock_jumped_this_step_ || off_latched_) return;
  if (handover_wait_until_) {
    if (now < *handover_wait_until_) return;
    handover_wait_until_.reset();
  }
  if (campaign_) {
    if (now < campaign_->deadline) return;
    out.push_back(Alert{"no majority for epoch " + std::to_string(campaign_->epoch) + ": " +
                        std::to_string(campaign_->votes.size()) + " of " +
                        std::to_string(config_.members.size()) + " votes; trying again"});
    campaign_.reset();
    StartElectionWait(now, election_reason_);
  }
  // A peer that still hears a primary we do not: our link to it failed, not the primary.
  for (const Peer& p : peers_) {
    if (p.alive && p.last && p.last->role == EffectiveRole::kSecondary &&
        !p.last->following.empty() && p.last->following != config_.self) {
      const Peer* followed = FindPeer(p.last->following);
      if (followed != nullptr && !followed->alive) return;
    }
  }
  if (!election_since_) {
    StartElectionWait(now, election_reason_.empty() ? std::string("no primary in the cluster")
                                                    : election_reason_);
  }
  // Rank the candidates: this node and every alive secondary data node.
  const Candidate me = SelfCandidate(now);
  std::size_t rank = 0;
  std::size_t rivals = 0;
  std::string beaten;
  for (const Peer& p : peers_) {
    // Any data node heard alive that is not primary may campaign too (one still starting
    // up, OFF, among them).
    if (p.alive && p.last && p.last->role != EffectiveRole::kPrimary &&
        p.member.role != ConfiguredRole::kWitness) {
      ++rivals;
    }
    if (!p.alive || !p.last || p.last->role != EffectiveRole::kSecondary ||
        p.member.role == ConfiguredRole::kWitness) {
      continue;
    }
    const Ranked r = Compare(me, PeerCandidate(p), Options(true));
    if (r.order > 0) {
      ++rank;
    } else if (beaten.empty()) {
      beaten = "; ranked above " + Quote(p.member.id) + ": " + r.criterion;
    }
  }
  // Better-ranked candidates go first; each rank waits one more detection window for them.
  // The jitter keeps rivals from campaigning at the same instant; with none alive (a pair
  // whose primary is gone) there is nobody to collide with, and it would only add to the
  // take-over.
  const Millis delay =
      config_.LostAfter() * static_cast<int>(rank) + (rivals > 0 ? election_jitter_ : Millis{0});
  if (now - *election_since_ < delay) return;
  std::string reason = election_reason_ + beaten;
  if (rank > 0) reason += "; " + std::to_string(rank) + " better-ranked node(s) did not take over";
  StartCampaign(now, reason, out);
}

void FailoverCore::StartCampaign(Instant now, const std::string& reason, Actions& out) {
  if (clock_jumped_this_step_ || campaign_) return;
  // Slots make epochs unique only if every node numbers the members alike.
  for (const Peer& p : peers_) {
    if (p.slot_mismatch_reported) return;
  }
  const Epoch epoch = NextEpochFor(highest_epoch_seen_, slot_);
  if (!config_.QuorumRequired()) {
    Promote(now, reason, epoch, applied_, out);
    return;
  }
  highest_epoch_seen_ = epoch;  // a retry goes to the next round
  STATESYNC_CHECK(epoch / kEpochSlots > durable_.voted_round,
                  "one vote per round: a campaign goes to a round above the last vote");
  campaign_ = Campaign{epoch, {config_.self}, now + config_.LostAfter(), reason};
  durable_.voted_round = epoch / kEpochSlots;
  durable_.voted_for = config_.self;
  Persist(out);
  // A take-over's candidate claims the old primary's last position: its promotion gate holds
  // it back until it has applied that far, so the old primary can vote for it.
  const Position claim = std::max(applied_, takeover_up_to_);
  for (const Peer& p : peers_) Send(p.member.id, VoteRequest{epoch, claim}, out);
}

void FailoverCore::OnVoteRequest(Instant now, Peer& peer, const VoteRequest& request,
                                 Actions& out) {
  Vote vote{request.epoch, false, ""};
  const std::uint64_t round = request.epoch / kEpochSlots;
  const Peer* primary = AlivePrimary();
  if (role_ == EffectiveRole::kPrimary) {
    vote.why_not = "this node is primary";
  } else if (primary != nullptr && primary->member.id != peer.member.id) {
    vote.why_not = Quote(primary->member.id) + " is primary and alive";
  } else if (request.epoch <= durable_.epoch) {
    vote.why_not = "epoch " + std::to_string(request.epoch) + " is not newer than " +
                   std::to_string(durable_.epoch);
  } else if (round < durable_.voted_round ||
             (round == durable_.voted_round && durable_.voted_for != peer.member.id)) {
    vote.why_not = "already voted for " + Quote(durable_.voted_for) + " in round " +
                   std::to_string(durable_.voted_round);
  } else if (self_.role != ConfiguredRole::kWitness && request.applied < applied_) {
    vote.why_not =
        "the candidate is behind: " + ToString(request.applied) + " < " + ToString(applied_);
  } else {
    vote.granted = true;
    durable_.voted_round = round;
    durable_.voted_for = peer.member.id;
    Persist(out);
    // Give the candidate time to win and be heard before campaigning here: our own campaign
    // (an older round) is moot now, and a new one would only outbid it.
    campaign_.reset();
    if (election_since_) election_since_ = now;
  }
  highest_epoch_seen_ = std::max(highest_epoch_seen_, request.epoch);
  Send(peer.member.id, vote, out);
}

void FailoverCore::OnVote(Instant now, Peer& peer, const Vote& vote, Actions& out) {
  if (!campaign_ || vote.epoch != campaign_->epoch || !vote.granted) return;
  if (clock_jumped_this_step_) return;  // observe; the campaign times out and runs again
  if (role_ != EffectiveRole::kSecondary) return;
  if (AlivePrimary() != nullptr || campaign_->epoch <= durable_.epoch) {
    campaign_.reset();  // someone else won meanwhile
    return;
  }
  campaign_->votes.insert(peer.member.id);
  if (campaign_->votes.size() * 2 <= config_.members.size()) return;
  std::string voters;
  for (const NodeId& v : campaign_->votes) voters += (voters.empty() ? "" : ", ") + v;
  const Campaign won = *campaign_;
  campaign_.reset();
  Promote(now,
          won.reason + "; elected by " + std::to_string(won.votes.size()) + " of " +
              std::to_string(config_.members.size()) + " votes (" + voters + ")",
          won.epoch, std::max(applied_, takeover_up_to_), out);
}

// ---- Role changes ----

void FailoverCore::Promote(Instant now, const std::string& reason, Epoch epoch, Position up_to,
                           Actions& out) {
  STATESYNC_CHECK(self_.role != ConfiguredRole::kWitness, "a witness never becomes primary");
  STATESYNC_CHECK(epoch > durable_.epoch, "a promotion takes a newer epoch");
  highest_epoch_seen_ = std::max(highest_epoch_seen_, epoch);
  durable_.epoch = epoch;
  durable_.role = EffectiveRole::kPrimary;
  if (epoch <= synced_floor_) {
    // Reserved on the disk (by a reservation or by the vote for itself), so a power loss cannot
    // make this node take the epoch twice; a crash of the process keeps the file. Not waiting
    // for the disk here keeps a crash's take-over fast while the store flushes much (a sync
    // then waits 100-300 ms here).
    out.push_back(PersistState{durable_, false});
  } else {
    Persist(out);  // on disk before anything acts in the new epoch
  }
  ChangeRole(now, EffectiveRole::kPrimary, reason, out);
  following_ = config_.self;
  ready_ = false;
  awaiting_state_ = true;
  awaited_ = std::max(up_to, applied_);
  takeover_up_to_ = Position{};
  out.push_back(AwaitState{awaited_});
  campaign_.reset();
  election_since_.reset();
  election_reason_.clear();
  switch_request_sent_.reset();
  handover_wait_until_.reset();
  takeover_expected_from_.clear();
  restore_pending_ = false;
  preempt_eligible_since_.reset();
  remote_failure_.clear();
  takeover_reason_.clear();
  split_brain_alerted_.clear();
  if (returning_from_planned_) {
    returning_from_planned_ = false;
    for (const Peer& p : peers_) {
      Send(p.member.id, Control{ControlKind::kRelease, durable_.epoch, Millis{0}, "back", {}}, out);
    }
  }
}

void FailoverCore::StepDown(Instant now, EffectiveRole to, const std::string& reason,
                            Actions& out) {
  ChangeRole(now, to, reason, out);
  ready_ = false;
  awaiting_state_ = false;
  out.push_back(ReleaseService{});
  following_.clear();
}

void FailoverCore::HandOver(Instant now, const Peer& to, const std::string& reason, Actions& out) {
  const Epoch epoch = durable_.epoch;
  StepDown(now, EffectiveRole::kSecondary, reason, out);
  SendTakeOver(to.member.id, epoch, reason, out);
  handover_wait_until_ = now + config_.LostAfter() * 2;
}

void FailoverCore::SendTakeOver(const NodeId& to, Epoch epoch, const std::string& reason,
                                Actions& out) {
  handed_over_to_ = to;
  handed_over_epoch_ = epoch;
  Send(to, Control{ControlKind::kTakeOver, epoch, Millis{0}, reason, applied_}, out);
}

void FailoverCore::StartElectionWait(Instant now, const std::string& reason, bool fast) {
  election_since_ = now;
  // The fast jitter starts at a twentieth of the interval: a voter that saw the same closes a
  // moment later must have taken them in before the vote request comes.
  const Millis::rep interval = config_.heartbeat_interval.count();
  const Millis::rep floor = fast ? interval / 20 : 0;
  const Millis::rep range = std::max<Millis::rep>(1, fast ? interval / 20 : interval);
  election_jitter_ = Millis(floor + static_cast<Millis::rep>(random_() % range));
  election_reason_ = reason;
}

void FailoverCore::PlanRestore(const std::string& reason, bool voluntary) {
  restore_pending_ = true;
  restore_voluntary_ = voluntary;
  restore_reason_ = reason;
}

void FailoverCore::TakeNewEpoch(Epoch seen, const std::string& seen_on, Actions& out) {
  const Epoch old = durable_.epoch;
  durable_.epoch = NextEpochFor(std::max(highest_epoch_seen_, seen), slot_);
  highest_epoch_seen_ = durable_.epoch;
  Persist(out);
  out.push_back(Alert{"epoch " + std::to_string(old) + " -> " + std::to_string(durable_.epoch) +
                      ": " + Quote(seen_on) + " holds epoch " + std::to_string(seen) +
                      "; the primary takes a newer one so that every node can follow it"});
}

void FailoverCore::ChangeRole(Instant now, EffectiveRole to, const std::string& reason,
                              Actions& out) {
  STATESYNC_CHECK(LegalTransition(role_, to), "illegal effective-role transition");
  if (role_ == EffectiveRole::kPrimary || to == EffectiveRole::kPrimary) {
    role_changes_.push_back(now);
  }
  out.push_back(RoleChange{role_, to, durable_.epoch, reason});
  role_ = to;
  failed_since_ = to == EffectiveRole::kFailed ? std::optional<Instant>(now) : std::nullopt;
  if (durable_.role != to) {
    durable_.role = to;
    Persist(out);
  }
  if (to != EffectiveRole::kSecondary) {
    election_since_.reset();
    campaign_.reset();
  }
  // Peers learn of the change now, not at the next interval: a primary announced at once keeps
  // a peer from campaigning in the gap.
  if (started_) Announce(now, out);
}

void FailoverCore::SetFollowing(const NodeId& primary, Actions& out) {
  if (following_ == primary) return;
  following_ = primary;
  // Checks of the previous primary say nothing about the next one.
  remote_failure_.clear();
  switch_request_sent_.reset();
  preempt_eligible_since_.reset();
  out.push_back(Follow{primary});
}

void FailoverCore::AdoptEpoch(Epoch epoch, Actions& out) {
  highest_epoch_seen_ = std::max(highest_epoch_seen_, epoch);
  if (epoch <= durable_.epoch) return;
  durable_.epoch = epoch;
  Persist(out);
  // A campaign for an epoch no newer than one already taken can only lose, and must not win.
  if (campaign_ && campaign_->epoch <= epoch) campaign_.reset();
}

void FailoverCore::Persist(Actions& out) {
  // A node that promotes without a vote reserves, in every synced save, the epoch that
  // promotion would take, so that the promotion's own save need not be synced. Only as a
  // secondary, the role that promotes: a reservation skips a round of epochs at the next start.
  // With a quorum the candidate's vote for itself is synced before the promotion anyway.
  if (!config_.QuorumRequired() && durable_.role == EffectiveRole::kSecondary) {
    durable_.reserved_epoch =
        std::max(durable_.reserved_epoch, NextEpochFor(highest_epoch_seen_, slot_));
  }
  synced_floor_ = FloorAfterRestart(durable_);
  out.push_back(PersistState{durable_, true});
}

Epoch FailoverCore::FloorAfterRestart(const DurableState& durable) {
  // A campaign after a restart must go to a round above the last one this node voted in, or it
  // would vote twice in that round (once for another, once for itself). Nor may it take an
  // epoch it reserved: it may have promoted into it before a power loss took the unsynced rest
  // of that promotion's state.
  return std::max({durable.epoch, durable.voted_round * kEpochSlots + (kEpochSlots - 1),
                   durable.reserved_epoch});
}

void FailoverCore::Send(const NodeId& to, Message message, Actions& out) {
  out.push_back(SendMessage{to, std::nullopt, std::move(message)});
}

// ---- Messages ----

void FailoverCore::OnHeartbeat(Instant now, Peer& peer, LinkIndex link, const Heartbeat& hb,
                               Actions& out) {
  if (hb.slot != peer.slot) {
    if (!peer.slot_mismatch_reported) {
      peer.slot_mismatch_reported = true;
      out.push_back(
          Alert{"ignoring " + Quote(peer.member.id) + ": it counts itself as member " +
                std::to_string(hb.slot) + ", this node's configuration says " +
                std::to_string(peer.slot) +
                "; every node must list the members in the same order (no promotion until then)"});
    }
    return;
  }
  peer.heard_on_link[link] = now;  // even an older copy shows that the link works
  if (const auto& closed = peer.connection_closed_at[link];
      closed && now - *closed >= config_.heartbeat_interval / 2) {
    peer.connection_closed_at[link].reset();
  }
  // An older heartbeat (reordered, or the slower link's copy) is older news.
  if (peer.last && hb.sequence < peer.last->sequence) {
    const bool same_boot = hb.sequence >> 32 == peer.last->sequence >> 32;
    // A lower boot is a replaced unit (its boot count started again) only once the newer boot
    // has been silent for a whole detection window; until then it is a delayed old message.
    if (same_boot || now - peer.last_accepted <= config_.LostAfter()) return;
  }
  peer.last = hb;
  peer.last_accepted = now;
  if (hb.role != EffectiveRole::kOff) peer.last_active_role = hb.role;
  highest_epoch_seen_ = std::max(highest_epoch_seen_, hb.epoch);
  if (hb.role == EffectiveRole::kPrimary && role_ != EffectiveRole::kPrimary) {
    AdoptEpoch(hb.epoch, out);
    // Back means a new epoch: a delayed heartbeat sent before the hold-off does not count.
    if (role_ == EffectiveRole::kHoldOff && hb.ready && peer.member.id == holdoff_from_ &&
        hb.epoch > holdoff_epoch_) {
      holdoff_until_.reset();
      ChangeRole(now, EffectiveRole::kSecondary, "PRIMARY " + Quote(peer.member.id) + " is back",
                 out);
    }
  }
}

void FailoverCore::OnControl(Instant now, Peer& peer, const Control& c, Actions& out) {
  const std::string from = Quote(peer.member.id);
  switch (c.kind) {
    case ControlKind::kHoldOff:
      if (c.epoch < durable_.epoch) return;
      if (role_ == EffectiveRole::kSecondary && !booting_) {
        holdoff_from_ = peer.member.id;
        holdoff_epoch_ = c.epoch;
        holdoff_until_ = now + std::min(c.holdoff, config_.holdoff_max);
        ChangeRole(now, EffectiveRole::kHoldOff,
                   "peer rebooting: " + from + " asked to hold off for up to " +
                       Seconds(std::min(c.holdoff, config_.holdoff_max)),
                   out);
        if (peer.last) peer.last->role = EffectiveRole::kOff;
      }
      return;
    case ControlKind::kRelease:
      // A returning primary takes a new epoch; a Release of an older one is a late duplicate.
      if (role_ == EffectiveRole::kHoldOff && peer.member.id == holdoff_from_ &&
          c.epoch > holdoff_epoch_) {
        holdoff_until_.reset();
        if (peer.last) peer.last->role = EffectiveRole::kPrimary;
        ChangeRole(now, EffectiveRole::kSecondary, "peer command appeared: " + from + " is back",
                   out);
      }
      return;
    case ControlKind::kFailRequest:
      if (c.epoch != durable_.epoch) return;
      if (role_ == EffectiveRole::kPrimary) {
        const EffectiveRole to = config_.on_failure == OnFailure::kSwitchOff
                                     ? EffectiveRole::kOff
                                     : EffectiveRole::kFailed;
        StepDown(now, to,
                 "SECONDARY asks us to switch roles (user requested takeover): " + from +
                     " reports " + c.reason,
                 out);
        if (to == EffectiveRole::kOff) off_latched_ = true;
        SendTakeOver(peer.member.id, c.epoch, c.reason, out);
      } else if ((role_ == EffectiveRole::kFailed || role_ == EffectiveRole::kOff) &&
                 handed_over_to_ == peer.member.id && handed_over_epoch_ == c.epoch) {
        // A repeated request whose first answer was lost. Only the node handed to gets it:
        // two take-overs would make two primaries.
        SendTakeOver(peer.member.id, c.epoch, c.reason, out);
      }
      return;
    case ControlKind::kSwitchRequest:
      if (c.epoch != durable_.epoch) return;
      if (role_ == EffectiveRole::kPrimary) {
        if (peer.last && peer.last->monitors_up < MonitorsUp()) {
          out.push_back(Alert{"refused to hand the primary role to " + from + ": it has " +
                              std::to_string(peer.last->monitors_up) +
                              " monitored links and services up, this node " +
                              std::to_string(MonitorsUp())});
          return;
        }
        HandOver(now, peer, "SECONDARY asks us to switch roles (" + c.reason + ")", out);
      } else if (role_ == EffectiveRole::kSecondary && handover_wait_until_ &&
                 handed_over_to_ == peer.member.id && handed_over_epoch_ == c.epoch) {
        SendTakeOver(peer.member.id, c.epoch, c.reason, out);
      }
      return;
    case ControlKind::kTakeOver:
      if (c.epoch != durable_.epoch || role_ != EffectiveRole::kSecondary || off_latched_ ||
          clock_jumped_this_step_) {
        return;  // stale, or observing a clock jump: the election takes over if need be
      }
      if (peer.last) peer.last->role = EffectiveRole::kSecondary;  // it stepped down
      {
        std::string reason;
        if (!takeover_reason_.empty()) {
          reason = takeover_reason_;  // we told the primary to fail
        } else if (restore_pending_) {
          reason = "taking the primary role back: " + restore_reason_;
        } else {
          reason = from + " handed the primary role over: " + c.reason;
        }
        if (config_.QuorumRequired()) {
          // Promotion needs a majority even when handed over: otherwise a minority side could
          // hand the role around in epochs the majority never agreed to. The old primary has
          // stepped down, so it votes too.
          takeover_up_to_ = std::max(takeover_up_to_, c.final_position);
          campaign_.reset();
          StartCampaign(now, reason, out);
          return;
        }
        Promote(now, reason, NextEpochFor(highest_epoch_seen_, slot_), c.final_position, out);
      }
      return;
  }
}

void FailoverCore::RequestSwitch(Instant now, const std::string& reason, Actions& out) {
  const Peer* primary = AlivePrimary();
  if (primary == nullptr || switch_request_sent_) return;
  switch_request_sent_ = now;
  takeover_reason_.clear();
  Send(primary->member.id,
       Control{ControlKind::kSwitchRequest, durable_.epoch, Millis{0}, reason, applied_}, out);
}

void FailoverCore::RequestFail(Instant now, Actions& out) {
  const Peer* primary = AlivePrimary();
  if (primary == nullptr || switch_request_sent_) return;
  switch_request_sent_ = now;
  takeover_reason_ = "remote problem detected (" + remote_failure_ + "), telling PRIMARY to fail";
  out.push_back(Alert{takeover_reason_});
  Send(primary->member.id,
       Control{ControlKind::kFailRequest, durable_.epoch, Millis{0},
               "remote problem detected (" + remote_failure_ + ")", applied_},
       out);
}

// ---- Queries ----

FailoverCore::Peer* FailoverCore::FindPeer(const NodeId& id) {
  return const_cast<Peer*>(std::as_const(*this).FindPeer(id));
}

const FailoverCore::Peer* FailoverCore::FindPeer(const NodeId& id) const {
  for (const Peer& p : peers_) {
    if (p.member.id == id) return &p;
  }
  return nullptr;
}

const FailoverCore::Peer* FailoverCore::AlivePrimary() const {
  const Peer* best = nullptr;
  for (const Peer& p : peers_) {
    if (!p.alive || !p.last || p.last->role != EffectiveRole::kPrimary) continue;
    if (best == nullptr || p.last->epoch > best->last->epoch) best = &p;
  }
  return best;
}

const FailoverCore::Peer* FailoverCore::BestSecondaryPeer(bool require_more_monitors) const {
  const Peer* best = nullptr;
  for (const Peer& p : peers_) {
    if (!p.alive || !p.last || p.last->role != EffectiveRole::kSecondary ||
        p.member.role == ConfiguredRole::kWitness) {
      continue;
    }
    if (require_more_monitors && p.last->monitors_up <= MonitorsUp()) continue;
    if (best == nullptr ||
        Compare(PeerCandidate(p), PeerCandidate(*best), Options(true)).order < 0) {
      best = &p;
    }
  }
  return best;
}

Candidate FailoverCore::SelfCandidate(Instant now) const {
  return Candidate{config_.self, MonitorsUp(),     self_.priority,
                   applied_,     now - boot_time_, self_.serial};
}

Candidate FailoverCore::PeerCandidate(const Peer& peer) {
  const Heartbeat& hb = *peer.last;
  return Candidate{peer.member.id, hb.monitors_up, hb.priority, hb.applied, hb.uptime, hb.serial};
}

RankingOptions FailoverCore::Options(bool freshness) const {
  return RankingOptions{config_.override_enabled, config_.uptime_margin, freshness, true};
}

RankingOptions FailoverCore::SplitBrainOptions() const {
  return RankingOptions{config_.override_enabled, config_.uptime_margin, false, false};
}

int FailoverCore::MonitorsUp() const {
  return static_cast<int>(
      std::count_if(monitors_.begin(), monitors_.end(), [](const auto& m) { return m.second; }));
}

bool FailoverCore::Dampened(Instant now, Actions& out) {
  while (!role_changes_.empty() && now - role_changes_.front() > config_.flap_window) {
    role_changes_.pop_front();
  }
  const bool dampened = static_cast<int>(role_changes_.size()) >= config_.flap_max_changes;
  if (!dampened) {
    dampening_alerted_ = false;
    return false;
  }
  if (!dampening_alerted_) {
    dampening_alerted_ = true;
    out.push_back(Alert{"role changes dampened: " + std::to_string(role_changes_.size()) +
                        " changes to or from PRIMARY in the last " + Seconds(config_.flap_window) +
                        "; no voluntary switch until fewer"});
  }
  return true;
}

std::size_t FailoverCore::AliveMembers() const {
  return 1 + static_cast<std::size_t>(std::count_if(peers_.begin(), peers_.end(),
                                                    [](const Peer& p) { return p.alive; }));
}

}  // namespace statesync::failover
