// FailoverCore: the HA state machine of one node. It decides who is primary.
//
// Facts go in (Tick, a received message, a monitor result, the replication side's progress, an
// operator command), each with the time it happened; decisions come out as an ordered list of
// Actions (messages to send, state to persist, role changes, alerts, "claim the service"). The
// adapter carries them out in order: a PersistState is on disk before the next action runs
// (one marked sync = false is in the file, and on the disk soon after: what a power loss must
// keep of it was synced before).
//
// It is pure: no sockets, clock, threads or random source. Randomness (the jitter that keeps
// two candidates from campaigning at the same instant) comes from the injected `random`.
//
// Effective roles and their transitions (see docs/architecture.md for the diagram):
//   OFF -> SECONDARY                  after the start-up window, or by an operator
//   SECONDARY -> PRIMARY              election won, take-over handed over, operator
//   SECONDARY -> HOLD_OFF -> SECONDARY | (expired) SECONDARY -> PRIMARY
//   PRIMARY -> SECONDARY              split brain lost, handed over, majority lost
//   PRIMARY -> FAILED -> SECONDARY    a secondary saw our services fail; remote problem
//                                     recovered, or no primary left
//   any data role -> OFF              switch_off policy, operator, planned restart, shutdown
// Any other transition aborts (STATESYNC_CHECK): it would be a bug in this file.
//
// Thread-safety: none. One thread (the node's event loop, or the simulator) owns a core.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "statesync/failover/ranking.h"
#include "statesync/failover/types.h"

namespace statesync::failover {

// What this node knows of a peer (for status reports; the core decides nothing from it).
struct PeerView {
  Member member;
  bool alive = false;
  std::vector<bool> links_up;         // one per link: heard within the loss time
  std::optional<Millis> since_heard;  // since its newest accepted heartbeat; none if never
  std::optional<Heartbeat> last;      // its newest heartbeat
};

// The state a node starts from, given the newest position its store holds. A power loss can
// take the HA state's newest save (a promotion's, whose sync was left to the background) and
// keep records the node wrote after it: an epoch the store holds is one this node took or
// followed, and one in this node's slot is one it served in as primary, not stopped as
// planned. `why` says what was taken from the store (empty when nothing).
DurableState ReconcileWithStore(const ClusterConfig& config, DurableState durable, Position stored,
                                std::string* why);

class FailoverCore {
 public:
  using RandomSource = std::function<std::uint64_t()>;

  // REQUIRES: config.Validate().ok(). `durable` is what the node persisted when it last ran
  // (all zero on the first start).
  FailoverCore(ClusterConfig config, DurableState durable, RandomSource random);
  FailoverCore(const FailoverCore&) = delete;
  FailoverCore& operator=(const FailoverCore&) = delete;

  // Time passes: send heartbeats, notice lost peers and links, run elections and time-outs.
  // REQUIRES: calls (Tick or any other) at most max_tick_gap apart, and in practice far more
  // often (the daemon ticks every 10 ms): a longer gap counts as a clock jump, which moves
  // every deadline, so a core ticked too rarely would never see a peer go.
  Actions Tick(Instant now);
  // A message from `from` arrived on `link`.
  Actions Receive(Instant now, const NodeId& from, LinkIndex link, const Message& message);
  // The transport saw its connection to `peer` on `link` close (up = false; the kernel closes a
  // dead process's connections at once) or open again. A peer whose connections closed on
  // every link, with two links or more, is lost at once, without waiting for lost_threshold
  // missed heartbeats; a closed connection on one link alone changes nothing. The connection
  // opening again clears it, and so does a heartbeat on the link half an interval or more
  // after the close (one received sooner may have been sent before the peer died).
  Actions ConnectionChanged(Instant now, const NodeId& peer, LinkIndex link, bool up);
  // A monitored link or service of this node went up or down.
  Actions MonitorChanged(Instant now, const std::string& name, bool up);
  // Remote service monitoring: on a secondary, the primary's services as seen from here; on a
  // FAILED node, the peers' services.
  Actions RemoteChecks(Instant now, std::span<const ServiceCheck> checks);
  // The replication side's position and whether it is in step with the primary.
  Actions ReplicationProgress(Instant now, Position applied, bool in_sync);
  // The replication side applied everything it could after an AwaitState: the promotion gate.
  Actions StateApplied(Instant now, Position applied);
  // `holdoff`: for kPlannedRestart, how long peers hold off (0: holdoff_max; peers cap it there).
  Actions Command(Instant now, OperatorCommand command, Millis holdoff = Millis{0});

  EffectiveRole role() const { return role_; }
  ConfiguredRole configured_role() const { return self_.role; }
  Epoch epoch() const { return durable_.epoch; }
  bool ready() const { return role_ == EffectiveRole::kPrimary && ready_; }
  const NodeId& id() const { return config_.self; }
  // The primary this node hears and follows (itself when primary), empty if none.
  NodeId primary() const;
  const DurableState& durable() const { return durable_; }
  // The peers in the members' order, as seen at the last call.
  std::vector<PeerView> peers() const;
  // Waiting for the replication side to apply the state (AwaitState sent, StateApplied not).
  bool awaiting_state() const { return awaiting_state_; }

 private:
  struct Peer {
    Member member;
    std::uint32_t slot = 0;
    std::vector<std::optional<Instant>> heard_on_link;
    std::vector<bool> link_up;
    std::vector<bool> link_lost_reported;
    // Per link: when the transport saw the connection close (cleared when it opens again, or
    // by a heartbeat that cannot have been on its way before the close).
    std::vector<std::optional<Instant>> connection_closed_at;
    bool alive = false;
    bool was_lost = false;  // lost once: its return is news
    bool slot_mismatch_reported = false;
    Instant last_accepted{0};                              // when its newest heartbeat was taken
    EffectiveRole last_active_role = EffectiveRole::kOff;  // its role before it went OFF
    std::optional<Heartbeat> last;
  };
  struct Campaign {
    Epoch epoch = 0;
    std::set<NodeId> votes;
    Instant deadline{0};
    std::string reason;
  };

  // Every entry point starts here: notices clock jumps and the first call.
  void Observe(Instant now, Actions& out);
  void ShiftTimes(Millis delta);
  void UpdateLiveness(Instant now, Actions& out);
  void SendHeartbeats(Instant now, Actions& out);
  void Announce(Instant now, Actions& out);  // a heartbeat on every link now
  void FinishStartup(Instant now, Actions& out);
  void StepSecondary(Instant now, Actions& out);
  void StepPrimary(Instant now, Actions& out);
  void StepHoldOff(Instant now, Actions& out);
  void RunElection(Instant now, Actions& out);
  void StartCampaign(Instant now, const std::string& reason, Actions& out);
  void Promote(Instant now, const std::string& reason, Epoch epoch, Position up_to, Actions& out);
  void StepDown(Instant now, EffectiveRole to, const std::string& reason, Actions& out);
  void HandOver(Instant now, const Peer& to, const std::string& reason, Actions& out);
  void TakeNewEpoch(Epoch seen, const std::string& seen_on, Actions& out);
  void ChangeRole(Instant now, EffectiveRole to, const std::string& reason, Actions& out);
  void SetFollowing(const NodeId& primary, Actions& out);
  void AdoptEpoch(Epoch epoch, Actions& out);
  // Writes durable_, synced, after reserving the epoch of the next lone promotion in it.
  void Persist(Actions& out);
  // The highest epoch a node starting from `durable` counts as seen: it takes only newer ones.
  static Epoch FloorAfterRestart(const DurableState& durable);
  void Send(const NodeId& to, Message message, Actions& out);

  void OnHeartbeat(Instant now, Peer& peer, LinkIndex link, const Heartbeat& hb, Actions& out);
  void OnControl(Instant now, Peer& peer, const Control& control, Actions& out);
  void OnVoteRequest(Instant now, Peer& peer, const VoteRequest& request, Actions& out);
  void OnVote(Instant now, Peer& peer, const Vote& vote, Actions& out);
  void RequestSwitch(Instant now, const std::string& reason, Actions& out);
  void RequestFail(Instant now, Actions& out);
  void ApplyRecoveryPolicy(Instant now, const Peer& primary, Actions& out);
  Heartbeat MakeHeartbeat(Instant now) const;
  const Peer* BestSecondaryPeer(bool require_more_monitors) const;

  Peer* FindPeer(const NodeId& id);
  const Peer* FindPeer(const NodeId& id) const;
  // Hands the primary role to `to` (the one node that may then repeat-ask for it).
  void SendTakeOver(const NodeId& to, Epoch epoch, const std::string& reason, Actions& out);
  // A secondary starts looking for a primary: the rank delay counts from now, plus a jitter.
  // `fast`: the primary's connections closed on every link (it crashed), which two candidates
  // see within milliseconds of each other: a shorter jitter keeps the take-over quick.
  void StartElectionWait(Instant now, const std::string& reason, bool fast = false);
  void PlanRestore(const std::string& reason, bool voluntary);
  const Peer* AlivePrimary() const;  // the alive peer that claims PRIMARY with the newest epoch
  Candidate SelfCandidate(Instant now) const;
  static Candidate PeerCandidate(const Peer& peer);
  RankingOptions Options(bool freshness) const;
  RankingOptions SplitBrainOptions() const;
  int MonitorsUp() const;
  bool Dampened(Instant now, Actions& out);
  std::size_t AliveMembers() const;  // self included

  ClusterConfig config_;
  Member self_;
  std::uint32_t slot_ = 0;
  DurableState durable_;
  RandomSource random_;
  std::vector<Peer> peers_;

  EffectiveRole role_ = EffectiveRole::kOff;
  bool started_ = false;
  bool booting_ = true;       // in the start-up window: listening before deciding
  bool off_latched_ = false;  // OFF by policy or operator: only a command moves it
  bool recovered_from_failure_ = false;
  bool returning_from_planned_ = false;
  Instant boot_time_{0};
  Instant last_now_{0};
  Instant next_heartbeat_{0};
  std::uint64_t heartbeats_sent_ = 0;
  bool clock_jumped_this_step_ = false;
  Instant last_progress_announce_{-1'000'000};  // a moved position announced during an election

  Epoch highest_epoch_seen_ = 0;
  // FloorAfterRestart of the last synced persist: a promotion to an epoch at or below it need
  // not wait for the disk.
  Epoch synced_floor_ = 0;
  NodeId following_;
  Position applied_;
  bool in_sync_ = false;
  bool ready_ = false;
  bool awaiting_state_ = false;
  Position awaited_;         // the promotion gate: the position the old primary reached
  Position takeover_up_to_;  // a take-over's final position, kept while its campaign runs
  Epoch epoch_at_boot_ = 0;
  std::vector<std::pair<std::string, bool>> monitors_;
  // After a clock jump (this node stalled), connection closes are not taken as crashes.
  std::optional<Instant> closes_ignored_until_;

  // Election.
  std::optional<Instant> election_since_;  // when this node started to look for a primary
  Millis election_jitter_{0};
  std::string election_reason_;
  std::optional<Campaign> campaign_;

  // Hand-overs.
  std::optional<Instant> switch_request_sent_;  // SwitchRequest or FailRequest outstanding
  std::string takeover_reason_;                 // why the awaited TakeOver is wanted
  bool restore_pending_ = false;                // take the configured primary role back
  std::string restore_reason_;
  std::optional<Instant> preempt_eligible_since_;
  std::string remote_failure_;  // "SIP_UDP=FAILED;HTTP=DISABLED" while the checks fail
  std::optional<Instant> handover_wait_until_;  // handed the role over: let the peer take it
  NodeId takeover_expected_from_;   // asked it for the role; it stepped down: its TAKE_OVER is due
  bool restore_voluntary_ = false;  // restore by policy (dampened), not by an operator
  std::optional<Instant> holdoff_until_;
  std::optional<Instant> failed_since_;
  NodeId holdoff_from_;
  Epoch holdoff_epoch_ = 0;
  NodeId handed_over_to_;  // the one node a take-over went to (repeated only to it)
  Epoch handed_over_epoch_ = 0;
  NodeId split_brain_alerted_;  // the peer whose meeting was last reported

  std::deque<Instant> role_changes_;  // voluntary and involuntary changes to or from PRIMARY
  bool dampening_alerted_ = false;
};

}  // namespace statesync::failover
